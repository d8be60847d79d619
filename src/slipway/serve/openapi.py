"""The service's API document (``GET /docs.json``): what it accepts and answers, exactly.

BentoML generates a document from the API's type hints, but it leaves the request body
optional, describes a 400's ``detail`` as a string (it is a list of field errors), names
statuses the service never answers (404) and none of those it does (415, 503 with
``Retry-After``), leaves ``GET /metadata`` out, and writes JSON Schema's ``type: null``,
which OpenAPI 3.0 does not have. :func:`api_document` keeps BentoML's probes and replaces
the rest with schemas generated from the models here and the request schema of the data
contract, in OpenAPI 3.0 form (``nullable``, ``example``).
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

OPENAPI_VERSION = "3.0.3"
SCHEMAS = "#/components/schemas/"
PROBES = ("/healthz", "/livez", "/readyz", "/metrics")  # BentoML's, kept as it describes them


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


# The bodies of refusals and failures, as BentoML (400, 5xx) and JsonOnly (415) write them.
FIELD_ERROR = {
    "type": "object",
    "description": "One reason a request was refused: where (loc), which rule (type), why.",
    "additionalProperties": False,
    "required": ["type", "loc", "msg"],
    "properties": {
        "type": {"type": "string", "description": "pydantic's error type, or media type"},
        "loc": {
            "type": "array",
            "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "description": "body key, record index, field; or headers, content-type",
        },
        "msg": {"type": "string"},
        "url": {"type": "string", "description": "pydantic's page on the error type"},
        "input": {"type": "string", "description": "415: the Content-Type sent"},
    },
}
REFUSAL = {
    "type": "object",
    "description": "A 400 (the body is not JSON or breaks the contract) or a 415 (not JSON).",
    "additionalProperties": False,
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string"},
        "detail": {"type": "array", "minItems": 1, "items": {"$ref": SCHEMAS + "FieldError"}},
    },
}
FAILURE = {
    "type": "object",
    "description": "What went wrong, in one sentence.",
    "additionalProperties": False,
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}


class Rollout(_Closed):
    mode: Literal["none", "canary", "shadow"]
    candidate_version: str | None
    canary_percent: float


class LogCounters(_Closed):
    """This worker's prediction-log counters since it started."""

    path: str
    written: int
    dropped: int
    errors: int


class Load(_Closed):
    """This worker's admission: requests scored now, the most it takes, and those refused."""

    worker: int = Field(description="the worker process's id")
    in_flight: int
    max_concurrency: int
    shed: int = Field(description="requests answered 503 because max_concurrency were in flight")


class Metadata(_Closed):
    """``GET /metadata``: what this instance serves."""

    model: str
    version: str
    digest: str | None
    model_digest: str | None
    environment: str
    rollout: Rollout
    schema_version: int
    prediction_log: LogCounters
    load: Load


def _json(description: str, ref: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(ref)}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": SCHEMAS + name}


