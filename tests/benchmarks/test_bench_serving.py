"""Serving: Slipway's BentoML service against `mlflow models serve` of the same registered version.

One version of the model is trained on the committed sample data and served twice, one server
at a time, one worker each, on 127.0.0.1: by `mlflow models serve -m models:/release-risk/1
--env-manager local --workers 1` (POST /invocations, {"dataframe_records": [row]}) and by
`slipway serve staging` (POST /predict, {"records": [row]}). `wrk` drives each with 8
connections on 1 thread, single-row requests rotating over 100 records, after a short
warm-up. Targets: throughput Slipway/MLflow >= 4, p99 latency Slipway/MLflow <= 0.5.

Then 1,000 rows per request to Slipway's service (rows/s, target >= 20,000), printed beside the
in-process floor: rows/s of ``model.predict_proba`` on the same 1,000-row DataFrame in a loop,
and rows/s of the service's own scoring function (the same trees, without scikit-learn's
per-tree dispatch) in the same loop. The load average is printed too: the machine is shared.

Nothing asserts on timings: only that both servers gave the in-process model's answers and that
wrk saw no errors and no non-2xx responses. Servers are stopped by process group at the end,
also on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import requests
from benchlib import MODEL_DIR, model_project, report

from act_harness import free_port
from slipway.serve.server import LOOPBACK

CONNECTIONS = 8
WARM_UP_S = 3
SINGLE_S = 15
BATCH_S = 10
BATCH_ROWS = 1000
ROTATING = 100  # single-row bodies wrk cycles through
READY_TIMEOUT_S = 120.0
TARGET_THROUGHPUT = 4.0
TARGET_P99 = 0.5
TARGET_BATCH_ROWS_S = 20_000

pytestmark = [
    pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning"),
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make bench)"),
]

# wrk's Lua side: POST the bodies in turn; at the end print the summary as one JSON line.
WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {{
{bodies}
}}
if #bodies == 1 then
  wrk.body = bodies[1]
else
  local i = 0
  request = function()
    i = i % #bodies + 1
    return wrk.format(nil, nil, nil, bodies[i])
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_SUMMARY {{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _bin(name: str) -> str:
    """A console script of this environment (slipway, mlflow)."""
    script = Path(sys.executable).with_name(name)
    return str(script) if script.is_file() else name


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, (
        f"{' '.join(command)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_group(pid: int, grace: float = 15.0) -> None:
    """SIGTERM the process group ``pid`` leads, SIGKILL what is left after ``grace``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _wait_ready(url: str, process: subprocess.Popen | None, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"server exited {process.returncode}:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    pytest.fail(f"{url} not ready in {READY_TIMEOUT_S:.0f} s:\n{log.read_text(errors='replace')}")


@contextlib.contextmanager
def _mlflow_server(port: int, env: dict[str, str], log: Path) -> Iterator[str]:
    """`mlflow models serve` of models:/release-risk/1 on 127.0.0.1, one worker."""
    command = [
        _bin("mlflow"),
        "models",
        "serve",
        "-m",
        "models:/release-risk/1",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    # MLflow execs `uvicorn` from PATH: the one beside this Python.
    path = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    with log.open("ab") as handle:
        process = subprocess.Popen(
            command,
            cwd=log.parent,
            env={**env, "PATH": path},
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, stopped as a whole
        )
    try:
        url = f"{LOOPBACK}:{port}"
        _wait_ready(f"{url}/ping", process, log)
        yield url
    finally:
        _stop_group(process.pid)
        process.wait(5)


@contextlib.contextmanager
def _slipway_server(
    port: int,
    config: Path,
    environments: Path,
    home: Path,
    env: dict[str, str],
    workers: int = 1,
) -> Iterator[str]:
    """`slipway serve staging` of the manifest in ``environments``; stopped by its PID."""
    serve = [_bin("slipway"), "serve", "staging", "--config", str(config)]
    serve += ["--environments", str(environments)]
    state = home / "serve" / "staging.json"
    start = [*serve, "--port", str(port), "--timeout", str(READY_TIMEOUT_S)]
    try:
        _run([*start, "--workers", str(workers)], home, env)
        url = json.loads(state.read_text(encoding="utf-8"))["url"]
        assert url == f"http://127.0.0.1:{port}"
        yield url
    finally:
        pid = json.loads(state.read_text(encoding="utf-8"))["pid"] if state.is_file() else None
        subprocess.run([*serve, "--stop"], cwd=home, env=env, capture_output=True, check=False)
        if pid is not None:
            _stop_group(int(pid), grace=5.0)  # whatever --stop left behind


def _lua_string(text: str) -> str:
    assert "]==]" not in text
    return f"[==[{text}]==]"


def _wrk(url: str, bodies: list[str], seconds: int, script: Path) -> dict[str, Any]:
    """Run wrk (1 thread, 8 connections, --latency) on POST ``bodies``; its summary."""
    script.write_text(
        WRK_SCRIPT.format(bodies=",\n".join(_lua_string(b) for b in bodies)), encoding="utf-8"
    )
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "30s"]
    command += ["--latency", "-s", str(script), url]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    assert done.returncode == 0, f"wrk exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    line = next(x for x in done.stdout.splitlines() if x.startswith("WRK_SUMMARY "))
    summary = json.loads(line.removeprefix("WRK_SUMMARY "))
    errors = {k: summary[k] for k in ("connect", "read", "write", "status", "timeout")}
    assert summary["requests"] > 0, done.stdout
    assert not any(errors.values()), f"wrk errors {errors}\n{done.stdout}"
    assert "Non-2xx" not in done.stdout, done.stdout
    summary["per_s"] = summary["requests"] / (summary["duration_us"] / 1e6)
    summary["p99_ms"] = summary["p99_us"] / 1000
    return summary


def _rows_per_s(score: Any) -> float:
    """Rows per second of ``score()`` on the 1,000-row batch, in a loop of at least 3 s."""
    loops, start = 0, time.perf_counter()
    while loops < 5 or time.perf_counter() - start < 3.0:
        score()
        loops += 1
    return loops * BATCH_ROWS / (time.perf_counter() - start)


def _load(url: str, bodies: list[str], seconds: int, where: Path) -> dict[str, Any]:
    """An untimed warm-up, then the measured run."""
    _wrk(url, bodies, WARM_UP_S, where / "warm-up.lua")
    return _wrk(url, bodies, seconds, where / "measure.lua")


def _trained(tmp_path: Path, bench_env: dict[str, str]) -> SimpleNamespace:
    """Version 1 trained on the committed sample data; the manifest that serves it in staging."""
    from slipway.manifests import Manifest, render_manifest

    home = Path(bench_env["SLIPWAY_HOME"])
    env = {**bench_env, "BENTOML_HOME": str(tmp_path / "bentoml")}
    for name in ("SLIPWAY_ENV", "SLIPWAY_MANIFEST", "SLIPWAY_CONFIG", "SLIPWAY_LOG_DIR"):
        env.pop(name, None)
    env.pop("SLIPWAY_MAX_CONCURRENCY", None)
    config_path = model_project(
        tmp_path / "model", MODEL_DIR / "data" / "train.csv", MODEL_DIR / "data" / "eval.csv"
    )
    out = tmp_path / "out"
    slipway = _bin("slipway")
    _run([slipway, "lock", "--config", str(config_path)], tmp_path, env)
    _run([slipway, "train", "--config", str(config_path), "--out", str(out)], tmp_path, env)
    trained = json.loads((out / "train.json").read_text(encoding="utf-8"))
    assert str(trained["version"]) == "1"
    environments = tmp_path / "environments"
    environments.mkdir()
    manifest = Manifest(environment="staging", model="release-risk", version=1)
    (environments / "staging.yaml").write_text(render_manifest(manifest), encoding="utf-8")
    return SimpleNamespace(home=home, env=env, config_path=config_path, environments=environments)


def test_serving_slipway_vs_mlflow(tmp_path: Path, bench_env: dict[str, str]) -> None:
    from slipway.config import load_config
    from slipway.probabilities import probability_function
    from slipway.propose.contract import prepare, read_dataset
    from slipway.serve.smoke import records_from_frame

    load_before = os.getloadavg()[0]
    project = _trained(tmp_path, bench_env)
    home, env = project.home, project.env
    config_path, environments = project.config_path, project.environments

    # The records: the eval set, as a client sends them; the single-row ones without nulls so
    # that MLflow (no imputation) and Slipway (imputes test_coverage) score the same input.
    config = load_config(config_path)
    frame = read_dataset(MODEL_DIR / "data" / "eval.csv")
    records = records_from_frame(frame, config)
    complete = [i for i, r in enumerate(records) if all(r[f] is not None for f in config.features)]
    singles = [records[i] for i in complete[:ROTATING]]
    slipway_bodies = [json.dumps({"records": [r]}) for r in singles]
    mlflow_bodies = [
        json.dumps({"dataframe_records": [{f: r[f] for f in config.features}]}) for r in singles
    ]
    batch_frame = frame.head(BATCH_ROWS)
    batch_body = json.dumps({"records": records_from_frame(batch_frame, config)})
    batch_features, _ = prepare(batch_frame, config)

    # The in-process model: the same registered version, the expected answers and the floor.
    import mlflow.sklearn

    model = mlflow.sklearn.load_model("models:/release-risk/1")
    single_frame, _ = prepare(frame.iloc[complete[:5]], config)
    expected_labels = model.predict(single_frame).tolist()
    expected_p = model.predict_proba(single_frame)[:, 1]
    batch_p = model.predict_proba(batch_features)[:, 1]
    floor_rows_s = _rows_per_s(lambda: model.predict_proba(batch_features))
    # The same in-process loop through the service's scoring function (the same trees, summed
    # without scikit-learn's per-tree dispatch): what the server itself could reach.
    scoring = probability_function(model, batch_features.head(50))
    np.testing.assert_array_equal(scoring(batch_features), batch_p)
    scoring_rows_s = _rows_per_s(lambda: scoring(batch_features))

    # (a) MLflow's scoring server.
    mlflow_dir = tmp_path / "bench-mlflow"
    mlflow_dir.mkdir()
    with _mlflow_server(free_port(), env, mlflow_dir / "server.log") as url:
        invocations = f"{url}/invocations"
        mlflow_labels = []
        for body in mlflow_bodies[:5]:
            answer = requests.post(
                invocations, data=body, headers={"Content-Type": "application/json"}, timeout=30
            )
            assert answer.status_code == 200, answer.text
            mlflow_labels.extend(answer.json()["predictions"])
        mlflow_run = _load(invocations, mlflow_bodies, SINGLE_S, mlflow_dir)

    # (b) and (c) Slipway's service, served from the manifest.
    slipway_dir = tmp_path / "bench-slipway"
    slipway_dir.mkdir()
    with _slipway_server(free_port(), config_path, environments, home, env) as url:
        predict = f"{url}/predict"
        answers = []
        for body in slipway_bodies[:5]:
            answer = requests.post(
                predict, data=body, headers={"Content-Type": "application/json"}, timeout=30
            )
            assert answer.status_code == 200, answer.text
            answers.extend(answer.json())
        batch = requests.post(
            predict, data=batch_body, headers={"Content-Type": "application/json"}, timeout=60
        )
        assert batch.status_code == 200, batch.text[:500]
        batch_answers = batch.json()
        slipway_run = _load(predict, slipway_bodies, SINGLE_S, slipway_dir)
        batch_run = _load(predict, [batch_body], BATCH_S, slipway_dir)
        metadata = requests.get(f"{url}/metadata", timeout=10).json()

    # Correctness: both servers gave the in-process model's answers.
    assert mlflow_labels == expected_labels
    assert [a["high_risk"] for a in answers] == [bool(x) for x in expected_labels]
    assert [a["release_id"] for a in answers] == [r["release_id"] for r in singles[:5]]
    np.testing.assert_allclose([a["probability"] for a in answers], expected_p, rtol=1e-12)
    assert len(batch_answers) == BATCH_ROWS
    assert metadata["version"] == "1" and metadata["prediction_log"]["errors"] == 0
    np.testing.assert_allclose([a["probability"] for a in batch_answers], batch_p, rtol=1e-12)

    throughput = slipway_run["per_s"] / mlflow_run["per_s"]
    p99 = slipway_run["p99_ms"] / mlflow_run["p99_ms"]
    batch_rows_s = batch_run["per_s"] * BATCH_ROWS

    def verdict(met: bool) -> str:
        return "met" if met else "MISSED"

    report(
        f"serving, single-row requests, wrk 1 thread x {CONNECTIONS} connections, {SINGLE_S} s "
        f"each after a {WARM_UP_S} s warm-up, 1 worker each, release-risk v1: "
        f"slipway {slipway_run['per_s']:.0f} req/s p99 {slipway_run['p99_ms']:.1f} ms, "
        f"mlflow models serve {mlflow_run['per_s']:.0f} req/s p99 {mlflow_run['p99_ms']:.1f} ms; "
        f"throughput slipway/mlflow {throughput:.2f}x "
        f"(target >= {TARGET_THROUGHPUT:g}x: {verdict(throughput >= TARGET_THROUGHPUT)}), "
        f"p99 slipway/mlflow {p99:.2f} (target <= {TARGET_P99:g}: {verdict(p99 <= TARGET_P99)})"
    )
    report(
        f"serving, {BATCH_ROWS:,} rows per request to slipway, wrk 1 thread x {CONNECTIONS} "
        f"connections, {BATCH_S} s: {batch_rows_s:,.0f} rows/s "
        f"({batch_run['per_s']:.1f} req/s, p99 {batch_run['p99_ms']:.0f} ms; target >= "
        f"{TARGET_BATCH_ROWS_S:,}: {verdict(batch_rows_s >= TARGET_BATCH_ROWS_S)}) vs in-process "
        f"predict_proba floor {floor_rows_s:,.0f} rows/s on the same {BATCH_ROWS:,}-row "
        f"DataFrame (ratio {batch_rows_s / floor_rows_s:.2f}; the service's tree-by-tree "
        f"scoring in-process: {scoring_rows_s:,.0f} rows/s); prediction log "
        f"{metadata['prediction_log']['written']:,} written, "
        f"{metadata['prediction_log']['dropped']:,} dropped; 1-minute load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (2 cores)"
    )


def _log_counts(logs: Path) -> tuple[int, int]:
    """Served prediction records in the log, and the records the log says it dropped."""
    served = dropped = 0
    for path in logs.glob("predictions*.jsonl"):
        for line in path.read_bytes().split(b"\n"):
            if not line:
                continue
            record = json.loads(line)
            if "log_stats" in record:
                dropped += record["log_stats"]["dropped"]
            elif record.get("served"):
                served += 1
    return served, dropped


def test_serving_throughput_by_workers(tmp_path: Path, bench_env: dict[str, str]) -> None:
    """Requests/s and rows/s of `slipway serve --workers 1` and `--workers 2`, single-row and
    1,000-row requests, wrk as above; then the prediction log: every answered row written or
    counted as dropped (each worker writes what it dropped at shutdown)."""
    from slipway.config import load_config
    from slipway.propose.contract import read_dataset
    from slipway.serve.smoke import records_from_frame

    load_before = os.getloadavg()[0]
    project = _trained(tmp_path, bench_env)
    config = load_config(project.config_path)
    records = records_from_frame(read_dataset(MODEL_DIR / "data" / "eval.csv"), config)
    singles = [json.dumps({"records": [r]}) for r in records[:ROTATING]]
    batch = json.dumps({"records": records[:BATCH_ROWS]})
    figures: dict[int, dict[str, Any]] = {}
    for workers in (1, 2):
        where = tmp_path / f"workers-{workers}"
        where.mkdir()
        # One file that never rotates, so no line is deleted before it is counted.
        env = {**project.env, "SLIPWAY_LOG_DIR": str(where / "log")}
        env["SLIPWAY_LOG_MAX_BYTES"] = str(4 << 30)
        with _slipway_server(
            free_port(), project.config_path, project.environments, project.home, env, workers
        ) as url:
            predict = f"{url}/predict"
            warm_single = _wrk(predict, singles, WARM_UP_S, where / "warm-single.lua")
            single = _wrk(predict, singles, SINGLE_S, where / "single.lua")
            warm_batch = _wrk(predict, [batch], WARM_UP_S, where / "warm-batch.lua")
            rows = _wrk(predict, [batch], BATCH_S, where / "batch.lua")
        answered = warm_single["requests"] + single["requests"]
        answered += (warm_batch["requests"] + rows["requests"]) * BATCH_ROWS
        served, dropped = _log_counts(where / "log")
        # wrk counts the answers it read; the server also answered what was in flight at the end
        assert served + dropped >= answered, (served, dropped, answered)
        figures[workers] = {
            "single": single,
            "batch": rows,
            "served": served,
            "dropped": dropped,
        }

    def line(workers: int) -> str:
        figure = figures[workers]
        return (
            f"{workers} worker{'s' if workers > 1 else ''}: single-row "
            f"{figure['single']['per_s']:.0f} req/s (p99 {figure['single']['p99_ms']:.1f} ms), "
            f"{BATCH_ROWS:,}-row {figure['batch']['per_s'] * BATCH_ROWS:,.0f} rows/s "
            f"({figure['batch']['per_s']:.1f} req/s, p99 {figure['batch']['p99_ms']:.0f} ms); "
            f"prediction log {figure['served']:,} written, {figure['dropped']:,} dropped"
        )

    single_ratio = figures[2]["single"]["per_s"] / figures[1]["single"]["per_s"]
    batch_ratio = figures[2]["batch"]["per_s"] / figures[1]["batch"]["per_s"]
    report(
        f"serving by workers, wrk 1 thread x {CONNECTIONS} connections, {SINGLE_S} s single-row "
        f"and {BATCH_S} s {BATCH_ROWS:,}-row after {WARM_UP_S} s warm-ups: {line(1)}; "
        f"{line(2)}; 2 workers / 1: single-row {single_ratio:.2f}x, {BATCH_ROWS:,}-row "
        f"{batch_ratio:.2f}x; 1-minute load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (2 cores, shared with wrk)"
    )
