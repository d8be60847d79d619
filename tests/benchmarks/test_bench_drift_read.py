"""Reading the prediction log for a drift check: 1M and 10M logged rows through drift/logs.py.

The logs are JSON lines shaped as the service writes them (the six features of
model/slipway.yaml, the release's id, date and team, the output, latency), with what a real
log holds besides: shadow predictions (8 %), smoke tests (1 %), another model (1 %), rejected
requests (0.5 %), one truncated line in 100,000, and two days before the window. They are
generated with pyarrow's string kernels a chunk at a time and kept under
``.slipway/cache/bench/`` (≈0.54 GB and ≈5.4 GB), so reruns skip that.

Each read runs in a child process that reports its own time (imports excluded) and peak RSS
(``VmHWM``), after the file was read once into the page cache. Figures: rows/s of
``read_window`` (every chunk's features and probabilities summed and histogrammed, as a drift
check would), as a ratio against the baseline of the same run, pyarrow's JSON reader parsing
the same file in the same blocks with the same schema and doing nothing else (it skips a block
with a bad line); how time per row at 10M compares with 1M (1.0 = linear); and peak RSS
against the 1.5 GB target. The load average is printed too: the machine is shared. Asserted:
every count equals what the generator wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
from benchlib import REPO, report, timed

from slipway.config import load_config
from slipway.drift import logs

SIZES = (1_000_000, 10_000_000)
GENERATOR = "drift-log/1"  # change it when the generated lines change: the cache is rebuilt
CACHE = REPO / ".slipway" / "cache" / "bench"
GENERATE_ROWS = 500_000
START = np.datetime64("2026-10-01T00:00:00.000", "ms")
SPAN_MS = 30 * 24 * 3600 * 1000
SINCE = START + np.timedelta64(2 * 24 * 3600 * 1000, "ms")
UNTIL = START + np.timedelta64(SPAN_MS, "ms")
VERSIONS = ("3", "4")
TARGET_RSS_MB = 1500
FEATURES = load_config(REPO / "model" / "slipway.yaml").features

# The child process runs child() of this module.
CHILD = "import sys; sys.path.insert(0, sys.argv[1]); import test_bench_drift_read as b; b.child()"


def child() -> None:
    """In the child: read the window (``slipway``) or only parse the file (``baseline``), then
    print one JSON line: the result, the seconds it took and the peak RSS."""
    path, mode = sys.argv[2], sys.argv[3]
    since, until = (datetime.fromisoformat(f"{moment}+00:00") for moment in (SINCE, UNTIL))
    started = time.perf_counter()
    if mode == "slipway":
        window = logs.read_window(
            path, "release-risk", "production", set(VERSIONS), since, until, FEATURES
        )
        sums = dict.fromkeys(FEATURES, 0.0)
        histogram = np.zeros(10, dtype=np.int64)
        used = 0
        for chunk in window:  # what a drift check does with each chunk, roughly
            used += len(chunk)
            for name, values in chunk.features.items():
                sums[name] += float(np.nansum(values))
            histogram += np.histogram(chunk.probability, bins=10, range=(0, 1))[0]
        result: dict[str, Any] = {"counts": window.counts.to_dict(), "used": used}
    else:
        select = logs._Selection("release-risk", "production", None, since, until, FEATURES, set())
        options = pajson.ReadOptions(block_size=logs.PARSE_BLOCK_BYTES)
        rows = 0
        with open(path, "rb") as handle:  # noqa: PTH123
            rest = b""
            while data := handle.read(logs.BLOCK_BYTES):
                block = rest + data
                cut = block.rfind(b"\n") + 1
                rest = block[cut:]
                with contextlib.suppress(pa.ArrowInvalid):  # the floor skips a bad block
                    reader = pa.BufferReader(memoryview(block)[:cut])
                    parsed = pajson.read_json(
                        reader, read_options=options, parse_options=select.parse
                    )
                    rows += parsed.num_rows
        result = {"rows": rows}
    seconds = time.perf_counter() - started
    status = Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]
    print(json.dumps({**result, "seconds": seconds, "peak_rss_mb": int(status) / 1024}))


def _text(values: Any) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _lines(
    start: int, count: int, total: int, rng: np.random.Generator, expected: dict[str, int]
) -> pa.Array:
    """Lines ``start``..``start + count`` of a ``total``-line log, each ending in a newline;
    adds to ``expected`` what ``read_window`` must count of them, rule by rule in its order."""
    index = start + np.arange(count, dtype=np.int64)
    at = pc.replace_substring(_text(START + index * SPAN_MS // total), " ", "T")
    kind = rng.random(count)
    shadow, smoke = kind < 0.08, (kind >= 0.08) & (kind < 0.09)
    other, rejected = (kind >= 0.09) & (kind < 0.10), (kind >= 0.10) & (kind < 0.105)
    ids = pc.binary_join_element_wise("REL-", _text(index), "")
    release = pc.if_else(
        pa.array(smoke), pc.binary_join_element_wise("slipway-smoke:", ids, ""), ids
    )
    hexes = rng.bytes(16 * count).hex().encode()
    request = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(32), count, [None, pa.py_buffer(hexes)]
    ).cast(pa.string())
    coverage = np.clip(rng.normal(70, 12, count), 0, 100).round(1)
    features = {
        "code_changes": np.minimum(np.exp(rng.normal(5.5, 1.0, count)), 100_000).round(),
        "files_modified": rng.poisson(8, count),
        "past_defects": rng.poisson(5, count),
        "test_coverage": pc.if_else(pa.array(rng.random(count) < 0.01), "null", _text(coverage)),
        "release_frequency": np.clip(rng.gamma(2.0, 2.0, count), 0, 60).round(2),
        "historical_failure_rate": np.clip(rng.beta(2, 12, count), 0, 1).round(3),
    }
    assert list(features) == FEATURES
    parts: list[Any] = [
        '{"timestamp":"', at, '+00:00","environment":"production","model":"',
        pc.if_else(pa.array(other), "fraud-score", "release-risk"),
        '","model_version":"', pc.if_else(pa.array(shadow), '4","route":"shadow","served":false',
                                          '3","route":"stable","served":true'),
        ',"request_id":"', request, '","release_id":"', release,
        '","features":{"release_id":"', release, '","release_date":"2026-09-28","team":"',
        pc.take(pa.array(["payments", "search", "mobile", "platform", "identity"]),
                pa.array(index % 5)), '"',
    ]  # fmt: skip
    for name, values in features.items():
        parts += [f',"{name}":', values if isinstance(values, pa.Array) else _text(values)]
    probability = rng.random(count)
    parts += [
        '},"imputed":[],"output":{"high_risk":',
        pc.if_else(pa.array(probability >= 0.4), "true", "false"),
        ',"probability":', _text(probability),
        '},"latency_ms":', _text(rng.gamma(2, 1.5, count).round(3)), "}\n",
    ]  # fmt: skip
    line = pc.binary_join_element_wise(*parts, "")
    refused = pc.binary_join_element_wise(
        '{"timestamp":"', at, '+00:00","environment":"production","model":"release-risk",'
        '"model_version":"3","rejected":true,"status":400,"errors":[{"field":"records.0.team",'
        '"reason":"enum","value":"\\"ml-infra\\""}],"more_errors":0,"records":1,"release_id":"',
        ids, '"}\n', "",
    )  # fmt: skip
    line = pc.if_else(pa.array(rejected), refused, line)
    truncated = index % 100_000 == 99_999
    cut = pc.binary_join_element_wise(pc.utf8_slice_codeunits(line, 0, 80), "\n", "")
    left = ~truncated
    for name, hit in (
        ("malformed", truncated),
        ("other_model", other),
        ("outside_window", START + index * SPAN_MS // total < SINCE),
        ("smoke", smoke),
        ("rejected", rejected),
        ("not_served", shadow),
    ):
        expected[name] = expected.get(name, 0) + int(
            (hit if name == "malformed" else left & hit).sum()
        )
        left &= ~hit
    expected["used"] = expected.get("used", 0) + int(left.sum())
    return pc.if_else(pa.array(truncated), cut, line)


def _log(total: int) -> tuple[Path, dict[str, int], float | None]:
    """The cached log of ``total`` lines, what reading it must count, and how long generating
    it took (None: it was cached)."""
    path = CACHE / f"predictions-{total // 1_000_000}m.jsonl"
    stamp = path.with_suffix(".json")
    if path.is_file() and stamp.is_file():
        known = json.loads(stamp.read_text())
        if known.get("generator") == GENERATOR:
            return path, known["expected"], None
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    expected: dict[str, int] = {}

    def generate() -> None:
        rng = np.random.default_rng(total)
        with partial.open("wb") as handle:
            for start in range(0, total, GENERATE_ROWS):
                count = min(GENERATE_ROWS, total - start)
                line = _lines(start, count, total, rng, expected)
                offsets = np.frombuffer(line.buffers()[1], dtype=np.int32)
                offsets = offsets[line.offset : line.offset + len(line) + 1]
                handle.write(memoryview(line.buffers()[2])[offsets[0] : offsets[-1]])

    seconds, _ = timed(generate)
    partial.replace(path)
    stamp.write_text(json.dumps({"generator": GENERATOR, "expected": expected}))
    return path, expected, seconds


def _child(path: Path, mode: str, env: dict[str, str]) -> dict[str, Any]:
    command = [sys.executable, "-c", CHILD, str(Path(__file__).parent), str(path), mode]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_drift_read_1m_and_10m_rows(bench_env: dict[str, str]) -> None:
    per_row: dict[int, float] = {}
    for total in SIZES:
        path, expected, generated = _log(total)
        made = "cached" if generated is None else f"generated in {generated:.0f} s"
        with path.open("rb") as handle:  # into the page cache: both children read from memory
            while handle.read(64 << 20):
                pass
        load = os.getloadavg()[0]
        baseline = _child(path, "baseline", bench_env)
        slipway = _child(path, "slipway", bench_env)
        counts = slipway["counts"]
        rate, floor = total / slipway["seconds"], total / baseline["seconds"]
        per_row[total] = slipway["seconds"] / total
        rss = slipway["peak_rss_mb"]
        verdict = "met" if rss <= TARGET_RSS_MB else "MISSED"
        report(
            f"drift read {total // 1_000_000}M log rows ({path.stat().st_size / 1e9:.2f} GB, "
            f"{made}): slipway {rate:,.0f} rows/s ({slipway['seconds']:.1f} s), pyarrow.json "
            f"parse alone {floor:,.0f} rows/s ({baseline['seconds']:.1f} s), ratio "
            f"{slipway['seconds'] / baseline['seconds']:.2f}; peak RSS {rss:,.0f} MB "
            f"(parse alone {baseline['peak_rss_mb']:,.0f} MB; target <= {TARGET_RSS_MB} MB: "
            f"{verdict}); load average {load:.1f} on {os.cpu_count()} cores"
        )
        assert {k: counts[k] for k in expected} == expected
        assert slipway["used"] == counts["used"] == expected["used"]
        assert counts["read"] == total
        (team,) = counts["rejections"]
        assert (team["field"], team["reason"], team["requests"]) == (
            "team",
            "enum",
            expected["rejected"],
        )
    small, large = SIZES
    report(
        f"drift read time per row at {large // 1_000_000}M / at {small // 1_000_000}M: "
        f"{per_row[large] / per_row[small]:.2f} (1.00 = linear in rows)"
    )
