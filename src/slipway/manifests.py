"""Environment manifests, ``environments/<env>.yaml``: what is deployed where, and the rules
a version must meet to get there.

A manifest declares every field a promotion changes, in a fixed key order, so promoting a
version is a diff of its ``version`` and ``digest`` lines. :func:`update_manifest` rewrites
values in place, keeping the key order and every comment. The JSON Schema beside the
manifests (``environments/manifest.schema.json``, :func:`schema_text`) is for editors.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from slipway.errors import ConfigError
from slipway.fsutil import atomic_write_text

ENVIRONMENTS = ("staging", "production")
DEFAULT_DIR = Path("environments")
SCHEMA_FILE = "manifest.schema.json"
SCHEMA_LINE = f"# yaml-language-server: $schema={SCHEMA_FILE}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rollout(_Strict):
    """How a candidate version takes traffic next to the stable one."""

    mode: Literal["none", "canary", "shadow"] = "none"
    candidate_version: int | None = Field(default=None, ge=1)
    canary_percent: float = Field(default=0, ge=0, le=100)

    @model_validator(mode="after")
    def _coherent(self) -> Rollout:
        if self.mode == "none" and self.candidate_version is not None:
            raise ValueError("candidate_version is set but mode is none; set mode or clear it")
        if self.mode != "none" and self.candidate_version is None:
            raise ValueError(f"mode {self.mode} needs a candidate_version")
        if self.mode != "canary" and self.canary_percent:
            raise ValueError("canary_percent only applies to mode canary; set it to 0")
        return self


class Freeze(_Strict):
    """A window in which no promotion into the environment is merged."""

    start: AwareDatetime
    end: AwareDatetime
    reason: str = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> Freeze:
        if self.end <= self.start:
            raise ValueError("a freeze window must end after it starts")
        return self

    def covers(self, moment: datetime) -> bool:
        """Whether ``moment`` falls in the window: from ``start`` up to, not including, ``end``."""
        return self.start <= moment < self.end


class Promotion(_Strict):
    """What a version must have done before it is promoted into this environment."""

    from_stage: Literal["staging"] | None = Field(default=None, alias="from")
    soak_hours: float = Field(default=0, ge=0)
    freeze: tuple[Freeze, ...] = ()

    @model_validator(mode="after")
    def _soak_needs_a_stage(self) -> Promotion:
        if self.soak_hours and self.from_stage is None:
            raise ValueError("soak_hours needs `from`: the stage where the version soaks")
        return self


# REPO:TAG@sha256:DIGEST: an image by tag (for people) and digest (what runs).
IMAGE_PATTERN = r"^[^@\s]+:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}@sha256:[0-9a-f]{64}$"
_QUANTITY = {
    "cpu": (r"^([0-9]+(\.[0-9]+)?)(m?)$", {"": 1000, "m": 1}, "250m or 1"),
    "memory": (
        r"^([0-9]+)(Ki|Mi|Gi|Ti|K|M|G|T)?$",
        {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
        | {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40},
        "512Mi or 1Gi",
    ),
}


def quantity(value: str, kind: Literal["cpu", "memory"]) -> float:
    """A Kubernetes resource quantity as a number (millicores or bytes); a malformed one is a
    ValueError that shows the expected form."""
    pattern, units, example = _QUANTITY[kind]
    match = re.match(pattern, value)
    if match is None:
        raise ValueError(f"{value!r} is not a {kind} quantity; write it like {example}")
    return float(match.group(1)) * units[match.groups()[-1] or ""]


class Kubernetes(_Strict):
    """The objects ``slipway render ENV`` writes for ``target: kubernetes``: where the image is
    pushed, which git repository Argo CD or Flux reads, how many replicas and how much CPU and
    memory each gets."""

    repository: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*(:[0-9]+)?(/[a-z0-9][a-z0-9._-]*)+$")
    image: str | None = Field(default=None, pattern=IMAGE_PATTERN)
    git_url: str = Field(pattern=r"^(https://|ssh://|git@)\S+$")
    git_revision: str = Field(default="main", min_length=1)
    namespace: str = Field(default="release-risk", pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    min_replicas: int = Field(default=2, ge=1)
    max_replicas: int = Field(default=4, ge=1)
    cpu_target_percent: int = Field(default=70, ge=1, le=100)
    min_available: int = Field(default=1, ge=0)
    cpu_request: str = "250m"
    cpu_limit: str = "1"
    memory_request: str = "512Mi"
    memory_limit: str = "1Gi"

    @model_validator(mode="after")
    def _coherent(self) -> Kubernetes:
        if self.image is not None and not self.image.startswith(f"{self.repository}:"):
            raise ValueError(
                f"image {self.image} is not in repository {self.repository}; promote a version "
                "whose image was pushed there, or correct `repository`"
            )
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas is below min_replicas; raise it or lower min_replicas")
        if self.min_available >= self.min_replicas:
            raise ValueError(
                "min_available must be below min_replicas, or no pod can ever be evicted "
                "(a node drain would hang); lower it or raise min_replicas"
            )
        for kind in ("cpu", "memory"):
            request, limit = getattr(self, f"{kind}_request"), getattr(self, f"{kind}_limit")
            if quantity(limit, kind) < quantity(request, kind):  # type: ignore[arg-type]
                raise ValueError(f"{kind}_limit {limit} is below {kind}_request {request}")
        return self


class Manifest(_Strict):
    """One environment: the model, the stable version, the rules of promotion into it, and the
    rollout of a candidate."""

    environment: Literal["staging", "production"]
    model: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    version: int | None = Field(ge=1)
    digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")
    target: Literal["local", "kubernetes"] = "local"
    promotion: Promotion = Promotion()
    rollout: Rollout = Rollout()
    kubernetes: Kubernetes | None = None

    @model_validator(mode="after")
    def _deployable(self) -> Manifest:
        if self.version is None and self.rollout.mode != "none":
            raise ValueError("a rollout needs a stable version to roll out next to")
        if self.rollout.candidate_version is not None and (
            self.rollout.candidate_version == self.version
        ):
            raise ValueError("candidate_version equals version; a rollout needs two versions")
        if self.promotion.from_stage == self.environment:
            raise ValueError("promotion.from names this environment; name the stage before it")
        if self.target == "kubernetes" and self.kubernetes is None:
            raise ValueError(
                "target kubernetes needs a `kubernetes:` section with at least `repository` "
                "and `git_url` (README: A Kubernetes target for Argo CD and Flux)"
            )
        if self.target == "local" and self.kubernetes is not None:
            raise ValueError(
                "a `kubernetes:` section is set but target is local; set target: kubernetes "
                "or remove the section"
            )
        if self.target == "kubernetes" and self.rollout.mode != "none":
            raise ValueError(
                "rollout modes run on the local target only; set rollout.mode: none for "
                "target kubernetes"
            )
        return self

    def versions(self) -> list[int]:
        """Every version this manifest needs loaded: stable first, then the candidate."""
        found = [self.version] if self.version is not None else []
        if self.rollout.candidate_version is not None:
            found.append(self.rollout.candidate_version)
        return found


def manifest_path(environment: str, directory: Path = DEFAULT_DIR) -> Path:
    """``environments/<environment>.yaml``; an unknown environment is a :class:`ConfigError`."""
    if environment not in ENVIRONMENTS:
        raise ConfigError(
            f"unknown environment {environment!r}",
            f"use one of {', '.join(ENVIRONMENTS)}",
        )
    return directory / f"{environment}.yaml"


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in err['loc']) or '(top level)'}: {err['msg']}"
        for err in exc.errors()
    )


def parse_manifest(text: str, source: str) -> Manifest:
    """Validate manifest YAML; every problem is reported with its key path."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}", "fix the YAML syntax") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a mapping", "see README: Serving")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            f"{source} is invalid: {_errors(exc)}", "correct those keys (README: Serving)"
        ) from exc