def api_document(
    generated: dict[str, Any],
    records: Any,
    prediction: type[BaseModel],
    *,
    title: str,
    version: str,
    retry_after_s: int,
    max_concurrency: int,
    timeout_s: float,
) -> dict[str, Any]:
    """The API document: BentoML's ``generated`` one with ``POST /predict`` and
    ``GET /metadata`` described exactly; ``records`` is the annotated type of the request's
    ``records`` (the contract's record schema, its length limits and an example)."""
    schemas: dict[str, Any] = {}
    records_schema = _schema(TypeAdapter(records), schemas)
    schemas["PredictRequest"] = {
        "type": "object",
        "required": ["records"],
        "properties": {"records": records_schema},
        "description": "Release records to score; other keys are ignored.",
    }
    for model in (prediction, Metadata):
        schemas[model.__name__] = _schema(TypeAdapter(model), schemas)
    schemas.update(FieldError=FIELD_ERROR, Refusal=REFUSAL, Failure=FAILURE)
    schemas["Predictions"] = {"type": "array", "items": _ref(prediction.__name__)}
    retry = {
        "Retry-After": {
            "description": "seconds to wait before trying again",
            "required": True,
            "schema": {"type": "integer", "minimum": 1, "example": retry_after_s},
        }
    }
    predict = {
        "operationId": "predict",
        "tags": ["Service APIs"],
        "summary": "Score release records",
        "description": "One answer per record, in order. Requests are batched adaptively.",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("PredictRequest")}},
        },
        "responses": {
            "200": _json("one answer per record, in order", "Predictions"),
            "400": _json(
                "the body is not JSON or breaks the contract; each field error named", "Refusal"
            ),
            "415": _json("the body is not application/json", "Refusal"),
            "500": _json("scoring failed; the prediction log has the rows and error", "Failure"),
            "503": {
                **_json(
                    f"overloaded: {max_concurrency} requests in flight in this worker, or this "
                    f"one would wait past the batcher's latency budget; retry after Retry-After",
                    "Failure",
                ),
                "headers": retry,
            },
            "504": _json(f"not answered within {timeout_s:g} s", "Failure"),
        },
    }
    metadata = {
        "operationId": "metadata",
        "tags": ["Service APIs"],
        "summary": "What this instance serves",
        "responses": {
            "200": _json("model, versions, rollout, this worker's counters", "Metadata"),
            "503": _json("the service is starting", "Failure"),
        },
    }
    paths: dict[str, Any] = {"/predict": {"post": predict}, "/metadata": {"get": metadata}}
    for path in PROBES:
        if path in generated.get("paths", {}):
            paths[path] = copy.deepcopy(generated["paths"][path])
    if "get" in paths.get("/readyz", {}):
        paths["/readyz"]["get"]["responses"]["503"] = {"description": "not ready yet"}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": "Scores release records for risk. Every answer and every refusal is "
            "one line of the prediction log.",
        },
        "servers": [{"url": "/"}],
        "tags": copy.deepcopy(generated.get("tags", [])),
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _schema(adapter: TypeAdapter, schemas: dict[str, Any]) -> dict[str, Any]:
    """``adapter``'s JSON Schema in OpenAPI 3.0 form; its definitions go into ``schemas``."""
    generated = adapter.json_schema(ref_template=SCHEMAS + "{model}")
    for name, definition in generated.pop("$defs", {}).items():
        schemas[name] = openapi_30(definition)
    return openapi_30(generated)


def openapi_30(schema: Any) -> Any:
    """A JSON Schema (2020-12, as pydantic writes it) as an OpenAPI 3.0 Schema Object:
    ``anyOf [X, {type: null}]`` becomes X with ``nullable: true``, ``examples`` the first
    ``example``, ``const`` a one-value ``enum``, numeric ``exclusiveMinimum``/``Maximum``
    the boolean form."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():  # only subschemas are converted, never names or values
        if key in ("properties", "patternProperties", "$defs") and isinstance(value, dict):
            out[key] = {name: openapi_30(sub) for name, sub in value.items()}
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(value, list):
            out[key] = [openapi_30(sub) for sub in value]
        elif key in ("items", "additionalProperties", "not"):
            out[key] = openapi_30(value)
        else:
            out[key] = value
    for key in ("anyOf", "oneOf"):
        members = out.get(key)
        if isinstance(members, list) and {"type": "null"} in members:
            rest = [m for m in members if m != {"type": "null"}]
            del out[key]
            if len(rest) == 1:
                out = {**rest[0], **out}
            else:
                out[key] = rest
            out["nullable"] = True
    if "examples" in out:
        examples = out.pop("examples")
        if isinstance(examples, list) and examples:
            out["example"] = examples[0]
    if "const" in out:
        out["enum"] = [out.pop("const")]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(out.get(exclusive), int | float) and not isinstance(out[exclusive], bool):
            out[bound], out[exclusive] = out[exclusive], True
    return out
