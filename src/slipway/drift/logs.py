"""Reading a window of the prediction log in chunks, however big the log.

:func:`read_window` reads what the service logged (``serve/prediction_log.py``: JSON lines,
``predictions.jsonl`` and its rotated ``predictions-*.jsonl``) or Parquet files with the same
fields (``features`` and ``output`` as structs, or flattened as ``features.<name>``), and yields
the served predictions of one model, environment and set of versions in ``[since, until)`` as
:class:`Chunk` s of numpy arrays, never the whole log in memory. The source is

- a local directory: every ``*.jsonl``, ``*.ndjson``, ``*.json`` and ``*.parquet`` file below
  it (``.gz`` and other compressed JSON lines too), in name order;
- one such file;
- a pyarrow filesystem URI, opened with ``pyarrow.fs.FileSystem.from_uri``: ``file:///…``,
  ``s3://bucket/prefix`` (credentials and region from the usual ``AWS_*`` variables),
  ``gs://bucket/prefix``, ``hdfs://…``; whatever that pyarrow build supports.

A file last modified before ``since`` holds no record of the window and is not opened.
JSON lines are parsed by pyarrow a block at a time under one explicit schema (fields it does
not name are skipped). pyarrow fails a whole block on one line it cannot read, so such a block
is parsed again by parts around that line (:func:`_salvage`): the line is counted as
malformed, the others are read, the read goes on.
:class:`Counts` says where every record went; the records the service rejected (``rejected``,
written by ``bento/service.py``) are counted by field and reason, and the losses the log
recorded of itself (``log_stats``) are added up.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from slipway.drift.chunks import Chunk, Coded
from slipway.errors import DataError
from slipway.progress import Progress
from slipway.serve.prediction_log import SMOKE_ID_PREFIX

JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")
# Raw JSON read at a time: ~8,000 of the service's lines. A bad line costs its block about two
# more parses, so smaller blocks lose less to one; larger ones gain nothing measurable.
BLOCK_BYTES = 4 << 20
PARSE_BLOCK_BYTES = 1 << 20  # what pyarrow hands each thread (a longer line is salvaged)
SALVAGE_SPLIT, SALVAGE_LINES = 8, 64  # how a block with a bad line is parsed again
TIMESTAMP = pa.timestamp("ms", tz="UTC")
MAX_VALUES = 50  # distinct rejected values remembered per field and reason


@dataclass
class Counts:
    """Where every record read went: each is counted once, by the first rule it fails in this
    order, so ``read`` is the sum of the others."""

    files: int = 0
    files_skipped: int = 0  # last modified before the window: not opened
    bytes: int = 0
    read: int = 0  # lines that are not blank, and Parquet rows
    malformed: int = 0  # not JSON, not an object, a field of the wrong type, no timestamp
    other_model: int = 0
    other_environment: int = 0
    outside_window: int = 0
    log_stats: int = 0  # the log's records about itself
    smoke: int = 0  # smoke tests' records, rejected ones included
    rejected: int = 0  # requests the service rejected (400, 415)
    other_version: int = 0
    not_served: int = 0  # shadow predictions
    failed: int = 0  # scoring raised: no output
    used: int = 0
    rejected_records: int = 0  # records the rejected requests carried, where readable
    dropped: int = 0  # records the service's log dropped (queue full), as it recorded
    write_errors: int = 0  # writes of the log that failed, as it recorded
    rejections: dict[tuple[str, str], Counter[str]] = field(default_factory=dict)
    rejection_requests: Counter[tuple[str, str]] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        """The counts as JSON; rejections most frequent first, with their commonest values."""
        plain = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name not in ("rejections", "rejection_requests")
        }
        rejections = [
            {
                "field": name,
                "reason": reason,
                "requests": self.rejection_requests[name, reason],
                "errors": sum(values.values()),
                "values": [{"value": v, "count": c} for v, c in values.most_common(5)],
            }
            for (name, reason), values in self.rejections.items()
        ]
        rejections.sort(key=lambda r: (-r["errors"], r["field"], r["reason"]))
        return {**plain, "rejections": rejections}


@dataclass
class LogWindow:
    """The chunks of one window; :attr:`counts` is complete when an iteration ends (another
    iteration reads the log again and counts afresh)."""

    files: list[tuple[pafs.FileSystem, pafs.FileInfo]]
    skipped: int
    select: _Selection
    progress: Progress
    chunk_rows: int
    progress_every: int
    block_bytes: int
    counts: Counts = field(init=False)

    def __post_init__(self) -> None:
        self.counts = Counts(files=len(self.files), files_skipped=self.skipped)

    def __iter__(self) -> Iterator[Chunk]:
        self.__post_init__()
        pending: list[pa.Table] = []
        waiting = 0
        next_report = self.progress_every
        for number, (filesystem, info) in enumerate(self.files, 1):
            self.counts.bytes += info.size or 0
            for table, malformed in _tables(filesystem, info, self.select, self.block_bytes):
                self.counts.read += malformed
                self.counts.malformed += malformed
                used = self.select.classify(table, self.counts)
                if used.num_rows:
                    pending.append(used)
                    waiting += used.num_rows
                while waiting >= self.chunk_rows:
                    whole = pa.concat_tables(pending)
                    yield self.select.chunk(whole.slice(0, self.chunk_rows))
                    pending, waiting = [whole.slice(self.chunk_rows)], waiting - self.chunk_rows
                if self.counts.read >= next_report:
                    while next_report <= self.counts.read:
                        next_report += self.progress_every
                    self.progress(
                        f"prediction log: {self.counts.read:,} records read, "
                        f"{self.counts.used:,} used (file {number} of {len(self.files)})"
                    )
        if waiting:
            yield self.select.chunk(pa.concat_tables(pending))


def read_window(
    source: str | Path,
    model: str,
    environment: str,
    versions: Collection[str] | None,
    since: datetime,
    until: datetime,
    features: Sequence[str],
    progress: Progress = lambda _line: None,
    chunk_rows: int = 200_000,
    *,
    categorical: Collection[str] = (),
    progress_every: int = 1_000_000,
    block_bytes: int = BLOCK_BYTES,
) -> LogWindow:
    """The served predictions of ``model`` in ``environment`` by one of ``versions`` (None: any)
    logged in ``[since, until)``, as chunks of ``chunk_rows`` (the last one smaller).

    Smoke-test records, shadow predictions and failed ones are left out and counted; naive
    datetimes are taken as UTC. ``progress`` hears a line every ``progress_every`` records
    read. Raises :class:`DataError` when ``source`` does not exist or cannot be opened.
    """
    since, until = _utc(since), _utc(until)
    select = _Selection(
        model, environment, versions, since, until, list(features), set(categorical)
    )
    files, skipped = _files(source, since)
    return LogWindow(files, skipped, select, progress, chunk_rows, progress_every, block_bytes)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _files(
    source: str | Path, since: datetime
) -> tuple[list[tuple[pafs.FileSystem, pafs.FileInfo]], int]:
    """The log files of ``source`` in name order, and how many were left out as too old."""
    text = str(source)
    try:
        if "://" in text:
            filesystem, path = pafs.FileSystem.from_uri(text)
        else:
            filesystem, path = pafs.LocalFileSystem(), str(Path(text).resolve())
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            found = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
            infos = [i for i in found if i.type == pafs.FileType.File and _kind(i.path)]
        elif info.type == pafs.FileType.File:
            infos = [info]
        else:
            infos = None
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise DataError(
            f"cannot open the prediction log {text}: {exc}",
            "check the URI and the credentials pyarrow's filesystem reads from the environment",
        ) from exc
    if infos is None:
        raise DataError(
            f"no prediction log at {text}",
            "pass the directory the service logs to (SLIPWAY_LOG_DIR, or "
            "$SLIPWAY_HOME/predictions/<environment>), one log file, or a URI such as "
            "s3://bucket/prefix",
        )
    infos.sort(key=lambda i: i.path)
    recent = [i for i in infos if i.mtime is None or _utc(i.mtime) >= since]
    return [(filesystem, i) for i in recent], len(infos) - len(recent)


def _kind(path: str) -> str | None:
    """``json`` or ``parquet`` by the file's suffix (a compressed JSON file by the one before)."""
    name = path.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    for suffix in COMPRESSED:
        name = name.removesuffix(suffix)
    return "json" if name.endswith(JSON_SUFFIXES) else None


