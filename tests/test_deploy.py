"""`slipway deploy ENV` on the local target: real MLflow, real Bentos, real servers on loopback."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from slipway.cli import main
from slipway.config import load_config
from slipway.promote import checks

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> Iterator[SimpleNamespace]:
    """Versions 1 and 2, each trained, gated and packaged (their Bentos stored in MLflow)."""
    root = tmp_path_factory.mktemp("deploy")
    shutil.copytree(REPO / "model", root / "model", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "environments", root / "environments")
    config_path = root / "model" / "slipway.yaml"
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'state' / 'mlflow.db'}")
    patch.setenv("BENTOML_HOME", str(root / "bentoml"))
    patch.setenv("SLIPWAY_HOME", str(root / "state"))
    for name in ("GITHUB_OUTPUT", "GITHUB_ACTIONS", "SLIPWAY_ENV", "SLIPWAY_MANIFEST"):
        patch.delenv(name, raising=False)
    for n, params in enumerate((["n_estimators=20"], ["n_estimators=30", "max_depth=6"]), 1):
        out = ["--config", str(config_path), "--out", str(root / f"out{n}")]
        overrides = [item for p in params for item in ("--param", p)]
        assert main(["train", *out, *overrides]) == 0
        assert main(["gate", *out]) == 0
        assert main(["package", *out]) == 0
    from slipway.registry import MlflowRegistry

    yield SimpleNamespace(
        root=root,
        config_path=config_path,
        registry=MlflowRegistry(logs_models=False),
        config=load_config(config_path),
    )
    main(["serve", "staging", "--stop"])
    main(["serve", "staging-next", "--stop"])
    patch.undo()


def _args(ns, *extra: str) -> list[str]:
    return [
        "--config",
        str(ns.config_path),
        "--out",
        str(ns.root / "deploy-out"),
        "--environments",
        str(ns.root / "environments"),
        *extra,
    ]


def _served_version(url: str) -> str:
    return str(requests.get(f"{url}/metadata", timeout=5).json()["version"])


def _state(ns) -> dict:
    return json.loads((ns.root / "state" / "serve" / "staging.json").read_text())


def test_deploy_switches_after_smoke_and_a_failed_smoke_keeps_the_old_version(packaged):
    ns = packaged
    assert main(["promote", "staging", "--version", "1", *_args(ns)[4:]]) == 0
    assert main(["deploy", "staging", *_args(ns, "--max-p95-ms", "5000")]) == 0
    first = _state(ns)
    assert _served_version(first["url"]) == "1"
    assert first["bento_tag"] == ns.registry.get("release-risk", "1").tags["slipway.bento_tag"]
    assert ns.registry.alias("release-risk", "staging").version == "1"
    tags = ns.registry.get("release-risk", "1").tags
    assert tags[checks.smoke_tag("staging")] == "pass" and checks.deployed_tag("staging") in tags
    document = json.loads((ns.root / "deploy-out" / "deploy.json").read_text())
    assert document["status"] == "success" and document["previous"] is None
    assert document["bento_tag"] == tags["slipway.bento_tag"]

    # v2 passes: it takes over, and the server of v1 is stopped.
    assert main(["promote", "staging", "--version", "2", *_args(ns)[4:]]) == 0
    assert main(["deploy", "staging", *_args(ns, "--max-p95-ms", "5000")]) == 0
    second = _state(ns)
    assert second["url"] != first["url"] and _served_version(second["url"]) == "2"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{first['url']}/readyz", timeout=2)
    assert ns.registry.alias("release-risk", "staging").version == "2"

    # v1 again, with a latency limit nothing meets: the smoke test fails, v2 serves on.
    assert main(["promote", "staging", "--version", "1", *_args(ns)[4:]]) == 0
    assert main(["deploy", "staging", *_args(ns, "--max-p95-ms", "0.001")]) == 1
    assert _state(ns) == second and _served_version(second["url"]) == "2"
    assert ns.registry.alias("release-risk", "staging").version == "2"  # the alias stays
    tags = ns.registry.get("release-risk", "1").tags
    assert tags[checks.smoke_tag("staging")] == "fail"
    assert tags["slipway.deploy.staging"] == "failure"
    document = json.loads((ns.root / "deploy-out" / "deploy.json").read_text())
    assert document["status"] == "failure" and document["serving"]["version"] == "2"
    assert not (ns.root / "state" / "serve" / "staging-next.json").exists()


def test_a_digest_the_manifest_does_not_name_is_refused_and_nothing_starts(packaged, capsys):
    ns = packaged
    before = (ns.root / "state" / "serve").glob("*.json")
    running = {p.name: p.read_bytes() for p in before}
    path = ns.root / "environments" / "staging.yaml"
    text = path.read_text()
    digest = ns.registry.get("release-risk", "2").tags["slipway.digest"]
    path.write_text(
        text.replace("version: 1", "version: 2").replace(
            text.split("digest: ")[1].split()[0], "sha256:" + "0" * 64
        )
    )
    try:
        assert main(["deploy", "staging", *_args(ns)]) == 2
        err = capsys.readouterr().err
        assert "not sha256:" + "0" * 64 in err and digest in err
        after = {p.name: p.read_bytes() for p in (ns.root / "state" / "serve").glob("*.json")}
        assert after == running
    finally:
        path.write_text(text)


def test_a_manifest_with_nothing_to_deploy_deploys_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLIPWAY_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'state' / 'm.db'}")
    shutil.copytree(REPO / "environments", tmp_path / "environments")
    code = main(
        [
            "deploy",
            "staging",
            "--environments",
            str(tmp_path / "environments"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    assert "names no version yet: nothing to deploy" in capsys.readouterr().err
    # A server still running there while the manifest names nothing: that is an error.
    state = tmp_path / "state" / "serve" / "staging.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"pid": 1, "url": "http://127.0.0.1:9", "version": "1"}')
    code = main(
        ["deploy", "staging", "--environments", str(tmp_path / "environments"), "--out", "o"]
    )
    assert code == 2
    assert "names no version and digest to deploy" in capsys.readouterr().err


def test_status_says_when_git_the_server_and_the_alias_disagree(packaged, capsys):
    ns = packaged
    environments = ["--environments", str(ns.root / "environments")]
    assert main(["promote", "staging", "--version", "2", *environments]) == 0
    assert main(["deploy", "staging", *_args(ns, "--max-p95-ms", "5000")]) == 0
    capsys.readouterr()
    assert main(["status", *environments]) == 0
    assert "git, servers and aliases agree" in capsys.readouterr().out

    # The manifest moves on without a deploy: git no longer says what runs.
    assert main(["promote", "staging", "--version", "1", *environments]) == 0
    capsys.readouterr()
    assert main(["status", *environments, "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    staging, production = document["environments"]
    assert staging["manifest"]["version"] == "1" and staging["serving"]["version"] == "2"
    assert staging["alias"] == "2"
    assert [f["problem"] for f in staging["findings"]] == [
        "git says v1, the service runs v2",
        "git says v1, the alias @staging points at v2",
    ]
    assert production["findings"] == []  # nothing declared, served or aliased: they agree
    assert main(["promote", "staging", "--version", "2", *environments]) == 0


def _git(cwd: Path, *args: str) -> str:
    identity = ["-c", "user.name=Slipway Tests", "-c", "user.email=tests@example.com"]
    done = subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True)
    return done.stdout.decode().strip()


def _merge(emulator, manifest: Path) -> str:
    """The local commit mirrored on the emulated repository's main: the commit deployed."""
    sha = _git(manifest.parent, "rev-parse", "HEAD")
    return emulator.push("main", {"environments/staging.yaml": manifest.read_text()}, sha=sha)


