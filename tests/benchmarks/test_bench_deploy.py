"""`slipway deploy staging` against serving the same Bento by hand. Target ratio <= 1.5.

One version of the model is trained, gated and packaged on the committed sample data
(`slipway pr`), and a scratch git copy of `environments/` points staging at it (`slipway
promote staging --version 1`). Each round then times, in fresh processes:

- `slipway deploy staging`, from its start until it exits with the new version answering
  behind passing smoke tests (the Bento archive fetched and checked against the manifest's
  digest, `bentoml serve TAG` on a free port, the smoke tests, the switch, the alias and tags);
- the baseline: one bare `bentoml serve TAG` of the same Bento until `/readyz` answers 200,
  then one `slipway smoke` against it.

Rounds are interleaved (the order alternates), the figure is the ratio of the medians, and a
breakdown of the deploy (from its progress lines, timed as they arrive) says where its time
goes. Nothing is served before a deploy: the server of the round before is stopped untimed,
so no deploy pays for stopping a previous version (which happens after the new one answers).
Every server is stopped by its PID (process group) at the end, also on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests
from benchlib import MODEL_DIR, REPO, model_project, report

from act_harness import free_port
from slipway.serve.server import LOOPBACK

TARGET_RATIO = 1.5
ROUNDS = 5
READY_TIMEOUT_S = 120.0
POLL_S = 0.25  # as `slipway serve` and `slipway deploy` poll /readyz
# The deploy's progress lines that open each phase of the breakdown, in order.
PHASES = (
    ("start-up, imports, registry", "downloading "),
    ("fetch and check the Bento", "starting staging "),
    ("bentoml serve until ready", "smoke-testing "),
    ("smoke tests", "staging now serves "),
)


def _bin(name: str) -> str:
    """A console script of this environment (slipway, bentoml)."""
    script = Path(sys.executable).with_name(name)
    return str(script) if script.is_file() else name


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, (
        f"{' '.join(command)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


def _git(cwd: Path, *args: str) -> None:
    identity = ["-c", "user.name=Slipway Bench", "-c", "user.email=bench@example.com"]
    subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True)


def _gone(pid: int) -> bool:
    """No process left in the group ``pid`` leads (a zombie counts as gone)."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z" and not _others_in_group(pid)


