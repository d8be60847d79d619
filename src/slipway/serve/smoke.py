"""``slipway smoke``: check a running service's readiness, metadata, answers, errors and latency."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import numpy as np
import pandas as pd

from slipway.config import ModelConfig
from slipway.serve.prediction_log import SMOKE_ID_PREFIX
from slipway.serve.service import Prediction


def records_from_frame(frame: pd.DataFrame, config: ModelConfig) -> list[dict[str, Any]]:
    """Request records (JSON-ready, nulls as None) from a dataset, without the target."""
    columns = [c for c in config.columns if c != config.target.column and c in frame.columns]
    return json.loads(frame[columns].to_json(orient="records"))


def smoke(
    url: str,
    records: list[dict[str, Any]],
    max_p95_ms: float,
    calls: int = 20,
    id_column: str = "release_id",
) -> dict[str, Any]:
    """Check a running service: readiness, metadata, answers, the error format and latency.

    The records go with their ids marked (:data:`SMOKE_ID_PREFIX`), so the prediction log's
    readers can tell this test from real traffic.
    """
    import requests

    url = url.rstrip("/")
    records = [{**r, id_column: f"{SMOKE_ID_PREFIX}{r.get(id_column)}"} for r in records]
    checks: list[dict[str, Any]] = []

    def check(name: str, passed: bool, detail: str) -> bool:
        checks.append({"check": name, "passed": bool(passed), "detail": detail})
        return passed

    try:
        ready = requests.get(f"{url}/readyz", timeout=5)
        check("readyz", ready.status_code == 200, f"HTTP {ready.status_code}")
        meta = requests.get(f"{url}/metadata", timeout=5)
        metadata = meta.json() if meta.status_code == 200 else {}
        rollout = metadata.get("rollout") or {}
        said = (
            f"v{metadata.get('version')} of {metadata.get('model')} in "
            f"{metadata.get('environment')}, rollout {rollout.get('mode')}"
            if metadata
            else meta.text[:200]
        )
        check("metadata", bool(metadata.get("version")), f"HTTP {meta.status_code}; {said}")
        versions = {metadata.get("version"), metadata.get("rollout", {}).get("candidate_version")}
        answer = requests.post(f"{url}/predict", json={"records": records}, timeout=30)
        body = answer.json() if answer.status_code == 200 else []
        problems = _answer_problems(records, body, versions)
        check(
            "answers",
            answer.status_code == 200 and not problems,
            f"HTTP {answer.status_code}; {len(body)} answers for {len(records)} records"
            + (f"; {problems[:3]}" if problems else ""),
        )
        bad = {**records[0], "__unknown__": 1}
        rejected = requests.post(f"{url}/predict", json={"records": [bad]}, timeout=10)
        named = "__unknown__" in rejected.text
        check("rejects invalid input", rejected.status_code == 400 and named, rejected.text[:200])
        timings = []
        for i in range(calls):
            started = time.perf_counter()
            requests.post(
                f"{url}/predict", json={"records": [records[i % len(records)]]}, timeout=10
            )
            timings.append((time.perf_counter() - started) * 1000)
        p95 = float(np.percentile(timings, 95))
        check(
            "latency", p95 <= max_p95_ms, f"p95 {p95:.1f} ms over {calls} calls (max {max_p95_ms})"
        )
    except (requests.RequestException, ValueError) as exc:
        check("reachable", False, f"{type(exc).__name__}: {exc}")
    return {
        "schema": "slipway.smoke/1",
        "url": url,
        "passed": all(c["passed"] for c in checks),
        "checks": checks,
        "checked_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _answer_problems(records: list[dict], body: Any, versions: set[Any]) -> list[str]:
    if not isinstance(body, list) or len(body) != len(records):
        return ["one answer per record expected"]
    problems = []
    for record, answer in zip(records, body, strict=True):
        try:
            parsed = Prediction.model_validate(answer)
        except ValueError as exc:
            problems.append(f"{record.get('release_id')}: {exc}")
            continue
        if parsed.release_id != str(record.get("release_id")):
            problems.append(f"{parsed.release_id}: answer out of order")
        if parsed.model_version not in versions:
            problems.append(f"{parsed.release_id}: unexpected version {parsed.model_version}")
    return problems
