"""The data contract: read a dataset and check it against ``columns`` in slipway.yaml.

Every check is vectorised so that validating a million rows costs about as much as reading
them. A violation names the check, the column, how many rows break it and a few example rows
(by CSV line and id) so the fix is obvious.
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from slipway.config import Column, Impute, ModelConfig
from slipway.errors import DataError

EXAMPLES = 3
_NUMERIC = {"int", "float"}


@dataclass(frozen=True)
class Violation:
    """One broken rule of the contract."""

    check: str
    column: str | None
    count: int
    message: str
    examples: list[dict[str, Any]] = field(default_factory=list)


def read_dataset(path: Path) -> pd.DataFrame:
    """Read a CSV dataset; a missing, empty or unparsable file is a :class:`DataError`."""
    if not path.is_file():
        raise DataError(f"dataset {path} does not exist", "check `data:` paths in slipway.yaml")
    try:
        return pd.read_csv(path, engine="c")
    except pd.errors.EmptyDataError as exc:
        raise DataError(
            f"dataset {path} is empty (no header, no rows)",
            "regenerate or restore the file; it needs a header row and data rows",
        ) from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"dataset {path} is not valid CSV: {exc}", "fix the file format") from exc


def _examples(frame: pd.DataFrame, mask: np.ndarray, column: str | None, id_column: str) -> list:
    rows = np.flatnonzero(mask)[:EXAMPLES]
    found = []
    for row in rows:
        # The header is line 1; number_lines corrects this for files with blank lines or
        # quoted line breaks.
        example: dict[str, Any] = {"line": int(row) + 2}
        if id_column in frame.columns:
            example["id"] = _plain(frame[id_column].iloc[row])
        if column is not None and column in frame.columns:
            example["value"] = _plain(frame[column].iloc[row])
        found.append(example)
    return found


def number_lines(violations: list[Violation], path: Path) -> None:
    """Give the examples of ``violations``, rows of the CSV file ``path``, its line numbers.

    pandas skips blank lines and a quoted field may hold line breaks, so a row's line is not
    always its position + 2. The file is read again as CSV, only up to the last example and
    only when a check failed.
    """
    examples = [e for v in violations for e in v.examples]
    wanted = {e["line"] - 2 for e in examples}
    if not wanted:
        return
    starts: dict[int, int] = {}
    last = max(wanted)
    row = -1  # the header
    ended = 0
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        for record in reader:
            start, ended = ended + 1, reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # a blank line, skipped by pandas too
            if row in wanted:
                starts[row] = start
            if row >= last:
                break
            row += 1
    for example in examples:
        example["line"] = starts.get(example["line"] - 2, example["line"])


def _plain(value: Any) -> Any:
    if value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _numeric(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The column as float64 (NaN for empty) plus a mask of cells present but not numbers."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype="float64", na_value=np.nan), np.zeros(len(series), bool)
    coerced = pd.to_numeric(series, errors="coerce")
    bad = (coerced.isna() & series.notna()).to_numpy(dtype=bool)
    return coerced.to_numpy(dtype="float64", na_value=np.nan), bad


def parse_dates(series: pd.Series) -> np.ndarray:
    """YYYY-MM-DD strings as ``datetime64[D]``; NaT where empty or not such a date."""
    if isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow":
        try:  # fast path: Arrow's strict ISO-8601 cast succeeds when every date is valid
            parsed = pa.array(series.array).cast(pa.date32())
            return parsed.to_numpy(zero_copy_only=False).astype("datetime64[D]")
        except pa.ArrowInvalid:
            pass  # some value is not a date: find which ones, row by row
    text = series.astype("string")
    # Four-digit year, two-digit month and day, as the fast path demands: not 2026-1-5.
    written = text.str.fullmatch(r"\d{4}-\d{2}-\d{2}").fillna(False).astype(bool)
    parsed = pd.to_datetime(text.where(written), errors="coerce", format="%Y-%m-%d")
    # pandas picks a unit (seconds or finer) that holds years 1 to 9999; nanoseconds would wrap
    # dates before 1677 or after 2262 into others.
    return parsed.to_numpy().astype("datetime64[D]")


def _surely_unique(values: pa.Array) -> bool:
    """True when fixed-width strings (the usual shape of ids) are all distinct, judged by a
    64-bit hash of their bytes read in place; False means "could not tell", never "repeats"."""
    if values.null_count or len(values) < 2 or values.type not in (pa.string(), pa.large_string()):
        return False
    _, offset_buffer, data_buffer = values.buffers()
    offset_type = np.int32 if values.type == pa.string() else np.int64
    offsets = np.frombuffer(offset_buffer, dtype=offset_type)[
        values.offset : values.offset + len(values) + 1
    ]
    width = int(offsets[1] - offsets[0])
    if width < 8 or not (np.diff(offsets) == width).all():
        return False
    hashed = np.zeros(len(values), dtype=np.uint64)
    for start in [*range(0, width - 7, 8), width - 8]:  # the last word may overlap: harmless
        word = np.ndarray(
            (len(values),),
            dtype="<u8",
            buffer=data_buffer,
            offset=int(offsets[0]) + start,
            strides=(width,),
        )
        hashed = (hashed ^ word) * np.uint64(0x9E3779B97F4A7C15)
        hashed ^= hashed >> np.uint64(29)
    hashed.sort()
    return not (hashed[1:] == hashed[:-1]).any()


def duplicated(series: pd.Series) -> np.ndarray:
    """Mask of non-empty values that occur more than once."""
    if isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow":
        values = pa.array(series.array)
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if _surely_unique(values):
            return np.zeros(len(series), dtype=bool)
        counts = pc.value_counts(values)
        repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
        found = pc.is_in(values, value_set=repeated).to_numpy(zero_copy_only=False)
        return found & series.notna().to_numpy(dtype=bool)
    return (series.duplicated(keep=False) & series.notna()).to_numpy(dtype=bool)


class _Checker:
    def __init__(self, frame: pd.DataFrame, config: ModelConfig) -> None:
        self.frame = frame
        self.config = config
        self.id_column = config.data.id_column
        self.violations: list[Violation] = []
        self.imputed: dict[str, int] = {}
        self.dates: dict[str, np.ndarray] = {}

    def flag(self, check: str, column: str | None, mask: np.ndarray, message: str) -> None:
        count = int(mask.sum())
        if count:
            examples = _examples(self.frame, mask, column, self.id_column)
            self.violations.append(Violation(check, column, count, message, examples))

    def column(self, name: str, spec: Column) -> None:
        series = self.frame[name]
        nulls = series.isna().to_numpy(dtype=bool)
        if isinstance(spec.nulls, Impute):
            self.imputed[name] = int(nulls.sum())
        else:
            self.flag("nulls", name, nulls, f"`{name}` has empty cells; its null policy is reject")
        if spec.dtype in _NUMERIC:
            self._numeric_column(name, spec, series)
        elif spec.dtype == "date":
            self._date_column(name, series, nulls)
        if spec.categories is not None:
            if pd.api.types.is_numeric_dtype(series):
                allowed = [float(c) for c in spec.categories if _is_number(c)]
                raw = series.to_numpy(dtype="float64", na_value=np.nan)
                unknown = ~np.isin(raw, allowed) & ~nulls
            else:
                allowed_text = [str(c) for c in spec.categories]
                unknown = ~series.astype("string").isin(allowed_text).to_numpy(bool) & ~nulls
            self.flag(
                "categories",
                name,
                unknown,
                f"`{name}` has values outside {list(spec.categories)}",
            )

    def _numeric_column(self, name: str, spec: Column, series: pd.Series) -> None:
        raw, not_numbers = _numeric(series)
        self.flag("dtype", name, not_numbers, f"`{name}` must be a {spec.dtype}; found text")
        present = ~np.isnan(raw)
        if spec.dtype == "int" and not pd.api.types.is_integer_dtype(series):
            with np.errstate(invalid="ignore"):
                fractional = present & (np.floor(raw) != raw)
            self.flag("dtype", name, fractional, f"`{name}` must be a whole number")
        with np.errstate(invalid="ignore"):
            if spec.min is not None:
                self.flag("range", name, present & (raw < spec.min), f"`{name}` below {spec.min}")
            if spec.max is not None:
                self.flag("range", name, present & (raw > spec.max), f"`{name}` above {spec.max}")

    def _date_column(self, name: str, series: pd.Series, nulls: np.ndarray) -> None:
        parsed = self.dates[name] = parse_dates(series)
        bad = np.isnat(parsed) & ~nulls
        self.flag("dtype", name, bad, f"`{name}` must be a date written YYYY-MM-DD")

    def dataset(self, as_of: date) -> None:
        data = self.config.data
        rows = len(self.frame)
        if rows < data.min_rows:
            self.violations.append(
                Violation(
                    "min_rows", None, rows, f"{rows} rows; the contract needs {data.min_rows}"
                )
            )
        target = self.config.target.column
        labelled = np.zeros(rows, dtype=bool)
        if target in self.frame.columns:  # a missing column is reported on its own
            positive = positive_mask(self.frame[target], self.config)
            labelled = self.frame[target].notna().to_numpy(dtype=bool)
        if labelled.any():
            share = float(positive[labelled].mean())
            bounds = data.label_balance
            if not bounds.min <= share <= bounds.max:
                self.violations.append(
                    Violation(
                        "label_balance",
                        self.config.target.column,
                        int(labelled.sum()),
                        f"positive share {share:.3f} outside [{bounds.min}, {bounds.max}]",
                    )
                )
        if data.date_column in self.frame.columns and data.max_age_days and rows:
            dates = self.dates.get(data.date_column)
            if dates is None:
                dates = parse_dates(self.frame[data.date_column])
            future = dates > np.datetime64(as_of, "D")
            self.flag(
                "freshness",
                data.date_column,
                future,
                f"`{data.date_column}` is after {as_of}: a date from the future hides stale data",
            )
            known = dates[~future & ~np.isnat(dates)]
            newest = known.max().astype(object) if len(known) else None
            if newest is not None and (as_of - newest).days > data.max_age_days:
                self.violations.append(
                    Violation(
                        "freshness",
                        data.date_column,
                        rows,
                        f"newest row is {newest}, older than {data.max_age_days} days "
                        f"before {as_of}",
                    )
                )


def check_frame(frame: pd.DataFrame, config: ModelConfig, as_of: date) -> tuple[list, dict]:
    """All contract checks on one dataset: (violations, nulls imputed per column)."""
    checker = _Checker(frame, config)
    declared = set(config.columns)
    missing = [name for name in config.columns if name not in frame.columns]
    extra = [name for name in frame.columns if name not in declared]
    for name in missing:
        checker.violations.append(
            Violation("missing_column", name, len(frame), f"column `{name}` is missing")
        )
    for name in extra:
        checker.violations.append(
            Violation("extra_column", name, len(frame), f"column `{name}` is not in the contract")
        )
    id_column = config.data.id_column

    def check_column(name: str) -> _Checker:
        one = _Checker(frame, config)
        one.column(name, config.columns[name])
        return one

    # Columns are checked in parallel (NumPy and Arrow release the GIL); results are merged in
    # contract order so reports do not depend on scheduling.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        repeats = pool.submit(duplicated, frame[id_column]) if id_column in frame.columns else None
        present = [name for name in config.columns if name in frame.columns]
        for done in pool.map(check_column, present):
            checker.violations.extend(done.violations)
            checker.imputed.update(done.imputed)
            checker.dates.update(done.dates)
        if repeats is not None:
            checker.flag(
                "duplicate_ids", id_column, repeats.result(), f"`{id_column}` values repeat"
            )
    checker.dataset(as_of)
    return checker.violations, checker.imputed


def row_fingerprints(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """A hash per row over ``columns`` (ids excluded) to find the same release twice.

    Numbers are hashed as float64, so ``70`` in one file and ``70.0`` in the other match.
    """
    values = {}
    for name in columns:
        numbers, not_numbers = _numeric(frame[name])
        values[name] = frame[name].astype("string") if not_numbers.any() else numbers
    return pd.util.hash_pandas_object(pd.DataFrame(values), index=False)


def _isin(values: pd.Series, others: pd.Series) -> np.ndarray:
    """``values.isin(others)`` without pandas' per-element path for Arrow strings."""
    if all(
        isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow"
        for s in (values, others)
    ):
        known = pa.array(others.array)
        if isinstance(known, pa.ChunkedArray):
            known = known.combine_chunks()
        found = pc.is_in(pa.array(values.array), value_set=known)
        return found.to_numpy(zero_copy_only=False)
    return values.isin(others).to_numpy(dtype=bool)