def _others_in_group(pid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(stat.parent.name) != pid and int(fields[2]) == pid and fields[0] != "Z":
                return True
    return False


def _stop_group(pid: int, grace: float = 15.0) -> None:
    """SIGTERM the process group ``pid`` leads, SIGKILL what is left after ``grace``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and not _gone(pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _stop_recorded(home: Path) -> None:
    """Stop every server a deploy recorded under ``home/serve``, by its PID."""
    for state in (home / "serve").glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            _stop_group(int(json.loads(state.read_text(encoding="utf-8"))["pid"]))
        state.unlink(missing_ok=True)


def _served_version(url: str) -> str:
    return str(requests.get(f"{url}/metadata", timeout=5).json()["version"])


def _deploy(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> dict:
    """Run the deploy; its wall time and when each of its progress lines arrived."""
    arrived: list[tuple[float, str]] = []
    started = time.monotonic()
    with (
        log.open("w", encoding="utf-8") as stdout,
        subprocess.Popen(
            command, cwd=cwd, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True
        ) as process,
    ):
        assert process.stderr is not None
        for line in process.stderr:
            arrived.append((time.monotonic() - started, line.split("] ", 1)[-1].rstrip()))
        code = process.wait()
    seconds = time.monotonic() - started
    printed = "\n".join(line for _, line in arrived)
    assert code == 0, f"{' '.join(command)} exited {code}\n{log.read_text()}\n{printed}"
    marks = [0.0]
    for _, prefix in PHASES:
        at = next((t for t, line in arrived if line.startswith(prefix)), None)
        assert at is not None, f"no progress line {prefix!r} in:\n{printed}"
        marks.append(at)
    marks.append(seconds)
    names = [name for name, _ in PHASES] + ["switch, alias, tags, exit"]
    phases = {name: marks[i + 1] - marks[i] for i, name in enumerate(names)}
    return {"seconds": seconds, "phases": phases}


def _baseline(bento_tag: str, config: Path, cwd: Path, env: dict[str, str], out: Path) -> dict:
    """`bentoml serve TAG` until /readyz is 200, then `slipway smoke`; stopped by PID after."""
    port = free_port()
    url = f"{LOOPBACK}:{port}"
    command = [_bin("bentoml"), "serve", bento_tag, "--host", "127.0.0.1", "--port", str(port)]
    log = out / "bentoml-serve.log"
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("ab") as handle:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, stopped as a whole
        )
    try:
        deadline = started + READY_TIMEOUT_S
        while True:
            assert process.poll() is None, f"bentoml serve exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"not ready in time:\n{log.read_text()}"
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(POLL_S)
        ready = time.monotonic() - started
        _run([_bin("slipway"), "smoke", url, "--config", str(config), "--out", str(out)], cwd, env)
        seconds = time.monotonic() - started
        assert _served_version(url) == "1"
    finally:
        _stop_group(process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
    return {"seconds": seconds, "phases": {"serve until ready": ready, "smoke": seconds - ready}}


def test_deploy_vs_bentoml_serve_and_smoke(tmp_path: Path, bench_env: dict[str, str]) -> None:
    home = Path(bench_env["SLIPWAY_HOME"])
    env = dict(bench_env)
    for name in ("BENTOML_HOME", "SLIPWAY_ENV", "SLIPWAY_MANIFEST", "SLIPWAY_CONFIG"):
        env.pop(name, None)  # the Bento store sits beside the SQLite registry, in SLIPWAY_HOME
    env.pop("SLIPWAY_LOG_DIR", None)
    bare = {**env, "BENTOML_HOME": str(home / "bentoml")}  # that store, named for bentoml itself
    config = model_project(
        tmp_path / "model", MODEL_DIR / "data" / "train.csv", MODEL_DIR / "data" / "eval.csv"
    )
    slipway = _bin("slipway")
    pr_out = tmp_path / "pr-out"
    _run([slipway, "lock", "--config", str(config)], tmp_path, env)
    _run([slipway, "pr", "--config", str(config), "--out", str(pr_out)], tmp_path, env)
    packaged = json.loads((pr_out / "package.json").read_text(encoding="utf-8"))
    assert packaged["version"] == "1"
    bento_tag = packaged["bento_tag"]

    repo = tmp_path / "repo"
    shutil.copytree(REPO / "environments", repo / "environments")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "manifests")
    environments = ["--environments", str(repo / "environments")]
    _run([slipway, "promote", "staging", "--version", "1", *environments], repo, env)
    _git(repo, "commit", "-q", "-am", "Promote release-risk v1 to staging")

    deploy = [slipway, "deploy", "staging", "--config", str(config), *environments]
    deploys: list[dict] = []
    baselines: list[dict] = []
    try:
        for n in range(ROUNDS):
            out = tmp_path / f"round-{n}"
            command = [*deploy, "--out", str(out / "deploy")]
            (out / "deploy").mkdir(parents=True)

            def deploy_once(command: list[str] = command, out: Path = out) -> None:
                deploys.append(_deploy(command, repo, env, out / "deploy.log"))
                document = json.loads((out / "deploy" / "deploy.json").read_text())
                assert document["status"] == "success", document
                assert _served_version(document["serving"]["url"]) == "1"
                _stop_recorded(home)  # untimed: the next round starts with nothing serving

            def baseline_once(out: Path = out) -> None:
                baselines.append(_baseline(bento_tag, config, repo, bare, out / "baseline"))

            for step in (deploy_once, baseline_once)[:: 1 if n % 2 == 0 else -1]:
                step()
    finally:
        _stop_recorded(home)

    deploy_s = statistics.median(d["seconds"] for d in deploys)
    baseline_s = statistics.median(b["seconds"] for b in baselines)
    ratio = deploy_s / baseline_s
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    rounds = ", ".join(
        f"{d['seconds'] / b['seconds']:.2f}" for d, b in zip(deploys, baselines, strict=True)
    )
    report(
        f"slipway deploy staging vs `bentoml serve TAG` until ready + `slipway smoke`: "
        f"{deploy_s:.2f} s vs {baseline_s:.2f} s (medians of {ROUNDS}), ratio {ratio:.2f} "
        f"(target <= {TARGET_RATIO:g}: {verdict}); rounds {rounds}"
    )
    for label, measured in (("deploy", deploys), ("baseline", baselines)):
        medians = {
            name: statistics.median(m["phases"][name] for m in measured)
            for name in measured[0]["phases"]
        }
        parts = "; ".join(f"{name} {seconds:.2f} s" for name, seconds in medians.items())
        report(f"  {label} breakdown (medians): {parts}")
