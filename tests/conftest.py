"""Shared fixtures: the model project in a temp dir, a real MLflow registry, the GitHub emulator."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from github_emulator import Emulator, load_openapi

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "model"
TARGET = ".slipway/cache/openapi/api.github.com.json"  # the Makefile's file target
SPEC = Path(os.environ.get("SLIPWAY_GITHUB_OPENAPI") or REPO / TARGET)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")


def edit_config(path: Path, **changes: object) -> None:
    """Update keys of a slipway.yaml; dotted keys reach into mappings (``gates.latency``)."""
    document = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = document
        for key in parents:
            node = node[key]
        node[last] = value
    path.write_text(yaml.safe_dump(document, sort_keys=False))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the model project with the committed sample data; returns slipway.yaml.

    Gates are made cheaper (fewer resamples and latency calls) so tests stay quick.
    """
    target = tmp_path / "model"
    shutil.copytree(MODEL, target, ignore=shutil.ignore_patterns("__pycache__"))
    config = target / "slipway.yaml"
    edit_config(
        config,
        **{
            "gates.regression.resamples": 300,
            "gates.latency": {"p95_ms": 1000, "calls": 20},
        },
    )
    return config


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite MLflow registry for this test, selected through MLFLOW_TRACKING_URI."""
    uri = f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in (
        "GITHUB_SHA",
        "GITHUB_EVENT_PATH",
        "SLIPWAY_PR_NUMBER",
        "GITHUB_STEP_SUMMARY",
        "GITHUB_OUTPUT",
        "GITHUB_ACTIONS",
    ):
        monkeypatch.delenv(name, raising=False)
    return uri


def _empty_registry_database() -> Path:
    """An MLflow SQLite database with its tables made and nothing in them, one per MLflow
    version, kept in the temp dir: a copy spares each test's registry MLflow's schema
    migrations (about two seconds). Written to a temp name and renamed into place."""
    import tempfile

    import mlflow
    from mlflow import MlflowClient

    path = Path(tempfile.gettempdir()) / f"slipway-empty-mlflow-{mlflow.__version__}.db"
    if not path.is_file():
        staging = Path(tempfile.mkdtemp(prefix="slipway-empty-mlflow-"))
        MlflowClient(f"sqlite:///{staging / 'mlflow.db'}").search_experiments()
        (staging / "mlflow.db").replace(path)
        shutil.rmtree(staging, ignore_errors=True)
    return path


@pytest.fixture
def registry(tracking_uri: str):
    """The test's SQLite registry, starting from an empty database with MLflow's tables."""
    from slipway.registry import MlflowRegistry

    database = Path(tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_empty_registry_database(), database)
    return MlflowRegistry(tracking_uri)


@pytest.fixture(scope="session")
def openapi():
    """GitHub's REST description, parsed once per session (``make`` fetches it when missing)."""
    if not SPEC.is_file() and SPEC == REPO / TARGET:
        subprocess.run(["make", "-s", TARGET], cwd=REPO, check=False)
    if not SPEC.is_file():
        pytest.fail(f"{SPEC} is missing: run `make {TARGET}` (needs npm)")
    return load_openapi(SPEC)


def checked_emulator(openapi) -> Iterator[Emulator]:
    """Serve an emulator, then fail when any request or response did not validate."""
    server = Emulator(*openapi).start()
    yield server
    server.stop()
    assert server.invalid == [], "requests that do not match GitHub's OpenAPI description"
    assert server.bad_responses == [], "emulator responses that do not match the description"


@pytest.fixture
def emulator(openapi):
    """A fresh emulator per test."""
    yield from checked_emulator(openapi)


@pytest.fixture
def versions(registry):
    """Register versions of release-risk carrying ``tags`` (say, those gate and package leave),
    each from its own run; returns the version number as a string."""
    client = registry._client
    client.create_registered_model("release-risk")
    experiment = client.create_experiment("versions")

    def add(**tags: str) -> str:
        run = client.create_run(experiment)
        found = client.create_model_version(
            "release-risk", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id, tags=tags
        )
        return str(found.version)

    return add


@pytest.fixture
def github(emulator, monkeypatch):
    """The emulator as the repository the GitHub context variables name, with its token."""
    from github_emulator import TOKEN

    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", emulator.repo)
    monkeypatch.setenv("GITHUB_API_URL", emulator.url)
    return emulator


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 for one module's workflow runs, stopped by its PID."""
    from act_harness import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server.uri
    server.stop()


@pytest.fixture(scope="module")
def gh(openapi):
    """One checked emulator for one module's workflow runs."""
    yield from checked_emulator(openapi)


@pytest.fixture
def s3(monkeypatch):
    """A local S3-compatible server (moto's, on 127.0.0.1, stopped at the end) and the query
    that points pyarrow's S3 filesystem at it; the credentials come from the environment, as
    they would on a runner."""
    from moto.server import ThreadedMotoServer

    for name, value in {
        "AWS_ACCESS_KEY_ID": "slipway-test",
        "AWS_SECRET_ACCESS_KEY": "slipway-test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    server.stop()
