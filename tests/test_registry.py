"""The registry's edges: versions read over REST, and a SQLite registry without full MLflow."""

from __future__ import annotations

import importlib.util

import pytest

from act_harness import MlflowServer, free_port
from slipway.errors import RegistryError
from slipway.registry import MlflowRegistry, _preflight
from slipway.registry_rest import RestReads


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def registered(server):
    """Version 1 of `rest-model` with tags, registered through MLflow itself."""
    registry = MlflowRegistry(server.uri, logs_models=False)
    client = registry._client
    client.create_registered_model("rest-model")
    run = client.create_run(client.create_experiment("rest"))
    client.create_model_version(
        "rest-model",
        f"runs:/{run.info.run_id}/model",
        run_id=run.info.run_id,
        tags={"slipway.gate": "pass"},
    )
    return registry


class _Full:
    """Stands in for the full registry, to see whether RestReads asked it."""

    def __init__(self, inner=None):
        self.inner, self.made = inner, 0

    def __call__(self):
        self.made += 1
        if self.inner is None:
            raise RegistryError("the full registry was asked", "-")
        return self.inner


def test_a_version_is_read_over_rest_without_the_full_registry(server, registered):
    full = _Full()
    ref = RestReads(server.uri, full).get("rest-model", "1")
    assert ref == registered.get("rest-model", "1")
    assert ref.tags == {"slipway.gate": "pass"} and ref.run_id
    assert full.made == 0


def test_a_versions_registration_time_is_read_over_rest_as_mlflow_has_it(server, registered):
    full = _Full()
    registered_at = RestReads(server.uri, full).created_at("rest-model", "1")
    assert registered_at == registered.created_at("rest-model", "1")
    assert registered_at.tzinfo is not None and full.made == 0


def test_what_rest_cannot_answer_goes_to_the_full_registry(server, registered):
    full = _Full(registered)
    reads = RestReads(server.uri, full)
    with pytest.raises(RegistryError, match="has no version 9"):
        reads.get("rest-model", "9")
    assert full.made == 1
    assert reads.run_url(None) is None  # every other call: the full one, made once and kept
    assert full.made == 1


def test_an_alias_is_read_over_rest_set_or_not(server, registered):
    full = _Full()
    reads = RestReads(server.uri, full)
    assert reads.alias("rest-model", "production") is None
    assert reads.alias("no-such-model", "production") is None
    registered.set_alias("rest-model", "staging", "1")
    assert reads.alias("rest-model", "staging") == registered.alias("rest-model", "staging")
    assert full.made == 0


def test_eager_makes_the_full_registry_at_once(server, registered):
    full = _Full(registered)
    reads = RestReads(server.uri, full, eager=True)
    assert full.made == 1
    assert reads.get("rest-model", "1").version == "1"
    assert full.made == 1


def test_a_server_that_is_down_is_reported_by_the_full_registry():
    uri = f"http://127.0.0.1:{free_port()}"
    reads = RestReads(uri, lambda: MlflowRegistry(uri, logs_models=False))
    with pytest.raises(RegistryError, match="not answering"):
        reads.get("rest-model", "1")


def test_a_sqlite_registry_is_never_read_over_rest(tmp_path):
    full = _Full()
    with pytest.raises(RegistryError, match="the full registry was asked"):
        RestReads(f"sqlite:///{tmp_path / 'm.db'}", full).get("rest-model", "1")
    assert full.made == 1


def test_sqlite_without_full_mlflow_names_the_fix(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "alembic" else real(name, *a)
    )
    with pytest.raises(RegistryError) as caught:
        _preflight(f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}")
    assert "mlflow-skinny" in str(caught.value) and "slipway[local]" in caught.value.hint
    assert not (tmp_path / "state").exists()  # nothing created on the way out


def test_tags_metrics_and_the_run_link_go_over_rest(server, registered):
    full = _Full()
    reads = RestReads(server.uri, full)
    ref = reads.get("rest-model", "1")
    reads.tag("rest-model", "1", {"slipway.gate": "fail", "slipway.latency_p95_ms": "3.250"})
    reads.log_metrics(ref.run_id, {"eval_recall": 0.875, "eval_nan": float("nan")})
    tags = registered.get("rest-model", "1").tags
    assert tags["slipway.gate"] == "fail" and tags["slipway.latency_p95_ms"] == "3.250"
    metrics = registered._client.get_run(ref.run_id).data.metrics
    assert metrics == {"eval_recall": 0.875}  # NaN is left out, as MlflowRegistry does
    assert reads.run_url(ref.run_id) == registered.run_url(ref.run_id)
    assert full.made == 0


def test_a_write_the_server_refuses_goes_to_the_full_registry(server, registered):
    full = _Full(registered)
    with pytest.raises(Exception, match=r"99"):  # MLflow's own error, naming the version
        RestReads(server.uri, full).tag("rest-model", "99", {"k": "v"})
    assert full.made == 1


@pytest.mark.slow
def test_gate_against_a_champion_on_a_tracking_server(server, project, tmp_path, monkeypatch):
    """train → gate → package as the PR job's steps run them, against `mlflow server`:
    reads and tags over REST, the champion loaded by the MLflow child process."""
    import json

    from slipway.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    for name in ("GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_EVENT_PATH", "GITHUB_ACTIONS"):
        monkeypatch.delenv(name, raising=False)
    registry = MlflowRegistry(server.uri, logs_models=False)
    cfg = ["--config", str(project), "--out", str(tmp_path / "first")]
    assert main(["train", *cfg, "--param", "n_estimators=20", "--param", "max_depth=4"]) == 0
    assert main(["gate", *cfg]) == 0
    champion = json.loads((tmp_path / "first" / "train.json").read_text())["version"]
    registry.set_alias("release-risk", "production", champion)

    cfg = ["--config", str(project), "--out", str(tmp_path / "second")]
    assert main(["train", *cfg]) == 0
    assert main(["gate", *cfg]) == 0
    gate = json.loads((tmp_path / "second" / "gate.json").read_text())
    candidate = gate["candidate"]["version"]
    assert gate["champion"]["version"] == champion != candidate
    assert {g["gate"] for g in gate["gates"] if g["baseline"] is not None} >= {"regression"}
    tags = registry.get("release-risk", candidate).tags
    assert tags["slipway.gate"] == "pass"  # written over REST
    run = registry._client.get_run(gate["candidate"]["run_id"])
    assert run.data.metrics["eval_recall"] == pytest.approx(gate["candidate"]["metrics"]["recall"])
    assert gate["candidate"]["run_url"].startswith(f"{server.uri}/#/experiments/")
    assert main(["package", *cfg]) == 0
    packaged = json.loads((tmp_path / "second" / "package.json").read_text())
    assert packaged["version"] == candidate and packaged["reused"]["model"] is False
