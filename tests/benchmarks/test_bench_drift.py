"""Drift statistics on 1M logged rows x the model's features: Slipway against per-column
``scipy.stats`` and against Evidently's ``DataDriftPreset``, on the same data.

The reference is a profile built by ``slipway.drift.profile.build_profile`` from 50,000
training rows of ``model/simulate.py`` (every numeric feature's values are its KS sample, as
none has more than ``SAMPLE_MAX`` present); the eval probabilities it needs are random, as the
figures here are the features'. The current window is 1,000,000 simulated rows with the
simulator's strong shift (1.0) on two features, ``code_changes`` and ``test_coverage``, and
1 % of ``test_coverage`` null, as the simulator leaves it. All seven columns are tested: the
six features by KS and the group column ``team`` by chi-square.

Timed (best of three, the data in memory):

- ``slipway.drift.statistics`` as a caller would use it per feature: nulls dropped,
  ``ks_statistic`` against the profile's sorted sample and ``ks_pvalue``, ``bin_counts``,
  ``psi`` and ``psi_interval`` (1,000 resamples); ``category_counts`` and ``chi_square`` for
  the team; ``benjamini_hochberg`` over the seven p-values;
- the drift check's own counting and verdicts, when ``slipway.drift.check`` is there:
  ``Reference`` from the profile, ``Tally.add`` over the rows in the check's 200,000-row
  chunks, ``judge`` of the window (the same tests plus the prediction, estimated performance
  and quality figures). ``check_drift`` itself reads the log first, which
  ``test_bench_drift_read.py`` times;
- the baseline: per column ``scipy.stats.ks_2samp(reference, current)`` on the same values
  (nulls dropped), and ``scipy.stats.chi2_contingency`` on the team counts, counted with
  pandas' ``value_counts`` (hashing: 0.04 s for the 1M strings, where ``np.unique`` of the
  object array sorts them in 0.8 s, which would have made the baseline four times slower);
- Evidently ``DataDriftPreset`` (its default tests) in its own virtual environment under
  ``.slipway/cache/bench/evidently-venv`` (it needs pandas < 3; created once), on the same
  frames written to Parquet: ``Dataset.from_pandas`` of both and ``Report.run``, timed in
  that process, Parquet reading and imports excluded. When the environment cannot be made,
  the figure says why and that part is skipped.

Asserted: every KS statistic equals SciPy's within 1e-9 and every chi-square statistic within
a relative 1e-9, both Slipway's ways; the shifted features are the ones found drifted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from benchlib import REPO, best_of, load_simulate, report
from scipy import stats

from slipway.config import ModelConfig, load_config
from slipway.drift import statistics
from slipway.drift.profile import SAMPLE_MAX, build_profile

ROWS = 1_000_000
TRAIN_ROWS = 50_000
EVAL_ROWS = 1_500
CHUNK_ROWS = 200_000  # check_drift's default
SHIFT = 1.0  # the simulator's "strong" shift, on SHIFTED only
SHIFTED = ("code_changes", "test_coverage")
REPEATS = 3
TARGET = 5.0  # scipy's time / Slipway's, at least
FDR = 0.05
KS_TOLERANCE = 1e-9
CHI2_RELATIVE = 1e-9
CACHE = REPO / ".slipway" / "cache" / "bench"
EVIDENTLY_VENV = CACHE / "evidently-venv"
# The newest Evidently, with the last pandas before 3 and the pyarrow they installed with.
EVIDENTLY_REQUIREMENTS = ("evidently==0.7.23", "pandas==2.3.3", "pyarrow==26.0.1")
EVIDENTLY_INSTALL_TIMEOUT = 1200

# Run in Evidently's environment: argv is reference.parquet, current.parquet, the numeric and
# the categorical columns (JSON), repeats. Prints one JSON line.
EVIDENTLY_SCRIPT = """
import json, sys, time
import pandas as pd
import evidently
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

reference, current = (pd.read_parquet(path) for path in sys.argv[1:3])
numeric, categorical = json.loads(sys.argv[3]), json.loads(sys.argv[4])
best = float("inf")
for _ in range(int(sys.argv[5])):
    started = time.perf_counter()
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    snapshot = Report([DataDriftPreset()]).run(
        current_data=Dataset.from_pandas(current, data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition),
    )
    best = min(best, time.perf_counter() - started)
