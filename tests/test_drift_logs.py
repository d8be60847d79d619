"""Reading a window of the prediction log: real logs written by the service's PredictionLog,
Parquet, malformed lines, smoke tests, other models, the window, URIs, rejected requests."""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from slipway.config import load_config
from slipway.drift.chunks import Chunk, Coded
from slipway.drift.logs import Counts, read_window
from slipway.errors import DataError
from slipway.serve.prediction_log import SMOKE_ID_PREFIX, PredictionLog
from slipway.serve.service import Deployment, Scorer, rejection_record, route

REPO = Path(__file__).resolve().parent.parent
CONFIG = load_config(REPO / "model" / "slipway.yaml")
FEATURES = CONFIG.features
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
SINCE, UNTIL = T0, T0 + timedelta(days=1)
CATEGORIES = ("other_model", "other_environment", "outside_window", "log_stats", "smoke")
KINDS = ("malformed", *CATEGORIES, "rejected", "other_version", "not_served", "failed", "used")


class ConstantModel:
    """predict_proba gives ``probability`` for every row."""

    def __init__(self, probability: float) -> None:
        self.probability = probability

    def predict_proba(self, frame):
        return np.tile([1 - self.probability, self.probability], (len(frame), 1))

    def predict(self, frame):
        return np.full(len(frame), self.probability >= 0.5)


def _release(i: int, **changes) -> dict:
    rng = np.random.default_rng(i)
    record = {
        "release_id": f"REL-{i}",
        "release_date": "2026-10-30",
        "team": ("payments", "search", "mobile")[i % 3],
        "code_changes": int(rng.integers(0, 5000)),
        "files_modified": int(rng.integers(0, 300)),
        "past_defects": int(rng.integers(0, 30)),
        "test_coverage": None if i % 7 == 0 else round(float(rng.uniform(0, 100)), 1),
        "release_frequency": round(float(rng.uniform(0, 60)), 2),
        "historical_failure_rate": round(float(rng.uniform(0, 1)), 3),
    }
    return {**record, **changes}


def _window(source, versions=("1",), **options):
    window = read_window(
        source, "release-risk", "staging", versions, SINCE, UNTIL, FEATURES, **options
    )
    chunks = list(window)
    return chunks, window.counts


def _all(chunks: list[Chunk], name: str) -> np.ndarray:
    columns = [c.features[name] if name in FEATURES else getattr(c, name) for c in chunks]
    return np.concatenate([_array(column) for column in columns])


def _array(column: np.ndarray | Coded) -> np.ndarray:
    return np.array(column.tolist(), dtype=object) if isinstance(column, Coded) else column


def _balanced(counts: Counts) -> bool:
    return counts.read == sum(getattr(counts, kind) for kind in KINDS)


def _record(i: int, at: datetime, **changes) -> dict:
    """A served record as the Scorer logs it, at ``at``."""
    features = _release(i)
    return {
        "timestamp": at.isoformat(timespec="milliseconds"),
        "environment": "staging",
        "model": "release-risk",
        "model_version": "1",
        "route": "stable",
        "served": True,
        "request_id": f"{i:032x}",
        "release_id": features["release_id"],
        "features": features,
        "imputed": [],
        "output": {"high_risk": i % 2 == 0, "probability": i / 1000},
        "latency_ms": 1.5,
        **changes,
    }


