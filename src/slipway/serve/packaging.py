"""``slipway package``: a registered MLflow version → a BentoML model → a Bento.

The BentoML store is repo-local (``BENTOML_HOME``, default ``$SLIPWAY_HOME/bentoml``). The model
is imported under an exact tag (``release-risk:v3``, never ``latest``) and the Bento is built
offline from a copy of exactly the files it contains. Its version carries their digest, so
packaging the same version again reuses the model and the Bento instead of rebuilding.

The built Bento is also exported to one archive, stored with the version's run under
``bento/`` and named by the version's tags (:data:`ARCHIVE_TAGS`), so that a deploy elsewhere
fetches exactly those bytes (:func:`fetch_bento`) instead of building again.
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
    PACKAGE_DIGEST_TAG,
    ModelRef,
    Registry,
    default_tracking_uri,
)
from slipway.serve.service import bento_model_tag

SCHEMA = "slipway.package/1"
REPO_ROOT = Path(__file__).resolve().parents[3]
MLFLOW_DIR = "mlflow"  # the MLflow model inside the BentoML model directory
BUILD_TIMEOUT_S = 600
# Version tags naming the Bento `slipway package` built and the archive of it in the registry.
BENTO_TAG_TAG = "slipway.bento_tag"
DIGEST_TAG = PACKAGE_DIGEST_TAG
ARCHIVE_TAG = "slipway.bento_archive"
ARCHIVE_SHA256_TAG = "slipway.bento_archive_sha256"
ARCHIVE_TAGS = (BENTO_TAG_TAG, DIGEST_TAG, ARCHIVE_TAG, ARCHIVE_SHA256_TAG)
ARCHIVE_DIR = "bento"  # the run's artifact directory for the archive
# The platform modules bento/service.py imports (and what they import); nothing else is bundled.
SERVICE_MODULES = (
    "__init__.py",
    "config.py",
    "errors.py",
    "fsutil.py",
    "manifests.py",
    "probabilities.py",
    "serve/__init__.py",
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
        candidate = read_json(gate)["candidate"]
        passed = read_json(gate)["status"] == "pass"
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


def archive_path(bento_tag: str) -> str:
    """The archive's artifact path in the run: ``bento/NAME-VERSION.bento``."""
    return f"{ARCHIVE_DIR}/{bento_tag.replace(':', '-')}.bento"


def store_archive(
    config: ModelConfig,
    registry: Registry,
    version: str,
    bento_tag: str,
    digest: str,
    progress: Progress = lambda _m: None,
) -> dict[str, Any]:
    """Export ``bento_tag`` to one archive, store it with the version's run, then tag the
    version with it (:data:`ARCHIVE_TAGS`); reused when the tags already name this digest.

    The tags are set only once the archive is stored, so they never name a missing archive.
    """
    ref = registry.get(config.name, str(version))
    artifact = archive_path(bento_tag)
    wanted = {BENTO_TAG_TAG: bento_tag, DIGEST_TAG: digest, ARCHIVE_TAG: artifact}
    stored_sha256 = ref.tags.get(ARCHIVE_SHA256_TAG)
    if stored_sha256 and all(ref.tags.get(key) == value for key, value in wanted.items()):
        progress(f"archive {artifact} already stored with {ref.uri}")
        return {"archive": artifact, "archive_sha256": stored_sha256, "reused": True}
    sha256 = _log_archive(registry, ref, bento_tag, bentoml_home(registry.tracking_uri), progress)
    try:
        registry.tag(config.name, str(version), {**wanted, ARCHIVE_SHA256_TAG: sha256})
    except Exception as exc:  # tags that disagree are refused by fetch_bento
        raise PackagingError(
            f"stored {artifact} but could not tag {ref.uri} with it: {type(exc).__name__}: {exc}",
            "check the registry, then run `slipway package` again to tag the version",
        ) from exc
    return {"archive": artifact, "archive_sha256": sha256, "reused": False}


def _log_archive(
    registry: Registry, ref: ModelRef, bento_tag: str, home: Path, progress: Progress
) -> str:
    """Export ``bento_tag`` and log the archive as :func:`archive_path` of ``ref``'s run;
    its SHA-256."""
    if ref.run_id is None:
        raise PackagingError(
            f"{ref.uri} has no run to store its Bento archive with",
            "register the version with `slipway train`, which logs it with a run",
        )
    artifact = archive_path(bento_tag)
    with tempfile.TemporaryDirectory(prefix="slipway-archive-") as tmp:
        local = Path(tmp) / Path(artifact).name
        _export(bento_tag, home, local)
        sha256 = _sha256(local)
        progress(f"storing {artifact} with run {ref.run_id}")
        try:
            registry.log_artifact(ref.run_id, str(local), ARCHIVE_DIR)
        except Exception as exc:
            raise PackagingError(
                f"cannot store the Bento archive {artifact} in {registry.tracking_uri}: "
                f"{type(exc).__name__}: {exc}",
                "check that the registry's artifact store is reachable and writable, then run "
                "`slipway package` again; the version was not tagged",
            ) from exc
    return sha256