metrics = snapshot.dict()["metrics"]
drift = {m["config"]["column"]: m for m in metrics if "column" in m["config"]}
print(json.dumps({
    "seconds": best,
    "version": evidently.__version__,
    "rows": [len(reference), len(current)],
    "methods": sorted({m["config"]["method"] for m in drift.values()}),
    "drifted": sorted(c for c, m in drift.items() if m["value"] >= m["config"]["threshold"]),
}))
"""


# --- the data ---------------------------------------------------------------------------------


def _frames(config: ModelConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training rows and the current window: the features and the group column."""
    simulate = load_simulate().simulate
    columns = [*config.features, str(config.group_column)]
    reference = simulate(TRAIN_ROWS, seed=7)[columns]
    current = simulate(ROWS, seed=8)[columns].copy()
    # The simulator's `shift`, on two features only: exp(N(5.5 + 0.6 s, 1)) and N(mean - 10 s, 12).
    changes = np.minimum((current["code_changes"] * np.exp(0.6 * SHIFT)).round(), 100_000)
    current["code_changes"] = changes.astype(np.int64)
    current["test_coverage"] = (current["test_coverage"] - 10 * SHIFT).clip(0, 100).round(1)
    return reference, current


def _profile(config: ModelConfig, reference: pd.DataFrame) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    probabilities = rng.beta(2, 3, EVAL_ROWS)
    labels = (rng.random(EVAL_ROWS) < probabilities).astype(np.int64)
    metrics = {"accuracy": 0.8, "precision": 0.5, "recall": 0.85}
    return build_profile(config, reference, probabilities, labels, 0.4, metrics, "1")


def _arrays(frame: pd.DataFrame, config: ModelConfig) -> dict[str, np.ndarray]:
    """Each column as the log reader gives it: float64 with NaN, the team as ``str`` objects."""
    arrays = {name: frame[name].to_numpy(np.float64) for name in config.features}
    group = str(config.group_column)
    arrays[group] = frame[group].to_numpy(dtype=object)
    return arrays


# --- the three ways ---------------------------------------------------------------------------


def slipway_statistics(
    profile: dict[str, Any], current: dict[str, np.ndarray]
) -> dict[str, dict[str, Any]]:
    """Every feature's test, PSI and interval with ``slipway.drift.statistics``, then the
    Benjamini-Hochberg verdicts."""
    figures: dict[str, dict[str, Any]] = {}
    for name, spec in profile["features"].items():
        values = current[name]
        if spec["kind"] == "numeric":
            present = values[~np.isnan(values)]
            sample = np.asarray(spec["sample"], dtype=np.float64)
            statistic = statistics.ks_statistic(sample, present)
            pvalue = statistics.ks_pvalue(statistic, sample.size, present.size)
            reference, counts = spec["counts"], statistics.bin_counts(spec["edges"], present)
        else:
            known, unseen = statistics.category_counts(spec["categories"], values)
            counts = np.array([*known, unseen])
            statistic, pvalue = statistics.chi_square(spec["counts"], counts)
            reference = [*spec["counts"], 0]
        figures[name] = {
            "statistic": statistic,
            "pvalue": pvalue,
            "psi": statistics.psi(reference, counts),
            "psi_interval": statistics.psi_interval(reference, counts),
        }
    found = statistics.benjamini_hochberg({n: f["pvalue"] for n, f in figures.items()}, FDR)
    for name, drifted in found.items():
        figures[name]["drifted"] = drifted
    return figures


def _check_api() -> Callable[..., dict[str, Any]] | None:
    """The drift check's counting and verdicts over in-memory rows, when the check exists."""
    if importlib.util.find_spec("slipway.drift.check") is None:
        return None
    from slipway.drift.check import judge
    from slipway.drift.tally import Reference, Tally

    def run(
        profile: dict[str, Any], config: ModelConfig, chunks: list[dict[str, Any]]
    ) -> dict[str, Any]:
        tally = Tally(Reference(profile, config))
        for chunk in chunks:
            tally.add(chunk, np.ones(len(chunk), dtype=bool), None, set())
        return judge(tally, config.drift, False)

    return run


