"""``slipway package``: a registered MLflow version → a BentoML model → a Bento.

The BentoML store is repo-local (``BENTOML_HOME``, default ``$SLIPWAY_HOME/bentoml``). The model
is imported under an exact tag (``release-risk:v3``, never ``latest``) and the Bento is built
offline from a copy of exactly the files it contains. Its version carries their digest, so
packaging the same version again reuses the model and the Bento instead of rebuilding.

The built Bento is also exported to one archive stored with the version's run
(:mod:`slipway.serve.archive`), so that a deploy elsewhere fetches exactly those bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from slipway.config import ModelConfig
from slipway.errors import PackagingError
from slipway.fsutil import read_json, state_dir, tree_digest, write_json
from slipway.progress import Progress
from slipway.registry import (
    MODEL_COPY_DIR,
    MODEL_DIGEST_TAG,
    ModelRef,
    Registry,
    default_tracking_uri,
)
from slipway.serve.service import bento_model_tag

SCHEMA = "slipway.package/1"
REPO_ROOT = Path(__file__).resolve().parents[3]
MLFLOW_DIR = "mlflow"  # the MLflow model inside the BentoML model directory
BUILD_TIMEOUT_S = 600
# The platform modules bento/service.py imports (and what they import); nothing else is bundled.
SERVICE_MODULES = (
    "__init__.py",
    "config.py",
    "errors.py",
    "fsutil.py",
    "manifests.py",
    "probabilities.py",
    "serve/__init__.py",
    "serve/openapi.py",
    "serve/prediction_log.py",
    "serve/service.py",
)


def bentoml_home(tracking_uri: str | None = None) -> Path:
    """``BENTOML_HOME`` when set, else ``bentoml/`` beside the SQLite registry it mirrors.

    With the default registry that is ``$SLIPWAY_HOME/bentoml``; a tracking server without
    ``BENTOML_HOME`` uses the Slipway state directory too.
    """
    configured = os.environ.get("BENTOML_HOME", "").strip()
    if configured:
        return Path(configured).resolve()
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "bentoml").resolve()
    return state_dir() / "bentoml"


def bentoml_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a ``bentoml`` subprocess: the repo-local store, telemetry off."""
    return {
        **os.environ,
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "true",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **extra,
    }


def bentoml_executable() -> str:
    """The ``bentoml`` script next to this Python, so the same environment builds and serves."""
    beside = Path(sys.executable).parent / "bentoml"
    if beside.is_file():
        return str(beside)
    found = shutil.which("bentoml")
    if found is None:
        raise PackagingError("the bentoml command is not installed", "run `make venv`")
    return found


def model_dir(home: Path, tag: str) -> Path:
    name, version = tag.split(":")
    return home / "models" / name / version


def import_model(
    config: ModelConfig,
    registry: Registry,
    version: str,
    progress: Progress = lambda _m: None,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Copy a registered version into the BentoML store under its exact tag (idempotent).

    The MLflow model is loaded once before it is stored, so a version whose model file cannot
    be loaded is refused here rather than at serving time. When ``out_dir`` holds the copy
    ``slipway train`` left (``OUT/model``) with the registry's digest, that copy is stored
    instead of downloading the version; and when ``OUT/gate.json`` passed this version, which
    the gate loaded and scored, it is not loaded again.
    """
    home = bentoml_home(registry.tracking_uri)
    tag = bento_model_tag(config.name, str(version))
    stored = model_dir(home, tag)
    ref = registry.get(config.name, str(version))
    if (stored / "model.yaml").is_file():
        info = yaml.safe_load((stored / "model.yaml").read_text(encoding="utf-8")) or {}
        run_id = (info.get("metadata") or {}).get("run_id")
        if run_id != ref.run_id:
            raise PackagingError(
                f"{tag} in {home} was imported from run {run_id}, but {ref.uri} in "
                f"{registry.tracking_uri} is run {ref.run_id}",
                "keep one BentoML store per registry: set BENTOML_HOME (or SLIPWAY_HOME)",
            )
        progress(f"model {tag} already in {home}")
        return {"tag": tag, "path": str(stored), "reused": True, **_digest_of(stored)}
    progress(f"importing {ref.uri} into the BentoML store as {tag}")
    with tempfile.TemporaryDirectory(prefix="slipway-model-") as tmp, _quiet_bentoml():
        import bentoml  # deferred: importing BentoML costs seconds
        from bentoml._internal.models import ModelStore

        local = _verified_copy(out_dir, ref, progress) or _download(registry, ref, Path(tmp))
        digest = tree_digest(local)
        with bentoml.models.create(
            tag,
            labels={"slipway-model": config.name, "slipway-version": str(version)},
            metadata={
                "model_uri": ref.uri,
                "run_id": ref.run_id,
                "model_digest": f"sha256:{digest}",
                **{k: v for k, v in ref.tags.items() if k.startswith("slipway.")},
            },
            _model_store=ModelStore(home / "models"),
        ) as created:
            shutil.copytree(local, created.path_of(MLFLOW_DIR))
    return {"tag": tag, "path": str(stored), "reused": False, "model_digest": f"sha256:{digest}"}


def _verified_copy(out_dir: Path | None, ref: ModelRef, progress: Progress) -> Path | None:
    """``OUT/model`` when it holds ``ref``'s registered bytes and ``OUT/gate.json`` passed
    this very version (so it was loaded and scored there); else None."""
    if out_dir is None:
        return None
    copy = out_dir / MODEL_COPY_DIR
    expected = ref.tags.get(MODEL_DIGEST_TAG)
    gate = out_dir / "gate.json"
    if not expected or not copy.is_dir() or not gate.is_file():
        return None
    try:
        verdict = read_json(gate)
        candidate, passed = verdict["candidate"], verdict["status"] == "pass"
    except (ValueError, KeyError, TypeError):
        return None
    same = str(candidate.get("version")) == ref.version and candidate.get("run_id") == ref.run_id
    if not (passed and same and f"sha256:{tree_digest(copy)}" == expected):
        return None
    progress(f"using {copy}: the registered bytes the gate passed")
    return copy


def _download(registry: Registry, ref: ModelRef, into: Path) -> Path:
    """Download ``ref``'s MLflow model and load it once, so a broken one is refused here."""
    import mlflow
    import mlflow.artifacts
    import mlflow.sklearn

    mlflow.set_tracking_uri(registry.tracking_uri)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=into))
        mlflow.sklearn.load_model(str(local))
    except Exception as exc:
        raise PackagingError(
            f"cannot load {ref.uri} for packaging: {type(exc).__name__}: {exc}",
            "check that the version was logged by `slipway train` with this MLflow",
        ) from exc
    return local


