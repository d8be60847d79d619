"""``slipway deploy ENV``: run what ``environments/ENV.yaml`` says, on the local target.

The new version starts beside the one serving, from the Bento archive ``slipway package``
stored (refused unless its digest is the manifest's), and is smoke-tested there. Only then is
traffic switched to it, the previous server stopped, the MLflow alias ``ENV`` moved and the
version tagged with when it started serving and how its smoke tests went. When the smoke tests
fail, the previous version keeps serving, the alias stays, and the version is tagged failed.
One deploy per environment runs at a time (a lock beside the servers' state).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slipway.config import ModelConfig
from slipway.errors import ServingError
from slipway.fsutil import read_json, write_json
from slipway.github import GitHubError
from slipway.manifests import Manifest, load_manifest, manifest_path
from slipway.progress import Progress
from slipway.promote.checks import deployed_tag, smoke_tag
from slipway.promote.deployments import DeploymentRecord, open_revert
from slipway.promote.repository import show, toplevel
from slipway.registry import Registry
from slipway.serve.archive import fetch_bento
from slipway.serve.packaging import bentoml_home
from slipway.serve.server import free_port, server_state, start_server, stop_pid, stop_server
from slipway.serve.smoke import smoke

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

SCHEMA = "slipway.deploy/1"
RESULT_TAG = "slipway.deploy.{environment}"  # success | failure: the last deploy of a version


def deploy(
    config: ModelConfig,
    registry: Registry,
    environment: str,
    directory: Path,
    config_path: Path,
    records: list[dict[str, Any]],
    out_dir: Path,
    max_p95_ms: float,
    timeout: float,
    progress: Progress = lambda _m: None,
    record: DeploymentRecord | None = None,
    base: str = "main",
    revert: bool = True,
) -> dict[str, Any]:
    """Deploy the manifest's version of ``environment``; writes ``OUT/deploy.json``.

    With ``record`` the deploy is a GitHub Deployment (in progress, then success or failure),
    and a failed smoke test opens the revert pull request against ``base`` (unless ``revert``
    is off: a caller that changed the manifest itself puts it back instead).
    """
    path = manifest_path(environment, directory)
    with _locked(environment, progress):
        manifest = load_manifest(path)
        if manifest.version is None or manifest.digest is None:
            raise ServingError(
                f"{path} names no version and digest to deploy",
                "promote a packaged version first: slipway promote ENV --version N",
            )
        if record is not None:
            record.start(str(manifest.version), manifest.digest)
        try:
            document = _deploy(
                config,
                registry,
                manifest,
                path,
                config_path,
                records,
                max_p95_ms,
                timeout,
                progress,
            )
        except Exception as exc:
            if record is not None:
                record.finish("failure", description=f"{type(exc).__name__}: {exc}")
            raise
        if record is not None:
            serving = document["serving"]
            url = serving["url"] if serving and document["status"] == "success" else ""
            description = f"v{document['version']}: smoke tests {document['smoke_verdict']}"
            record.finish(document["status"], url, description)
            document["deployment"] = {"id": record.id, "error": record.error}
            if document["status"] == "failure" and revert:
                document["revert"] = _revert(record, document, path, base, progress)
        write_json(out_dir / "deploy.json", document)
        return document


def _deploy(
    config: ModelConfig,
    registry: Registry,
    manifest: Manifest,
    path: Path,
    config_path: Path,
    records: list[dict[str, Any]],
    max_p95_ms: float,
    timeout: float,
    progress: Progress,
) -> dict[str, Any]:
    """Start ``manifest``'s version beside the serving one, smoke-test it, switch or keep."""
    environment = manifest.environment
    version = str(manifest.version)
    home = bentoml_home(registry.tracking_uri)
    fetched = fetch_bento(config, registry, version, manifest.digest, home, progress)
    owners = registry.get(config.name, version).tags.get("slipway.owners", "")
    previous = _running(environment)
    slot = f"{environment}-next"
    started = start_server(
        config,
        registry,
        path,
        config_path,
        free_port(),
        timeout,
        progress,
        slot=slot,
        bento_tag=fetched["bento_tag"],
    )
    progress(f"smoke-testing v{version} at {started['url']} beside the serving version")
    checked = smoke(started["url"], records, max_p95_ms, id_column=config.data.id_column)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if checked["passed"]:
        _switch(environment, slot, previous, path.read_text(encoding="utf-8"), progress)
        registry.set_alias(config.name, environment, version)
        result, serving = "success", started
    else:
        stop_server(slot)
        result, serving = "failure", previous
        progress(f"smoke tests failed: v{version} stopped; the previous version serves on")
    registry.tag(
        config.name,
        version,
        {
            smoke_tag(environment): "pass" if checked["passed"] else "fail",
            RESULT_TAG.format(environment=environment): result,
            **({deployed_tag(environment): now} if checked["passed"] else {}),
        },
    )
    return {
        "schema": SCHEMA,
        "environment": environment,
        "model": config.name,
        "version": version,
        "digest": manifest.digest,
        "bento_tag": fetched["bento_tag"],
        "status": result,
        "serving": {"version": serving["version"], "url": serving["url"]} if serving else None,
        "previous": {"version": previous["version"], "url": previous["url"]} if previous else None,
        "owners": owners,
        "smoke": checked,
        "smoke_verdict": "passed" if checked["passed"] else "failed",
        "deployed_at": now,
        "deployment": None,
        "revert": None,
    }


def _revert(
    record: DeploymentRecord,
    document: dict[str, Any],
    path: Path,
    base: str,
    progress: Progress,
) -> dict[str, Any] | None:
    """The revert pull request to what serves: its manifest as deployed, else the manifest's
    previous commit; None when there is neither (nothing ever deployed there)."""
    previous = _running(document["environment"])
    text = (previous or {}).get("manifest_text")
    root = toplevel(path.parent)
    relative = path.resolve().relative_to(root).as_posix()
    if text is None:
        text = show(root, "HEAD~1", relative)
    if not text:
        progress("nothing deployed before and no earlier manifest: no revert pull request")
        return None
    owners = [o for o in document.get("owners", "").split(",") if o]
    try:
        return open_revert(record.github, document, relative, text, base, owners, progress)
    except GitHubError as exc:
        progress(f"could not open the revert pull request: {exc.message}")
        return {"action": "failed", "reason": exc.message}


def _running(environment: str) -> dict[str, Any] | None:
    state = server_state(environment)
    return read_json(state) if state.is_file() else None


def _switch(
    environment: str,
    slot: str,
    previous: dict[str, Any] | None,
    manifest_text: str,
    progress: Progress,
) -> None:
    """Make the smoke-tested server the environment's, then stop the one it replaces. The
    manifest it was deployed from is kept with it: a revert goes back to exactly that."""
    new_state = server_state(slot)
    document = {**read_json(new_state), "manifest_text": manifest_text}
    write_json(server_state(environment), document)  # from here on, ENV is the new server
    new_state.unlink(missing_ok=True)
    progress(f"{environment} now serves v{document['version']} at {document['url']}")
    if previous is not None:
        with contextlib.suppress(ProcessLookupError, OSError):
            stop_pid(int(previous["pid"]))
        progress(f"stopped the previous v{previous['version']} (pid {previous['pid']})")


@contextlib.contextmanager
def _locked(environment: str, progress: Progress) -> Iterator[None]:
    """Hold the environment's deploy lock; a second deploy waits for the first."""
    lock = server_state(environment).with_suffix(".deploy.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                progress(f"another deploy of {environment} is running; waiting for it")
                fcntl.flock(handle, fcntl.LOCK_EX)
        yield