def load_manifest(path: Path) -> Manifest:
    """Load and validate one environment manifest."""
    if not path.is_file():
        raise ConfigError(
            f"no environment manifest at {path}",
            "run from the repository root or create it (see environments/staging.yaml)",
        )
    return parse_manifest(path.read_text(encoding="utf-8"), str(path))


_COMMENTS = {
    "environment": "staging | production",
    "model": "registered model name (model/slipway.yaml `name`)",
    "version": "registered version serving the traffic; null: nothing deployed yet",
    "digest": "digest printed by `slipway package` for that version",
    "target": "local: `bentoml serve` on 127.0.0.1",
    "kubernetes": "the objects `slipway render ENV` writes under environments/kubernetes/",
    "repository": "image repository the containerize job pushes to (no tag)",
    "image": "REPO:TAG@sha256:DIGEST of the version's image; set by a promotion",
    "git_url": "the git repository Argo CD or Flux syncs from",
    "git_revision": "the branch they follow",
    "namespace": "namespace of the objects",
    "min_replicas": "fewest pods (the HorizontalPodAutoscaler's floor)",
    "max_replicas": "most pods (its ceiling)",
    "cpu_target_percent": "average CPU use, % of the request, it scales at",
    "min_available": "pods a voluntary disruption leaves (PodDisruptionBudget)",
    "cpu_request": "CPU each pod is guaranteed",
    "cpu_limit": "CPU each pod may use at most",
    "memory_request": "memory each pod is guaranteed",
    "memory_limit": "memory each pod may use at most",
    "promotion": "what a version must have done before it comes here",
    "from": "stage the version must have run in first; null: none",
    "soak_hours": "hours it must have run there with passing smoke tests",
    "freeze": "windows with no promotion: [{start, end, reason}], times with a zone",
    "rollout": "a candidate next to the stable version",
    "mode": "none | canary | shadow",
    "candidate_version": "registered version of the candidate; null when mode is none",
    "canary_percent": "canary: share of release_ids (stable hash) routed to the candidate",
}


