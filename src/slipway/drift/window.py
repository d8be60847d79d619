"""The new training window a retrain pull request carries: newer labelled rows, merged by date.

Where the rows come from:

- the **labelled prediction log**: every prediction the environment served (any version; smoke
  tests, shadow and failed predictions left out) whose request record carries every contract
  column but the target, joined by id with the delayed labels ``drift.labels`` names (a CSV or
  JSON-lines file, or a directory of them: id, target, ``labelled_at``). A release scored more
  than once counts once, as last logged; one logged without a date takes its log day;
- the **data source** (``data.source.command``), run only when the labelled log holds fewer
  new releases than the eval set has rows: it writes CSV files into a scratch directory;
- the **current data** (train and eval as locked).

A release already in the current data keeps its row there; one in both the log and the source
keeps the log's. The window keeps as many rows as the current data holds, the newest by
``(date, id)``, and its newest rows, as many as the current eval set, become the new eval set;
the rest is the new training set. Rows are kept as their text, so a row that stays reads the
same in the diff. The files are validated against the contract and locked in ``OUT/retrain/``.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slipway.config import ModelConfig
from slipway.errors import ConfigError, DataError
from slipway.fsutil import atomic_write_text, write_json
from slipway.progress import Progress
from slipway.propose.datasets import check_lock, lock_path, split_paths, validate, write_lock
from slipway.serve.prediction_log import log_directory

RULE = (
    "as many rows as the current data holds, the newest by (date, id); the newest of them, "
    "as many as the current eval set holds, are the eval set, the rest the training set"
)
SOURCE_TIMEOUT_S = 1800
NAMED = 10  # broken contract rules named in the output
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ORIGIN = "_slipway_origin"  # which of current, log, source a row came from
_ORDER = "_slipway_order"  # the order rows arrived in, for projects without a date column


def log_source(config: ModelConfig, environment: str) -> str | Path:
    """``drift.log`` (a URI, or a path in the model project), else the environment's log."""
    configured = config.drift.log
    if configured is None:
        return log_directory(environment)
    return configured if "://" in configured else config.path(Path(configured))


def labels_path(config: ModelConfig) -> Path | None:
    return config.path(config.drift.labels) if config.drift.labels is not None else None


