"""What the BentoML service needs, kept testable without a server.

- :func:`record_model` generates the request schema from the data contract in slipway.yaml;
- :func:`route` sends a stable share of release ids to a canary;
- :class:`Scorer` scores records with the stable (and candidate) model and builds the answers;
- :func:`rejection_record` is what the log keeps of a request the service rejected.

Probabilities are computed by :mod:`slipway.probabilities`, the prediction log is
:mod:`slipway.serve.prediction_log`, and :mod:`slipway.serve.smoke` checks a running service.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic_core import PydanticCustomError

from slipway.config import Column, Impute, ModelConfig
from slipway.manifests import Manifest
from slipway.probabilities import fixed_threshold, probability_function

MAX_ID_LENGTH = 200
ROUTE_BUCKETS = 10_000
REJECTED = frozenset({400, 415})  # what a rejected request is answered
MAX_REJECTED_BODY = 1 << 20  # request bodies read back for a rejection record, at most
MAX_REJECTION_ERRORS = 20
MAX_VALUE_CHARS = 40
# pydantic's error types, as the rule a rejected field broke
REASONS = {
    "literal_error": "enum",
    "enum": "enum",
    "missing": "missing",
    "extra_forbidden": "unknown_field",
    **dict.fromkeys(
        ["greater_than", "greater_than_equal", "less_than", "less_than_equal"], "out_of_range"
    ),
    **dict.fromkeys(["string_too_short", "string_too_long", "too_short", "too_long"], "length"),
    **dict.fromkeys(["int_type", "int_from_float", "float_type", "string_type"], "type"),
    **dict.fromkeys(["bool_type", "model_type", "list_type", "dict_type"], "type"),
    **dict.fromkeys(["date_type", "date_parsing", "date_from_datetime_parsing"], "type"),
    "json_invalid": "json",
    "unsupported_media_type": "media_type",
}


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Prediction(BaseModel):
    """The answer for one release."""

    model_config = ConfigDict(extra="forbid")

    release_id: str
    high_risk: bool
    probability: float = Field(ge=0, le=1)
    model_version: str
    request_id: str
    imputed: list[str] = Field(description="the features imputed because they were null")


ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_date(value: Any) -> Any:
    """Only ``YYYY-MM-DD`` text (or a date) is a date: not a timestamp, not a datetime."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and ISO_DATE.fullmatch(value):
        return value
    raise PydanticCustomError("date_type", "Input should be a date as text: YYYY-MM-DD")


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
        kind = Annotated[dt.date, BeforeValidator(_iso_date)]
    else:
        kind = Annotated[str, Field(strict=True, min_length=1, max_length=MAX_ID_LENGTH)]
    if isinstance(spec.nulls, Impute):
        return kind | None, Field(default=None, description=f"null: imputed {spec.nulls.impute}")
    return kind, Field(...)


