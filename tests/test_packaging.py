"""Environment manifests and `slipway package` on a real MLflow registry and `bentoml build`."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from slipway.cli import main
from slipway.config import load_config
from slipway.errors import ConfigError, PackagingError
from slipway.manifests import (
    Manifest,
    load_manifest,
    manifest_path,
    parse_manifest,
    render_manifest,
    update_manifest,
)
from slipway.propose.contract import prepare, read_dataset
from slipway.propose.training import train
from slipway.registry import SERIALIZATION_FORMAT
from slipway.serve import archive
from slipway.serve.archive import ARCHIVE_TAGS, fetch_bento
from slipway.serve.packaging import SERVICE_MODULES

REPO = Path(__file__).resolve().parent.parent
KEY_ORDER = ["environment", "model", "version", "digest", "target", "promotion", "rollout"]
ROLLOUT_ORDER = ["mode", "candidate_version", "canary_percent"]


# --- manifests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_committed_manifests_are_valid_and_declare_every_field(environment):
    path = REPO / "environments" / f"{environment}.yaml"
    manifest = load_manifest(path)
    raw = yaml.safe_load(path.read_text())
    assert list(raw) == KEY_ORDER
    assert list(raw["rollout"]) == ROLLOUT_ORDER
    assert manifest.environment == environment
    assert manifest.model == load_config(REPO / "model" / "slipway.yaml").name


def test_render_then_parse_round_trips():
    manifest = Manifest(
        environment="production",
        model="release-risk",
        version=4,
        rollout={"mode": "canary", "candidate_version": 5, "canary_percent": 10},
    )
    text = render_manifest(manifest)
    assert parse_manifest(text, "x") == manifest
    assert list(yaml.safe_load(text)) == KEY_ORDER


def test_promotion_is_a_one_line_diff_that_keeps_comments(tmp_path):
    path = tmp_path / "staging.yaml"
    shutil.copy(REPO / "environments" / "staging.yaml", path)
    before = path.read_text().splitlines()
    manifest = update_manifest(path, {"version": 7})
    after = path.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert manifest.version == 7
    assert len(changed) == 1
    old, new = changed[0]
    assert new.startswith("version: 7  #") and old.split("#")[1] == new.split("#")[1]

    update_manifest(path, {"rollout.mode": "shadow", "rollout.candidate_version": 8})
    assert load_manifest(path).rollout.candidate_version == 8
    assert list(yaml.safe_load(path.read_text())) == KEY_ORDER


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"version": 0}, "version"),
        ({"rollout.mode": "blue-green"}, "rollout.mode"),
        ({"rollout.mode": "canary"}, "candidate_version"),
        ({"rollout.canary_percent": 120}, "canary_percent"),
        ({"digest": "md5:abc"}, "digest"),
    ],
)
def test_invalid_changes_name_the_key_and_leave_the_file(tmp_path, changes, named):
    path = tmp_path / "staging.yaml"
    shutil.copy(REPO / "environments" / "staging.yaml", path)
    update_manifest(path, {"version": 3})
    before = path.read_text()
    with pytest.raises(ConfigError, match=named):
        update_manifest(path, changes)
    assert path.read_text() == before


def test_unknown_environment_and_unknown_keys_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown environment"):
        manifest_path("qa")
    text = (REPO / "environments" / "staging.yaml").read_text() + "replicas: 3\n"
    with pytest.raises(ConfigError, match="replicas"):
        parse_manifest(text, "staging.yaml")


# --- slipway package ---------------------------------------------------------------------------


def _bento_dirs(home: Path) -> list[Path]:
    return [p for p in (home / "bentos").glob("*/*") if (p / "bento.yaml").is_file()]


@pytest.mark.slow
def test_package_builds_a_bento_once_and_reuses_it(
    project, registry, tmp_path, monkeypatch, capsys
):
    home = tmp_path / "bentoml"
    monkeypatch.setenv("BENTOML_HOME", str(home))
    outputs = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    config = load_config(project)
    out = tmp_path / "out"
    train(config, registry, out)

    assert main(["package", "--config", str(project), "--out", str(out)]) == 0  # from train.json
    first = yaml.safe_load((out / "package.json").read_text())
    assert first["schema"] == "slipway.package/1"
    assert first["model_tag"] == "release-risk:v1"
    assert first["bento_tag"].startswith("release-risk-service:v1-")
    assert first["digest"].startswith("sha256:") and len(first["digest"]) == 71
    assert first["reused"] == {"model": False, "bento": False, "archive": False}
    written = outputs.read_text()
    assert f"bento-tag={first['bento_tag']}\n" in written
    assert f"digest={first['digest']}\n" in written
    assert first["bento_tag"] in capsys.readouterr().out
    bentos = _bento_dirs(home)
    assert [f"{p.parent.name}:{p.name}" for p in bentos] == [first["bento_tag"]]
    built = (bentos[0] / "bento.yaml").stat().st_mtime_ns
    bento = yaml.safe_load((bentos[0] / "bento.yaml").read_text())
    assert bento["services"][0]["models"][0]["tag"] == "release-risk:v1"  # exact, not latest
    assert (bentos[0] / "src" / "bento" / "pinned.json").is_file()
    platform = bentos[0] / "src" / "src" / "slipway"
    bundled = sorted(p.relative_to(platform).as_posix() for p in platform.rglob("*.py"))
    assert bundled == sorted(SERVICE_MODULES)

    assert main(["package", "--config", str(project), "--out", str(out), "--version", "1"]) == 0
    second = yaml.safe_load((out / "package.json").read_text())
    assert second["reused"] == {"model": True, "bento": True, "archive": True}
    assert (second["bento_tag"], second["digest"]) == (first["bento_tag"], first["digest"])
    assert (bentos[0] / "bento.yaml").stat().st_mtime_ns == built
    assert len(_bento_dirs(home)) == 1

    # The stored model is the MLflow model as logged; it loads and predicts like the registry's.
    import mlflow.sklearn

    stored = home / "models" / "release-risk" / "v1" / "mlflow"
    flavor = yaml.safe_load((stored / "MLmodel").read_text())["flavors"]["sklearn"]
    assert flavor["serialization_format"] == SERIALIZATION_FORMAT
    assert (stored / flavor["pickled_model"]).is_file()
    features, _ = prepare(read_dataset(project.parent / "data" / "eval.csv"), config)
    expected = registry.load(registry.get(config.name, "1")).predict_proba(features)
    np.testing.assert_array_equal(
        mlflow.sklearn.load_model(str(stored)).predict_proba(features), expected
    )
    listed = subprocess.run(
        [str(REPO / ".venv" / "bin" / "bentoml"), "list", "-o", "json"],
        env={"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert first["bento_tag"] in listed.stdout


def test_package_without_a_version_is_a_usage_error(project, tracking_uri, tmp_path, capsys):
    code = main(["package", "--config", str(project), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "pass --version N" in capsys.readouterr().err


def test_package_of_a_missing_version_is_a_usage_error(project, tracking_uri, tmp_path, capsys):
    code = main(["package", "--config", str(project), "--out", str(tmp_path), "--version", "9"])
    assert code == 2
    assert "no version 9" in capsys.readouterr().err


def test_serving_an_environment_with_nothing_deployed_says_so(
    project, tracking_uri, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("SLIPWAY_HOME", str(tmp_path / "state"))
    environments = tmp_path / "environments"
    shutil.copytree(REPO / "environments", environments)
    code = main(["serve", "staging", "--config", str(project), "--environments", str(environments)])
    assert code == 2
    err = capsys.readouterr().err
    assert "deploys nothing yet (version: null)" in err and "fix:" in err
    assert main(["serve", "staging", "--stop"]) == 0
    assert "not being served" in capsys.readouterr().out


@pytest.mark.slow
def test_pr_packages_the_version_that_passed_its_gate(
    project, registry, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    out = tmp_path / "out"
    assert main(["pr", "--config", str(project), "--out", str(out)]) == 0
    trained = yaml.safe_load((out / "train.json").read_text())
    packaged = yaml.safe_load((out / "package.json").read_text())
    assert packaged["version"] == trained["version"] == "1"
    assert packaged["bento_tag"].startswith("release-risk-service:v1-")
    assert "[4/5] package" in capsys.readouterr().err
    assert f"- Bento: `{packaged['bento_tag']}`" in (out / "report.md").read_text()


@pytest.mark.slow
def test_package_after_a_passed_gate_stores_the_copy_train_left(
    project, registry, tmp_path, monkeypatch, capsys
):
    home = tmp_path / "bentoml"
    monkeypatch.setenv("BENTOML_HOME", str(home))
    out = tmp_path / "out"
    cfg = ["--config", str(project), "--out", str(out)]
    assert main(["train", *cfg, "--param", "n_estimators=20"]) == 0
    capsys.readouterr()
    assert main(["package", *cfg]) == 0  # no gate yet: downloaded and loaded from the registry
    assert "the registered bytes the gate passed" not in capsys.readouterr().err
    first = yaml.safe_load((out / "package.json").read_text())
    shutil.rmtree(home)

    assert main(["gate", *cfg]) == 0
    capsys.readouterr()
    assert main(["package", *cfg]) == 0
    assert f"using {out / 'model'}: the registered bytes the gate passed" in capsys.readouterr().err
    second = yaml.safe_load((out / "package.json").read_text())
    trained = yaml.safe_load((out / "train.json").read_text())
    # The same bytes either way: the same model digest, the same Bento digest.
    assert first["model_digest"] == second["model_digest"] == trained["model_digest"]
    assert first["digest"] == second["digest"]
    stored = home / "models" / "release-risk" / "v1" / "mlflow"
    assert (stored / "MLmodel").read_bytes() == (out / "model" / "MLmodel").read_bytes()

    # A copy that is no longer the registered bytes is not used, even after a passed gate.
    shutil.rmtree(home)
    pickled = out / "model" / "model.pkl"
    pickled.write_bytes(pickled.read_bytes()[:-1] + b"\0")
    assert main(["package", *cfg]) == 0
    assert "the registered bytes the gate passed" not in capsys.readouterr().err
    assert yaml.safe_load((out / "package.json").read_text())["digest"] == first["digest"]


# --- the Bento archive in the registry ---------------------------------------------------------


def _archives(tracking_uri: str, run_id: str) -> list[str]:
    from mlflow import MlflowClient

    return [item.path for item in MlflowClient(tracking_uri).list_artifacts(run_id, "bento")]


def _packaged(project: Path, registry, tmp_path: Path, monkeypatch) -> dict:
    """Train version 1 and package it into ``tmp_path/bentoml``; package.json."""
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    out = tmp_path / "out"
    train(load_config(project), registry, out)
    assert main(["package", "--config", str(project), "--out", str(out), "--version", "1"]) == 0
    return yaml.safe_load((out / "package.json").read_text())


@pytest.mark.slow
def test_package_stores_one_archive_with_the_run_and_tags_the_version(
    project, registry, tracking_uri, tmp_path, monkeypatch
):
    first = _packaged(project, registry, tmp_path, monkeypatch)
    ref = registry.get("release-risk", "1")
    assert first["archive"] == f"bento/{first['bento_tag'].replace(':', '-')}.bento"
    assert len(first["archive_sha256"]) == 64
    assert {tag: ref.tags[tag] for tag in ARCHIVE_TAGS} == {
        "slipway.bento_tag": first["bento_tag"],
        "slipway.digest": first["digest"],
        "slipway.bento_archive": first["archive"],
        "slipway.bento_archive_sha256": first["archive_sha256"],
    }
    assert _archives(tracking_uri, ref.run_id) == [first["archive"]]
    stored = next((tmp_path / "state" / "artifacts").rglob(Path(first["archive"]).name))
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == first["archive_sha256"]
    logged = stored.stat().st_mtime_ns

    out = tmp_path / "out"
    assert main(["package", "--config", str(project), "--out", str(out), "--version", "1"]) == 0
    second = yaml.safe_load((out / "package.json").read_text())
    assert (second["archive"], second["archive_sha256"]) == (
        first["archive"],
        first["archive_sha256"],
    )
    assert _archives(tracking_uri, ref.run_id) == [first["archive"]]  # no second archive
    assert stored.stat().st_mtime_ns == logged


@pytest.mark.slow
def test_fetch_bento_imports_the_stored_bytes_and_refuses_any_other(
    project, registry, tracking_uri, tmp_path, monkeypatch
):
    first = _packaged(project, registry, tmp_path, monkeypatch)
    config = load_config(project)
    elsewhere = tmp_path / "elsewhere"  # another machine's empty store

    with pytest.raises(PackagingError, match="not sha256:0") as wrong:
        fetch_bento(config, registry, "1", "sha256:" + "0" * 64, elsewhere)
    assert "slipway package" in wrong.value.hint
    assert not elsewhere.exists() or _bento_dirs(elsewhere) == []

    fetched = fetch_bento(config, registry, "1", first["digest"], elsewhere)
    assert fetched == {"bento_tag": first["bento_tag"], "digest": first["digest"], "reused": False}
    assert [f"{p.parent.name}:{p.name}" for p in _bento_dirs(elsewhere)] == [first["bento_tag"]]
    assert (elsewhere / "models" / "release-risk" / "v1" / "mlflow" / "MLmodel").is_file()
    again = fetch_bento(config, registry, "1", first["digest"], elsewhere)
    assert again["reused"] is True

    # An archive changed in the registry is refused, and nothing is imported.
    fresh = tmp_path / "fresh"
    stored = next((tmp_path / "state" / "artifacts").rglob(Path(first["archive"]).name))
    original = stored.read_bytes()
    stored.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(PackagingError, match="is not the one `slipway package` stored"):
        fetch_bento(config, registry, "1", first["digest"], fresh)
    assert not fresh.exists() or _bento_dirs(fresh) == []
    stored.write_bytes(original)
    registry.tag("release-risk", "1", {"slipway.bento_archive_sha256": "0" * 64})
    with pytest.raises(PackagingError, match="its SHA-256 is not 0000"):
        fetch_bento(config, registry, "1", first["digest"], fresh)
    assert not fresh.exists() or _bento_dirs(fresh) == []


def test_fetch_bento_of_a_version_never_packaged_names_the_fix(project, registry, tmp_path):
    config = load_config(project)
    train(config, registry, tmp_path / "out")
    home = tmp_path / "bentoml"
    with pytest.raises(PackagingError, match="no stored Bento archive") as missing:
        fetch_bento(config, registry, "1", "sha256:" + "0" * 64, home)
    assert "slipway.bento_archive" in missing.value.message
    assert "`slipway package --version 1`" in missing.value.hint
    assert not home.exists()


def test_an_archive_that_cannot_be_stored_leaves_the_version_untagged(
    project, registry, tmp_path, monkeypatch
):
    config = load_config(project)
    train(config, registry, tmp_path / "out")
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    monkeypatch.setattr(
        archive, "_export", lambda _tag, _home, target: target.write_bytes(b"bento")
    )
    logged: list[str] = []

    def refuse(run_id: str, local_path: str, artifact_path: str) -> None:
        raise OSError("artifact store is read-only")

    monkeypatch.setattr(registry, "log_artifact", refuse)
    store = ("release-risk-service:v1-0123456789ab", "sha256:0123456789ab" + "0" * 52)
    with pytest.raises(PackagingError, match="read-only") as failed:
        archive.store_archive(config, registry, "1", *store)
    assert "`slipway package` again" in failed.value.hint
    assert not set(ARCHIVE_TAGS) & set(registry.get("release-risk", "1").tags)

    monkeypatch.setattr(registry, "log_artifact", lambda *args: logged.append(args[2]))
    first = archive.store_archive(config, registry, "1", *store)
    assert first["reused"] is False and logged == ["bento"]
    assert first["archive_sha256"] == hashlib.sha256(b"bento").hexdigest()
    assert archive.store_archive(config, registry, "1", *store)["reused"] is True
    assert logged == ["bento"]  # the same digest again: no second archive