def check_overlap(train: pd.DataFrame, evaluation: pd.DataFrame, config: ModelConfig) -> list:
    """Eval rows that also appear in train, by id or by identical feature values and label."""
    found = []
    key = config.data.id_column
    if key in train.columns and key in evaluation.columns:
        ids = evaluation[key]
        mask = _isin(ids, train[key]) & ids.notna().to_numpy(dtype=bool)
        checker = _Checker(evaluation, config)
        checker.flag("train_eval_overlap", key, mask, f"eval `{key}` values also appear in train")
        found.extend(checker.violations)
    columns = [*config.features, config.target.column]
    if all(c in train.columns and c in evaluation.columns for c in columns):
        mask = row_fingerprints(evaluation, columns).isin(row_fingerprints(train, columns))
        checker = _Checker(evaluation, config)
        checker.flag(
            "train_eval_overlap",
            None,
            mask.to_numpy(dtype=bool),
            "eval rows repeat a train row (same features and label) under another id",
        )
        found.extend(checker.violations)
    return found


def prepare(frame: pd.DataFrame, config: ModelConfig) -> tuple[pd.DataFrame, np.ndarray]:
    """Features as floats with the contract's imputations applied, and the 0/1 target."""
    features = pd.DataFrame(index=frame.index)
    for name in config.features:
        spec = config.columns[name]
        values, _ = _numeric(frame[name])
        if isinstance(spec.nulls, Impute):
            values = np.where(np.isnan(values), float(spec.nulls.impute), values)
        features[name] = values
    return features, positive_mask(frame[config.target.column], config).astype(np.int64)


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def positive_mask(target: pd.Series, config: ModelConfig) -> np.ndarray:
    """Rows whose label is the positive class (numbers compared as numbers)."""
    positive = config.target.positive
    if pd.api.types.is_numeric_dtype(target) and _is_number(positive):
        return target.to_numpy(dtype="float64", na_value=np.nan) == float(positive)
    return (target.astype("string") == str(positive)).to_numpy(dtype=bool, na_value=False)


def to_dict(violations: list[Violation]) -> list[dict[str, Any]]:
    """Violations as JSON-ready dictionaries."""
    return [asdict(violation) for violation in violations]