def _scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


def render_manifest(manifest: Manifest) -> str:
    """A new manifest file: every field in declaration order, each with its comment."""
    lines = [
        SCHEMA_LINE,
        f"# What runs in {manifest.environment}. Merging a change to this file deploys it.",
        "# Keys are fixed and always present: a promotion changes the version and digest lines.",
    ]
    for key, value in manifest.model_dump(mode="json", by_alias=True).items():
        if key == "kubernetes" and value is None:  # only a kubernetes target has the section
            continue
        if isinstance(value, dict):
            lines.append(f"{key}:  # {_COMMENTS[key]}")
            lines.extend(
                f"  {sub}: {_scalar(inner)}  # {_COMMENTS[sub]}" for sub, inner in value.items()
            )
        else:
            lines.append(f"{key}: {_scalar(value)}  # {_COMMENTS[key]}")
    return "\n".join(lines) + "\n"


def update_manifest(path: Path, changes: dict[str, Any]) -> Manifest:
    """Set values (``version``, ``rollout.mode``…) in place; comments and key order are kept.

    Only the lines of changed values differ afterwards. The result is validated before it is
    written, so an invalid change leaves the file as it was.
    """
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        indent = "  " * len(parents)
        pattern = re.compile(rf"^({indent}{re.escape(key)}:[ \t]*)([^#\n]*?)([ \t]*#.*)?(\n?)$")
        hits = [i for i, line in enumerate(lines) if pattern.match(line)]
        if len(hits) != 1:
            raise ConfigError(f"{path} has no single `{dotted}` key", "restore the manifest keys")
        match = pattern.match(lines[hits[0]])
        assert match is not None
        head, _old, comment, newline = match.groups()
        lines[hits[0]] = f"{head}{_scalar(value)}{comment or ''}{newline}"
    updated = "".join(lines)
    manifest = parse_manifest(updated, str(path))
    atomic_write_text(path, updated)
    return manifest


def schema_text() -> str:
    """The JSON Schema of a manifest, as committed in ``environments/manifest.schema.json``."""
    schema = Manifest.model_json_schema(by_alias=True)
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Slipway environment manifest",
        **schema,
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