def read_current(config: ModelConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The locked train and eval sets as text, one frame, and their rows and digests."""
    digests = check_lock(config)
    frames, rows = [], {}
    for split, path in split_paths(config).items():
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frames.append(frame.assign(**{_ORIGIN: "current"}))
        rows[split] = len(frame)
    return pd.concat(frames, ignore_index=True), {"rows": rows, "sha256": digests}


def read_labels(
    config: ModelConfig, path: Path | None, until: datetime
) -> tuple[dict[str, str], dict[str, Any]]:
    """``id → target value`` (as the contract writes it) of the labels known before ``until``,
    and how many were read and left out (:func:`slipway.drift.labels.read_labels`)."""
    from slipway.drift.labels import read_labels as read_all

    if path is None or not path.exists():
        where = "drift.labels is not set" if path is None else f"no labels at {path} yet"
        return {}, {"source": str(path) if path else None, "labels": 0, "note": where}
    found = read_all(
        path, config.data.id_column, config.target.column, config.target.positive, until
    )
    positive, negative = str(config.target.positive), _negative(config)
    labels = {key: positive if value else negative for key, value in found.values.items()}
    return labels, found.to_dict()


def _negative(config: ModelConfig) -> str:
    categories = config.columns[config.target.column].categories or [0, 1]
    others = [str(c) for c in categories if str(c) != str(config.target.positive)]
    if len(others) != 1:
        raise ConfigError(
            f"the target `{config.target.column}` needs exactly two categories to join labels",
            "declare `categories: [negative, positive]` for the target column",
        )
    return others[0]


def labelled_log(
    config: ModelConfig,
    environment: str,
    labels: dict[str, str],
    until: datetime,
    progress: Progress,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The served predictions of ``environment`` that have a label, one row per release."""
    from slipway.drift.logs import read_window

    source = log_source(config, environment)
    if not isinstance(source, str) and not Path(source).exists():
        return _empty(config), {"source": str(source), "note": "no prediction log there"}
    id_column, target = config.data.id_column, config.target.column
    columns = [c for c in config.columns if c not in (id_column, target)]
    kinds = {c: config.columns[c].dtype for c in columns}
    text = {c for c, kind in kinds.items() if kind not in ("int", "float")}
    window = read_window(
        source, config.name, environment, None, _EPOCH, until, columns, progress, categorical=text
    )
    rows: dict[str, dict[str, str]] = {}
    for chunk in window:
        picked = [i for i, key in enumerate(chunk.release_id.tolist()) if key in labels]
        for i in picked:
            key = chunk.release_id[i]
            row = {id_column: key}
            for name in columns:
                row[name] = _text(chunk.features[name][i], kinds[name])
            date_column = config.data.date_column
            if date_column and not row.get(date_column):
                row[date_column] = str(np.datetime64(chunk.timestamp[i], "D"))
            row[target] = labels[key]
            rows.pop(key, None)  # the last record of a release is the one kept
            rows[key] = row
    frame = pd.DataFrame(list(rows.values()), columns=[id_column, *columns, target], dtype=str)
    counts = window.counts.to_dict()
    summary = {"source": str(source), "records": counts["read"], "used": counts["used"]}
    return frame.assign(**{_ORIGIN: "log"}), {**summary, "labelled": len(frame)}


def _text(value: Any, kind: str) -> str:
    """A logged value as the CSV writes it: empty for null, ints without a decimal point."""
    if value is None:
        return ""
    if kind in ("int", "float"):
        number = float(value)
        if math.isnan(number):
            return ""
        if kind == "int":
            return str(round(number))
        return np.format_float_positional(number, trim="0")
    return str(value)


def _empty(config: ModelConfig) -> pd.DataFrame:
    return pd.DataFrame(columns=list(config.columns), dtype=str).assign(**{_ORIGIN: "log"})


def run_source(
    config: ModelConfig, directory: Path, since: date, until: date, progress: Progress
) -> pd.DataFrame:
    """Run ``data.source.command`` into ``directory`` (emptied first) in the model project;
    the rows of every CSV file it wrote. A first word ``python`` is this interpreter."""
    assert config.data.source is not None
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    values = {
        "out": str(directory.resolve()),
        "since": since.isoformat(),
        "until": until.isoformat(),
    }
    command = [part.format(**values) for part in config.data.source.command]
    if command[0] == "python":
        command[0] = sys.executable
    progress(f"data source: {' '.join(command)}")
    fix = "make data.source.command in slipway.yaml write CSV files into {out}"
    try:
        done = subprocess.run(
            command,
            cwd=config.root,
            capture_output=True,
            text=True,
            check=False,
            timeout=SOURCE_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"the data source {command[0]} did not run: {exc}", fix) from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-2000:]
        raise DataError(f"the data source exited {done.returncode}: {tail}", fix)
    found = sorted(directory.rglob("*.csv"))
    if not found:
        raise DataError(f"the data source wrote no CSV file into {directory}", fix)
    frames = [pd.read_csv(path, dtype=str, keep_default_na=False) for path in found]
    return pd.concat(frames, ignore_index=True).assign(**{_ORIGIN: "source"})


