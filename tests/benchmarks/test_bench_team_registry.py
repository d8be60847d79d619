"""`slipway pr` (validate → train → gate → package → report) against a team's registry —
``mlflow server`` on PostgreSQL with proxied artifacts, on 127.0.0.1 — vs against the default
embedded SQLite registry, same run, same model project. Target ratio <= 1.3.

Each side first runs, untimed, `slipway train` (it creates the schema and registers version 1,
made @production so the timed runs gate against a champion, as a real pull request does) and
one `slipway pr` (a team's server has served requests before: its first answers load code).
Then the sides run in turn, five rounds, each run a fresh process; the figure is the ratio of
the medians. The same PostgreSQL server with MLflow's basic-auth app on
(credential checks cached, as the README recommends) is timed too and printed, with no target.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchlib import MODEL_DIR, report, timed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' own harness
from postgres_harness import ADMIN, Postgres, TeamMlflow

TARGET_RATIO = 1.3
ROUNDS = 5
MODEL = "release-risk"


def _slipway() -> list[str]:
    script = Path(sys.executable).with_name("slipway")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "slipway"]


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}\n{done.stderr}"


def test_pr_against_postgresql_server_vs_sqlite(tmp_path: Path, bench_env: dict[str, str]):
    import shutil

    project = tmp_path / "model"
    shutil.copytree(MODEL_DIR, project, ignore=shutil.ignore_patterns("__pycache__"))
    config = project / "slipway.yaml"
    postgres = Postgres().start()
    servers: list[TeamMlflow] = []
    try:
        plain = TeamMlflow(postgres, tmp_path / "pg", "bench_plain").start()
        servers.append(plain)
        auth = TeamMlflow(postgres, tmp_path / "pg-auth", "bench_auth", auth=True).start()
        servers.append(auth)
        sides = {
            "sqlite": {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'sqlite' / 'mlflow.db'}"},
            "postgresql": {"MLFLOW_TRACKING_URI": plain.uri},
            "postgresql+auth": {
                "MLFLOW_TRACKING_URI": auth.uri,
                "MLFLOW_TRACKING_USERNAME": ADMIN[0],
                "MLFLOW_TRACKING_PASSWORD": ADMIN[1],
            },
        }
        envs = {
            side: {**bench_env, **settings, "SLIPWAY_HOME": str(tmp_path / f"home-{side}")}
            for side, settings in sides.items()
        }
        slipway = _slipway()
        for side, env in envs.items():  # untimed: schema, version 1 as @production
            out = ["--out", str(tmp_path / f"warm-{side}")]
            _run([*slipway, "train", "--config", str(config), *out], tmp_path, env)
            promote = (
                "from slipway.registry import MlflowRegistry; "
                f"MlflowRegistry().set_alias({MODEL!r}, 'production', '1')"
            )
            _run([sys.executable, "-c", promote], tmp_path, env)
            out = ["--out", str(tmp_path / f"warm-pr-{side}")]
            _run([*slipway, "pr", "--config", str(config), *out], tmp_path, env)
        seconds: dict[str, list[float]] = {side: [] for side in envs}
        for round_ in range(ROUNDS):
            for side, env in envs.items():
                out = tmp_path / f"pr-{side}-{round_}"
                command = [*slipway, "pr", "--config", str(config), "--out", str(out)]
                took, _ = timed(lambda c=command, e=env: _run(c, tmp_path, e))
                seconds[side].append(took)
                # Correctness: a version gated against the champion and packaged.
                gated = json.loads((out / "gate.json").read_text())
                assert gated["champion"]["version"] == "1", gated["champion"]
                assert json.loads((out / "package.json").read_text())["digest"].startswith(
                    "sha256:"
                )
    finally:
        for server in servers:
            server.stop()
        postgres.stop()

    median = {side: statistics.median(values) for side, values in seconds.items()}
    ratio = median["postgresql"] / median["sqlite"]
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    rounds = ", ".join(
        f"{p / s:.2f}" for p, s in zip(seconds["postgresql"], seconds["sqlite"], strict=True)
    )
    report(
        f"slipway pr (validate, train, gate, package, report; sample data) against mlflow server "
        f"on PostgreSQL with proxied artifacts vs the embedded SQLite registry, medians of "
        f"{ROUNDS} interleaved rounds: {median['postgresql']:.2f} s vs {median['sqlite']:.2f} s, "
        f"ratio {ratio:.2f} (target <= {TARGET_RATIO:g}: {verdict}; rounds {rounds}); "
        f"with basic auth on the same server {median['postgresql+auth']:.2f} s "
        f"({median['postgresql+auth'] / median['sqlite']:.2f}x SQLite)"
    )
