"""The `slipway` console script: exit codes, and commands that load only what they use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("sklearn", "scipy", "mlflow", "bentoml")
PROBE = """\
import json, sys
from slipway.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "loaded": sorted(m for m in %r if m in sys.modules)}))
"""


def _slipway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slipway", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
        env={**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},  # nothing listens
    )


def _probe(*args: str, heavy=(*HEAVY, "pydantic")) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE % (heavy,), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_the_console_script_exits_with_the_commands_code(tmp_path):
    missing = _slipway("gate", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path))
    assert missing.returncode == 2 and "error:" in missing.stderr
    down = _slipway("train", "--config", "model/slipway.yaml", "--out", str(tmp_path / "out"))
    assert down.returncode == 2, down.stderr
    assert "not answering" in down.stderr and "MLFLOW_TRACKING_URI" in down.stderr
    version = _slipway("--version")
    assert version.returncode == 0 and version.stdout.startswith("slipway ")


def test_validate_loads_neither_scikit_learn_nor_mlflow(project, tmp_path):
    found = _probe("validate", "--config", str(project), "--out", str(tmp_path), heavy=HEAVY)
    assert found == {"code": 0, "loaded": []}


@pytest.mark.slow
def test_report_loads_no_model_library_and_no_pydantic(project, tmp_path):
    assert _probe("validate", "--config", str(project), "--out", str(tmp_path))["code"] == 0
    found = _probe("report", "--out", str(tmp_path))
    assert found == {"code": 0, "loaded": []}
    assert (tmp_path / "report.md").is_file()
