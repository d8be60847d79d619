"""Delayed labels: whether each release turned out high-risk, known days after its prediction.

A CSV or JSON-lines file, or every such file under a directory, with the contract's id and
target columns (``release_id``, ``high_risk``) and optionally ``labelled_at``, the time the
label became known. The drift check joins them with the prediction log by release id. Nothing in
them stops a check: a bad row, a label given after the window, a release labelled both ways
are each counted and left out.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slipway.errors import DataError

LABEL_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json")


@dataclass
class Labels:
    """Delayed labels by release id, and how many rows were left out and why."""

    source: str
    values: dict[str, bool] = field(default_factory=dict)
    files: int = 0
    rows: int = 0
    unlabelled: int = 0  # an empty label: not known yet
    malformed: int = 0  # no id or label column, not JSON, an unreadable labelled_at
    conflicting: int = 0  # release ids labelled both ways: left out
    later: int = 0  # labelled at or after the window's end: not known then

    def to_dict(self) -> dict[str, Any]:
        plain = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "values"}
        return {**plain, "labels": len(self.values)}


def read_labels(path: Path, id_column: str, target: str, positive: Any, until: datetime) -> Labels:
    """Labels from a CSV or JSON-lines file, or every such file under a directory (name
    order): ``id_column``, ``target`` and optionally ``labelled_at``. A bad row is counted,
    never fatal; a path that does not exist is a :class:`DataError`."""
    if not path.exists():
        raise DataError(f"no labels at {path}", "pass --labels a CSV or JSONL file or a directory")
    files = (
        [path]
        if path.is_file()
        else sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in LABEL_SUFFIXES
        )
    )
    labels, seen = Labels(str(path), files=len(files)), {}
    for file in files:
        for row in _label_rows(file, labels):
            labels.rows += 1
            if not isinstance(row, dict) or id_column not in row or target not in row:
                labels.malformed += 1
                continue
            at = _moment(row.get("labelled_at"))
            if at is False:
                labels.malformed += 1
                continue
            raw = row[target]
            if raw is None or raw == "":
                labels.unlabelled += 1
                continue
            if at is not None and at >= until:
                labels.later += 1
                continue
            value = _same(raw, positive)
            seen.setdefault(str(row[id_column]), set()).add(value)
    for key, values in seen.items():
        if len(values) > 1:
            labels.conflicting += 1
        else:
            labels.values[key] = values.pop()
    return labels


def _label_rows(file: Path, labels: Labels) -> Iterable[Any]:
    text = file.read_text(encoding="utf-8", errors="replace")
    if file.suffix.lower() == ".csv":
        yield from csv.DictReader(io.StringIO(text, newline=""))
        return
    for line in text.splitlines():
        if line.strip():
            try:
                yield json.loads(line)
            except ValueError:
                labels.rows += 1
                labels.malformed += 1


def _moment(value: Any) -> datetime | bool | None:
    """A ``labelled_at`` as UTC; None when absent; False when unreadable."""
    if value is None or value == "":
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return False
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _same(raw: Any, positive: Any) -> bool:
    """Whether a label is the positive class: ``1``, ``1.0``, ``true`` all match 1."""
    text = str(raw).strip().lower()
    text = {"true": "1", "false": "0"}.get(text, text)
    try:
        return float(text) == float(positive)
    except (TypeError, ValueError):
        return text == str(positive).lower()