def record_model(config: ModelConfig) -> type[BaseModel]:
    """The request schema of one release, generated from ``columns`` in slipway.yaml.

    Every contract column but the target is a field: types are strict, ``min``/``max`` become
    bounds, ``categories`` a ``Literal``, a date is ``YYYY-MM-DD`` text (OpenAPI's
    ``format: date``); a column whose null policy is ``impute`` may be
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
    handed to ``log`` as one list of records, each with ``latency_ms``: how long scoring the
    batch's rows of its version took. When a version's scoring raises, its rows are logged
    with ``error`` (and no ``output``) before the exception goes on to fail the request.
    ``clock`` (seconds) is a seam for tests.
    """

    def __init__(
        self,
        config: ModelConfig,
        deployment: Deployment,
        models: dict[str, Any],
        log: Callable[[list[dict[str, Any]]], None] = lambda _records: None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._clock = clock
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
        threshold = fixed_threshold(self.models[version])
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
        latency: dict[str, float] = {}
        for version in dict.fromkeys(versions.tolist()):
            picked = versions == version
            scored = frame if picked.all() else frame[picked]
            started = self._clock()
            try:
                decisions[picked], probabilities[picked] = self._score(version, scored)
            except Exception as exc:
                self._log_failure(exc, started, version, rows, imputed, routes, picked)
                raise
            latency[version] = (self._clock() - started) * 1000
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
        logged = self._records(rows, answers, routes, served=True, latency=latency)
        if deploy.mode == "shadow" and deploy.candidate_version is not None:
            candidate, shadows = deploy.candidate_version, ["shadow"] * len(rows)
            started = self._clock()
            try:
                decisions, probabilities = self._score(candidate, frame)
            except Exception as exc:
                everyone = np.ones(len(rows), dtype=bool)
                self._log_failure(exc, started, candidate, rows, imputed, shadows, everyone)
                raise
            latency[candidate] = (self._clock() - started) * 1000
            shadowed = [
                {**a, "high_risk": d, "probability": p, "model_version": candidate}
                for a, d, p in zip(answers, decisions.tolist(), probabilities.tolist(), strict=True)
            ]
            shadow = self._records(rows, shadowed, shadows, served=False, latency=latency)
            logged = [record for pair in zip(logged, shadow, strict=True) for record in pair]
        with contextlib.suppress(Exception):  # logging must never fail a prediction
            self.log(logged)
        return answers

    def _log_failure(
        self,
        exc: Exception,
        started: float,
        version: str,
        rows: list[dict],
        imputed: list[list[str]],
        routes: list[str],
        picked: np.ndarray,
    ) -> None:
        """Log the ``picked`` rows as failed by ``version``: ``error``, no ``output``."""
        elapsed_ms = (self._clock() - started) * 1000
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        indices = np.flatnonzero(picked).tolist()
        records = [
            {
                "timestamp": now,
                "environment": self.deployment.environment,
                "model": self.deployment.model,
                "model_version": version,
                "route": routes[i],
                "served": routes[i] != "shadow",
                "request_id": request_id,
                "release_id": str(rows[i][self.id_column]),
                "features": rows[i],
                "imputed": imputed[i],
                "output": None,
                "latency_ms": elapsed_ms,
                "error": f"{type(exc).__name__}: {exc}",
            }
            for i, request_id in zip(indices, _request_ids(len(indices)), strict=True)
        ]
        with contextlib.suppress(Exception):  # the request fails with exc, never the log's
            self.log(records)

    def _records(
        self,
        rows: list[dict],
        answers: list[dict],
        routes: list[str],
        served: bool,
        latency: dict[str, float],
    ) -> list[dict[str, Any]]:
        """The log records of one batch: what was asked, what was answered, by which route,
        and how long its version took to score it."""
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
                "latency_ms": latency[answer["model_version"]],
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


def rejection_record(
    deployment: Deployment, id_column: str, status: int, asked: bytes, answered: bytes
) -> dict[str, Any]:
    """The log record of one request answered ``status`` (400 or 415): each error's field
    (``records.0.team``), the rule it broke (``enum``, ``missing``, ``out_of_range``, ``type``…;
    see ``REASONS``) and the value sent, shortened; the release id of the first record named,
    and how many records the request held, when its body ``asked`` is readable JSON."""
    body: Any = None
    if len(asked) <= MAX_REJECTED_BODY:
        with contextlib.suppress(ValueError):
            body = json.loads(asked)
    records = body.get("records") if isinstance(body, dict) else None
    try:
        answer = json.loads(answered)
    except ValueError:
        answer = None
    details = answer.get("detail") if isinstance(answer, dict) else answer
    errors, release_id = [], None
    for detail in details if isinstance(details, list) else []:
        if not isinstance(detail, dict):
            continue
        loc = detail.get("loc") if isinstance(detail.get("loc"), list) else []
        reason = str(detail.get("type") or ("invalid" if detail.get("error") else "unknown"))
        value = detail.get("input", _at(body, loc) if loc else detail.get("error", _ABSENT))
        errors.append(
            {
                "field": ".".join(map(str, loc)),
                "reason": REASONS.get(reason, reason),
                "value": None if value is _ABSENT else _short(value),
            }
        )
        if release_id is None and len(loc) > 1 and loc[0] == "records":
            named = _at(body, ["records", loc[1], id_column])
            release_id = named[:MAX_ID_LENGTH] if isinstance(named, str) else None
    return {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "environment": deployment.environment,
        "model": deployment.model,
        "model_version": deployment.stable_version,
        "rejected": True,
        "status": status,
        "errors": errors[:MAX_REJECTION_ERRORS],
        "more_errors": max(0, len(errors) - MAX_REJECTION_ERRORS),
        "records": len(records) if isinstance(records, list) else None,
        "release_id": release_id,
    }


_ABSENT = object()


def _at(body: Any, loc: Sequence[Any]) -> Any:
    """What ``body`` holds at ``loc`` (keys and list indices), or ``_ABSENT``."""
    for key in loc:
        if not isinstance(body, dict | list):
            return _ABSENT
        try:
            body = body[key]
        except (KeyError, IndexError, TypeError):
            return _ABSENT
    return body


def _short(value: Any) -> str:
    """``value`` as JSON, cut to ``MAX_VALUE_CHARS``."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"