@contextlib.contextmanager
def _quiet_bentoml() -> Iterator[None]:
    """BentoML 1.4.39 builds pathspec patterns and pydantic schemas the deprecated way; not
    ours to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "GitWildMatchPattern", DeprecationWarning)
        warnings.filterwarnings("ignore", ".*__get_pydantic_core_schema__", DeprecationWarning)
        yield


def _digest_of(stored: Path) -> dict[str, str]:
    return {"model_digest": f"sha256:{tree_digest(stored / MLFLOW_DIR)}"}


def build_files(config_path: Path) -> dict[str, Path]:
    """Every file the Bento contains, by its path inside the build context."""
    files = {
        "bento/service.py": REPO_ROOT / "bento" / "service.py",
        "bento/bentofile.yaml": REPO_ROOT / "bento" / "bentofile.yaml",
        "model/slipway.yaml": config_path,
    }
    for module in SERVICE_MODULES:
        files[f"src/slipway/{module}"] = REPO_ROOT / "src" / "slipway" / module
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise PackagingError(f"files for the Bento are missing: {missing}", "restore them")
    return files


def package(
    config: ModelConfig,
    registry: Registry,
    version: str,
    out_dir: Path,
    progress: Progress = lambda _m: None,
    config_path: Path | None = None,
) -> dict[str, Any]:
    """Import ``version`` and build its Bento (both reused when present); write package.json.

    ``config_path`` is the slipway.yaml bundled as the contract (default: the project's).
    """
    config_path = config_path or config.root / "slipway.yaml"
    model = import_model(config, registry, version, progress, out_dir)
    home = bentoml_home(registry.tracking_uri)
    with tempfile.TemporaryDirectory(prefix="slipway-bento-") as tmp:
        context = Path(tmp)
        for inside, source in build_files(config_path).items():
            (context / inside).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, context / inside)
        write_json(context / "bento" / "pinned.json", {"model": config.name, "version": version})
        files_digest = tree_digest(context)
        digest = hashlib.sha256(f"{model['model_digest']}\n{files_digest}".encode()).hexdigest()
        bento_name = f"{config.name}-service"
        bento_version = f"v{version}-{digest[:12]}"
        bento_tag = f"{bento_name}:{bento_version}"
        reused = (home / "bentos" / bento_name / bento_version / "bento.yaml").is_file()
        if reused:
            progress(f"bento {bento_tag} already built")
        else:
            progress(f"building bento {bento_tag} (offline)")
            _build(context, home, bento_version, version, config.name)
    from slipway.serve.archive import store_archive

    archive = store_archive(config, registry, version, bento_tag, f"sha256:{digest}", progress)
    document = {
        "schema": SCHEMA,
        "model": config.name,
        "version": str(version),
        "model_tag": model["tag"],
        "model_digest": model["model_digest"],
        "bento_tag": bento_tag,
        "digest": f"sha256:{digest}",
        "bentoml_home": str(home),
        "archive": archive["archive"],
        "archive_sha256": archive["archive_sha256"],
        "reused": {"model": model["reused"], "bento": reused, "archive": archive["reused"]},
        "packaged_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(out_dir / "package.json", document)
    return document


def _build(context: Path, home: Path, bento_version: str, version: str, name: str) -> None:
    command = [
        bentoml_executable(),
        "build",
        str(context),
        "--bentofile",
        str(context / "bento" / "bentofile.yaml"),
        "--version",
        bento_version,
        "--output",
        "tag",
    ]
    env = bentoml_env(
        home,
        SLIPWAY_CONFIG=str(context / "model" / "slipway.yaml"),
        PYTHONPATH=str(context / "src"),
    )
    for variable in ("SLIPWAY_ENV", "SLIPWAY_MANIFEST"):  # the Bento serves its pinned version
        env.pop(variable, None)
    try:
        done = subprocess.run(
            command,
            cwd=context,
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PackagingError(
            f"bentoml build did not finish in {BUILD_TIMEOUT_S} s", "check bento/bentofile.yaml"
        ) from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise PackagingError(
            f"bentoml build failed for {name} v{version}:\n{tail}",
            "fix bento/service.py or bento/bentofile.yaml; the build runs offline",
        )


def packaged_version(out_dir: Path) -> str | None:
    """The version in ``OUT/train.json``, the default for ``slipway package``."""
    path = out_dir / "train.json"
    return str(read_json(path)["version"]) if path.is_file() else None
