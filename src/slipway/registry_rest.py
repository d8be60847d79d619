"""Reads and tag writes straight through a tracking server's REST API, without importing MLflow.

:class:`RestReads` wraps a full :class:`~slipway.registry.Registry` for everything else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from slipway.registry import (
    PREFLIGHT_TIMEOUT_S,
    ModelRef,
    Registry,
    credentials_error,
    http_settings,
)


class RestReads(Registry):
    """Reads versions and aliases, and sets tags and metrics, straight through a tracking
    server's REST API, without MLflow.

    Logging a model, loading one and artifacts go to the full registry ``make_full`` creates
    (on first use, or at once with ``eager`` so that it imports MLflow while the caller works),
    and so does any call the API does not answer plainly, so errors are MLflow's own. For a
    step that only reads a version's tags (``slipway package`` with the copy ``train`` left) or
    that reads and tags (``slipway gate`` with no champion to load), importing the MLflow client,
    about a second, buys nothing.
    """

    def __init__(
        self, tracking_uri: str, make_full: Callable[[], Registry], eager: bool = False
    ) -> None:
        self.tracking_uri = tracking_uri
        self._make_full = make_full
        self._registry: Registry | None = make_full() if eager else None

    def _full(self) -> Registry:
        if self._registry is None:
            self._registry = self._make_full()
        return self._registry

    def get(self, name: str, version: str) -> ModelRef:
        answer = _rest_get(self.tracking_uri, "model-versions/get", name=name, version=version)
        found = _version(answer, name) if answer and answer[0] == 200 else None
        if found is None or found.version != str(version):
            return self._full().get(name, version)
        return found

    def created_at(self, name: str, version: str) -> datetime:
        answer = _rest_get(self.tracking_uri, "model-versions/get", name=name, version=version)
        try:
            found = answer[1]["model_version"]  # type: ignore[index]
            if answer[0] == 200 and found["name"] == name and str(found["version"]) == str(version):
                return datetime.fromtimestamp(int(found["creation_timestamp"]) / 1000, UTC)
        except (KeyError, TypeError, IndexError, ValueError):
            pass
        return self._full().created_at(name, version)

    def alias(self, name: str, alias: str) -> ModelRef | None:
        answer = _rest_get(self.tracking_uri, "registered-models/alias", name=name, alias=alias)
        if answer is not None and 400 <= answer[0] < 500 and _not_found(answer[1]):
            return None  # no such alias (or model): nothing promoted yet, as MlflowRegistry says
        found = _version(answer, name) if answer and answer[0] == 200 else None
        return found if found is not None else self._full().alias(name, alias)

    def find(self, name: str, tags: dict[str, str]) -> list[ModelRef]:
        return self._full().find(name, tags)

    def log_and_register(self, *args: Any, **kwargs: Any) -> ModelRef:
        return self._full().log_and_register(*args, **kwargs)

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        batch = [
            {"key": key, "value": value, "timestamp": now, "step": 0}
            for key, value in metrics.items()
            if value == value  # NaN is not logged, as in MlflowRegistry
        ]
        answer = _rest_call(
            self.tracking_uri, "runs/log-batch", {"run_id": run_id, "metrics": batch}
        )
        if answer is None or answer[0] != 200:
            self._full().log_metrics(run_id, metrics)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._full().set_alias(name, alias, version)

    def tag(self, name: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            body = {"name": name, "version": str(version), "key": key, "value": value}
            answer = _rest_call(self.tracking_uri, "model-versions/set-tag", body)
            if answer is None or answer[0] != 200:
                self._full().tag(name, version, {key: value})

    def load(self, ref: ModelRef) -> Any:
        return self._full().load(ref)

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str) -> None:
        self._full().log_artifact(run_id, local_path, artifact_path)

    def download_artifact(self, run_id: str, artifact_path: str, dst_dir: str) -> str:
        return self._full().download_artifact(run_id, artifact_path, dst_dir)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        answer = _rest_get(self.tracking_uri, "runs/get", run_id=run_id)
        try:
            found = answer[1]["run"]["data"].get("metrics", [])  # type: ignore[index]
            return {m["key"]: float(m["value"]) for m in found}
        except (KeyError, TypeError, IndexError, ValueError):
            return self._full().run_metrics(run_id)

    def run_url(self, run_id: str | None) -> str | None:
        if run_id is None or not self.tracking_uri.startswith(("http://", "https://")):
            return None
        answer = _rest_get(self.tracking_uri, "runs/get", run_id=run_id)
        try:
            experiment = answer[1]["run"]["info"]["experiment_id"]  # type: ignore[index]
        except (KeyError, TypeError, IndexError):
            return self._full().run_url(run_id)
        return f"{self.tracking_uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()


def _rest_get(tracking_uri: str, endpoint: str, **params: str) -> tuple[int, Any] | None:
    """``GET /api/2.0/mlflow/ENDPOINT?PARAMS``: see :func:`_rest_call`."""
    return _rest_call(tracking_uri, endpoint, None, params)


def _rest_call(
    tracking_uri: str,
    endpoint: str,
    body: dict[str, Any] | None,
    params: dict[str, str] | None = None,
) -> tuple[int, Any] | None:
    """``/api/2.0/mlflow/ENDPOINT`` (POST with ``body``, else GET) with MLflow's credentials
    and TLS settings: the status and JSON answer, or None when the URI is no server or no JSON
    answer came. A refused login (401, 403) raises :func:`~slipway.registry.credentials_error`
    at once: the full registry would only import MLflow to be refused the same way."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    import requests  # deferred: only a tracking server needs it

    try:
        answer = requests.request(
            "GET" if body is None else "POST",
            f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/{endpoint}",
            params=params,
            json=body,
            timeout=PREFLIGHT_TIMEOUT_S,
            **http_settings(),
        )
    except requests.RequestException:
        return None
    if answer.status_code in (401, 403):
        raise credentials_error(tracking_uri, answer.status_code)
    try:
        return answer.status_code, answer.json()
    except ValueError:  # not JSON
        return None


def _not_found(body: Any) -> bool:
    """MLflow's answer for an alias or model that does not exist (see MlflowRegistry.alias)."""
    if not isinstance(body, dict):
        return False
    code, message = str(body.get("error_code", "")), str(body.get("message", ""))
    return "RESOURCE_DOES_NOT_EXIST" in code or "not found" in message


def _version(answer: tuple[int, Any] | None, name: str) -> ModelRef | None:
    """The ``model_version`` of a REST answer as a :class:`ModelRef`, if it is one of ``name``."""
    try:
        found = answer[1]["model_version"]  # type: ignore[index]
        if found["name"] != name:
            return None
        tags = {tag["key"]: tag.get("value", "") for tag in found.get("tags", [])}
        return ModelRef(name, str(found["version"]), found.get("run_id") or None, tags)
    except (KeyError, TypeError, IndexError):
        return None
