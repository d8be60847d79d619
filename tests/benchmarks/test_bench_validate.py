"""`slipway validate` on 1M rows against `pandas.read_csv` of the same file: target ratio <= 2."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
from benchlib import MODEL_DIR, best_of, load_simulate, report, timed

from slipway.config import load_config
from slipway.propose.datasets import validate

ROWS = 1_000_000
REPEATS = 3
TARGET_RATIO = 2.0
AS_OF = date(2026, 11, 1)  # the simulator's last release date: the data is fresh


def test_validate_1m_rows(tmp_path: Path) -> None:
    generate_s, frame = timed(lambda: load_simulate().simulate(ROWS))
    data = tmp_path / "train.csv"
    frame.to_csv(data, index=False)
    del frame
    config_path = tmp_path / "slipway.yaml"
    config_path.write_bytes((MODEL_DIR / "slipway.yaml").read_bytes())
    config = load_config(config_path)

    slipway_s, result = best_of(REPEATS, lambda: validate(config, {"train": data}, AS_OF))
    pandas_s, baseline = best_of(REPEATS, lambda: pd.read_csv(data))

    ratio = slipway_s / pandas_s
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    report(
        f"validate {ROWS // 1_000_000}M rows ({data.stat().st_size / 1e6:.0f} MB CSV, "
        f"generated in {generate_s:.1f} s): slipway {slipway_s:.2f} s, "
        f"pandas.read_csv {pandas_s:.2f} s (best of {REPEATS} each), "
        f"ratio {ratio:.2f} (target <= {TARGET_RATIO:g}: {verdict})"
    )
    (dataset,) = result["datasets"]
    if not result["passed"]:
        for violation in dataset["violations"]:
            report(f"  validation violation [{violation['check']}] {violation['message']}")
    assert len(baseline) == ROWS
    assert dataset["rows"] == ROWS
    assert dataset["imputed_nulls"].get("test_coverage", 0) > 0  # the simulator leaves ~1 % null
    assert result["passed"], dataset["violations"]
