"""The data lock (``slipway lock``, ``check_lock``) and the committed sample data."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import pytest

import slipway.propose.datasets
from contract_helpers import (
    AS_OF,
    EVAL_ROWS,
    MODEL,
    TRAIN_ROWS,
    data_path,
    edit_csv,
    edit_yaml,
    make_project,
    read_text_frame,
    set_cells,
)
from slipway.cli import main
from slipway.config import load_config
from slipway.errors import DataError
from slipway.propose.datasets import LOCK_SCHEMA, check_lock, lock_path, validate, write_lock

LOCK_FIX = "validate the data, then run `slipway lock` and commit the lock with the data"


class _Nov1(date):
    """``date`` whose today() is the simulator's end date, so `slipway lock` is deterministic."""

    @classmethod
    def today(cls) -> date:
        return AS_OF


class _Year2031(date):
    @classmethod
    def today(cls) -> date:
        return date(2031, 1, 1)


@pytest.fixture
def config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A valid small project (no lock yet), with "today" pinned to 2026-11-01."""
    monkeypatch.setattr(slipway.propose.datasets, "date", _Nov1)
    return make_project(tmp_path)


@pytest.fixture
def locked(config_path: Path) -> Path:
    """The project after ``write_lock``."""
    write_lock(load_config(config_path))
    return config_path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _lock(config_path: Path, capsys) -> tuple[int, str, str]:
    code = main(
        ["lock", "--config", str(config_path), "--out", str(config_path.parent.parent / "out")]
    )
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _check_lock_error(config_path: Path) -> DataError:
    with pytest.raises(DataError) as raised:
        check_lock(load_config(config_path))
    return raised.value


# --- slipway lock --------------------------------------------------------------------------


def test_lock_records_digests_rows_and_schema_version(config_path, capsys):
    train, evaluation = data_path(config_path, "train"), data_path(config_path, "eval")

    code, out, _ = _lock(config_path, capsys)

    lock_file = config_path.parent / "data" / "data.lock.json"
    assert code == 0
    assert json.loads(lock_file.read_text(encoding="utf-8")) == {
        "schema": LOCK_SCHEMA,
        "schema_version": 1,
        "files": {
            "train": {"path": "data/train.csv", "sha256": _sha256(train), "rows": TRAIN_ROWS},
            "eval": {"path": "data/eval.csv", "sha256": _sha256(evaluation), "rows": EVAL_ROWS},
        },
    }
    assert out.splitlines() == [
        f"train: data/train.csv {TRAIN_ROWS} rows sha256 {_sha256(train)[:12]}",
        f"eval: data/eval.csv {EVAL_ROWS} rows sha256 {_sha256(evaluation)[:12]}",
        f"wrote {lock_file}",
    ]
    assert [p.name for p in lock_file.parent.iterdir() if p.name.startswith(".")] == []


def test_lock_reads_each_dataset_once(config_path, capsys, monkeypatch):
    import slipway.propose.datasets

    read = []
    real = slipway.propose.datasets.read_dataset
    monkeypatch.setattr(
        slipway.propose.datasets, "read_dataset", lambda path: read.append(path) or real(path)
    )

    assert _lock(config_path, capsys)[0] == 0
    assert sorted(p.name for p in read) == ["eval.csv", "train.csv"]


def test_a_fresh_lock_matches_its_data(locked):
    assert check_lock(load_config(locked)) == {
        "train": _sha256(data_path(locked, "train")),
        "eval": _sha256(data_path(locked, "eval")),
    }


@pytest.mark.parametrize(
    ("csv_change", "message"),
    [
        pytest.param(
            lambda f: set_cells(f, "test_coverage", [0], "140"),
            "`test_coverage` above 100",
            id="range",
        ),
        pytest.param(lambda f: f.drop(columns=["team"]), "column `team` is missing", id="column"),
    ],
)
def test_lock_refuses_data_that_fails_validation(config_path, capsys, csv_change, message):
    edit_csv(config_path, "train", csv_change)

    code, out, _ = _lock(config_path, capsys)

    assert code == 1
    assert out == "refusing to lock data that fails validation; run `slipway validate`\n"
    assert not lock_path(load_config(config_path)).exists()
    report = validate(load_config(config_path))
    assert any(message in v["message"] for d in report["datasets"] for v in d["violations"])


def test_lock_refusal_keeps_the_previous_lock(locked, capsys):
    before = lock_path(load_config(locked)).read_bytes()
    edit_csv(locked, "eval", lambda f: set_cells(f, "team", [3], "ml-infra"))

    code, _, _ = _lock(locked, capsys)

    assert code == 1
    assert lock_path(load_config(locked)).read_bytes() == before


def test_lock_checks_freshness_against_today(config_path, capsys, monkeypatch):
    monkeypatch.setattr(slipway.propose.datasets, "date", _Year2031)

    code, out, _ = _lock(config_path, capsys)

    assert code == 1
    assert "refusing to lock" in out
    assert validate(load_config(config_path))["as_of"] == "2031-01-01"


def test_relocking_after_a_fix_accepts_the_new_bytes(locked, capsys):
    edit_csv(locked, "train", lambda f: set_cells(f, "past_defects", [0], "0"))
    assert "changed since it was locked" in _check_lock_error(locked).message

    code, _, _ = _lock(locked, capsys)

    assert code == 0
    assert check_lock(load_config(locked))["train"] == _sha256(data_path(locked, "train"))


# --- check_lock ----------------------------------------------------------------------------


def _flip_first_byte_of_last_line(path: Path) -> None:
    data = bytearray(path.read_bytes())
    position = data.rstrip(b"\n").rfind(b"\n") + 1 + len("REL-11-")
    data[position] = ord("9") if data[position] != ord("9") else ord("8")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(_flip_first_byte_of_last_line, id="one-byte"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes() + b"\n"), id="trailing-newline"),
        pytest.param(
            lambda p: p.write_bytes(p.read_bytes().replace(b"\n", b"\r\n")), id="line-endings"
        ),
    ],
)
@pytest.mark.parametrize("split", ["train", "eval"])
def test_changed_data_no_longer_matches_the_lock(locked, split, change):
    path = data_path(locked, split)
    locked_digest = json.loads(lock_path(load_config(locked)).read_text())["files"][split]["sha256"]
    change(path)

    error = _check_lock_error(locked)

    assert error.message == (
        f"{path} changed since it was locked "
        f"(sha256 {_sha256(path)[:12]}…, lock says {locked_digest[:12]}…)"
    )
    assert "`slipway lock`" in error.hint
    assert error.hint == LOCK_FIX


def test_changed_data_fails_lock_check_even_when_it_is_still_valid(locked):
    edit_csv(locked, "train", lambda f: set_cells(f, "code_changes", [5], "1"))

    assert validate(load_config(locked), as_of=AS_OF)["passed"] is True
    assert "changed since it was locked" in _check_lock_error(locked).message


def test_missing_lock(config_path):
    error = _check_lock_error(config_path)

    assert error.message == f"no data lock at {config_path.parent / 'data' / 'data.lock.json'}"
    assert error.hint == LOCK_FIX


@pytest.mark.parametrize("declared", [2, 7])
def test_lock_for_another_schema_version(locked, declared):
    edit_yaml(locked, lambda d: d.update(schema_version=declared))

    error = _check_lock_error(locked)

    assert error.message == (
        f"data lock was written for schema version 1, slipway.yaml declares {declared}"
    )
    assert "`slipway lock`" in error.hint


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(lambda d: "{not json", "is unreadable", id="not-json"),
        pytest.param(lambda d: [], "is unreadable", id="a-list"),
        pytest.param(
            lambda d: {k: v for k, v in d.items() if k != "files"}, "is unreadable", id="no-files"
        ),
        pytest.param(
            lambda d: {**d, "files": ["train", "eval"]}, "is unreadable", id="files-not-a-mapping"
        ),
        pytest.param(
            lambda d: {**d, "files": {"train": d["files"]["train"]}},
            "has no entry for the eval set",
            id="no-eval-entry",
        ),
        pytest.param(
            lambda d: {**d, "files": {**d["files"], "train": "584d5bb9"}},
            "is unreadable",
            id="entry-not-a-mapping",
        ),
        pytest.param(
            lambda d: {**d, "files": {**d["files"], "eval": {"rows": 1}}},
            "changed since it was locked",
            id="entry-without-digest",
        ),
    ],
)
def test_malformed_lock_is_a_data_error(locked, change, message):
    path = lock_path(load_config(locked))
    document = json.loads(path.read_text())
    changed = change(document)
    path.write_text(changed if isinstance(changed, str) else json.dumps(changed))

    error = _check_lock_error(locked)

    assert message in error.message
    assert error.hint == LOCK_FIX


def test_lock_check_reports_a_missing_dataset(locked):
    data_path(locked, "eval").unlink()

    error = _check_lock_error(locked)

    assert error.message == f"dataset {data_path(locked, 'eval')} does not exist"


# --- validate() ----------------------------------------------------------------------------


def test_validate_defaults_to_today(config_path):
    report = validate(load_config(config_path))

    assert report["as_of"] == "2026-11-01"
    assert report["passed"] is True


def test_validate_reports_each_split(config_path):
    report = validate(load_config(config_path), as_of=AS_OF)

    assert {k: report[k] for k in ("schema", "model", "contract_schema_version", "passed")} == {
        "schema": "slipway.validation/1",
        "model": "release-risk",
        "contract_schema_version": 1,
        "passed": True,
    }
    train, evaluation, pair = report["datasets"]
    assert (train["split"], train["path"], train["rows"], train["columns"]) == (
        "train",
        str(data_path(config_path, "train")),
        TRAIN_ROWS,
        10,
    )
    assert (evaluation["split"], evaluation["rows"]) == ("eval", EVAL_ROWS)
    assert pair == {"split": "train+eval", "violations": []}


def test_violations_in_both_splits_are_counted_together(config_path):
    edit_csv(config_path, "train", lambda f: set_cells(f, "team", [0], "ml-infra"))
    edit_csv(config_path, "eval", lambda f: set_cells(f, "past_defects", [0], "-3"))
    train_id = read_text_frame(data_path(config_path, "train"))["release_id"].iloc[9]
    edit_csv(config_path, "eval", lambda f: set_cells(f, "release_id", [1], train_id))

    report = validate(load_config(config_path), as_of=AS_OF)

    assert report["violation_count"] == 3
    assert [[v["check"] for v in d["violations"]] for d in report["datasets"]] == [
        ["categories"],
        ["range"],
        ["train_eval_overlap"],
    ]


# --- the committed sample data -------------------------------------------------------------


def test_committed_sample_data_is_valid():
    config = load_config(MODEL / "slipway.yaml")

    report = validate(config, as_of=AS_OF)

    assert report["passed"] is True, report
    assert [d.get("rows") for d in report["datasets"]] == [4000, 1500, None]


def test_committed_sample_data_matches_its_lock():
    config = load_config(MODEL / "slipway.yaml")
    lock = json.loads(lock_path(config).read_text(encoding="utf-8"))

    digests = check_lock(config)

    assert digests == {
        "train": _sha256(MODEL / "data" / "train.csv"),
        "eval": _sha256(MODEL / "data" / "eval.csv"),
    }
    assert lock["schema"] == LOCK_SCHEMA
    assert lock["schema_version"] == config.schema_version
    for split, entry in lock["files"].items():
        rows = len(read_text_frame(config.path(Path(entry["path"]))))
        assert entry["rows"] == rows, split


def test_committed_sample_data_passes_the_cli(tmp_path, capsys):
    code = main(
        [
            "validate",
            "--config",
            str(MODEL / "slipway.yaml"),
            "--out",
            str(tmp_path),
            "--as-of",
            "2026-11-01",
        ]
    )

    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[-1] == "data is valid"
    assert "train (4000 rows): 0 violation(s)" in out
    assert "eval (1500 rows): 0 violation(s)" in out