def fetch_bento(
    config: ModelConfig,
    registry: Registry,
    version: str,
    expected_digest: str | None,
    home: Path,
    progress: Progress = lambda _m: None,
) -> dict[str, Any]:
    """Import the Bento `slipway package` stored for ``version`` into the store at ``home``.

    Refused unless the version's tags name an archive whose package digest is
    ``expected_digest`` (the manifest's) and the downloaded bytes have the recorded SHA-256;
    nothing is imported then. A Bento already in ``home`` under the same tag is reused.
    """
    ref = registry.get(config.name, str(version))
    tags = _archive_tags(ref, expected_digest)
    bento_tag = tags[BENTO_TAG_TAG]
    with tempfile.TemporaryDirectory(prefix="slipway-fetch-") as tmp:
        progress(f"downloading {tags[ARCHIVE_TAG]} of {ref.uri}")
        local = _download_archive(registry, ref, tags[ARCHIVE_TAG], Path(tmp))
        if _sha256(local) != tags[ARCHIVE_SHA256_TAG]:
            raise PackagingError(
                f"the Bento archive {tags[ARCHIVE_TAG]} of {ref.uri} is not the one "
                f"`slipway package` stored: its SHA-256 is not {tags[ARCHIVE_SHA256_TAG]}",
                f"run `slipway package --version {ref.version}` again to store a new archive, "
                "and promote the digest it prints",
            )
        name, bento_version = bento_tag.split(":")
        reused = (home / "bentos" / name / bento_version / "bento.yaml").is_file()
        if reused:
            progress(f"bento {bento_tag} already in {home}")
        else:
            progress(f"importing bento {bento_tag} into {home}")
            _import(local, bento_tag, home)
    return {"bento_tag": bento_tag, "digest": tags[DIGEST_TAG], "reused": reused}


def _archive_tags(ref: ModelRef, expected_digest: str | None) -> dict[str, str]:
    """The version's :data:`ARCHIVE_TAGS`, once they are all set, agree with each other and
    carry ``expected_digest``; else :class:`PackagingError`."""
    missing = [tag for tag in ARCHIVE_TAGS if not ref.tags.get(tag)]
    if missing:
        raise PackagingError(
            f"{ref.uri} has no stored Bento archive (tags missing: {', '.join(missing)})",
            f"run `slipway package --version {ref.version}` to build it and store its archive",
        )
    tags = {tag: ref.tags[tag] for tag in ARCHIVE_TAGS}
    if tags[DIGEST_TAG] != expected_digest:
        raise PackagingError(
            f"{ref.uri}'s Bento has digest {tags[DIGEST_TAG]}, not {expected_digest}",
            "deploy the digest `slipway package` printed for this version, or package the "
            "version the manifest names",
        )
    bento_tag = tags[BENTO_TAG_TAG]
    agree = bento_tag.endswith(f"-{tags[DIGEST_TAG].removeprefix('sha256:')[:12]}")
    if not agree or tags[ARCHIVE_TAG] != archive_path(bento_tag):
        raise PackagingError(
            f"the archive tags of {ref.uri} disagree: {tags}",
            f"run `slipway package --version {ref.version}` again to store and tag its archive",
        )
    return tags


def _download_archive(registry: Registry, ref: ModelRef, artifact: str, into: Path) -> Path:
    """Download ``artifact`` of ``ref``'s run into ``into``; :class:`PackagingError` if not."""
    try:
        return Path(registry.download_artifact(str(ref.run_id), artifact, str(into)))
    except Exception as exc:
        raise PackagingError(
            f"cannot download the Bento archive {artifact} of {ref.uri}: "
            f"{type(exc).__name__}: {exc}",
            f"check the registry's artifact store, or run `slipway package --version "
            f"{ref.version}` again to store a new archive",
        ) from exc


@contextlib.contextmanager
def _bento_stores(home: Path) -> Iterator[tuple[Any, Any]]:
    """BentoML's bento and model stores at ``home``, also as its defaults meanwhile.

    Exporting a Bento copies its models from the default model store, and importing one
    saves them there; neither takes a store argument for them.
    """
    with _quiet_bentoml():
        from bentoml._internal.bento import BentoStore
        from bentoml._internal.configuration.containers import BentoMLContainer
        from bentoml._internal.models import ModelStore

        bentos, models = BentoStore(str(home / "bentos")), ModelStore(str(home / "models"))
        with BentoMLContainer.bento_store.patch(bentos), BentoMLContainer.model_store.patch(models):
            yield bentos, models


def _export(bento_tag: str, home: Path, target: Path) -> None:
    """Export ``bento_tag`` from the store at ``home`` to the archive file ``target``."""
    try:
        with _bento_stores(home) as (bentos, _models):
            import bentoml

            bentoml.export_bento(bento_tag, str(target), _bento_store=bentos)
    except Exception as exc:
        raise PackagingError(
            f"cannot export bento {bento_tag} from {home}: {type(exc).__name__}: {exc}",
            "remove the Bento from the store (`bentoml delete`) and run `slipway package` again",
        ) from exc


def _import(archive: Path, bento_tag: str, home: Path) -> None:
    """Import the archive into the store at ``home``, refusing one of another tag."""
    with _bento_stores(home) as (bentos, models):
        from bentoml._internal.bento import Bento

        try:
            bento = Bento.import_from(str(archive))
        except Exception as exc:
            raise PackagingError(
                f"cannot read the Bento archive {archive.name}: {type(exc).__name__}: {exc}",
                "run `slipway package` again for this version to store a new archive",
            ) from exc
        if str(bento.tag) != bento_tag:
            raise PackagingError(
                f"the Bento archive {archive.name} holds {bento.tag}, not {bento_tag}",
                "run `slipway package` again for this version to store a new archive",
            )
        bento.save(bentos, models)


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def packaged_version(out_dir: Path) -> str | None:
    """The version in ``OUT/train.json``, the default for ``slipway package``."""
    path = out_dir / "train.json"
    return str(read_json(path)["version"]) if path.is_file() else None
