"""`slipway promote ENV --check` against importing the MLflow client alone.

Target: ratio <= 1.5. The check reads one version over the tracking server's REST API and
loads no scikit-learn, pandas, BentoML or MLflow. Medians of five fresh processes each, against
one `mlflow server` on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import REPO, report

from act_harness import MlflowServer

TARGET_RATIO = 1.5
ROUNDS = 5


def _git(cwd: Path, *args: str) -> None:
    identity = ["-c", "user.name=Slipway Bench", "-c", "user.email=bench@example.com"]
    subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True)


def _seconds(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    return seconds


def test_promote_check_vs_importing_mlflow(tmp_path):
    from slipway.registry import MlflowRegistry

    server = MlflowServer(tmp_path / "mlflow").start()
    try:
        client = MlflowRegistry(server.uri, logs_models=False)._client
        client.create_registered_model("release-risk")
        run = client.create_run(client.create_experiment("bench"))
        digest = "sha256:" + "5e" * 32
        client.create_model_version(
            "release-risk",
            f"runs:/{run.info.run_id}/model",
            run_id=run.info.run_id,
            tags={"slipway.gate": "pass", "slipway.digest": digest},
        )
        repo = tmp_path / "repo"
        shutil.copytree(REPO / "environments", repo / "environments")
        _git(repo, "init", "-q", "-b", "main")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", "manifests")
        env = {**os.environ, "MLFLOW_TRACKING_URI": server.uri}
        slipway = str(Path(sys.executable).with_name("slipway"))
        _seconds([slipway, "promote", "staging", "--version", "1"], repo, env)
        check = [slipway, "promote", "staging", "--check", "--out", str(tmp_path / "out")]
        baseline = [sys.executable, "-c", "import mlflow"]
        checks, imports = [], []
        for _ in range(ROUNDS):  # interleaved, so load on the machine touches both alike
            checks.append(_seconds(check, repo, env))
            imports.append(_seconds(baseline, repo, env))
    finally:
        server.stop()
    slipway_s, baseline_s = statistics.median(checks), statistics.median(imports)
    ratio = slipway_s / baseline_s
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    report(
        f"slipway promote --check vs `import mlflow` alone: {slipway_s:.2f} s vs "
        f"{baseline_s:.2f} s (medians of {ROUNDS}), ratio {ratio:.2f} "
        f"(target <= {TARGET_RATIO:g}: {verdict})"
    )
