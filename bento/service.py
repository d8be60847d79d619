"""The release-risk service: one BentoML service scoring release records over HTTP.

What it serves comes from one place, in this order:

1. ``SLIPWAY_MANIFEST`` (a path) or ``SLIPWAY_ENV`` (``environments/<env>.yaml``): the stable
   version and the rollout (canary or shadow candidate) of that environment — ``slipway serve``;
2. ``bento/pinned.json`` inside a Bento built by ``slipway package``: the packaged version.

Models are referenced by exact tag (``release-risk:v3``), never ``latest``. The request schema
is generated from the data contract in ``model/slipway.yaml`` (``SLIPWAY_CONFIG`` overrides).

``SLIPWAY_WORKERS`` (default 1) is how many worker processes serve; each scores at most
``SLIPWAY_MAX_CONCURRENCY`` (default 32) requests at once and answers the next one 503 with
``Retry-After`` at once. ``GET /docs.json`` is :func:`slipway.serve.openapi.api_document`.
"""

import contextlib
import datetime as dt
import functools
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import bentoml
import pydantic_core
from bentoml.validators import ContentType
from pydantic import Field, PlainSerializer, WithJsonSchema
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ROOT = Path(__file__).resolve().parent.parent
try:
    import slipway  # noqa: F401
except ImportError:  # inside a built Bento the platform code is bundled under src/
    sys.path.insert(0, str(ROOT / "src"))

from slipway.config import load_config  # noqa: E402
from slipway.manifests import load_manifest  # noqa: E402
from slipway.serve.openapi import api_document  # noqa: E402
from slipway.serve.prediction_log import PredictionLog, log_directory  # noqa: E402
from slipway.serve.service import (  # noqa: E402
    MAX_REJECTED_BODY,
    REJECTED,
    Deployment,
    Prediction,
    Scorer,
    bento_model_tag,
    example_record,
    record_model,
    rejection_record,
)

MAX_RECORDS = 1000
TIMEOUT_S = 30  # BentoML answers 504 past it
RETRY_AFTER_S = 1  # what a 503 asks the client to wait


