"""What the BentoML service needs, kept testable without a server.

- :func:`record_model` generates the request schema from the data contract in slipway.yaml;
- :func:`route` sends a stable share of release ids to a canary;
- :class:`Scorer` scores records with the stable (and candidate) model and builds the answers;
- :class:`PredictionLog` appends every prediction to rotated JSONL files without ever failing
  or blocking a request.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, create_model

from slipway.config import Column, Impute, ModelConfig
from slipway.fsutil import state_dir
from slipway.manifests import Manifest

MAX_ID_LENGTH = 200
ROUTE_BUCKETS = 10_000


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Prediction(BaseModel):
    """The answer for one release."""

    release_id: str
    high_risk: bool
    probability: float = Field(ge=0, le=1)
    model_version: str
    request_id: str
    imputed: list[str] = Field(default_factory=list)


def _field(spec: Column) -> tuple[Any, Any]:
    """A pydantic (type, FieldInfo) pair for one contract column."""
    limits: dict[str, Any] = {}
    if spec.min is not None:
        limits["ge"] = spec.min
    if spec.max is not None:
        limits["le"] = spec.max
    if spec.categories is not None:
        kind: Any = Literal[tuple(spec.categories)]
    elif spec.dtype == "int":
        kind = Annotated[int, Field(strict=True, **limits)]
    elif spec.dtype == "float":
        kind = Annotated[float, Field(strict=True, allow_inf_nan=False, **limits)]
    elif spec.dtype == "date":
        kind = dt.date
    else:
        kind = Annotated[str, Field(strict=True, min_length=1, max_length=MAX_ID_LENGTH)]
    if isinstance(spec.nulls, Impute):
        return kind | None, Field(default=None, description=f"null: imputed {spec.nulls.impute}")
    return kind, Field(...)


def record_model(config: ModelConfig) -> type[BaseModel]:
    """The request schema of one release, generated from ``columns`` in slipway.yaml.

    Every contract column but the target is a field: types are strict, ``min``/``max`` become
    bounds, ``categories`` a ``Literal``; a column whose null policy is ``impute`` may be
    missing or null, any other is required. Unknown fields are rejected.
    """
    fields = {
        name: _field(spec) for name, spec in config.columns.items() if name != config.target.column
    }
    return create_model("ReleaseRecord", __base__=_Record, **fields)


def example_record(config: ModelConfig) -> dict[str, Any]:
    """A valid record for the API docs: the middle of every range, the first category."""
    example: dict[str, Any] = {}
    for name, spec in config.columns.items():
        if name == config.target.column:
            continue
        if spec.categories is not None:
            example[name] = spec.categories[0]
        elif spec.dtype in ("int", "float"):
            low, high = spec.min or 0, spec.max if spec.max is not None else 10
            middle = (low + high) / 2
            example[name] = int(middle) if spec.dtype == "int" else round(middle, 2)
        elif spec.dtype == "date":
            example[name] = "2026-01-01"
        else:
            example[name] = "REL-EXAMPLE-1"
    return example


def route(release_id: str, canary_percent: float) -> Literal["stable", "canary"]:
    """``canary`` for a stable ``canary_percent`` share of release ids, else ``stable``.

    The bucket is a SHA-256 of the id, so the same release always takes the same route, in
    every worker and after every restart.
    """
    digest = hashlib.sha256(release_id.encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") % ROUTE_BUCKETS
    return "canary" if bucket < canary_percent * ROUTE_BUCKETS / 100 else "stable"


@dataclass(frozen=True)
class Deployment:
    """What one service instance serves: the environment and the versions from its manifest."""

    environment: str
    model: str
    stable_version: str
    mode: Literal["none", "canary", "shadow"] = "none"
    candidate_version: str | None = None
    canary_percent: float = 0.0
    digest: str | None = None

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> Deployment:
        if manifest.version is None:
            raise ValueError(
                f"environments/{manifest.environment}.yaml deploys nothing yet (version: null); "
                f"promote a version first"
            )
        candidate = manifest.rollout.candidate_version
        return cls(
            environment=manifest.environment,
            model=manifest.model,
            stable_version=str(manifest.version),
            mode=manifest.rollout.mode,
            candidate_version=str(candidate) if candidate is not None else None,
            canary_percent=manifest.rollout.canary_percent,
            digest=manifest.digest,
        )


def bento_model_tag(model: str, version: str) -> str:
    """The exact BentoML tag of a registered version: ``release-risk:v3`` (never ``latest``)."""
    return f"{model}:v{version}"


class Scorer:
    """Scores validated records with the stable model and, in a rollout, the candidate."""

    def __init__(
        self,
        config: ModelConfig,
        deployment: Deployment,
        models: dict[str, Any],
        log: Callable[[dict[str, Any]], None] = lambda _record: None,
    ) -> None:
        self.config = config
        self.deployment = deployment
        self.models = models
        self.log = log
        self.id_column = config.data.id_column
        self.imputations = {
            name: float(config.columns[name].nulls.impute)
            for name in config.features
            if isinstance(config.columns[name].nulls, Impute)
        }

    def _frame(self, rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
        frame = pd.DataFrame(
            {name: [row.get(name) for row in rows] for name in self.config.features},
            dtype="float64",
        )
        for name, value in self.imputations.items():
            frame[name] = frame[name].fillna(value)
        return frame

    def _score(self, version: str, rows: Sequence[dict[str, Any]]) -> list[tuple[bool, float]]:
        if not rows:
            return []
        model = self.models[version]
        frame = self._frame(rows)
        probability = np.asarray(model.predict_proba(frame))[:, 1]
        threshold = _fixed_threshold(model)
        if threshold is not None:  # decide from the probabilities: one forest pass, not two
            decision = probability >= threshold
        else:
            decision = np.asarray(model.predict(frame))
        return [(bool(d), float(p)) for d, p in zip(decision, probability, strict=True)]

    def predict(self, records: Sequence[BaseModel | dict[str, Any]]) -> list[dict[str, Any]]:
        """One answer per record, in order; every prediction is handed to the log."""
        rows = [r.model_dump() if isinstance(r, BaseModel) else dict(r) for r in records]
        deploy = self.deployment
        routes = ["stable"] * len(rows)
        if deploy.mode == "canary":
            routes = [route(str(row[self.id_column]), deploy.canary_percent) for row in rows]
        served: list[tuple[str, bool, float] | None] = [None] * len(rows)
        for name, version in (
            ("stable", deploy.stable_version),
            ("canary", deploy.candidate_version),
        ):
            picked = [i for i, r in enumerate(routes) if r == name]
            if version is None or not picked:
                continue
            for i, (decision, probability) in zip(
                picked, self._score(version, [rows[i] for i in picked]), strict=True
            ):
                served[i] = (version, decision, probability)
        shadow: list[tuple[bool, float]] = []
        if deploy.mode == "shadow" and deploy.candidate_version is not None:
            shadow = self._score(deploy.candidate_version, rows)
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        answers = []
        for i, row in enumerate(rows):
            version, decision, probability = served[i]  # type: ignore[misc]
            imputed = [name for name in self.imputations if row.get(name) is None]
            answer = {
                "release_id": str(row[self.id_column]),
                "high_risk": decision,
                "probability": probability,
                "model_version": version,
                "request_id": uuid.uuid4().hex,
                "imputed": imputed,
            }
            answers.append(answer)
            self._log(now, row, answer, routes[i], served=True)
            if shadow:
                decision, probability = shadow[i]
                shadowed = {**answer, "high_risk": decision, "probability": probability}
                shadowed["model_version"] = deploy.candidate_version
                self._log(now, row, shadowed, "shadow", served=False)
        return answers

    def _log(self, now: str, row: dict, answer: dict, route_name: str, served: bool) -> None:
        record = {
            "timestamp": now,
            "environment": self.deployment.environment,
            "model": self.deployment.model,
            "model_version": answer["model_version"],
            "route": route_name,
            "served": served,
            "request_id": answer["request_id"],
            "release_id": answer["release_id"],
            "features": {
                k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in row.items()
            },
            "imputed": answer["imputed"],
            "output": {"high_risk": answer["high_risk"], "probability": answer["probability"]},
        }
        with contextlib.suppress(Exception):  # logging must never fail a prediction
            self.log(record)


def _fixed_threshold(model: Any) -> float | None:
    """The threshold of a scikit-learn ``FixedThresholdClassifier`` on ``predict_proba``.

    Its ``predict`` is ``predict_proba(X)[:, 1] >= threshold`` for classes ``[0, 1]``; anything
    else returns None and is asked for ``predict``.
    """
    threshold = getattr(model, "threshold", None)
    if (
        isinstance(threshold, int | float)
        and getattr(model, "response_method", None) == "predict_proba"
        and getattr(model, "pos_label", None) in (None, 1)
        and list(getattr(model, "classes_", [])) == [0, 1]
    ):
        return float(threshold)
    return None


class PredictionLog:
    """Append JSON lines from a bounded queue on a background thread; rotate by size.

    :meth:`append` never blocks and never raises: when the queue is full the record is dropped
    and counted (``dropped``). The writer rotates ``predictions.jsonl`` to
    ``predictions-<UTC time>-<n>.jsonl`` before it would pass ``max_bytes``, keeping ``keep``
    old files.
    """

    FILENAME = "predictions.jsonl"

    def __init__(
        self, directory: Path, max_bytes: int = 10 << 20, keep: int = 20, capacity: int = 10_000
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.keep = keep
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self._rotations = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    @property
    def path(self) -> Path:
        return self.directory / self.FILENAME

    def append(self, record: dict[str, Any]) -> None:
        """Queue one record; drop and count it when the queue is full."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued record is written (tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._queue.unfinished_tasks

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the writer."""
        self.flush(timeout)
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "written": self.written,
            "dropped": self.dropped,
            "errors": self.errors,
        }

    def _run(self) -> None:
        handle = None
        while True:
            record = self._queue.get()
            try:
                if record is None:
                    if handle is not None:
                        handle.close()
                    return
                batch = [record]
                while len(batch) < 512:  # write what is already waiting in one go
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        self._queue.put(None)  # stop after this batch
                        self._queue.task_done()
                        break
                    batch.append(more)
                handle = self._write(handle, batch)
                for _ in batch[1:]:
                    self._queue.task_done()
            except Exception:
                self.errors += 1
                handle = None
            finally:
                self._queue.task_done()

    def _write(self, handle: Any, batch: list[dict[str, Any]]) -> Any:
        for record in batch:
            if handle is None or handle.closed:
                self.directory.mkdir(parents=True, exist_ok=True)
                handle = self.path.open("a", encoding="utf-8")
            line = json.dumps(record, default=str) + "\n"
            if handle.tell() and handle.tell() + len(line) > self.max_bytes:
                handle.close()
                self._rotate()
                handle = self.path.open("a", encoding="utf-8")
            handle.write(line)
            self.written += 1
        if handle is not None:
            handle.flush()
        return handle

    def _rotate(self) -> None:
        self._rotations += 1
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self.path.rename(self.directory / f"predictions-{stamp}-{self._rotations:06d}.jsonl")
        rotated = sorted(self.directory.glob("predictions-*.jsonl"))
        for old in rotated[: max(0, len(rotated) - self.keep)]:
            old.unlink(missing_ok=True)


def log_directory(environment: str) -> Path:
    """``SLIPWAY_LOG_DIR`` when set, else ``$SLIPWAY_HOME/predictions/<environment>``."""
    configured = os.environ.get("SLIPWAY_LOG_DIR", "").strip()
    if configured:
        return Path(configured)
    return state_dir() / "predictions" / environment


def records_from_frame(frame: pd.DataFrame, config: ModelConfig) -> list[dict[str, Any]]:
    """Request records (JSON-ready, nulls as None) from a dataset, without the target."""
    columns = [c for c in config.columns if c != config.target.column and c in frame.columns]
    return json.loads(frame[columns].to_json(orient="records"))


def smoke(
    url: str, records: list[dict[str, Any]], max_p95_ms: float, calls: int = 20
) -> dict[str, Any]:
    """Check a running service: readiness, metadata, answers, the error format and latency."""
    import requests

    url = url.rstrip("/")
    checks: list[dict[str, Any]] = []

    def check(name: str, passed: bool, detail: str) -> bool:
        checks.append({"check": name, "passed": bool(passed), "detail": detail})
        return passed

    try:
        ready = requests.get(f"{url}/readyz", timeout=5)
        check("readyz", ready.status_code == 200, f"HTTP {ready.status_code}")
        meta = requests.get(f"{url}/metadata", timeout=5)
        metadata = meta.json() if meta.status_code == 200 else {}
        check("metadata", bool(metadata.get("version")), f"HTTP {meta.status_code} {metadata}")
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
