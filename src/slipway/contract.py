"""The data contract: read a dataset and check it against ``columns`` in slipway.yaml.

Every check is vectorised so that validating a million rows costs about as much as reading
them. A violation names the check, the column, how many rows break it and a few example rows
(by CSV line and id) so the fix is obvious.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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
        return pd.read_csv(path, dtype_backend="numpy_nullable", engine="c")
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
        example: dict[str, Any] = {"line": int(row) + 2}  # header is line 1
        if id_column in frame.columns:
            example["id"] = _plain(frame[id_column].iloc[row])
        if column is not None and column in frame.columns:
            example["value"] = _plain(frame[column].iloc[row])
        found.append(example)
    return found


def _plain(value: Any) -> Any:
    if value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _numeric(series: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """The column as floats plus a mask of cells that were present but not numbers."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.astype("Float64"), np.zeros(len(series), dtype=bool)
    coerced = pd.to_numeric(series, errors="coerce").astype("Float64")
    bad = (coerced.isna() & series.notna()).to_numpy(dtype=bool)
    return coerced, bad


class _Checker:
    def __init__(self, frame: pd.DataFrame, config: ModelConfig) -> None:
        self.frame = frame
        self.config = config
        self.id_column = config.data.id_column
        self.violations: list[Violation] = []
        self.imputed: dict[str, int] = {}

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
            allowed = pd.Series(spec.categories).astype(str)
            present = series.astype("string")
            unknown = (~present.isin(allowed) & present.notna()).to_numpy(dtype=bool)
            self.flag(
                "categories",
                name,
                unknown,
                f"`{name}` has values outside {list(spec.categories)}",
            )

    def _numeric_column(self, name: str, spec: Column, series: pd.Series) -> None:
        values, not_numbers = _numeric(series)
        self.flag("dtype", name, not_numbers, f"`{name}` must be a {spec.dtype}; found text")
        present = values.notna().to_numpy(dtype=bool)
        raw = values.to_numpy(dtype=float, na_value=np.nan)
        if spec.dtype == "int":
            fractional = present & (np.floor(np.nan_to_num(raw)) != np.nan_to_num(raw))
            self.flag("dtype", name, fractional, f"`{name}` must be a whole number")
        with np.errstate(invalid="ignore"):
            if spec.min is not None:
                self.flag("range", name, present & (raw < spec.min), f"`{name}` below {spec.min}")
            if spec.max is not None:
                self.flag("range", name, present & (raw > spec.max), f"`{name}` above {spec.max}")

    def _date_column(self, name: str, series: pd.Series, nulls: np.ndarray) -> None:
        parsed = pd.to_datetime(series.astype("string"), errors="coerce", format="%Y-%m-%d")
        bad = parsed.isna().to_numpy(dtype=bool) & ~nulls
        self.flag("dtype", name, bad, f"`{name}` must be a date written YYYY-MM-DD")

    def dataset(self, as_of: date) -> None:
        data = self.config.data
        ids = self.frame[self.id_column]
        dup = ids.duplicated(keep=False).to_numpy(dtype=bool) & ids.notna().to_numpy(dtype=bool)
        self.flag("duplicate_ids", self.id_column, dup, f"`{self.id_column}` values repeat")
        rows = len(self.frame)
        if rows < data.min_rows:
            self.violations.append(
                Violation(
                    "min_rows", None, rows, f"{rows} rows; the contract needs {data.min_rows}"
                )
            )
        target = self.frame[self.config.target.column].astype("string")
        labelled = target.dropna()
        if len(labelled):
            share = float((labelled == str(self.config.target.positive)).mean())
            bounds = data.label_balance
            if not bounds.min <= share <= bounds.max:
                self.violations.append(
                    Violation(
                        "label_balance",
                        self.config.target.column,
                        len(labelled),
                        f"positive share {share:.3f} outside [{bounds.min}, {bounds.max}]",
                    )
                )
        if data.date_column and data.max_age_days and rows:
            dates = pd.to_datetime(
                self.frame[data.date_column].astype("string"), errors="coerce", format="%Y-%m-%d"
            )
            future = (dates.dt.date > as_of).to_numpy(dtype=bool, na_value=False)
            self.flag(
                "freshness",
                data.date_column,
                future,
                f"`{data.date_column}` is after {as_of}: a date from the future hides stale data",
            )
            newest = dates[~future].max()
            if pd.notna(newest) and (as_of - newest.date()).days > data.max_age_days:
                self.violations.append(
                    Violation(
                        "freshness",
                        data.date_column,
                        rows,
                        f"newest row is {newest.date()}, older than {data.max_age_days} days "
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
    for name, spec in config.columns.items():
        if name in frame.columns:
            checker.column(name, spec)
    if config.data.id_column in frame.columns and config.target.column in frame.columns:
        checker.dataset(as_of)
    return checker.violations, checker.imputed


def row_fingerprints(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """A hash per row over ``columns`` (ids excluded) to find the same release twice."""
    return pd.util.hash_pandas_object(frame[columns].astype("string"), index=False)


def check_overlap(train: pd.DataFrame, evaluation: pd.DataFrame, config: ModelConfig) -> list:
    """Eval rows that also appear in train, by id or by identical feature values and label."""
    found = []
    key = config.data.id_column
    if key in train.columns and key in evaluation.columns:
        ids = evaluation[key]
        mask = (ids.isin(train[key]) & ids.notna()).to_numpy(dtype=bool)
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
            values = values.fillna(float(spec.nulls.impute))
        features[name] = values.to_numpy(dtype="float64", na_value=np.nan)
    target = frame[config.target.column].astype("string") == str(config.target.positive)
    return features, target.to_numpy(dtype=bool).astype(np.int64)


def to_dict(violations: list[Violation]) -> list[dict[str, Any]]:
    """Violations as JSON-ready dictionaries."""
    return [asdict(violation) for violation in violations]
