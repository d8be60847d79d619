"""``slipway serve``: start and stop an environment's BentoML server on 127.0.0.1.

The server's PID, URL and log are recorded under the state directory, so ``slipway serve ENV
--stop`` (or a later run) finds it again; servers are stopped by that PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slipway.config import ModelConfig
from slipway.errors import ServingError
from slipway.fsutil import read_json, state_dir, write_json
from slipway.progress import Progress
from slipway.registry import Registry
from slipway.serve.packaging import (
    REPO_ROOT,
    bentoml_env,
    bentoml_executable,
    bentoml_home,
    import_model,
)
from slipway.serve.prediction_log import log_directory

DEFAULT_PORTS = {"staging": 3000, "production": 3001}
LOOPBACK = "http://127.0.0.1"  # servers listen on loopback only
READY_TIMEOUT_S = 90.0
_STARTED: dict[int, subprocess.Popen] = {}  # servers this process started, to reap on stop


def server_state(environment: str) -> Path:
    """Where ``slipway serve`` records the PID, URL and log of an environment's server."""
    return state_dir() / "serve" / f"{environment}.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    config: ModelConfig,
    registry: Registry,
    manifest_file: Path,
    config_path: Path,
    port: int | None = None,
    timeout: float = READY_TIMEOUT_S,
    progress: Progress = lambda _m: None,
    slot: str | None = None,
    bento_tag: str | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """``bentoml serve`` the environment's manifest on 127.0.0.1; wait for ``/readyz``.

    The versions the manifest names are imported into the BentoML store first (reused when
    present). The server's PID, URL and log file are recorded in :func:`server_state` under
    ``slot`` (default: the environment). With ``bento_tag`` the server runs that Bento — its
    bundled code and contract — instead of the working tree's service. ``workers`` processes
    serve the port (``SLIPWAY_WORKERS``); BentoML starts a new one when one dies.
    """
    import requests

    from slipway.manifests import load_manifest

    manifest = load_manifest(manifest_file)
    environment = manifest.environment
    if manifest.version is None:
        raise ServingError(
            f"{manifest_file} deploys nothing yet (version: null)",
            f"set `version:` in {manifest_file} to a packaged version (slipway package)",
        )
    if manifest.model != config.name:
        raise ServingError(
            f"{manifest_file} deploys {manifest.model}, but the model project is {config.name}",
            "fix `model:` in the manifest or pass the right --config",
        )
    state = server_state(slot or environment)
    if state.is_file():
        running = read_json(state)
        if _alive(int(running["pid"])):
            raise ServingError(
                f"{environment} is already served at {running['url']} (pid {running['pid']})",
                f"stop it first: slipway serve {environment} --stop",
            )
    for version in manifest.versions():
        import_model(config, registry, str(version), progress)
    port = port or DEFAULT_PORTS.get(environment, 3000)
    url = f"{LOOPBACK}:{port}"
    log = state.with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    env = bentoml_env(
        bentoml_home(registry.tracking_uri),
        SLIPWAY_ENV=environment,
        SLIPWAY_MANIFEST=str(manifest_file.resolve()),
        SLIPWAY_CONFIG=str(config_path.resolve()),
        SLIPWAY_WORKERS=str(workers),
    )
    env.setdefault("SLIPWAY_LOG_DIR", str(log_directory(environment)))
    served = ["bento.service:ReleaseRisk", "--working-dir", str(REPO_ROOT)]
    if bento_tag is not None:
        served = [bento_tag]
        env.pop("SLIPWAY_CONFIG")  # the Bento's own, bundled contract
    command = [bentoml_executable(), "serve", *served, "--host", "127.0.0.1", "--port", str(port)]
    progress(f"starting {environment} v{manifest.version} on {url} (log: {log})")
    with log.open("ab") as handle:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: --stop ends the workers too
        )
    _STARTED[process.pid] = process
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServingError(
                f"bentoml serve exited with code {process.returncode}:\n{_tail(log)}",
                f"read {log}",
            )
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.25)
    else:
        stop_pid(process.pid)
        raise ServingError(
            f"{environment} was not ready within {timeout:.0f} s:\n{_tail(log)}", f"read {log}"
        )
    document = {
        "environment": environment,
        "pid": process.pid,
        "url": url,
        "version": str(manifest.version),
        "bento_tag": bento_tag,
        "workers": workers,
        "rollout": manifest.rollout.model_dump(),
        "log": str(log),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(state, document)
    return document


def stop_server(environment: str) -> dict[str, Any] | None:
    """Stop the server ``slipway serve`` recorded for ``environment``; None when none runs."""
    state = server_state(environment)
    if not state.is_file():
        return None
    running = read_json(state)
    stop_pid(int(running["pid"]))
    state.unlink(missing_ok=True)
    return running


def stop_pid(pid: int, grace: float = 15.0) -> None:
    """SIGTERM the server's process group (it was started in its own), SIGKILL after ``grace``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    started = _STARTED.pop(pid, None)
    if started is not None:  # started by this process: wait() reaps it
        try:
            started.wait(grace)
            return
        except subprocess.TimeoutExpired:
            pass
    else:
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if not _alive(pid):
            return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if started is not None:
        started.wait(5)


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