def _chunks(current: dict[str, np.ndarray], group: str) -> list[Any]:
    """The rows as the log reader's chunks (``drift/logs.py``): the numeric features as
    float64, the team and the version dictionary-encoded by pyarrow as the reader does, and
    the output and identity columns a chunk carries (a random probability, one timestamp)."""
    import pyarrow as pa

    from slipway.drift.chunks import Chunk, Coded

    rng = np.random.default_rng(1)
    probability = rng.beta(2, 3, ROWS)
    ids = np.array([f"REL-{i}" for i in range(ROWS)], dtype=object)
    moment = np.full(ROWS, np.datetime64("2026-12-01T12:00:00", "ms"))
    chunks = []
    for start in range(0, ROWS, CHUNK_ROWS):
        rows = slice(start, min(start + CHUNK_ROWS, ROWS))
        features: dict[str, Any] = {name: values[rows] for name, values in current.items()}
        features[group] = Coded.from_arrow(pa.array(current[group][rows], pa.string()))
        version = Coded.from_arrow(pa.array(["1"] * (rows.stop - rows.start), pa.string()))
        chunks.append(
            Chunk(
                features=features,
                probability=probability[rows],
                high_risk=probability[rows] >= 0.4,
                release_id=ids[rows],
                model_version=version,
                timestamp=moment[rows],
            )
        )
    return chunks


def scipy_baseline(
    reference: dict[str, np.ndarray], current: dict[str, np.ndarray], group: str
) -> dict[str, tuple[float, float]]:
    """Per column: ``ks_2samp`` on the values present, ``chi2_contingency`` on the counts
    of each category in either sample."""
    results: dict[str, tuple[float, float]] = {}
    for name, values in current.items():
        if name == group:
            continue
        ks = stats.ks_2samp(reference[name][~np.isnan(reference[name])], values[~np.isnan(values)])
        results[name] = (float(ks.statistic), float(ks.pvalue))
    seen = [pd.Series(side[group], dtype=object).value_counts() for side in (reference, current)]
    table = pd.concat(seen, axis=1).fillna(0).to_numpy(np.int64).T  # unseen categories: 0
    chi2 = stats.chi2_contingency(table)
    results[group] = (float(chi2.statistic), float(chi2.pvalue))
    return results


# --- Evidently, in its own environment ----------------------------------------------------------


