"""The model registry: an interface, and its MLflow implementation.

By default MLflow runs embedded on SQLite under ``.slipway/``; set ``MLFLOW_TRACKING_URI`` to
use a tracking server (``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD`` when it
runs MLflow's basic-auth app). A server that does not answer, or refuses the credentials, is
reported within seconds, before any work is done, instead of after MLflow's long retry loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slipway.errors import ConfigError, RegistryError
from slipway.fsutil import state_dir, tree_digest

try:
    import fcntl
except ImportError:  # Windows: no lock; open one registry at a time
    fcntl = None  # type: ignore[assignment]


PREFLIGHT_TIMEOUT_S = 5.0
# Models are saved with cloudpickle, not MLflow's default skops: importing skops costs every
# process that saves or loads a model about 1.5 s of CPU, and its allow-list of trusted types
# is read from the model's own MLmodel file, so it stops nothing that can write to the registry.
# The registry is trusted either way: Slipway loads models from nowhere else.
SERIALIZATION_FORMAT = "cloudpickle"
# SHA-256 over the version's MLflow model directory, set when it is registered: a local copy
# with this digest holds exactly the registered bytes (see fsutil.tree_digest).
MODEL_DIGEST_TAG = "slipway.model_digest"
# Where `slipway train` leaves that copy inside its output directory, for gate and package.
MODEL_COPY_DIR = "model"
# The digest of the Bento `slipway package` built for a version: what a manifest names.
PACKAGE_DIGEST_TAG = "slipway.digest"


def _not_the_pickle_warning(record: logging.LogRecord) -> bool:
    """Drop MLflow's warning on every pickle save; the choice is explained above."""
    return not record.getMessage().startswith("Saving scikit-learn models in the pickle")


@dataclass(frozen=True)
class ModelRef:
    """One registered model version."""

    name: str
    version: str
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


class Registry(ABC):
    """What Slipway needs from a model registry."""

    tracking_uri: str

    @abstractmethod
    def log_and_register(
        self,
        name: str,
        model: Any,
        example: Any,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        copy_to: str | None = None,
    ) -> ModelRef:
        """Log a fitted model with its run and register it as a new version.

        With ``copy_to``, also leave the registered MLflow model directory there, and tag the
        version with its digest (:data:`MODEL_DIGEST_TAG`) so later steps can use the copy.
        """

    def submit_log_and_register(
        self,
        name: str,
        model: Any,
        example: Any,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        copy_to: str | None = None,
    ) -> Future[ModelRef]:
        """Start :meth:`log_and_register`; the future holds the version once registered.

        This implementation registers before it returns; one that can work in the
        background lets the caller go on meanwhile.
        """
        future: Future[ModelRef] = Future()
        try:
            future.set_result(
                self.log_and_register(name, model, example, params, metrics, tags, copy_to)
            )
        except Exception as exc:
            future.set_exception(exc)
        return future

    def close(self) -> None:  # noqa: B027 - optional: only registries holding resources need it
        """Release what the registry holds (a child process, connections)."""

    @abstractmethod
    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        """Add metrics to the run a version came from (the gate's eval metrics)."""

    @abstractmethod
    def get(self, name: str, version: str) -> ModelRef:
        """One version; :class:`RegistryError` when it does not exist."""

    @abstractmethod
    def created_at(self, name: str, version: str) -> datetime:
        """When ``version`` was registered (UTC); :class:`RegistryError` when it does not exist."""

    @abstractmethod
    def alias(self, name: str, alias: str) -> ModelRef | None:
        """The version an alias points at, or None when the alias is not set."""

    @abstractmethod
    def find(self, name: str, tags: dict[str, str]) -> list[ModelRef]:
        """The versions of ``name`` carrying every tag in ``tags``, newest first."""

    @abstractmethod
    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version``."""

    @abstractmethod
    def tag(self, name: str, version: str, tags: dict[str, str]) -> None:
        """Set tags on a version."""

    @abstractmethod
    def load(self, ref: ModelRef) -> Any:
        """The fitted model of a version."""

    @abstractmethod
    def log_artifact(self, run_id: str, local_path: str, artifact_path: str) -> None:
        """Store the file ``local_path`` among ``run_id``'s artifacts, in ``artifact_path``."""

    @abstractmethod
    def download_artifact(self, run_id: str, artifact_path: str, dst_dir: str) -> str:
        """Download the artifact ``artifact_path`` of ``run_id`` into ``dst_dir``; its path."""

    @abstractmethod
    def run_url(self, run_id: str | None) -> str | None:
        """A browser link to the run when the tracking server has a UI."""

    @abstractmethod
    def run_metrics(self, run_id: str) -> dict[str, float]:
        """The latest value of each metric of a run (e.g. the gate's ``eval_*`` metrics)."""


