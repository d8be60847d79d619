"""The model project's two datasets: validation report and the data lock.

The lock (``model/data/data.lock.json``) pins each file's path, SHA-256, row count and the
contract's schema version. Training refuses data that does not match it, so a model version
can always be traced to the exact bytes it learned from.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from slipway.config import ModelConfig
from slipway.errors import DataError
from slipway.fsutil import read_json, sha256_file, write_json
from slipway.propose.contract import check_frame, check_overlap, number_lines, read_dataset, to_dict

REPORT_SCHEMA = "slipway.validation/1"
LOCK_SCHEMA = "slipway.lock/1"
SPLITS = ("train", "eval")


def split_paths(config: ModelConfig) -> dict[str, Path]:
    """The configured train and eval paths, resolved against the model project."""
    return {"train": config.path(config.data.train), "eval": config.path(config.data.eval)}


def validate(
    config: ModelConfig, paths: dict[str, Path] | None = None, as_of: date | None = None
) -> dict[str, Any]:
    """Check every dataset against the contract and the train/eval pair for overlap."""
    paths = paths or split_paths(config)
    as_of = as_of or date.today()
    frames: dict[str, pd.DataFrame] = {}
    datasets = []
    for split, path in paths.items():
        frame = read_dataset(path)
        frames[split] = frame
        violations, imputed = check_frame(frame, config, as_of)
        number_lines(violations, path)
        datasets.append(
            {
                "split": split,
                "path": str(path),
                "rows": len(frame),
                "columns": len(frame.columns),
                "imputed_nulls": {k: v for k, v in imputed.items() if v},
                "violations": to_dict(violations),
            }
        )
    if "train" in frames and "eval" in frames:
        found = check_overlap(frames["train"], frames["eval"], config)
        number_lines(found, paths["eval"])  # the examples are eval rows
        overlap = to_dict(found)
        datasets.append({"split": "train+eval", "violations": overlap})
    total = sum(len(d["violations"]) for d in datasets)
    return {
        "schema": REPORT_SCHEMA,
        "model": config.name,
        "contract_schema_version": config.schema_version,
        "as_of": as_of.isoformat(),
        "passed": total == 0,
        "violation_count": total,
        "datasets": datasets,
    }


def lock_path(config: ModelConfig) -> Path:
    return config.path(config.data.lock)


def write_lock(config: ModelConfig, rows: dict[str, int] | None = None) -> dict[str, Any]:
    """Record digests and row counts of the current datasets in the lock file.

    ``rows`` per split, when the caller has just read the data (``validate``'s report has them).
    """
    files = {}
    for split, path in split_paths(config).items():
        files[split] = {
            "path": str(config.data.train if split == "train" else config.data.eval),
            "sha256": sha256_file(path),
            "rows": rows[split] if rows and split in rows else len(read_dataset(path)),
        }
    document = {"schema": LOCK_SCHEMA, "schema_version": config.schema_version, "files": files}
    write_json(lock_path(config), document)
    return document


def check_lock(config: ModelConfig) -> dict[str, str]:
    """Digests of train and eval after checking them against the lock; raise on any mismatch."""
    path = lock_path(config)
    fix = "validate the data, then run `slipway lock` and commit the lock with the data"
    if not path.is_file():
        raise DataError(f"no data lock at {path}", fix)
    try:
        lock = read_json(path)
        files = lock["files"]
        locked_version = lock["schema_version"]
        if not isinstance(files, dict) or not all(isinstance(e, dict) for e in files.values()):
            raise TypeError("`files` must map each split to its path, sha256 and rows")
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"data lock {path} is unreadable: {exc}", fix) from exc
    if locked_version != config.schema_version:
        raise DataError(
            f"data lock was written for schema version {locked_version}, "
            f"slipway.yaml declares {config.schema_version}",
            fix,
        )
    digests = {}
    for split, data_path in split_paths(config).items():
        entry = files.get(split)
        if entry is None:
            raise DataError(f"data lock {path} has no entry for the {split} set", fix)
        if not data_path.is_file():
            raise DataError(f"dataset {data_path} does not exist", "restore it or fix `data:`")
        actual = sha256_file(data_path)
        if actual != entry.get("sha256"):
            raise DataError(
                f"{data_path} changed since it was locked "
                f"(sha256 {actual[:12]}…, lock says {str(entry.get('sha256'))[:12]}…)",
                fix,
            )
        digests[split] = actual
    return digests