class _Selection:
    """What one window wants: the schema to parse, the rules records are counted by, and how a
    table of used records becomes a :class:`Chunk`."""

    def __init__(
        self,
        model: str,
        environment: str,
        versions: Collection[str] | None,
        since: datetime,
        until: datetime,
        features: list[str],
        categorical: set[str],
    ) -> None:
        self.model, self.environment = model, environment
        self.versions = None if versions is None else pa.array(sorted(map(str, versions)))
        self.since, self.until = pa.scalar(since, TIMESTAMP), pa.scalar(until, TIMESTAMP)
        self.features, self.categorical = features, categorical
        kinds = [(f, pa.string() if f in categorical else pa.float64()) for f in features]
        error = pa.struct([("field", pa.string()), ("reason", pa.string()), ("value", pa.string())])
        self.schema = pa.schema(
            [
                ("timestamp", TIMESTAMP),
                ("environment", pa.string()),
                ("model", pa.string()),
                ("model_version", pa.string()),
                ("served", pa.bool_()),
                ("release_id", pa.string()),
                ("error", pa.string()),
                ("features", pa.struct(kinds)),
                ("output", pa.struct([("high_risk", pa.bool_()), ("probability", pa.float64())])),
                ("rejected", pa.bool_()),
                ("records", pa.int64()),
                ("errors", pa.list_(error)),
                ("log_stats", pa.struct([("dropped", pa.int64()), ("write_errors", pa.int64())])),
            ]
        )
        self.flat = pa.Table.from_batches([], self.schema).flatten().schema
        self.parse = pajson.ParseOptions(
            explicit_schema=self.schema, unexpected_field_behavior="ignore"
        )

    def normalise(self, table: pa.Table) -> pa.Table:
        """``table`` (a Parquet batch) with exactly the flat columns, cast; missing ones null."""
        while any(pa.types.is_struct(f.type) for f in table.schema):
            table = table.flatten()
        columns = []
        for spec in self.flat:
            if spec.name not in table.column_names:
                columns.append(pa.nulls(table.num_rows, spec.type))
                continue
            column = table[spec.name]
            if spec.type == TIMESTAMP and pa.types.is_timestamp(column.type):
                if column.type.tz is None:
                    column = pc.assume_timezone(column, "UTC")
            elif spec.type == TIMESTAMP and pa.types.is_string(column.type):
                column = _parse_timestamps(column)
            columns.append(column.cast(spec.type))
        return pa.Table.from_arrays(columns, schema=self.flat)

    def classify(self, table: pa.Table, counts: Counts) -> pa.Table:
        """Count every record of ``table`` (flat columns) and return the used ones."""
        counts.read += table.num_rows
        left = _flag(table["timestamp"].is_valid())
        counts.malformed += int((~left).sum())

        def drop(unwanted: np.ndarray) -> int:
            nonlocal left
            hit = left & unwanted
            left &= ~hit
            return int(hit.sum())

        timestamp = table["timestamp"]
        counts.other_model += drop(~_flag(pc.equal(table["model"], self.model)))
        counts.other_environment += drop(~_flag(pc.equal(table["environment"], self.environment)))
        in_window = pc.and_(pc.greater_equal(timestamp, self.since), pc.less(timestamp, self.until))
        counts.outside_window += drop(~_flag(in_window))
        stats = _flag(table["log_stats.dropped"].is_valid()) | _flag(
            table["log_stats.write_errors"].is_valid()
        )
        self._add_stats(table, left & stats, counts)
        counts.log_stats += drop(stats)
        counts.smoke += drop(_flag(pc.starts_with(table["release_id"], pattern=SMOKE_ID_PREFIX)))
        rejected = _flag(table["rejected"])
        self._add_rejections(table, left & rejected, counts)
        counts.rejected += drop(rejected)
        if self.versions is not None:
            counts.other_version += drop(
                ~_flag(pc.is_in(table["model_version"], value_set=self.versions))
            )
        counts.not_served += drop(~_flag(table["served"]))
        failed = (
            _flag(table["error"].is_valid())
            | ~_flag(table["output.probability"].is_valid())
            | ~_flag(table["output.high_risk"].is_valid())
        )
        counts.failed += drop(failed)
        counts.used += int(left.sum())
        return table.filter(pa.array(left))

    def _add_stats(self, table: pa.Table, picked: np.ndarray, counts: Counts) -> None:
        if picked.any():
            chosen = table.filter(pa.array(picked))
            counts.dropped += pc.sum(chosen["log_stats.dropped"]).as_py() or 0
            counts.write_errors += pc.sum(chosen["log_stats.write_errors"]).as_py() or 0

    def _add_rejections(self, table: pa.Table, picked: np.ndarray, counts: Counts) -> None:
        if not picked.any():
            return
        chosen = table.filter(pa.array(picked)).select(["records", "errors"])
        for request in chosen.to_pylist():
            counts.rejected_records += request["records"] or 0
            named: set[tuple[str, str]] = set()
            for error in request["errors"] or []:
                # records.3.team → team: the field, whichever record of the request it was in
                parts = (error["field"] or "(request)").split(".")
                if len(parts) > 2 and parts[0] == "records" and parts[1].isdigit():
                    parts = parts[2:]
                key = (".".join(parts), error["reason"] or "unknown")
                values = counts.rejections.setdefault(key, Counter())
                value = error["value"] if error["value"] is not None else "(none)"
                if value in values or len(values) < MAX_VALUES:
                    values[value] += 1
                else:
                    values["(other)"] += 1
                named.add(key)
            counts.rejection_requests.update(named)

    def chunk(self, table: pa.Table) -> Chunk:
        table = table.combine_chunks()
        features = {}
        for name in self.features:
            column = table[f"features.{name}"]
            if name in self.categorical:
                features[name] = Coded.from_arrow(column)
            else:
                features[name] = column.to_numpy().astype(np.float64, copy=False)
        return Chunk(
            features=features,
            probability=table["output.probability"].to_numpy(),
            high_risk=table["output.high_risk"].to_numpy(zero_copy_only=False),
            release_id=table["release_id"].to_numpy(zero_copy_only=False),
            model_version=Coded.from_arrow(table["model_version"]),
            timestamp=table["timestamp"].to_numpy(),
        )


