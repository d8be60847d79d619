"""The live service's contract and its behaviour under load, on real servers on loopback.

One version is trained on the committed sample data; ``slipway serve`` starts it on a free
port of 127.0.0.1 (stopped by PID at the end):

- one worker: schemathesis fuzzes it from its own ``/docs.json`` (seeded, a fixed number of
  examples) and finds nothing; at the stated capacity (``MAX_CONCURRENCY`` clients at once,
  single-row and 1,000-row requests) every request is answered 200 and every answered row is
  in the prediction log once; past it, requests are 503 with ``Retry-After``, and no other
  5xx, both when the worker is held full (deterministic) and in a burst;
- two workers: one is killed (SIGKILL) mid-load; a new one takes its place and the
  environment keeps answering, with no 5xx.

Only counts and statuses are asserted, never timings; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from slipway.config import load_config
from slipway.manifests import Manifest, render_manifest
from slipway.propose.contract import read_dataset
from slipway.serve.server import free_port, start_server, stop_pid
from slipway.serve.smoke import records_from_frame

REPO = Path(__file__).resolve().parent.parent
CAPACITY = 32  # SLIPWAY_MAX_CONCURRENCY's default: requests in flight per worker
ROUNDS = 12  # requests per client at capacity; every fourth one of 1,000 rows
BIG = 1000
SCHEMATHESIS_EXAMPLES = 150
SEED = 20261202
WAIT_S = 60.0  # the longest any condition below is waited for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211"),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Iterator[SimpleNamespace]:
    """Version 1 trained on a real MLflow registry; the eval records as a client sends them."""
    from slipway.propose.training import train
    from slipway.registry import MlflowRegistry

    root = tmp_path_factory.mktemp("load")
    shutil.copytree(REPO / "model", root / "model", ignore=shutil.ignore_patterns("__pycache__"))
    config_path = root / "model" / "slipway.yaml"
    patch = pytest.MonkeyPatch()
    uri = f"sqlite:///{root / 'state' / 'mlflow.db'}"
    patch.setenv("MLFLOW_TRACKING_URI", uri)
    patch.setenv("BENTOML_HOME", str(root / "bentoml"))
    patch.setenv("SLIPWAY_HOME", str(root / "state"))
    for name in ("GITHUB_OUTPUT", "GITHUB_ACTIONS", "SLIPWAY_ENV", "SLIPWAY_MANIFEST"):
        patch.delenv(name, raising=False)
    patch.delenv("SLIPWAY_MAX_CONCURRENCY", raising=False)  # the stated default
    registry = MlflowRegistry(uri)
    config = load_config(config_path)
    train(config, registry, root / "out")
    environments = root / "environments"
    environments.mkdir()
    manifest = Manifest(environment="staging", model="release-risk", version=1)
    (environments / "staging.yaml").write_text(render_manifest(manifest))
    records = records_from_frame(read_dataset(root / "model" / "data" / "eval.csv"), config)
    yield SimpleNamespace(
        root=root,
        config=config,
        config_path=config_path,
        registry=registry,
        manifest=environments / "staging.yaml",
        records=records,
    )
    patch.undo()


def _workers(pid: int) -> list[int]:
    """The worker processes of the server ``pid`` (BentoML's, children of its arbiter)."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if "_bentoml_impl.worker.service" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return sorted(found)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _server(project, name: str, workers: int) -> Iterator[SimpleNamespace]:
    logs = project.root / f"log-{name}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLIPWAY_LOG_DIR", str(logs))
        running = start_server(
            project.config,
            project.registry,
            project.manifest,
            project.config_path,
            port=free_port(),
            timeout=120,
            slot=f"staging-{name}",
            workers=workers,
        )
    pid = int(running["pid"])
    started: set[int] = set(_workers(pid))
    try:
        yield SimpleNamespace(url=running["url"], pid=pid, logs=logs, started=started)
    finally:
        started.update(_workers(pid))
        stop_pid(pid)
        for worker in started:  # in their own process groups: stop what the arbiter left
            if _alive(worker):
                os.kill(worker, signal.SIGKILL)


@pytest.fixture(scope="module")
def one_worker(project) -> Iterator[SimpleNamespace]:
    yield from _server(project, "one", 1)


@pytest.fixture(scope="module")
def two_workers(project) -> Iterator[SimpleNamespace]:
    yield from _server(project, "two", 2)


def _body(project, prefix: str, rows: int) -> bytes:
    """``rows`` eval records with release ids ``prefix-0``…, as one request body."""
    base = project.records
    records = [{**base[i % len(base)], "release_id": f"{prefix}-{i}"} for i in range(rows)]
    return json.dumps({"records": records}).encode()


JSON = {"Content-Type": "application/json"}