def load_copy(path: Path, ref: ModelRef) -> Any | None:
    """The model in a local copy of ``ref``'s MLflow model directory, when the copy's digest
    is the one the registry recorded and it is saved in Slipway's format; else None.

    Loading it costs no download and no MLflow import; the digest makes it the same bytes.
    """
    expected = ref.tags.get(MODEL_DIGEST_TAG)
    if not expected or not (path / "MLmodel").is_file():
        return None
    import yaml

    try:
        mlmodel = yaml.safe_load((path / "MLmodel").read_text(encoding="utf-8"))
        flavor = mlmodel["flavors"]["sklearn"]
        pickled = path / flavor["pickled_model"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None
    if flavor.get("serialization_format") != SERIALIZATION_FORMAT or not pickled.is_file():
        return None
    if f"sha256:{tree_digest(path)}" != expected:
        return None
    import cloudpickle

    with pickled.open("rb") as handle:
        return cloudpickle.load(handle)


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else SQLite under the state directory."""
    configured = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if configured:
        return configured
    return f"sqlite:///{state_dir() / 'mlflow.db'}"


def http_settings() -> dict[str, Any]:
    """The ``requests`` arguments MLflow's client would use for a tracking server: a bearer
    token (``MLFLOW_TRACKING_TOKEN``) or basic auth (``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD``; empty means unset, as an unset workflow secret is), and its
    TLS settings."""
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    verify: bool | str = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or (
        os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() != "true"
    )
    return {
        "headers": {"Authorization": f"Bearer {token}"} if token else {},
        "auth": (user, password or "") if user and not token else None,
        "verify": verify,
        "cert": os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH") or None,
    }


def credentials_error(uri: str, status: int) -> ConfigError:
    """What a tracking server's 401 (who are you?) or 403 (not you) means, and the fix.

    A :class:`ConfigError`, not a :class:`RegistryError`: the settings are wrong, not the
    registry, so no caller takes it for a missing version; every command exits 2 on it.
    """
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if status == 403:
        return ConfigError(
            f"the MLflow tracking server at {uri} does not let user {user or '(none)'} do this "
            "(HTTP 403)",
            "give that user EDIT permission on the experiment and registered model (or MANAGE), "
            "or set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user who has it "
            "(in a workflow: the repository secrets of those names)",
        )
    given = (
        f"it refused user {user!r} and the password given"
        if user
        else "no credentials were given (MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
        "are unset or empty)"
    )
    return ConfigError(
        f"the MLflow tracking server at {uri} asks for a login (HTTP 401): {given}",
        "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user of that server "
        "(in a workflow: the repository secrets of those names)",
    )


def refused_credentials(exc: BaseException, uri: str) -> ConfigError | None:
    """The :func:`credentials_error` an MLflow (or HTTP) failure stands for; None when it is
    not a 401 or a 403. MLflow's client raises both as ``MlflowException`` with an error code,
    its proxied-artifact client as ``requests.HTTPError``."""
    code = str(getattr(exc, "error_code", ""))
    status = {"UNAUTHENTICATED": 401, "CUSTOMER_UNAUTHORIZED": 401, "PERMISSION_DENIED": 403}.get(
        code, getattr(getattr(exc, "response", None), "status_code", None)
    )
    return credentials_error(uri, status) if status in (401, 403) else None


def _preflight(uri: str) -> None:
    if uri.startswith(("http://", "https://")):
        import requests  # deferred: only a tracking server needs it

        # One cheap call that any user may make: it answers whether the server is up and
        # whether it takes the credentials (a server without auth takes any).
        try:
            answer = requests.get(
                f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search",
                params={"max_results": 1},
                timeout=PREFLIGHT_TIMEOUT_S,
                **http_settings(),
            )
        except requests.RequestException as exc:
            raise RegistryError(
                f"the MLflow tracking server at {uri} is not answering ({type(exc).__name__})",
                "start it (e.g. `mlflow server --host 127.0.0.1 --port 5000`), fix "
                "MLFLOW_TRACKING_URI, or unset it to use the local SQLite registry",
            ) from exc
        if answer.status_code in (401, 403):
            raise credentials_error(uri, answer.status_code)
    elif uri.startswith("sqlite:///"):
        import importlib.util

        if (
            importlib.util.find_spec("alembic") is None
            or importlib.util.find_spec("sqlalchemy") is None
        ):
            raise RegistryError(
                f"the registry {uri} is a SQLite file, which needs the full `mlflow` package; "
                "this environment has only MLflow's tracking client (mlflow-skinny)",
                "set MLFLOW_TRACKING_URI to a tracking server, or install `slipway[local]`",
            )
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def _seed_requirement_check() -> None:
    """Spare MLflow its scan of every installed distribution (≈0.8 s) before the first save.

    MLflow maps all importable modules to their distributions only to check that the running
    environment satisfies the model's pip requirements. Slipway passes those requirements
    itself, pinned from the running versions (``scikit-learn``, and the ``mlflow`` pin MLflow
    adds), so the map needs only those. Slipway never asks MLflow to infer requirements, the
    one other use of the map.
    """
    with contextlib.suppress(Exception):
        from mlflow.utils import requirements_utils

        if requirements_utils._MODULES_TO_PACKAGES is None:
            requirements_utils._MODULES_TO_PACKAGES = {
                "sklearn": ["scikit-learn"],
                **requirements_utils.MLFLOW_MODULES_TO_PACKAGES,
            }


class MlflowRegistry(Registry):
    """Registry backed by MLflow (SQLite file or tracking server)."""

    def __init__(self, tracking_uri: str | None = None, logs_models: bool = True) -> None:
        """``logs_models=False`` for callers that only read and tag versions: the
        background connection then skips warming what logging a model needs."""
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.logs_models = logs_models
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        _preflight(self.tracking_uri)
        for noisy in ("mlflow", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        logging.getLogger("mlflow.sklearn").addFilter(_not_the_pickle_warning)
        # Importing MLflow and opening its store take seconds: do it in the background while
        # the caller validates data and fits; the first registry call waits for it.
        self._connected: dict[str, Any] = {}
        self._connecting = threading.Thread(target=self._connect, name="mlflow-connect")
        self._connecting.start()

    def _connect(self) -> None:
        try:
            import mlflow
            import mlflow.sklearn

            if self.logs_models:
                import sklearn.pipeline  # noqa: F401 - the model to log unpickles into it

                _seed_requirement_check()

            mlflow.set_tracking_uri(self.tracking_uri)
            self._connected["mlflow"] = mlflow
            self._connected["client"] = _Checked(self._open_client(mlflow), self.tracking_uri)
        except BaseException as exc:  # re-raised in the caller's thread
            self._connected["error"] = exc

    def _open_client(self, mlflow: Any) -> Any:
        """The client, once its store is open. A new SQLite file gets MLflow's schema when
        first opened; two processes doing that at once corrupt its migrations, so opening
        a SQLite registry holds a lock file beside the database."""
        if not self.tracking_uri.startswith("sqlite:///") or fcntl is None:
            return mlflow.MlflowClient(self.tracking_uri)
        database = Path(self.tracking_uri.removeprefix("sqlite:///"))
        with database.with_name(database.name + ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            return mlflow.MlflowClient(self.tracking_uri)

    def _wait(self) -> dict[str, Any]:
        self._connecting.join()
        if "error" in self._connected:
            error = self._connected["error"]
            raise RegistryError(
                f"cannot open the MLflow registry at {self.tracking_uri}: {error}", _REGISTRY_FIX
            ) from error
        return self._connected

    @property
    def _mlflow(self) -> Any:
        return self._wait()["mlflow"]

    @property
    def _client(self) -> Any:
        return self._wait()["client"]

    def _experiment(self, name: str) -> str:
        found = self._client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.tracking_uri.startswith("sqlite:///"):  # artifacts live beside the database
            database = Path(self.tracking_uri.removeprefix("sqlite:///"))
            location = (database.parent / "artifacts").resolve().as_uri()
        return self._client.create_experiment(name, artifact_location=location)

    def log_and_register(
        self, name, model, example, params, metrics, tags, copy_to=None
    ) -> ModelRef:
        self._wait()
        import mlflow.sklearn
        import sklearn
        from mlflow.models import infer_signature

        sample = example.head(100)  # enough to infer the signature; the whole set costs seconds
        try:
            with self._mlflow.start_run(experiment_id=self._experiment(name)) as run:
                self._mlflow.log_params(params)
                self._mlflow.log_metrics(metrics)
                self._mlflow.set_tags(tags)
                logged = mlflow.sklearn.log_model(
                    model,
                    name="model",
                    signature=infer_signature(sample, model.predict_proba(sample)[:, 1]),
                    input_example=example.head(5),
                    pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
                    serialization_format=SERIALIZATION_FORMAT,
                )
                version = self._client.create_model_version(
                    name if self._registered(name) else self._create(name),
                    source=logged.model_uri,
                    run_id=run.info.run_id,
                    model_id=logged.model_id,  # a tracking server requires it with models:/ sources
                    tags=tags,
                )
            tags = dict(tags)
            if copy_to is not None:
                ref = ModelRef(name, str(version.version), run.info.run_id)
                tags[MODEL_DIGEST_TAG] = self._copy_model(ref, Path(copy_to))
                self.tag(name, ref.version, {MODEL_DIGEST_TAG: tags[MODEL_DIGEST_TAG]})
        except Exception as exc:
            if refused := refused_credentials(exc, self.tracking_uri):
                raise refused from exc
            if isinstance(exc, self._mlflow.exceptions.MlflowException):
                raise RegistryError(
                    f"MLflow refused to register {name}: {exc}", _REGISTRY_FIX
                ) from exc
            raise
        return ModelRef(name, str(version.version), run.info.run_id, tags)

    def _copy_model(self, ref: ModelRef, target: Path) -> str:
        """Download the registered model directory to ``target`` (replaced whole); its digest.

        What is copied is what the registry stores, read back, not what was sent to it.
        """
        import mlflow.artifacts

        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".model-", dir=target.parent) as tmp:
            into = Path(tmp) / "download"
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=into))
            digest = f"sha256:{tree_digest(local)}"
            old = Path(tmp) / "old"
            if target.exists():
                target.rename(old)
            local.rename(target)
        return digest

    def _registered(self, name: str) -> bool:
        try:
            self._client.get_registered_model(name)
        except self._mlflow.exceptions.MlflowException:
            return False
        return True

    def _create(self, name: str) -> str:
        self._client.create_registered_model(name)
        return name

    def _model_version(self, name: str, version: str, fix: str) -> Any:
        """MLflow's record of one version; :class:`RegistryError` naming ``fix`` when absent."""
        try:
            return self._client.get_model_version(name, str(version))
        except self._mlflow.exceptions.MlflowException as exc:
            raise RegistryError(
                f"model {name} has no version {version} in {self.tracking_uri}", fix
            ) from exc

    def get(self, name: str, version: str) -> ModelRef:
        fix = "run `slipway train` first, or check MLFLOW_TRACKING_URI"
        found = self._model_version(name, version, fix)
        return ModelRef(name, str(found.version), found.run_id, dict(found.tags))

    def created_at(self, name: str, version: str) -> datetime:
        fix = "check the version the manifest names, or MLFLOW_TRACKING_URI"
        found = self._model_version(name, version, fix)
        return datetime.fromtimestamp(int(found.creation_timestamp) / 1000, UTC)

    def alias(self, name: str, alias: str) -> ModelRef | None:
        try:
            found = self._client.get_model_version_by_alias(name, alias)
        except self._mlflow.exceptions.MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc):
                return None
            raise RegistryError(
                f"cannot read alias {alias} of {name}: {exc}", _REGISTRY_FIX
            ) from exc
        return ModelRef(name, str(found.version), found.run_id, dict(found.tags))

    def find(self, name: str, tags: dict[str, str]) -> list[ModelRef]:
        wanted = [f"name = '{_quoted(name)}'"]
        wanted += [f"tags.`{key}` = '{_quoted(value)}'" for key, value in tags.items()]
        try:
            found = self._client.search_model_versions(" and ".join(wanted))
        except self._mlflow.exceptions.MlflowException as exc:
            raise RegistryError(f"cannot search versions of {name}: {exc}", _REGISTRY_FIX) from exc
        refs = [ModelRef(name, str(v.version), v.run_id, dict(v.tags)) for v in found]
        return sorted(refs, key=lambda ref: -int(ref.version))

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.get(name, version)
        self._client.set_registered_model_alias(name, alias, str(version))

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, value, now, 0) for key, value in metrics.items() if value == value]
        self._client.log_batch(run_id, metrics=batch)

    def tag(self, name: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self._client.set_model_version_tag(name, str(version), key, value)

    def load(self, ref: ModelRef) -> Any:
        import mlflow.sklearn

        try:
            return mlflow.sklearn.load_model(ref.uri)
        except Exception as exc:
            if refused := refused_credentials(exc, self.tracking_uri):
                raise refused from exc
            if isinstance(exc, self._mlflow.exceptions.MlflowException):
                raise RegistryError(f"cannot load {ref.uri}: {exc}", _REGISTRY_FIX) from exc
            raise

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str) -> None:
        try:
            self._client.log_artifact(run_id, local_path, artifact_path)
        except self._mlflow.exceptions.MlflowException as exc:
            raise RegistryError(
                f"cannot store {Path(local_path).name} in run {run_id}: {exc}", _REGISTRY_FIX
            ) from exc

    def download_artifact(self, run_id: str, artifact_path: str, dst_dir: str) -> str:
        try:
            return self._client.download_artifacts(run_id, artifact_path, dst_dir)
        except self._mlflow.exceptions.MlflowException as exc:
            raise RegistryError(
                f"cannot download {artifact_path} of run {run_id}: {exc}", _REGISTRY_FIX
            ) from exc

    def run_metrics(self, run_id: str) -> dict[str, float]:
        try:
            return dict(self._client.get_run(run_id).data.metrics)
        except self._mlflow.exceptions.MlflowException as exc:
            raise RegistryError(f"cannot read run {run_id}: {exc}", _REGISTRY_FIX) from exc

    def run_url(self, run_id: str | None) -> str | None:
        if run_id is None or not self.tracking_uri.startswith(("http://", "https://")):
            return None
        run = self._client.get_run(run_id)
        return (
            f"{self.tracking_uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
        )


_REGISTRY_FIX = "check that the MLflow tracking server is healthy and MLFLOW_TRACKING_URI is right"


class _Checked:
    """MLflow's client, with the server's refusals of the credentials (HTTP 401 and 403)
    raised as :func:`credentials_error`, which names the variables to set, instead of as
    MLflow errors that the methods above would take for "no such version"."""

    def __init__(self, client: Any, tracking_uri: str) -> None:
        self._client = client
        self._tracking_uri = tracking_uri

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._client, name)
        if not callable(found):
            return found

        def checked(*args: Any, **kwargs: Any) -> Any:
            try:
                return found(*args, **kwargs)
            except Exception as exc:
                if refused := refused_credentials(exc, self._tracking_uri):
                    raise refused from exc
                raise

        return checked


def _quoted(value: str) -> str:
    """``value`` inside a single-quoted MLflow search string."""
    return value.replace("\\", "\\\\").replace("'", "\\'")