def _parse_timestamps(column: pa.ChunkedArray) -> pa.Array:
    """ISO 8601 strings as UTC timestamps: at pyarrow's speed when all carry a zone, else one by
    one (naive ones taken as UTC, unreadable ones null)."""
    try:
        return pc.cast(column, TIMESTAMP)
    except pa.ArrowInvalid:
        parsed = []
        for text in column.to_pylist():
            try:
                parsed.append(_utc(datetime.fromisoformat(text)))
            except (TypeError, ValueError):
                parsed.append(None)
        return pa.array(parsed, TIMESTAMP)


def _flag(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean column as numpy, null as False."""
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _tables(
    filesystem: pafs.FileSystem, info: pafs.FileInfo, select: _Selection, block_bytes: int
) -> Iterator[tuple[pa.Table, int]]:
    """A file's records as flat tables, with how many lines before each could not be read."""
    if _kind(info.path) == "parquet":
        wanted = {f.name for f in select.flat} | {f.name for f in select.schema}
        with filesystem.open_input_file(info.path) as handle:
            parquet = pq.ParquetFile(handle)
            present = [n for n in parquet.schema_arrow.names if n in wanted]
            for batch in parquet.iter_batches(batch_size=1 << 16, columns=present):
                try:
                    yield select.normalise(pa.Table.from_batches([batch])), 0
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise DataError(
                        f"{info.path} does not hold prediction-log columns: {exc}",
                        "write Parquet logs with the fields of the JSON lines the service writes",
                    ) from exc
        return
    with filesystem.open_input_stream(info.path, compression="detect") as handle:
        rest = b""
        while True:
            data = handle.read(block_bytes)
            block = rest + data
            if not data:  # the end: a last line without its newline is still a line
                if block.strip():
                    yield _parse_block(block, select)
                return
            cut = block.rfind(b"\n") + 1
            rest = block[cut:]
            if cut:
                yield _parse_block(memoryview(block)[:cut], select)


def _parse_block(block: bytes | memoryview, select: _Selection) -> tuple[pa.Table, int]:
    """The block's lines as one flat table, and how many lines could not be read."""
    try:
        return _read_json(block, select), 0
    except pa.ArrowInvalid:
        lines = [line for line in bytes(block).split(b"\n") if line.strip()]
    tables, malformed = _salvage(lines, select)
    return pa.concat_tables([pa.Table.from_batches([], select.flat), *tables]), malformed


def _salvage(lines: list[bytes], select: _Selection) -> tuple[list[pa.Table], int]:
    """Tables of the ``lines`` pyarrow reads under the schema, and how many it cannot read.

    ``lines`` failed together: each eighth is tried, and those that fail again are split the
    same way (a bad line costs its block about two parses), down to ``SALVAGE_LINES`` lines,
    read one by one (a line that is not a JSON object is dropped before pyarrow sees it)."""
    if len(lines) > SALVAGE_LINES:
        tables, malformed, step = [], 0, -(-len(lines) // SALVAGE_SPLIT)
        for start in range(0, len(lines), step):
            part = lines[start : start + step]
            try:
                tables.append(_read_json(b"\n".join(part), select))
            except pa.ArrowInvalid:
                found, bad = _salvage(part, select)
                tables += found
                malformed += bad
        return tables, malformed
    tables, malformed = [], 0
    for line in lines:
        try:
            if isinstance(json.loads(line), dict):
                tables.append(_read_json(line, select, len(line) + 1))
                continue
        except (ValueError, pa.ArrowInvalid):
            pass
        malformed += 1
    return tables, malformed


def _read_json(
    payload: bytes | memoryview, select: _Selection, block_size: int = PARSE_BLOCK_BYTES
) -> pa.Table:
    table = pajson.read_json(
        pa.BufferReader(payload),
        read_options=pajson.ReadOptions(block_size=max(block_size, 1 << 16)),
        parse_options=select.parse,
    )
    return table.flatten()
