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
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, Any, Literal

import numpy as np
import pandas as pd
import pydantic_core
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
    """Scores validated records with the stable model and, in a rollout, the candidate.

    Each model is scored through :func:`probability_function`; every batch of predictions is
    handed to ``log`` as one list of records.
    """

    def __init__(
        self,
        config: ModelConfig,
        deployment: Deployment,
        models: dict[str, Any],
        log: Callable[[list[dict[str, Any]]], None] = lambda _records: None,
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
        probe, _ = self._frame(_probe_rows(config))
        self.probability = {v: probability_function(m, probe) for v, m in models.items()}

    def _frame(self, rows: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, list[list[str]]]:
        """The model's input, built column by column, and per row the features imputed."""
        columns, imputed = {}, [[] for _ in rows]
        for name in self.config.features:
            values = np.array([row.get(name) for row in rows], dtype=np.float64)  # None: NaN
            if name in self.imputations:
                missing = np.isnan(values)
                values[missing] = self.imputations[name]
                for i in np.flatnonzero(missing).tolist():
                    imputed[i].append(name)
            columns[name] = values
        return pd.DataFrame(columns, copy=False), imputed

    def _score(self, version: str, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Decisions and probabilities of the positive class for every row of ``frame``."""
        probability = self.probability[version](frame)
        threshold = _fixed_threshold(self.models[version])
        if threshold is not None:  # decide from the probabilities: one forest pass, not two
            return probability >= threshold, probability
        return np.asarray(self.models[version].predict(frame), dtype=bool), probability

    def predict(self, records: Sequence[BaseModel | Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One answer per record, in order; the batch's predictions go to the log together."""
        rows = [r.__dict__ if isinstance(r, BaseModel) else dict(r) for r in records]
        deploy = self.deployment
        frame, imputed = self._frame(rows)
        routes = ["stable"] * len(rows)
        if deploy.mode == "canary" and deploy.candidate_version is not None:
            routes = [route(str(row[self.id_column]), deploy.canary_percent) for row in rows]
        versions = np.array(
            [deploy.candidate_version if r == "canary" else deploy.stable_version for r in routes]
        )
        decisions, probabilities = np.zeros(len(rows), dtype=bool), np.zeros(len(rows))
        for version in dict.fromkeys(versions.tolist()):
            picked = versions == version
            scored = frame if picked.all() else frame[picked]
            decisions[picked], probabilities[picked] = self._score(version, scored)
        answers = [
            {
                "release_id": str(row[self.id_column]),
                "high_risk": decision,
                "probability": probability,
                "model_version": version,
                "request_id": request_id,
                "imputed": names,
            }
            for row, decision, probability, version, request_id, names in zip(
                rows,
                decisions.tolist(),
                probabilities.tolist(),
                versions.tolist(),
                _request_ids(len(rows)),
                imputed,
                strict=True,
            )
        ]
        logged = self._records(rows, answers, routes, served=True)
        if deploy.mode == "shadow" and deploy.candidate_version is not None:
            decisions, probabilities = self._score(deploy.candidate_version, frame)
            shadowed = [
                {**a, "high_risk": d, "probability": p, "model_version": deploy.candidate_version}
                for a, d, p in zip(answers, decisions.tolist(), probabilities.tolist(), strict=True)
            ]
            shadow = self._records(rows, shadowed, ["shadow"] * len(rows), served=False)
            logged = [record for pair in zip(logged, shadow, strict=True) for record in pair]
        with contextlib.suppress(Exception):  # logging must never fail a prediction
            self.log(logged)
        return answers

    def _records(
        self, rows: list[dict], answers: list[dict], routes: list[str], served: bool
    ) -> list[dict[str, Any]]:
        """The log records of one batch: what was asked, what was answered, by which route."""
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        environment, model = self.deployment.environment, self.deployment.model
        return [
            {
                "timestamp": now,
                "environment": environment,
                "model": model,
                "model_version": answer["model_version"],
                "route": route_name,
                "served": served,
                "request_id": answer["request_id"],
                "release_id": answer["release_id"],
                "features": row,
                "imputed": answer["imputed"],
                "output": {"high_risk": answer["high_risk"], "probability": answer["probability"]},
            }
            for row, answer, route_name in zip(rows, answers, routes, strict=True)
        ]


def _request_ids(count: int) -> list[str]:
    """``count`` random 128-bit ids as 32 hex digits, like ``uuid4().hex``, from one read."""
    digits = os.urandom(16 * count).hex()
    return [digits[i : i + 32] for i in range(0, 32 * count, 32)]


def _probe_rows(config: ModelConfig) -> list[dict[str, Any]]:
    """Rows spanning the contract: the example record, and every feature at its min and max."""
    example = example_record(config)
    rows = [example]
    for name in config.features:
        spec = config.columns[name]
        for bound in (spec.min, spec.max):
            if bound is not None:
                rows.append({**example, name: bound})
    return rows


def probability_function(model: Any, probe: pd.DataFrame) -> Callable[[pd.DataFrame], np.ndarray]:
    """``frame -> P(positive)`` for ``model``: its ``predict_proba``, or the same arithmetic.

    scikit-learn wraps every tree of a forest, and every transformer of a ColumnTransformer, in
    a joblib call with a configuration context and warning filters, even with ``n_jobs=1``, and
    checks the frame again at each step: for a few rows that costs ~10x the arithmetic. For a
    binary forest at the end of a pipeline (possibly inside a threshold classifier) this
    function scales the features as the pipeline's StandardScalers do, ``(x - mean_) /
    scale_``, or else calls the steps' ``transform``, and adds up ``tree_.predict`` in the
    forest's order, as scikit-learn does. It is used only when it gives exactly
    ``predict_proba``'s answers on ``probe``; any other model is scored as is.
    """

    def predict_proba(frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(model.predict_proba(frame))[:, 1]

    parts = _forest_parts(model)
    if parts is None:
        return predict_proba
    transform, forest = parts

    def sum_of_trees(frame: pd.DataFrame) -> np.ndarray:
        x = np.ascontiguousarray(transform(frame), dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != forest.n_features_in_ or not np.isfinite(x).all():
            return predict_proba(frame)  # scikit-learn's checks and messages
        total = np.zeros((len(x), forest.n_classes_))
        for tree in forest.estimators_:
            total += tree.tree_.predict(x)[:, : forest.n_classes_]
        total /= len(forest.estimators_)
        return total[:, 1]

    try:
        same = np.array_equal(sum_of_trees(probe), predict_proba(probe))
    except Exception:
        same = False
    return sum_of_trees if same else predict_proba


def _forest_parts(model: Any) -> tuple[Callable[[pd.DataFrame], Any], Any] | None:
    """(frame -> the forest's input, the forest) of a binary forest pipeline, else None."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.model_selection import FixedThresholdClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if isinstance(model, FixedThresholdClassifier):
        model = getattr(model, "estimator_", None)
    steps = model.steps if isinstance(model, Pipeline) else [("model", model)]
    forest = steps[-1][1]
    if (
        not isinstance(forest, RandomForestClassifier | ExtraTreesClassifier)
        or getattr(forest, "n_outputs_", None) != 1
        or len(getattr(forest, "classes_", [])) != 2
    ):
        return None
    if len(steps) == 1:
        return (lambda frame: frame.to_numpy()), forest
    head = model[:-1]
    transformer = steps[0][1] if len(steps) == 2 else None
    scalers = [
        (list(columns), scaler)
        for _name, scaler, columns in getattr(transformer, "transformers_", [])
        if scaler != "drop"
    ]
    if not isinstance(transformer, ColumnTransformer) or not all(
        isinstance(scaler, StandardScaler) and all(isinstance(c, str) for c in columns)
        for columns, scaler in scalers
    ):
        return head.transform, forest

    def scale(frame: pd.DataFrame) -> np.ndarray:
        blocks = []
        for columns, scaler in scalers:
            x = np.column_stack([frame[c].to_numpy(dtype=np.float64) for c in columns])
            if scaler.with_mean:
                x = x - scaler.mean_
            if scaler.with_std:
                x = x / scaler.scale_
            blocks.append(x)
        return np.hstack(blocks)

    return scale, forest


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

    :meth:`append` never blocks and never raises: when the records already waiting plus the
    new batch would pass ``capacity``, the batch is dropped and its records counted in
    ``dropped``. The writer rotates ``predictions.jsonl`` to
    ``predictions-<UTC time>-<n>.jsonl`` before it would pass ``max_bytes``, keeping ``keep``
    old files. A write that fails is counted in ``errors`` and its records are lost.
    """

    FILENAME = "predictions.jsonl"

    def __init__(
        self, directory: Path, max_bytes: int = 10 << 20, keep: int = 20, capacity: int = 20_000
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.keep = keep
        self.capacity = capacity
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self._rotations = 0
        self._pending = 0  # records queued or being written
        self._batches: deque[Sequence[Mapping[str, Any]]] = deque()
        self._stopping = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    @property
    def path(self) -> Path:
        return self.directory / self.FILENAME

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Queue one batch of records, one per prediction; drop and count it when full."""
        with self._changed:
            if self._stopping or self._pending + len(records) > self.capacity:
                self.dropped += len(records)
                return
            self._pending += len(records)
            self._batches.append(records)
            self._changed.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued record is written (tests and shutdown)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._pending and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            return not self._pending

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the writer."""
        self.flush(timeout)
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "written": self.written,
            "dropped": self.dropped,
            "errors": self.errors,
        }

    def _run(self) -> None:
        handle: IO[bytes] | None = None
        while True:
            with self._changed:
                while not self._batches and not self._stopping:
                    self._changed.wait()
                if not self._batches:
                    break
                batches = list(self._batches)
                self._batches.clear()
            count = sum(len(batch) for batch in batches)
            try:
                lines = [_line(record) for batch in batches for record in batch]
                handle = self._write(handle, lines)
                self.written += count
            except Exception:
                self.errors += 1
                if handle is not None:
                    with contextlib.suppress(Exception):
                        handle.close()
                handle = None
            with self._changed:
                self._pending -= count
                self._changed.notify_all()
        if handle is not None:
            handle.close()

    def _write(self, handle: IO[bytes] | None, lines: list[bytes]) -> IO[bytes]:
        """Append ``lines``; rotate first whenever the next line would pass ``max_bytes``."""
        if handle is None or handle.closed:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle = self.path.open("ab")
        size = handle.tell()
        chunk: list[bytes] = []
        for line in lines:
            if size and size + len(line) > self.max_bytes:
                handle.write(b"".join(chunk))
                handle.close()
                self._rotate()
                handle = self.path.open("ab")
                size, chunk = 0, []
            chunk.append(line)
            size += len(line)
        handle.write(b"".join(chunk))
        handle.flush()
        return handle

    def _rotate(self) -> None:
        self._rotations += 1
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self.path.rename(self.directory / f"predictions-{stamp}-{self._rotations:06d}.jsonl")
        rotated = sorted(self.directory.glob("predictions-*.jsonl"))
        for old in rotated[: max(0, len(rotated) - self.keep)]:
            old.unlink(missing_ok=True)


def _line(record: Mapping[str, Any]) -> bytes:
    """One JSON line; dates as ISO strings, anything else unknown as its ``str``."""
    return pydantic_core.to_json(record, serialize_unknown=True, fallback=str) + b"\n"


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