def merge(
    config: ModelConfig, current: pd.DataFrame, fresh: pd.DataFrame, eval_rows: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The new train and eval sets: see the module's rule."""
    id_column, date_column = config.data.id_column, config.data.date_column
    combined = pd.concat([current, fresh], ignore_index=True)
    combined[_ORDER] = np.arange(len(combined))
    combined = combined.drop_duplicates(id_column, keep="first")  # current, then log, then source
    order = [date_column, id_column] if date_column else [_ORDER]
    combined = combined.sort_values(order, kind="stable")
    window = combined.tail(len(current))
    held_out = max(1, min(eval_rows, len(window) - 1))
    return window.iloc[:-held_out], window.iloc[-held_out:]


def build(
    config: ModelConfig,
    environment: str,
    out_dir: Path,
    now: datetime,
    progress: Progress,
) -> dict[str, Any]:
    """Build the window into ``OUT/retrain/`` (the model project's data paths below it),
    validate and lock it; what it holds, for the pull request. :class:`DataError` when there is
    nothing new to train on."""
    current, before = read_current(config)
    labels, labelled = read_labels(config, labels_path(config), now)
    log, logged = labelled_log(config, environment, labels, now, progress)
    known = set(current[config.data.id_column])
    fresh = log[~log[config.data.id_column].isin(known)]
    unknown = len(set(labels) - known - set(log[config.data.id_column]))
    eval_rows = before["rows"]["eval"]
    fresh, sourced = _add_source(config, current, fresh, eval_rows, out_dir, now, progress)
    if fresh.empty:
        raise DataError(
            f"nothing new to retrain {config.name} on: the log holds no labelled prediction of a "
            f"release the current data lacks ({labelled['labels']:,} labels read)",
            "deliver delayed labels where drift.labels points, or set data.source in slipway.yaml",
        )
    train, evaluation = merge(config, current, fresh, eval_rows)
    root = out_dir / "retrain"
    window_config = config.model_copy(update={"root": root})
    columns = [c for c in current.columns if not c.startswith("_slipway_")]
    for split, frame in (("train", train), ("eval", evaluation)):
        path = split_paths(window_config)[split]
        atomic_write_text(path, frame[columns].to_csv(index=False, lineterminator="\n"))
    report = validate(window_config, as_of=now.date())
    write_json(root / "validation.json", report)
    lock = write_lock(window_config, {"train": len(train), "eval": len(evaluation)})
    window = pd.concat([train, evaluation])
    origins = window[_ORIGIN].value_counts().to_dict()
    return {
        "rule": RULE,
        "root": str(root),
        "paths": {split: str(path) for split, path in split_paths(window_config).items()}
        | {"lock": str(lock_path(window_config))},
        "valid": report["passed"],
        "violations": report["violation_count"],
        "broken": [
            f"{dataset['split']}: {v['check']} ({v['message']})"
            for dataset in report["datasets"]
            for v in dataset["violations"]
        ][:NAMED],
        "validation": str(root / "validation.json"),
        "splits": {
            "train": _describe(config, train, lock["files"]["train"]["sha256"]),
            "eval": _describe(config, evaluation, lock["files"]["eval"]["sha256"]),
        },
        "previous": before,
        "from": {
            "current": int(origins.get("current", 0)),
            "log": int(origins.get("log", 0)),
            "source": int(origins.get("source", 0)),
            "left_out": len(current) + len(fresh) - len(window),
        },
        "log": logged,
        "labels": {**labelled, "unknown": unknown},
        "data_source": sourced,
    }


def _add_source(
    config: ModelConfig,
    current: pd.DataFrame,
    fresh: pd.DataFrame,
    eval_rows: int,
    out_dir: Path,
    now: datetime,
    progress: Progress,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``fresh`` with the data source's new rows when it holds fewer than ``eval_rows``."""
    if config.data.source is None:
        return fresh, {"command": None, "ran": False, "rows": 0}
    sourced: dict[str, Any] = {"command": config.data.source.command, "ran": False, "rows": 0}
    if len(fresh) >= eval_rows:
        reason = f"the log holds {len(fresh):,} new releases, the eval set {eval_rows:,} rows"
        return fresh, {**sourced, "reason": reason}
    id_column = config.data.id_column
    since = _newest(config, current) or now.date()
    rows = run_source(config, out_dir / "retrain-source", since, now.date(), progress)
    rows = rows[~rows[id_column].isin(set(current[id_column]) | set(fresh[id_column]))]
    return pd.concat([fresh, rows], ignore_index=True), {**sourced, "ran": True, "rows": len(rows)}


def _newest(config: ModelConfig, frame: pd.DataFrame) -> date | None:
    if not config.data.date_column:
        return None
    try:
        return date.fromisoformat(str(frame[config.data.date_column].max())[:10])
    except ValueError:
        return None


def _describe(config: ModelConfig, frame: pd.DataFrame, digest: str) -> dict[str, Any]:
    """Rows, the date range, label counts and the digest of one split."""
    positive = str(config.target.positive)
    labels = frame[config.target.column]
    dates = frame[config.data.date_column] if config.data.date_column else None
    return {
        "rows": len(frame),
        "dates": [str(dates.min()), str(dates.max())] if dates is not None else None,
        "positive": int((labels == positive).sum()),
        "negative": int((labels != positive).sum()),
        "sha256": digest,
    }


def write_into_project(config: ModelConfig, document: dict[str, Any]) -> list[Path]:
    """Copy the window's train, eval and lock over the model project's (``--write``)."""
    targets = {**split_paths(config), "lock": lock_path(config)}
    written = []
    for key, target in targets.items():
        source = Path(document["paths"][key])
        atomic_write_text(target, source.read_text(encoding="utf-8"))
        written.append(target)
    return written