def _positive(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip() or str(default)
    if not text.isdigit() or int(text) < 1:
        raise RuntimeError(f"{name}={text!r}: set it to a whole number of at least 1")
    return int(text)


WORKERS = _positive("SLIPWAY_WORKERS", 1)
MAX_CONCURRENCY = _positive("SLIPWAY_MAX_CONCURRENCY", 32)  # per worker
CONFIG = load_config(Path(os.environ.get("SLIPWAY_CONFIG") or ROOT / "model" / "slipway.yaml"))


def _deployment() -> Deployment:
    manifest = os.environ.get("SLIPWAY_MANIFEST")
    environment = os.environ.get("SLIPWAY_ENV")
    if manifest or environment:
        path = Path(manifest or ROOT / "environments" / f"{environment}.yaml")
        return Deployment.from_manifest(load_manifest(path))
    pinned = ROOT / "bento" / "pinned.json"
    if pinned.is_file():
        version = str(json.loads(pinned.read_text())["version"])
        return Deployment(environment="unassigned", model=CONFIG.name, stable_version=version)
    raise RuntimeError(
        "nothing to serve: set SLIPWAY_ENV (staging|production) or SLIPWAY_MANIFEST, "
        "or serve a Bento built by `slipway package`"
    )


DEPLOYMENT = _deployment()
LOG_DIR = log_directory(DEPLOYMENT.environment)
LOG_MAX_BYTES = int(os.environ.get("SLIPWAY_LOG_MAX_BYTES", str(10 << 20)))
LOSS_REPORT_SECONDS = 60  # how often, at most, the log records what it lost
Record = record_model(CONFIG)
Records = Annotated[
    list[Record],
    Field(min_length=1, max_length=MAX_RECORDS, examples=[[example_record(CONFIG)]]),
]
# The Scorer builds the answers as dicts of Prediction's fields (the tests check them against it).
# BentoML sends them as the JSON bytes pydantic-core writes in one call, rather than validating
# our own answers again and encoding them with the json module (5x slower for 1,000 answers);
# the declared media type spares it a JSON schema per response. The API docs show Prediction.
Answers = Annotated[
    list[Any],
    PlainSerializer(pydantic_core.to_json, return_type=bytes),
    WithJsonSchema({"type": "array", "items": Prediction.model_json_schema()}),
    ContentType("application/json"),
]


_RUNNING: dict[str, Any] = {}  # this module's service instance, for GET /metadata


async def _metadata(_request: Request) -> JSONResponse:
    service = _RUNNING.get("service")
    if service is None:
        return JSONResponse({"error": "the service is starting"}, status_code=503)
    return JSONResponse(service.metadata())


def _predicting(scope: Any) -> bool:
    return scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/predict"


class Admission:
    """How many ``POST /predict`` this worker is handling, the most it takes, and how many it
    refused. One per worker process; only its event loop touches it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.shed = 0

    def stats(self) -> dict[str, int]:
        return {
            "worker": os.getpid(),
            "in_flight": self.in_flight,
            "max_concurrency": self.limit,
            "shed": self.shed,
        }


ADMISSION = Admission(MAX_CONCURRENCY)


def _overloaded() -> JSONResponse:
    body = {
        "error": f"overloaded: this worker is scoring {ADMISSION.limit} requests; "
        f"retry after {RETRY_AFTER_S} s"
    }
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


class ShedLoad:
    """ASGI middleware: past ``MAX_CONCURRENCY`` requests in flight, ``POST /predict`` is a
    503 with ``Retry-After`` at once, before its body is read, so an overloaded worker neither
    queues without bound nor takes the time to parse what it will not score.

    The adaptive batcher's own 503 (a request that would wait past its latency budget) gets the
    same body and header; BentoML's says "an unexpected error" and has no ``Retry-After``.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not _predicting(scope):
            await self.app(scope, receive, send)
            return
        if ADMISSION.in_flight >= ADMISSION.limit:
            ADMISSION.shed += 1
            await _overloaded()(scope, receive, send)
            return
        replaced = answered = False

        def answer() -> None:
            nonlocal answered
            if not answered:
                answered = True
                ADMISSION.in_flight -= 1

        async def sending(message: Any) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 503:
                replaced = True
                ADMISSION.shed += 1
                answer()
                await _overloaded()(scope, receive, send)
            elif not replaced:
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    answer()  # before the last byte leaves: the client's next request may come
                await send(message)

        ADMISSION.in_flight += 1
        try:
            await self.app(scope, receive, sending)
        finally:
            answer()


@functools.cache
def _api_document() -> bytes:
    document = api_document(
        ReleaseRisk.openapi_spec.asdict(),
        Records,
        Prediction,
        title=f"{CONFIG.name}-service",
        version=str(CONFIG.schema_version),
        retry_after_s=RETRY_AFTER_S,
        max_concurrency=MAX_CONCURRENCY,
        timeout_s=TIMEOUT_S,
    )
    return json.dumps(document).encode()


class ApiDocument:
    """ASGI middleware: ``GET /docs.json`` is the exact document, not BentoML's own."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/docs.json" and scope["method"] == "GET":
            await Response(_api_document(), media_type="application/json")(scope, receive, send)
            return
        await self.app(scope, receive, send)


class JsonOnly:
    """ASGI middleware: ``POST /predict`` takes JSON; any other media type is a 415, not a 500.

    (BentoML would parse ``multipart/form-data`` itself and fail with a 500 on such a body.)
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if _predicting(scope):
            headers = dict(scope["headers"])
            given = headers.get(b"content-type", b"application/json").decode("latin-1")
            media = given.split(";")[0].strip().lower()
            if media != "application/json":
                detail = {
                    "type": "unsupported_media_type",
                    "loc": ["headers", "content-type"],
                    "msg": f"send a JSON body with Content-Type: application/json, not {media!r}",
                    "input": given,
                }
                body = {"error": "unsupported media type", "detail": [detail]}
                await JSONResponse(body, status_code=415)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class LogRejections:
    """ASGI middleware: each ``POST /predict`` answered 400 or 415 leaves one record in the
    prediction log (:func:`rejection_record`), so traffic the contract refuses (a team it does
    not know yet) shows in the drift check rather than vanishing.

    It passes every message on unchanged, keeping references to the body chunks; only a
    rejection's are read back, after the answer is sent, and nothing here can fail a request.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not _predicting(scope):
            await self.app(scope, receive, send)
            return
        asked: list[bytes] = []
        answered: list[bytes] = []
        status: list[int] = []
        size = [0]

        async def receiving() -> Any:
            message = await receive()
            if message["type"] == "http.request" and size[0] <= MAX_REJECTED_BODY:
                asked.append(message.get("body", b""))
                size[0] += len(asked[-1])
            return message

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif message["type"] == "http.response.body" and status and status[0] in REJECTED:
                answered.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receiving, sending)
        service = _RUNNING.get("service")
        if status and status[0] in REJECTED and service is not None:
            with contextlib.suppress(Exception):
                body = b"".join(asked) if size[0] <= MAX_REJECTED_BODY else b""
                record = rejection_record(
                    DEPLOYMENT, CONFIG.data.id_column, status[0], body, b"".join(answered)
                )
                service.log.append([record])


@bentoml.asgi_app(Starlette(routes=[Route("/metadata", _metadata)]), path="/")
@bentoml.service(
    name=f"{CONFIG.name}-service",
    resources={"cpu": "1", "memory": "1Gi"},
    workers=WORKERS,
    # No BentoML max_concurrency: its 429 has no Retry-After; ShedLoad answers 503 instead.
    traffic={"timeout": TIMEOUT_S},
)
class ReleaseRisk:
    """Scores releases: ``POST /predict``; ``GET /metadata``, ``/healthz``, ``/readyz``."""

    stable = bentoml.models.BentoModel(bento_model_tag(CONFIG.name, DEPLOYMENT.stable_version))
    candidate = (
        bentoml.models.BentoModel(bento_model_tag(CONFIG.name, DEPLOYMENT.candidate_version))
        if DEPLOYMENT.candidate_version
        else None
    )

    def __init__(self) -> None:
        import mlflow.sklearn  # deferred: only a running service needs MLflow

        models = {DEPLOYMENT.stable_version: self.stable}
        if DEPLOYMENT.candidate_version and self.candidate is not None:
            models[DEPLOYMENT.candidate_version] = self.candidate
        self.loaded = {
            version: mlflow.sklearn.load_model(stored.path_of("mlflow"))
            for version, stored in models.items()
        }
        self.digests = {
            version: stored.info.metadata.get("model_digest") for version, stored in models.items()
        }
        self.log = PredictionLog(LOG_DIR, max_bytes=LOG_MAX_BYTES)
        self.scorer = Scorer(CONFIG, DEPLOYMENT, self.loaded, self.log.append)
        self._reported = (0, 0)  # the log's dropped records and failed writes, last recorded
        self._reported_at = time.monotonic()
        self._reporting = threading.Lock()
        _RUNNING["service"] = self
        # The models and everything imported live as long as the worker: keep them out of the
        # garbage collector's full passes, which otherwise walk ~300,000 objects (~0.2 s, on the
        # event loop's time) every few dozen 1,000-row requests. A 1,000-row request allocates
        # ~15,000 objects that die with it: a young generation of 20,000 rather than 700 spares
        # ~8 collections of them per request (cycles are still collected).
        gc.freeze()
        gc.set_threshold(20_000, *gc.get_threshold()[1:])

    def __is_ready__(self) -> bool:
        return set(self.loaded) == {DEPLOYMENT.stable_version, DEPLOYMENT.candidate_version} - {
            None
        }

    # Adaptive batching: concurrent requests are scored together, up to two full requests per
    # call, so a request of MAX_RECORDS is never split. max_latency_ms is not a fixed wait but
    # where the batcher sheds (503) a request it expects to wait longer; ShedLoad keeps the
    # queue to MAX_CONCURRENCY requests first, so this is only a backstop for a slow model.
    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=2 * MAX_RECORDS, max_latency_ms=10_000)
    def predict(self, records: Records) -> Answers:
        """Score release records; one answer per record, in order."""
        answers = self.scorer.predict(records)
        self.record_losses()
        return answers

    def record_losses(self, now: bool = False) -> None:
        """Log what the log lost since it last said so (records dropped, writes failed) as a
        record of its own, ``log_stats``; at most every LOSS_REPORT_SECONDS unless ``now``."""
        log, started = self.log, time.monotonic()
        lost = (log.dropped, log.errors)
        due = now or started - self._reported_at >= LOSS_REPORT_SECONDS
        if lost == self._reported or not due:
            return
        if not self._reporting.acquire(blocking=False):
            return
        try:
            dropped, errors = (a - b for a, b in zip(lost, self._reported, strict=True))
            record = {
                "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                "environment": DEPLOYMENT.environment,
                "model": DEPLOYMENT.model,
                "model_version": DEPLOYMENT.stable_version,
                "log_stats": {"dropped": dropped, "write_errors": errors},
            }
            log.append([record])
            if log.dropped == lost[0]:  # written, or about to be: not lost itself
                self._reported, self._reported_at = lost, started
        finally:
            self._reporting.release()

    def metadata(self) -> dict[str, Any]:
        """What this instance serves; ``GET /metadata``."""
        return {
            "model": DEPLOYMENT.model,
            "version": DEPLOYMENT.stable_version,
            "digest": DEPLOYMENT.digest,
            "model_digest": self.digests.get(DEPLOYMENT.stable_version),
            "environment": DEPLOYMENT.environment,
            "rollout": {
                "mode": DEPLOYMENT.mode,
                "candidate_version": DEPLOYMENT.candidate_version,
                "canary_percent": DEPLOYMENT.canary_percent,
            },
            "schema_version": CONFIG.schema_version,
            "prediction_log": self.log.stats(),
            "load": ADMISSION.stats(),
        }

    @bentoml.on_shutdown
    def close(self) -> None:
        self.record_losses(now=True)
        self.log.close()


# The first added is the outermost: a shed request costs nothing more; LogRejections sees
# JsonOnly's 415s too.
ReleaseRisk.add_asgi_middleware(ApiDocument)
ReleaseRisk.add_asgi_middleware(ShedLoad)
ReleaseRisk.add_asgi_middleware(LogRejections)
ReleaseRisk.add_asgi_middleware(JsonOnly)
