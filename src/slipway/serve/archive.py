"""The Bento archive in the registry: build once, promote the same bytes.

``slipway package`` exports the Bento it built to one archive, stores it with the version's run
under ``bento/`` and only then tags the version with it (:data:`ARCHIVE_TAGS`);
:func:`fetch_bento` imports exactly that archive for a deploy, refusing any other.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from slipway.config import ModelConfig
from slipway.errors import PackagingError
from slipway.progress import Progress
from slipway.registry import PACKAGE_DIGEST_TAG, ModelRef, Registry
from slipway.serve.packaging import _quiet_bentoml, bentoml_home

# Version tags naming the Bento `slipway package` built and the archive of it in the registry.
BENTO_TAG_TAG = "slipway.bento_tag"
DIGEST_TAG = PACKAGE_DIGEST_TAG
ARCHIVE_TAG = "slipway.bento_archive"
ARCHIVE_SHA256_TAG = "slipway.bento_archive_sha256"
ARCHIVE_TAGS = (BENTO_TAG_TAG, DIGEST_TAG, ARCHIVE_TAG, ARCHIVE_SHA256_TAG)
ARCHIVE_DIR = "bento"  # the run's artifact directory for the archive


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
