"""The registry in a child process, so MLflow's slow work runs beside the caller's.

:class:`ProcessRegistry` forwards every :class:`~slipway.registry.Registry` call to an
:class:`~slipway.registry.MlflowRegistry` in a child process (forked from the CLI, else a fresh
interpreter) and answers in call order.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import queue
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from slipway import errors
from slipway.errors import RegistryError
from slipway.registry import (
    _REGISTRY_FIX,
    MlflowRegistry,
    ModelRef,
    Registry,
    _preflight,
    default_tracking_uri,
)


class ProcessRegistry(Registry):
    """An :class:`MlflowRegistry` in a child process.

    Importing MLflow and scikit-learn, MLflow's scan of installed packages and saving a model
    cost several seconds of CPU, nearly all of it holding the GIL. In a child process they
    run on another core while this process validates data and fits, and a version can be
    logged while this process gates it. Calls are answered in the order they were made;
    models cross the pipe pickled. The pipe joins two processes of the same run, and the
    child loads every model through MLflow first, so pickling adds no new trust.
    """

    def __init__(self, tracking_uri: str | None = None, logs_models: bool = True) -> None:
        self.tracking_uri = tracking_uri or default_tracking_uri()
        _preflight(self.tracking_uri)  # an unreachable server is reported before any work
        ours, theirs = socket.socketpair()
        self._child: subprocess.Popen[bytes] | multiprocessing.process.BaseProcess
        if _fork_is_safe():
            # A fork starts with what this process has imported (pandas, scikit-learn).
            self._child = multiprocessing.get_context("fork").Process(
                target=_serve,
                args=(theirs.fileno(), self.tracking_uri, logs_models, ours.fileno()),
                name="slipway-registry",
                daemon=True,
            )
            self._child.start()
        else:
            # A fresh interpreter that imports only the registry (multiprocessing's spawn
            # would first re-run the calling script).
            self._child = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(theirs.fileno()), self.tracking_uri]
                + (["logs-models"] if logs_models else []),
                pass_fds=[theirs.fileno()],
            )
        theirs.close()
        self._conn = Connection(ours.detach())
        self._lock = threading.Lock()
        self._outbox: queue.SimpleQueue[tuple[Future[Any], Any] | None] = queue.SimpleQueue()
        self._waiting: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
        self._lost: BaseException | None = None
        # One thread sends (pickling a model and waiting for a busy child happen there, not
        # in the caller), one reads (so a large reply never blocks the child while a large
        # request is on its way).
        self._sender = threading.Thread(target=self._send, name="registry-requests", daemon=True)
        self._reader = threading.Thread(target=self._read, name="registry-replies", daemon=True)
        self._sender.start()
        self._reader.start()

    def _fail_waiting(self, exc: BaseException) -> None:
        with self._lock:  # no call can start waiting after the last one is failed
            if self._lost is None:
                self._lost = RegistryError(
                    f"the MLflow registry process for {self.tracking_uri} stopped "
                    f"({type(exc).__name__}: {exc})",
                    _REGISTRY_FIX,
                )
            while not self._waiting.empty():
                self._waiting.get().set_exception(self._lost)

    def _send(self) -> None:
        while (item := self._outbox.get()) is not None:
            future, request = item
            try:  # pickled first: a request that cannot be sent never waits for a reply
                payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                future.set_exception(
                    RegistryError(f"cannot pass {request[0]} to MLflow: {exc}", _REGISTRY_FIX)
                )
                continue
            with self._lock:
                if self._lost is not None:
                    future.set_exception(self._lost)
                    continue
                self._waiting.put(future)
            try:
                self._conn.send_bytes(payload)
            except (OSError, ValueError) as exc:
                self._fail_waiting(exc)
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(None)

    def _read(self) -> None:
        while True:
            try:
                ok, value = self._conn.recv()
            except (EOFError, OSError) as exc:
                self._fail_waiting(exc)
                return
            future = self._waiting.get()
            if ok:
                future.set_result(value)
            else:
                kind, message, hint = value
                future.set_exception(getattr(errors, kind, RegistryError)(message, hint))

    def _submit(self, method: str, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._outbox.put((future, (method, args)))
        return future

    def _call(self, method: str, *args: Any) -> Any:
        return self._submit(method, *args).result()

    def log_and_register(
        self, name, model, example, params, metrics, tags, copy_to=None
    ) -> ModelRef:
        return self._call("log_and_register", name, model, example, params, metrics, tags, copy_to)

    def submit_log_and_register(self, name, model, example, params, metrics, tags, copy_to=None):
        args = (name, model, example, params, metrics, tags, copy_to)
        return self._submit("log_and_register", *args)

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        self._call("log_metrics", run_id, metrics)

    def get(self, name: str, version: str) -> ModelRef:
        return self._call("get", name, version)

    def created_at(self, name: str, version: str) -> datetime:
        return self._call("created_at", name, version)

    def alias(self, name: str, alias: str) -> ModelRef | None:
        return self._call("alias", name, alias)

    def find(self, name: str, tags: dict[str, str]) -> list[ModelRef]:
        return self._call("find", name, tags)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call("set_alias", name, alias, version)

    def tag(self, name: str, version: str, tags: dict[str, str]) -> None:
        self._call("tag", name, version, tags)

    def load(self, ref: ModelRef) -> Any:
        return self._call("load", ref)

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str) -> None:
        self._call("log_artifact", run_id, local_path, artifact_path)

    def download_artifact(self, run_id: str, artifact_path: str, dst_dir: str) -> str:
        return self._call("download_artifact", run_id, artifact_path, dst_dir)

    def run_url(self, run_id: str | None) -> str | None:
        return self._call("run_url", run_id)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return self._call("run_metrics", run_id)

    def close(self) -> None:
        """Let the child answer what was asked, then stop it."""
        self._outbox.put(None)
        self._sender.join(timeout=60)
        if isinstance(self._child, subprocess.Popen):
            try:
                self._child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
        else:
            self._child.join(timeout=10)
            if self._child.is_alive():
                self._child.kill()
                self._child.join()
        self._reader.join(timeout=10)
        self._conn.close()


_CHILD = (
    "import sys; from slipway.registry_process import _serve; "
    "_serve(int(sys.argv[1]), sys.argv[2], len(sys.argv) > 3)"
)


def _fork_is_safe() -> bool:
    """Forking copies only the calling thread, and MLflow keeps open database connections:
    fork only a process with one thread that has not imported MLflow (the CLI)."""
    return hasattr(os, "fork") and threading.active_count() == 1 and "mlflow" not in sys.modules


def _serve(fd: int, tracking_uri: str, logs_models: bool, parent_fd: int | None = None) -> None:
    """The child: answer ``(method, args)`` requests in order until ``None`` or EOF.

    ``parent_fd``, the parent's end of the socket inherited by a fork, is closed so that
    the child sees EOF when the parent goes away.
    """
    if parent_fd is not None:
        os.close(parent_fd)
    conn = Connection(fd)
    try:
        registry: MlflowRegistry | None = MlflowRegistry(tracking_uri, logs_models)
        failed: BaseException | None = None
    except Exception as exc:  # reported as the answer to every call
        registry, failed = None, exc
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            break
        if request is None:
            break
        method, args = request
        try:
            if failed is not None:
                raise failed
            reply = (True, getattr(registry, method)(*args))
        except errors.SlipwayError as exc:
            reply = (False, (type(exc).__name__, exc.message, exc.hint))
        except Exception as exc:
            reply = (False, ("RegistryError", f"{type(exc).__name__}: {exc}", _REGISTRY_FIX))
        try:
            conn.send(reply)
        except (OSError, ValueError):
            break
        except Exception as exc:  # a result that cannot be pickled
            conn.send((False, ("RegistryError", f"{method}: {exc}", _REGISTRY_FIX)))
    conn.close()
    # Every answer is sent and MLflow writes synchronously: skip tearing down its modules.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