def test_a_deploy_is_a_github_deployment_and_a_failed_smoke_opens_one_revert(
    packaged, emulator, monkeypatch, capsys
):
    ns = packaged
    from github_emulator import TOKEN

    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", emulator.repo)
    monkeypatch.setenv("GITHUB_API_URL", emulator.url)
    root = ns.root / "gitops"
    shutil.copytree(REPO / "environments", root / "environments")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "manifests")
    args = [*_args(ns)[:4], "--environments", str(root / "environments")]
    manifest = root / "environments" / "staging.yaml"

    assert main(["promote", "staging", "--version", "2", *args[4:]]) == 0
    deployed_text = manifest.read_text()
    _git(root, "commit", "-qam", "Promote v2")
    merged = _merge(emulator, manifest)
    monkeypatch.setenv("GITHUB_SHA", merged)
    assert main(["deploy", "staging", *args, "--max-p95-ms", "5000"]) == 0
    url = _state(ns)["url"]
    [first] = emulator.deployments.values()
    assert first["environment"] == "staging" and first["sha"] == merged
    states = [s["state"] for s in emulator.deployment_statuses[first["id"]]]
    assert states == ["success", "in_progress"]  # newest first, as GitHub lists them
    assert emulator.deployment_statuses[first["id"]][0]["environment_url"] == url

    # v1 fails its smoke tests twice: v2 serves on, each failure is recorded, ONE revert PR.
    assert main(["promote", "staging", "--version", "1", *args[4:]]) == 0
    _git(root, "commit", "-qam", "Promote v1")
    monkeypatch.setenv("GITHUB_SHA", _merge(emulator, manifest))
    for _ in range(2):
        assert main(["deploy", "staging", *args, "--max-p95-ms", "0.001"]) == 1
        assert _served_version(url) == "2"
    failed = [d for d in emulator.deployments.values() if d["id"] != first["id"]]
    assert len(failed) == 2
    for deployment in failed:
        assert emulator.deployment_statuses[deployment["id"]][0]["state"] == "failure"
    reverts = [
        p
        for p in emulator.pulls.values()
        if p["state"] == "open" and p["head"]["ref"] == "slipway/revert-staging"
    ]
    assert len(reverts) == 1
    assert reverts[0]["title"] == "Revert staging to v2: v1 failed its smoke tests"
    assert "latency" in reverts[0]["body"]
    # The revert puts the manifest back to exactly what was deployed, comments and all.
    assert emulator.file("slipway/revert-staging", "environments/staging.yaml") == deployed_text
    assert "revert pull request updated" in capsys.readouterr().err

    # History joins git, the registry and GitHub's Deployments of each commit.
    assert main(["history", "staging", "--json", "--environments", args[5]]) == 0
    entries = json.loads(capsys.readouterr().out)["entries"]
    assert [e["version"] for e in entries] == ["1", "2", None]  # None: the first commit
    assert [d["state"] for d in entries[0]["deployments"]] == ["failure", "failure"]
    assert [(d["state"], d["url"]) for d in entries[1]["deployments"]] == [("success", url)]
    assert entries[0]["deploy"] == "failure" and entries[1]["deploy"] == "success"