def _logged(logs: Path) -> list[dict]:
    lines = []
    for path in sorted(logs.glob("predictions*.jsonl")):
        # one record a line; a release id may hold U+2028 and the like, which JSON leaves be
        lines.extend(json.loads(line) for line in path.read_bytes().split(b"\n") if line)
    return lines


def _wait_logged(logs: Path, request_ids: set[str]) -> list[dict]:
    """The log once it holds every one of ``request_ids`` (or after WAIT_S)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        logged = _logged(logs)
        if request_ids <= {r.get("request_id") for r in logged} or time.monotonic() > deadline:
            return logged
        time.sleep(0.2)


def _metadata(url: str) -> dict:
    return requests.get(f"{url}/metadata", timeout=30).json()


def test_schemathesis_finds_nothing_against_the_live_service(one_worker, tmp_path):
    """Every operation of /docs.json, positive and negative cases, every check."""
    command = [str(Path(sys.executable).with_name("st")), "run", f"{one_worker.url}/docs.json"]
    command += ["--checks", "all", "--max-examples", str(SCHEMATHESIS_EXAMPLES)]
    command += ["--seed", str(SEED), "--workers", "1", "--generation-database", "none"]
    command += ["--no-color", "--request-timeout", "30"]
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout, done.stdout[-3000:]
    generated = [line for line in done.stdout.splitlines() if "generated" in line]
    print(*generated)


def test_at_capacity_every_request_is_answered_and_logged(project, one_worker):
    url = one_worker.url
    before = _metadata(url)["prediction_log"]

    def client(number: int) -> list[tuple[int, int, list[str]]]:
        results = []
        with requests.Session() as session:
            for round_ in range(ROUNDS):
                rows = BIG if round_ % 4 == 3 else 1
                body = _body(project, f"cap-{number}-{round_}", rows)
                answer = session.post(f"{url}/predict", data=body, headers=JSON, timeout=60)
                ids = [a["request_id"] for a in answer.json()] if answer.ok else []
                results.append((answer.status_code, rows, ids))
        return results

    with ThreadPoolExecutor(CAPACITY) as pool:
        results = [r for batch in pool.map(client, range(CAPACITY)) for r in batch]
    statuses = Counter(status for status, _, _ in results)
    assert statuses == {200: CAPACITY * ROUNDS}, statuses
    answered = {i for _, _, ids in results for i in ids}
    rows = sum(n for _, n, _ in results)
    assert len(answered) == rows  # one answer, one request id, per row
    logged = _wait_logged(one_worker.logs, answered)
    mine = [r for r in logged if str(r.get("release_id", "")).startswith("cap-")]
    assert Counter(r["request_id"] for r in mine) == Counter(answered)  # each once, none lost
    assert all(r["served"] and r["output"] is not None for r in mine)
    after = _metadata(url)
    assert after["prediction_log"]["dropped"] == before["dropped"] == 0
    assert after["load"]["shed"] == 0 and after["load"]["max_concurrency"] == CAPACITY


def _hold(url: str, body: bytes) -> http.client.HTTPConnection:
    """A request whose headers and first half of the body are sent: in flight, unfinished."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.putrequest("POST", "/predict")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body[: len(body) // 2])
    return connection


def _wait_in_flight(url: str, count: int) -> dict:
    deadline = time.monotonic() + WAIT_S
    while (metadata := _metadata(url))["load"]["in_flight"] != count:
        assert time.monotonic() < deadline, metadata["load"]
        time.sleep(0.1)
    return metadata


