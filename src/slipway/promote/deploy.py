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
from slipway.manifests import load_manifest, manifest_path
from slipway.progress import Progress
from slipway.promote.checks import deployed_tag, smoke_tag
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
RESULT_TAG = "slipway.deploy.{environment}"  # success | failed: the last deploy of a version


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
) -> dict[str, Any]:
    """Deploy the manifest's version of ``environment``; writes ``OUT/deploy.json``."""
    path = manifest_path(environment, directory)
    with _locked(environment, progress):
        manifest = load_manifest(path)
        if manifest.version is None or manifest.digest is None:
            raise ServingError(
                f"{path} names no version and digest to deploy",
                "promote a packaged version first: slipway promote ENV --version N",
            )
        version = str(manifest.version)
        home = bentoml_home(registry.tracking_uri)
        fetched = fetch_bento(config, registry, version, manifest.digest, home, progress)
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
        checked = smoke(started["url"], records, max_p95_ms)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        if checked["passed"]:
            _switch(environment, slot, previous, progress)
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
        document = {
            "schema": SCHEMA,
            "environment": environment,
            "model": config.name,
            "version": version,
            "digest": manifest.digest,
            "bento_tag": fetched["bento_tag"],
            "status": result,
            "serving": {"version": serving["version"], "url": serving["url"]} if serving else None,
            "previous": {"version": previous["version"], "url": previous["url"]}
            if previous
            else None,
            "smoke": checked,
            "deployed_at": now,
        }
        write_json(out_dir / "deploy.json", document)
        return document


def _running(environment: str) -> dict[str, Any] | None:
    state = server_state(environment)
    return read_json(state) if state.is_file() else None


def _switch(
    environment: str, slot: str, previous: dict[str, Any] | None, progress: Progress
) -> None:
    """Make the smoke-tested server the environment's, then stop the one it replaces."""
    new_state = server_state(slot)
    document = read_json(new_state)
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
