"""Training against a real MLflow registry on SQLite."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from slipway.cli import main
from slipway.config import load_config
from slipway.errors import DataError, RegistryError, TrainingError
from slipway.propose.contract import prepare, read_dataset
from slipway.propose.training import train


def _versions(registry, name: str) -> list[str]:
    client = registry._client
    return [mv.version for mv in client.search_model_versions(f"name='{name}'")]


def test_train_registers_a_tagged_version(project, registry, tmp_path, monkeypatch):
    monkeypatch.setenv("SLIPWAY_PR_NUMBER", "17")
    monkeypatch.setenv("GITHUB_SHA", "a" * 40)
    config = load_config(project)
    out = tmp_path / "out"

    document = train(config, registry, out)

    assert document["version"] == "1"
    assert (out / "train.json").is_file()
    ref = registry.get("release-risk", "1")
    lock = (project.parent / "data" / "data.lock.json").read_text()
    assert ref.tags["slipway.git_commit"] == "a" * 40
    assert ref.tags["slipway.pr_number"] == "17"
    assert ref.tags["slipway.data_digest"] in lock
    assert ref.tags["slipway.eval_digest"] in lock
    run = registry._client.get_run(ref.run_id)
    assert run.data.params["n_estimators"] == "100"
    assert run.data.metrics["train_rows"] == 4000
    info = registry._mlflow.models.get_model_info(ref.uri)
    assert info.signature is not None
    assert "test_coverage" in info.signature.inputs.input_names()


def test_same_inputs_give_identical_predictions(project, registry, tmp_path):
    config = load_config(project)
    first = train(config, registry, tmp_path / "a")
    second = train(config, registry, tmp_path / "b")
    assert (first["version"], second["version"]) == ("1", "2")
    features, _ = prepare(read_dataset(project.parent / "data" / "eval.csv"), config)
    one = registry.load(registry.get(config.name, "1")).predict_proba(features)
    two = registry.load(registry.get(config.name, "2")).predict_proba(features)
    np.testing.assert_array_equal(one, two)


def test_train_py_raising_registers_nothing(project, registry, tmp_path):
    recipe = project.parent / "train.py"
    recipe.write_text(
        "def build_pipeline(params, features, seed):\n    raise ValueError('bad recipe')\n"
    )
    out = tmp_path / "out"
    with pytest.raises(TrainingError, match="bad recipe") as caught:
        train(load_config(project), registry, out)
    assert "train.py" in str(caught.value) and "fix" in str(caught.value)
    assert _versions(registry, "release-risk") == []
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["--param", "model=gradient_descent"], "unknown model"),
        (["--param", "max_depth=-4"], "max_depth"),
    ],
)
def test_bad_params_fail_with_exit_2(project, tracking_uri, tmp_path, capsys, params, message):
    code = main(["train", "--config", str(project), "--out", str(tmp_path / "out"), *params])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "fix:" in err
    assert not (tmp_path / "out" / "train.json").exists()


def test_changed_data_is_refused_by_the_lock(project, registry, tmp_path):
    train_csv = project.parent / "data" / "train.csv"
    train_csv.write_text(train_csv.read_text().replace("payments", "search", 1))
    with pytest.raises(DataError, match="changed since it was locked") as caught:
        train(load_config(project), registry, tmp_path / "out")
    assert "slipway lock" in caught.value.hint
    assert _versions(registry, "release-risk") == []


def test_unreachable_tracking_server_fails_fast(project, tmp_path, monkeypatch, capsys):
    # A server that hangs up on every connection, counting them: failing fast is one attempt,
    # before any work, not MLflow's client retrying with backoff.
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    connections: list[int] = []

    def hang_up() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # shut down by the test
                return
            connections.append(1)
            conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    try:
        code = main(["train", "--config", str(project), "--out", str(tmp_path / "out")])
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the accept
        server.close()
        thread.join(10)
    err = capsys.readouterr().err
    assert code == 2
    assert connections == [1]
    assert err.startswith("error: the MLflow tracking server")  # said first: no data read, no fit
    assert "not answering" in err and f"127.0.0.1:{port}" in err and "MLFLOW_TRACKING_URI" in err
    assert not (tmp_path / "out" / "train.json").exists()


def test_registry_rejects_unknown_version(registry):
    with pytest.raises(RegistryError, match="has no version 7"):
        registry.get("release-risk", "7")


def test_train_cli_writes_github_output(project, tracking_uri, tmp_path, monkeypatch, capsys):
    output = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    code = main(["train", "--config", str(project), "--out", str(tmp_path / "out")])
    assert code == 0
    assert "registered release-risk version 1" in capsys.readouterr().out
    written = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert written["version"] == "1"
    assert written["model-uri"] == "models:/release-risk/1"
    assert Path(tmp_path / "out" / "train.json").is_file()


def test_default_registry_follows_slipway_home_set_after_import(tmp_path, monkeypatch):
    from slipway.registry import default_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SLIPWAY_HOME", str(tmp_path / "home"))
    assert default_tracking_uri() == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"


def test_versions_saved_with_skops_still_load(project, registry, tmp_path):
    """New versions are cloudpickle files; a version logged with MLflow's default skops
    format before that change loads and predicts the same."""
    import mlflow
    import mlflow.sklearn
    import yaml

    from slipway.registry import SERIALIZATION_FORMAT

    config = load_config(project)
    document = train(config, registry, tmp_path / "out")
    model = registry.load(registry.get(config.name, document["version"]))
    with mlflow.start_run(experiment_id=registry._experiment(config.name)):
        logged = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="skops",
            skops_trusted_types=["sklearn.tree._tree.Tree"],
        )
    old = registry._client.create_model_version(
        config.name, source=logged.model_uri, model_id=logged.model_id
    )
    formats = {}
    for version in (document["version"], str(old.version)):
        local = mlflow.artifacts.download_artifacts(f"models:/{config.name}/{version}")
        mlmodel = yaml.safe_load((Path(local) / "MLmodel").read_text())
        formats[version] = mlmodel["flavors"]["sklearn"]["serialization_format"]
    assert formats == {document["version"]: SERIALIZATION_FORMAT, str(old.version): "skops"}

    features, _ = prepare(read_dataset(project.parent / "data" / "eval.csv"), config)
    reloaded = registry.load(registry.get(config.name, str(old.version)))
    np.testing.assert_array_equal(reloaded.predict_proba(features), model.predict_proba(features))


def test_process_registry_answers_as_the_mlflow_registry_does(project, tracking_uri, tmp_path):
    """The registry in a child process: same versions, same models, same errors."""
    from slipway.registry import MlflowRegistry
    from slipway.registry_process import ProcessRegistry

    config = load_config(project)
    registry = ProcessRegistry(tracking_uri)
    try:
        assert registry.alias(config.name, "production") is None
        with pytest.raises(RegistryError, match="has no version 7"):
            registry.get(config.name, "7")
        document = train(config, registry, tmp_path / "out")  # the model crosses the pipe
        registry.set_alias(config.name, "production", document["version"])
        champion = registry.alias(config.name, "production")
        loaded = registry.load(champion)
    finally:
        registry.close()
    assert champion is not None
    assert champion.version == document["version"] == "1"
    assert champion.tags["slipway.eval_digest"] == document["tags"]["slipway.eval_digest"]
    features, _ = prepare(read_dataset(project.parent / "data" / "eval.csv"), config)
    direct = MlflowRegistry(tracking_uri)
    np.testing.assert_array_equal(
        loaded.predict_proba(features),
        direct.load(direct.get(config.name, "1")).predict_proba(features),
    )


def test_pr_command_forks_its_registry_child(project, tracking_uri, tmp_path):
    """The installed command (no MLflow imported, one thread) forks the registry's child:
    the gate runs, the version is registered and tagged, and the command exits cleanly."""
    import json
    import os
    import subprocess
    import sys

    from slipway.registry import MlflowRegistry

    out = tmp_path / "out"
    command = ["pr", "--config", str(project), "--out", str(out), "--skip-package"]
    done = subprocess.run(
        [sys.executable, "-m", "slipway", *command],
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    assert "Saving scikit-learn models in the pickle" not in done.stderr  # see registry.py
    gate = json.loads((out / "gate.json").read_text())
    assert gate["candidate"]["version"] == "1"
    assert not gate["failed"], gate["gates"]
    ref = MlflowRegistry(tracking_uri).get("release-risk", "1")
    assert ref.tags["slipway.gate"] == gate["status"] == "pass"
