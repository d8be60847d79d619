"""The registry's edges: versions read over REST, and a SQLite registry without full MLflow."""

from __future__ import annotations

import importlib.util

import pytest

from act_harness import MlflowServer, free_port
from slipway.errors import RegistryError
from slipway.registry import MlflowRegistry, RestReads, _preflight


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


def test_what_rest_cannot_answer_goes_to_the_full_registry(server, registered):
    full = _Full(registered)
    reads = RestReads(server.uri, full)
    with pytest.raises(RegistryError, match="has no version 9"):
        reads.get("rest-model", "9")
    assert full.made == 1
    assert reads.alias("rest-model", "production") is None  # every other call: the full one
    assert full.made == 1  # made once, then kept


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