def _write_lines(path: Path, lines: list[bytes | dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = [x if isinstance(x, bytes) else json.dumps(x).encode() for x in lines]
    path.write_bytes(b"".join(line + b"\n" for line in encoded))
    return path


# --- a real log, as the service writes it ----------------------------------------------------


@pytest.fixture
def served_log(tmp_path):
    """A canary (v1 stable, v2 on 30 %) and then a shadow of v2 logged through PredictionLog,
    rotated every ~20 kB; returns the directory and the releases sent."""
    log = PredictionLog(tmp_path / "logs", max_bytes=20_000, keep=1000)
    models = {"1": ConstantModel(0.2), "2": ConstantModel(0.9)}
    canary = Deployment("staging", "release-risk", "1", "canary", "2", 30)
    shadow = Deployment("staging", "release-risk", "1", "shadow", "2")
    releases = [_release(i) for i in range(600)]
    for deployment, part in ((canary, releases[:300]), (shadow, releases[300:])):
        scorer = Scorer(CONFIG, deployment, models, log.append)
        for start in range(0, len(part), 25):
            scorer.predict(part[start : start + 25])
    assert log.flush()
    log.close()
    return tmp_path / "logs", releases


def test_a_rotated_log_reads_back_exactly_what_was_served(served_log):
    directory, releases = served_log
    assert len(list(directory.glob("predictions-*.jsonl"))) >= 5
    window = read_window(
        directory,
        "release-risk",
        "staging",
        {"1", "2"},
        datetime.now(UTC) - timedelta(hours=1),
        datetime.now(UTC) + timedelta(hours=1),
        FEATURES,
        chunk_rows=64,
    )
    chunks = list(window)
    assert [len(c) for c in chunks[:-1]] == [64] * (len(chunks) - 1)
    ids = _all(chunks, "release_id")
    assert sorted(ids) == sorted(r["release_id"] for r in releases)  # the shadow's not served
    by_id = {r["release_id"]: r for r in releases}
    for name in FEATURES:
        sent = np.array([by_id[i][name] for i in ids], dtype=np.float64)  # None: NaN
        np.testing.assert_array_equal(_all(chunks, name), sent)
    assert _all(chunks, "test_coverage").dtype == np.float64
    assert np.isnan(_all(chunks, "test_coverage")).sum() == sum(i % 7 == 0 for i in range(600))
    versions = _all(chunks, "model_version")
    canary = {f"REL-{i}" for i in range(300) if route(f"REL-{i}", 30) == "canary"}
    assert {i for i, v in zip(ids, versions, strict=True) if v == "2"} == canary
    np.testing.assert_array_equal(_all(chunks, "probability"), np.where(versions == "2", 0.9, 0.2))
    np.testing.assert_array_equal(_all(chunks, "high_risk"), versions == "2")
    assert _all(chunks, "timestamp").dtype == np.dtype("datetime64[ms]")
    counts = window.counts
    assert (counts.read, counts.used, counts.not_served, counts.malformed) == (900, 600, 300, 0)
    assert counts.files == len(list(directory.glob("*.jsonl"))) and _balanced(counts)
    assert sum(len(c) for c in window) == 600 and window.counts == counts  # read again


def test_only_the_versions_asked_for_are_used(served_log):
    directory, _ = served_log
    now = datetime.now(UTC)
    window = read_window(
        directory, "release-risk", "staging", {"2"}, now - timedelta(hours=1), now, FEATURES
    )
    chunks = list(window)
    assert set(_all(chunks, "model_version")) == {"2"}
    assert window.counts.used + window.counts.other_version == 600
    anything = read_window(
        directory, "release-risk", "staging", None, now - timedelta(hours=1), now, FEATURES
    )
    assert sum(len(c) for c in anything) == 600


# --- what is left out, and why ---------------------------------------------------------------


def test_each_record_is_counted_once_by_the_first_rule_it_fails(tmp_path):
    at = T0 + timedelta(hours=1)
    lines = [
        _record(1, at),
        _record(2, at, model="fraud-score"),
        _record(3, at, environment="production"),
        _record(4, T0 - timedelta(seconds=1)),
        _record(5, UNTIL),  # until is not in the window
        _record(6, T0),  # since is
        _record(7, at, release_id=f"{SMOKE_ID_PREFIX}0"),
        _record(8, at, model_version="9"),
        _record(9, at, served=False, route="shadow"),
        _record(10, at, output=None, error="ValueError: broken"),
        {"timestamp": at.isoformat(), "environment": "staging", "model": "release-risk",
         "log_stats": {"dropped": 40, "write_errors": 1}},
        {"timestamp": at.isoformat(), "environment": "staging", "model": "release-risk",
         "log_stats": {"dropped": 2, "write_errors": 0}},
        {"timestamp": at.isoformat(), "environment": "production", "model": "release-risk",
         "log_stats": {"dropped": 1000, "write_errors": 0}},
    ]  # fmt: skip
    chunks, counts = _window(_write_lines(tmp_path / "predictions.jsonl", lines))
    assert sorted(_all(chunks, "release_id")) == ["REL-1", "REL-6"]
    assert {k: getattr(counts, k) for k in KINDS} == {
        "malformed": 0,
        "other_model": 1,
        "other_environment": 2,
        "outside_window": 2,
        "log_stats": 2,
        "smoke": 1,
        "rejected": 0,
        "other_version": 1,
        "not_served": 1,
        "failed": 1,
        "used": 2,
    }
    assert (counts.dropped, counts.write_errors, counts.read) == (42, 1, 13)


def test_the_window_takes_zones_and_naive_times_as_utc(tmp_path):
    paris = timezone(timedelta(hours=2))
    lines = [
        _record(1, (T0 - timedelta(minutes=30)).astimezone(paris)),  # 13:30+02:00 = 11:30Z
        _record(2, (T0 + timedelta(minutes=30)).astimezone(paris)),
        {**_record(3, T0), "timestamp": "2026-11-01T12:00:00"},  # naive: UTC
        {**_record(4, T0), "timestamp": "2026-11-01T11:59:59.999Z"},
    ]
    path = _write_lines(tmp_path / "log.jsonl", lines)
    window = read_window(
        path,
        "release-risk",
        "staging",
        {"1"},
        T0.replace(tzinfo=None),  # naive: UTC
        UNTIL.astimezone(paris),
        FEATURES,
    )
    chunks = list(window)
    assert sorted(_all(chunks, "release_id")) == ["REL-2", "REL-3"]
    assert _all(chunks, "timestamp").min() == np.datetime64("2026-11-01T12:00:00.000")
    assert window.counts.outside_window == 2


BAD_LINES = [
    b"not json at all",
    b'{"timestamp": "2026-11-01T13:00:00+00:00", "model": "release-risk", "environm',  # cut
    b"[1, 2, 3]",
    b"42",
    b'{"timestamp": "yesterday", "model": "release-risk"}',
    b'{"timestamp": "2026-11-01T13:00:00+00:00", "output": {"probability": "high"}}',
    b'{"timestamp": "2026-11-01T13:00:00+00:00", "model_version": 1}',
    b'{"timestamp": "2026-11-01T13:00:00+00:00", "features": {"code_changes": true}}',
    b"\xff\xfe\xfa not utf-8",
    b'{"model": "release-risk", "environment": "staging"}',  # no timestamp
]


@pytest.mark.parametrize("block_bytes", [1 << 20, 4096, 700])
def test_malformed_lines_are_counted_and_cost_only_themselves(tmp_path, block_bytes):
    at = T0 + timedelta(hours=2)
    good = [_record(i, at) for i in range(200)]
    lines: list[bytes | dict] = []
    for i, record in enumerate(good):
        lines.append(record)
        if i % 20 == 5:
            lines.append(BAD_LINES[(i // 20) % len(BAD_LINES)])
        if i % 50 == 0:
            lines.append(b"   ")  # blank: not a record at all
    path = _write_lines(tmp_path / "log.jsonl", lines)
    path.write_bytes(path.read_bytes() + json.dumps(_record(999, at)).encode())  # no newline
    chunks, counts = _window(path, block_bytes=block_bytes, chunk_rows=50)
    ids = list(_all(chunks, "release_id"))
    assert ids == [r["release_id"] for r in good] + ["REL-999"]  # in log order
    assert (counts.malformed, counts.used, counts.read) == (10, 201, 211)
    assert _balanced(counts)


def test_a_line_longer_than_what_pyarrow_parses_at_once_is_still_read(tmp_path):
    lines = [_record(1, T0), {**_record(2, T0), "pad": "x" * (3 << 20)}, _record(3, T0)]
    chunks, counts = _window(_write_lines(tmp_path / "log.jsonl", lines), block_bytes=1 << 20)
    assert list(_all(chunks, "release_id")) == ["REL-1", "REL-2", "REL-3"]
    assert counts.malformed == 0


def test_a_log_of_nothing_but_garbage_reads_as_empty(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"".join(BAD_LINES[i % len(BAD_LINES)] + b"\n" for i in range(1000)))
    chunks, counts = _window(path, block_bytes=8192)
    assert chunks == [] and (counts.malformed, counts.read, counts.used) == (1000, 1000, 0)


def test_categorical_features_come_as_strings(tmp_path):
    path = _write_lines(tmp_path / "log.jsonl", [_record(i, T0) for i in range(6)])
    window = read_window(
        path, "release-risk", "staging", {"1"}, SINCE, UNTIL, ["team", "past_defects"],
        categorical={"team"},
    )  # fmt: skip
    (chunk,) = list(window)
    assert chunk.features["team"].tolist() == ["payments", "search", "mobile"] * 2
    assert chunk.features["past_defects"].dtype == np.float64


# --- requests the service rejected -----------------------------------------------------------


def _rejection(team: str, release_id: str = "REL-1", records: int = 1) -> dict:
    asked = {"records": [_release(i, team=team, release_id=release_id) for i in range(records)]}
    detail = [
        {"loc": ["records", i, "team"], "msg": "Input should be ...", "type": "literal_error"}
        for i in range(records)
    ]
    return rejection_record(
        Deployment("staging", "release-risk", "1"),
        "release_id",
        400,
        json.dumps(asked).encode(),
        json.dumps({"error": "validation error", "detail": detail}).encode(),
    )


def test_rejected_requests_are_counted_by_field_reason_and_value(tmp_path):
    log = PredictionLog(tmp_path / "logs")
    deployment = Deployment("staging", "release-risk", "1")
    Scorer(CONFIG, deployment, {"1": ConstantModel(0.3)}, log.append).predict([_release(1)])
    log.append([_rejection("billing", records=3) for _ in range(4)])
    log.append([_rejection("ml-infra")])
    log.append([_rejection("billing", release_id=f"{SMOKE_ID_PREFIX}1")])  # a smoke test's
    log.append([{**_rejection("billing"), "environment": "production"}])
    assert log.flush()
    log.close()
    now = datetime.now(UTC)
    window = read_window(
        f"file://{tmp_path / 'logs'}", "release-risk", "staging", {"1"},
        now - timedelta(minutes=5), now + timedelta(minutes=5), FEATURES,
    )  # fmt: skip
    assert sum(len(c) for c in window) == 1
    counts = window.counts
    assert (counts.rejected, counts.rejected_records, counts.smoke) == (5, 13, 1)
    assert counts.other_environment == 1 and _balanced(counts)
    (team,) = counts.to_dict()["rejections"]
    assert team == {
        "field": "team",
        "reason": "enum",
        "requests": 5,
        "errors": 13,
        "values": [{"value": '"billing"', "count": 12}, {"value": '"ml-infra"', "count": 1}],
    }
    json.dumps(counts.to_dict())


# --- Parquet, URIs, compressed and old files -------------------------------------------------


def _frame(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows)


def test_parquet_with_structs_or_flat_columns_reads_as_json_lines(tmp_path):
    at = T0 + timedelta(hours=3)
    rows = [_record(i, at) for i in range(30)] + [_record(30, at, model="fraud-score")]
    (tmp_path / "logs").mkdir()
    pq.write_table(_frame(rows), tmp_path / "logs" / "a.parquet")
    flat = _frame(rows).flatten()  # features.code_changes, output.probability, ...
    flat = flat.set_column(0, "timestamp", pa.array([at.replace(tzinfo=None)] * 31))  # naive: UTC
    pq.write_table(flat, tmp_path / "logs" / "b.parquet")
    _write_lines(tmp_path / "logs" / "c.jsonl", rows)
    chunks, counts = _window(tmp_path / "logs")
    ids = _all(chunks, "release_id")
    assert list(ids) == [r["release_id"] for r in rows[:30]] * 3
    expected = np.array([r["features"]["test_coverage"] for r in rows[:30]], dtype=np.float64)
    np.testing.assert_array_equal(_all(chunks, "test_coverage"), np.tile(expected, 3))
    assert (counts.files, counts.used, counts.other_model) == (3, 90, 3)


def test_parquet_times_without_a_zone_are_utc_and_unreadable_ones_malformed(tmp_path):
    rows = [_record(i, T0) for i in range(3)]
    rows[0]["timestamp"] = "2026-11-01T12:30:00"
    rows[1]["timestamp"] = "the day before"
    pq.write_table(_frame(rows), tmp_path / "log.parquet")
    chunks, counts = _window(tmp_path / "log.parquet")
    assert list(_all(chunks, "release_id")) == ["REL-0", "REL-2"]
    assert _all(chunks, "timestamp")[0] == np.datetime64("2026-11-01T12:30:00.000")
    assert (counts.malformed, counts.used) == (1, 2)


def test_a_parquet_file_without_log_columns_is_an_error_naming_it(tmp_path):
    pq.write_table(pa.table({"timestamp": [[1, 2]]}), tmp_path / "x.parquet")
    with pytest.raises(DataError, match=r"x\.parquet"):
        _window(tmp_path / "x.parquet")


@pytest.mark.parametrize("form", ["path", "str", "file URI of the directory", "file URI"])
def test_a_log_is_found_by_path_or_uri(tmp_path, form):
    path = _write_lines(tmp_path / "logs" / "predictions.jsonl", [_record(1, T0)])
    _write_lines(tmp_path / "logs" / "notes.txt", [b"not a log file"])
    source = {
        "path": tmp_path / "logs",
        "str": str(path),
        "file URI of the directory": f"file://{tmp_path / 'logs'}",
        "file URI": path.as_uri(),
    }[form]
    chunks, counts = _window(source)
    assert list(_all(chunks, "release_id")) == ["REL-1"] and counts.files == 1


def test_compressed_lines_in_subdirectories_are_read(tmp_path):
    nested = tmp_path / "logs" / "day=2026-11-01"
    nested.mkdir(parents=True)
    payload = b"".join(json.dumps(_record(i, T0)).encode() + b"\n" for i in range(5))
    (nested / "predictions.jsonl.gz").write_bytes(gzip.compress(payload))
    chunks, counts = _window(tmp_path / "logs")
    assert len(_all(chunks, "release_id")) == 5 and counts.bytes > 0


def test_files_last_changed_before_the_window_are_not_opened(tmp_path):
    old = _write_lines(tmp_path / "logs" / "predictions-old.jsonl", [b"garbage"] * 10)
    _write_lines(tmp_path / "logs" / "predictions.jsonl", [_record(1, T0)])
    stamp = (SINCE - timedelta(days=2)).timestamp()
    os.utime(old, (stamp, stamp))
    chunks, counts = _window(tmp_path / "logs")
    assert (counts.files, counts.files_skipped, counts.read, counts.malformed) == (1, 1, 1, 0)
    assert len(chunks) == 1


@pytest.mark.parametrize(
    "source", ["{tmp}/nowhere", "file://{tmp}/nowhere", "nosuchscheme://bucket/prefix"]
)
def test_a_missing_log_is_an_error_that_says_what_to_pass(tmp_path, source):
    with pytest.raises(DataError) as caught:
        _window(source.format(tmp=tmp_path))
    assert caught.value.hint


def test_a_log_in_an_s3_bucket_is_read_like_a_directory(s3):
    import pyarrow.fs as pafs

    bucket, _ = pafs.FileSystem.from_uri(f"s3://ml-logs?{s3}&allow_bucket_creation=true")
    bucket.create_dir("ml-logs")
    at = T0 + timedelta(hours=3)
    rows = [_record(i, at) for i in range(40)]
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in rows[:20]) + b"{truncated\n"
    gzipped = "ml-logs/prod/day=1/predictions.jsonl.gz"  # written as is: pyarrow would gzip again
    with bucket.open_output_stream(gzipped, compression=None) as out:
        out.write(gzip.compress(lines))
    with bucket.open_output_stream("ml-logs/prod/day=2/part-0.parquet") as out:
        pq.write_table(_frame(rows[20:]), out)
    with bucket.open_output_stream("ml-logs/prod/README.txt") as out:
        out.write(b"not a log")
    chunks, counts = _window(f"s3://ml-logs/prod?{s3}")
    assert list(_all(chunks, "release_id")) == [r["release_id"] for r in rows], counts
    sent = np.array([r["features"]["code_changes"] for r in rows], dtype=np.float64)
    np.testing.assert_array_equal(_all(chunks, "code_changes"), sent)
    assert (counts.files, counts.used, counts.malformed) == (2, 40, 1)
    assert _balanced(counts)
    with pytest.raises(DataError, match=r"s3://ml-logs/nothing-here") as caught:
        _window(f"s3://ml-logs/nothing-here?{s3}")
    assert "s3://bucket/prefix" in caught.value.hint
    with pytest.raises(DataError, match=r"no-such-bucket") as caught:
        _window(f"s3://no-such-bucket/prod?{s3}")
    assert caught.value.hint


def test_progress_is_told_every_n_records(tmp_path):
    path = _write_lines(tmp_path / "log.jsonl", [_record(i, T0) for i in range(1000)])
    heard: list[str] = []
    _window(path, progress=heard.append, progress_every=300, block_bytes=20_000)
    assert 3 <= len(heard) <= 4
    assert heard[0].startswith("prediction log: ") and "records read" in heard[0]


# --- coded text columns -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [["b", "a", "b", None, "z", None], [None, None], [], ["only"] * 3],
)
def test_a_coded_column_reads_and_counts_its_texts_as_pyarrow_encodes_them(values):
    coded = Coded.from_arrow(pa.array(values, pa.string()))
    assert coded.tolist() == values == Coded.of(values).tolist()
    assert len(coded) == len(values) and coded.codes.dtype == np.int32
    expected = Counter(values)
    assert coded.counts() == expected == Coded.of(values).counts()
    assert coded.matches("b").tolist() == [v == "b" for v in values]
    assert coded.matches("absent").tolist() == [False] * len(values)
    picked = np.arange(len(values)) % 2 == 0
    assert coded.take(picked).tolist() == values[::2]


def test_a_chunked_column_is_coded_as_one_and_a_non_text_value_by_its_text():
    column = pa.chunked_array([["x", None], ["y", "x"]], pa.string())
    assert Coded.from_arrow(column).tolist() == ["x", None, "y", "x"]
    assert Coded.of([1, "1", None]).counts() == Counter({"1": 2, None: 1})