def _evidently_python() -> tuple[Path | None, str]:
    """Evidently's interpreter (None when its environment could not be made) and how it came."""
    python = EVIDENTLY_VENV / "bin" / "python"
    stamp = EVIDENTLY_VENV / "slipway-bench.json"
    wanted = {"requirements": list(EVIDENTLY_REQUIREMENTS)}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted and python.is_file():
        return python, "environment cached"
    shutil.rmtree(EVIDENTLY_VENV, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    steps = (
        [sys.executable, "-m", "venv", str(EVIDENTLY_VENV)],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         *EVIDENTLY_REQUIREMENTS],
    )  # fmt: skip
    for step in steps:
        try:
            done = subprocess.run(
                step, capture_output=True, text=True, timeout=EVIDENTLY_INSTALL_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            return None, f"`{' '.join(step[2:4])}` took over {EVIDENTLY_INSTALL_TIMEOUT} s"
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
            why = (errors or done.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"`{' '.join(step[2:])}` failed (exit {done.returncode}): {why}"
    stamp.write_text(json.dumps(wanted))
    return python, "environment created"


def _evidently(
    python: Path, reference: pd.DataFrame, current: pd.DataFrame, config: ModelConfig
) -> dict[str, Any]:
    paths = [CACHE / "drift-reference.parquet", CACHE / "drift-current.parquet"]
    for frame, path in zip((reference, current), paths, strict=True):
        frame.to_parquet(path, index=False)
    command = [
        str(python), "-c", EVIDENTLY_SCRIPT, *map(str, paths),
        json.dumps(config.features), json.dumps([config.group_column]), str(REPEATS),
    ]  # fmt: skip
    environment = {**os.environ, "DO_NOT_TRACK": "1", "EVIDENTLY_DISABLE_TELEMETRY": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the benchmark ------------------------------------------------------------------------------


def _speedup(baseline_s: float, slipway_s: float) -> str:
    ratio = baseline_s / slipway_s
    return (
        f"speed-up {ratio:.2f}x (target >= {TARGET:g}x: {'met' if ratio >= TARGET else 'MISSED'})"
    )


def _drifted(features: dict[str, dict[str, Any]], key: str, value: object) -> list[str]:
    return sorted(name for name, figure in features.items() if figure[key] == value)


def test_drift_statistics_1m_rows() -> None:
    config = load_config(REPO / "model" / "slipway.yaml")
    group = str(config.group_column)
    reference_frame, current_frame = _frames(config)
    profile = _profile(config, reference_frame)
    reference, current = _arrays(reference_frame, config), _arrays(current_frame, config)
    for name in config.features:  # the profile's sample is all the training values
        present = reference[name][~np.isnan(reference[name])]
        assert present.size <= SAMPLE_MAX
        assert profile["features"][name]["sample"] == np.sort(present).tolist()
    load = os.getloadavg()[0]

    scipy_s, expected = best_of(REPEATS, lambda: scipy_baseline(reference, current, group))
    stats_s, figures = best_of(REPEATS, lambda: slipway_statistics(profile, current))
    found = {"statistics": {name: figure["statistic"] for name, figure in figures.items()}}
    check, checked, check_s = _check_api(), None, 0.0
    if check is not None:
        chunks = _chunks(current, group)
        check_s, checked = best_of(REPEATS, lambda: check(profile, config, chunks))
        found["check"] = {name: f["statistic"] for name, f in checked["features"].items()}

    ks_gap = 0.0
    for statistic_of in found.values():
        for name, (statistic, _pvalue) in expected.items():
            if name == group:
                assert statistic_of[name] == pytest.approx(statistic, rel=CHI2_RELATIVE, abs=0)
            else:
                ks_gap = max(ks_gap, abs(statistic_of[name] - statistic))
                assert abs(statistic_of[name] - statistic) <= KS_TOLERANCE, name
    assert _drifted(figures, "drifted", True) == sorted(SHIFTED)

    shape = f"{ROWS // 1_000_000}M rows x {len(expected)} columns vs {TRAIN_ROWS // 1000}k"
    report(
        f"drift statistics, {shape} (load average {load:.1f} on {os.cpu_count()} cores, best "
        f"of {REPEATS}): scipy.stats per column (ks_2samp x {len(expected) - 1}, "
        f"chi2_contingency) {scipy_s:.3f} s; slipway.drift.statistics (KS, PSI + interval, "
        f"chi-square, BH) {stats_s:.3f} s, {_speedup(scipy_s, stats_s)}; max |KS - scipy| "
        f"{ks_gap:.1e}, chi-square {expected[group][0]:.2f} as scipy's; drifted at FDR {FDR}: "
        f"{', '.join(_drifted(figures, 'drifted', True))}"
    )
    slipway_s, slipway_name = stats_s, "slipway.drift.statistics"
    if checked is not None:
        slipway_s, slipway_name = check_s, "the drift check's counting"
        drifted = _drifted(checked["features"], "status", "drifted")
        report(
            f"drift check's counting and verdicts (Reference, Tally.add in {len(chunks)} "
            f"chunks, judge), {shape}: {check_s:.3f} s, {_speedup(scipy_s, check_s)}; "
            f"features drifted (PSI interval and BH): {', '.join(drifted) or 'none'}"
        )
        assert drifted == sorted(SHIFTED)

    python, how = _evidently_python()
    if python is None:
        report(f"Evidently DataDriftPreset, {shape}: skipped, {how}")
        return
    result = _evidently(python, reference_frame, current_frame, config)
    assert result["rows"] == [TRAIN_ROWS, ROWS]
    report(
        f"Evidently {result['version']} DataDriftPreset ({', '.join(result['methods'])}), "
        f"{shape}, {how}: {result['seconds']:.2f} s (best of {REPEATS}), "
        f"{result['seconds'] / slipway_s:.1f}x as long as {slipway_name}; it found drifted: "
        f"{', '.join(result['drifted']) or 'none'}"
    )