def test_past_capacity_requests_are_503_with_retry_after_and_nothing_else(project, one_worker):
    url = one_worker.url
    shed = _metadata(url)["load"]["shed"]
    bodies = [_body(project, f"held-{i}", 1) for i in range(CAPACITY)]
    held = [_hold(url, body) for body in bodies]
    try:
        _wait_in_flight(url, CAPACITY)
        refused = [
            requests.post(
                f"{url}/predict", data=_body(project, f"over-{i}", 1), headers=JSON, timeout=30
            )
            for i in range(8)
        ]
        assert {r.status_code for r in refused} == {503}
        assert {r.headers["Retry-After"] for r in refused} == {"1"}
        assert all(r.json()["error"].startswith("overloaded") for r in refused)
        assert _metadata(url)["load"]["shed"] == shed + 8
    finally:
        for connection, body in zip(held, bodies, strict=True):
            connection.send(body[len(body) // 2 :])
    statuses, answered = [], set()
    for connection in held:
        with contextlib.closing(connection):
            answer = connection.getresponse()
            statuses.append(answer.status)
            answered.update(a["request_id"] for a in json.loads(answer.read()))
    assert statuses == [200] * CAPACITY
    logged = _wait_logged(one_worker.logs, answered)
    assert answered <= {r.get("request_id") for r in logged}
    assert not [r for r in logged if str(r.get("release_id", "")).startswith("over-")]

    # A burst of three times the capacity: each request is answered 200 or refused 503.
    def burst(number: int) -> list[requests.Response]:
        with requests.Session() as session:
            return [
                session.post(
                    f"{url}/predict",
                    data=_body(project, f"burst-{number}-{i}", BIG if i == 0 else 1),
                    headers=JSON,
                    timeout=60,
                )
                for i in range(4)
            ]

    with ThreadPoolExecutor(3 * CAPACITY) as pool:
        responses = [r for batch in pool.map(burst, range(3 * CAPACITY)) for r in batch]
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, statuses
    assert all(r.headers.get("Retry-After") == "1" for r in responses if r.status_code == 503)
    print(f"burst of {3 * CAPACITY} clients x 4 requests on 1 worker: {dict(statuses)}")
    answered = {a["request_id"] for r in responses if r.status_code == 200 for a in r.json()}
    assert answered <= {r.get("request_id") for r in _wait_logged(one_worker.logs, answered)}
    assert _metadata(url)["load"]["in_flight"] == 0


def test_a_killed_worker_is_replaced_and_the_environment_keeps_answering(project, two_workers):
    url, pid = two_workers.url, two_workers.pid
    deadline = time.monotonic() + WAIT_S
    while len(workers := _workers(pid)) != 2:
        assert time.monotonic() < deadline, workers
        time.sleep(0.2)
    stop = threading.Event()
    killed_at = [float("inf")]  # the moments of the kill and of the new worker's start,
    replaced_at = [float("inf")]  # on the monotonic clock
    results: list[tuple[float, int | str, list[str]]] = []  # (sent at, status, request ids)
    sequences: dict[int, list[int | str]] = {}  # each client's statuses, in order
    lock = threading.Lock()

    def client(number: int) -> None:
        session, count = requests.Session(), 0
        while not stop.is_set():
            sent = time.monotonic()
            body = _body(project, f"kill-{number}-{count}", 1)
            try:
                answer = session.post(f"{url}/predict", data=body, headers=JSON, timeout=60)
                status: int | str = answer.status_code
                ids = [a["request_id"] for a in answer.json()] if answer.ok else []
            # The killed worker's connections break: refused, reset, or cut inside a body.
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                status, ids = "connection", []
                session.close()
                session = requests.Session()
            with lock:
                results.append((sent, status, ids))
                sequences.setdefault(number, []).append(status)
            count += 1
        session.close()

    def answered() -> int:
        with lock:
            return sum(1 for _, status, _ in results if status == 200)

    def wait_answered(count: int) -> None:
        limit = time.monotonic() + WAIT_S
        while answered() < count:
            assert time.monotonic() < limit, Counter(s for _, s, _ in results)
            time.sleep(0.05)

    clients = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in clients:
        thread.start()
    try:
        wait_answered(200)
        victim = workers[0]
        killed_at[0] = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        limit = time.monotonic() + WAIT_S
        while len(replaced := _workers(pid)) != 2 or victim in replaced:
            assert time.monotonic() < limit, f"worker {victim} not replaced: {replaced}"
            time.sleep(0.2)
        replaced_at[0] = time.monotonic()
        (newcomer,) = set(replaced) - set(workers)
        two_workers.started.add(newcomer)
        # The new worker answers too (a fresh connection lands on either worker).
        limit = time.monotonic() + WAIT_S
        while _metadata(url)["load"]["worker"] != newcomer:
            assert time.monotonic() < limit, "the new worker never answered"
            time.sleep(0.05)
        wait_answered(answered() + 200)
    finally:
        stop.set()
        for thread in clients:
            thread.join(WAIT_S)
    statuses = Counter(status for _, status, _ in results)
    assert set(statuses) <= {200, "connection"}, statuses  # never a 5xx
    # Only requests the killed worker held fail, each once: the client's next one is answered.
    for sequence in sequences.values():
        assert ("connection", "connection") not in set(itertools.pairwise(sequence)), sequence
    assert not [s for sent, s, _ in results if s == "connection" and sent > replaced_at[0]]
    after = [ids for sent, status, ids in results if status == 200 and sent > killed_at[0]]
    assert len(after) >= 200
    late = {i for ids in after for i in ids}
    logged = {r.get("request_id") for r in _wait_logged(two_workers.logs, late)}
    assert late <= logged  # everything answered after the kill is in the log
    before = {i for sent, s, ids in results if s == 200 and sent <= killed_at[0] for i in ids}
    print(
        f"2 workers, worker {victim} killed after {len(before)} answers, replaced by "
        f"{newcomer}: {dict(statuses)}; answered before the kill but not logged (the killed "
        f"worker's queue): {len(before - logged)}"
    )
