"""The data contract: every rule of ``columns`` and ``data`` in slipway.yaml, and ``validate``.

Each case corrupts a freshly simulated dataset in one precise way and checks that exactly the
expected violation is reported: its check, column, row count, message and example rows.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from contract_helpers import (
    AS_OF,
    COLUMNS,
    EVAL_ROWS,
    TRAIN_ROWS,
    data_path,
    edit_csv,
    edit_yaml,
    make_project,
    only_violation,
    read_text_frame,
    set_cells,
    violations,
    write_text_frame,
)
from slipway.cli import main
from slipway.config import ModelConfig, load_config
from slipway.errors import DataError
from slipway.propose.contract import (
    Violation,
    _examples,
    _numeric,
    _surely_unique,
    check_frame,
    check_overlap,
    duplicated,
    number_lines,
    parse_dates,
    positive_mask,
    prepare,
    read_dataset,
    to_dict,
)
from slipway.propose.datasets import REPORT_SCHEMA, validate


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    """slipway.yaml of a small, valid model project (no nulls anywhere)."""
    return make_project(tmp_path)


def _validate(config_path: Path, as_of: date = AS_OF) -> dict:
    return validate(load_config(config_path), as_of=as_of)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _validate_cli(capsys, config_path: Path, *extra: str | Path) -> tuple[int, str, str]:
    out = config_path.parent.parent / "out"
    return _cli(
        capsys, "validate", "--config", config_path, "--out", out, "--as-of", "2026-11-01", *extra
    )


def _reject_nulls(document: dict) -> None:
    document["columns"]["test_coverage"]["nulls"] = "reject"


def _drop(column: str):
    return lambda frame: frame.drop(columns=[column])


def _cells(column: str, rows: list[int], value: str):
    return lambda frame: set_cells(frame, column, rows, value)


def _all_positive(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(high_risk="1")


def _repeat_id(frame: pd.DataFrame) -> pd.DataFrame:
    return set_cells(frame, "release_id", [5], frame["release_id"].iloc[4])


def _extra_column(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(notes="ok")


# id, yaml change, csv change, check, column, count, message part, examples as (line, value)
SINGLE_VIOLATIONS = [
    pytest.param(
        None,
        _drop("files_modified"),
        "missing_column",
        "files_modified",
        TRAIN_ROWS,
        "column `files_modified` is missing",
        [],
        id="missing-column",
    ),
    pytest.param(
        None,
        _extra_column,
        "extra_column",
        "notes",
        TRAIN_ROWS,
        "column `notes` is not in the contract",
        [],
        id="extra-column",
    ),
    pytest.param(
        None,
        _cells("code_changes", [4], "lots"),
        "dtype",
        "code_changes",
        1,
        "`code_changes` must be a int; found text",
        [(6, "lots")],
        id="text-in-int-column",
    ),
    pytest.param(
        None,
        _cells("release_frequency", [0, 7], "weekly"),
        "dtype",
        "release_frequency",
        2,
        "must be a float; found text",
        [(2, "weekly"), (9, "weekly")],
        id="text-in-float-column",
    ),
    pytest.param(
        None,
        _cells("files_modified", [10], "2.5"),
        "dtype",
        "files_modified",
        1,
        "`files_modified` must be a whole number",
        [(12, 2.5)],
        id="fraction-in-int-column",
    ),
    pytest.param(
        None,
        _cells("release_date", [0], "01/11/2025"),
        "dtype",
        "release_date",
        1,
        "`release_date` must be a date written YYYY-MM-DD",
        [(2, "01/11/2025")],
        id="date-in-wrong-format",
    ),
    pytest.param(
        None,
        _cells("release_date", [1], "2026-02-30"),
        "dtype",
        "release_date",
        1,
        "YYYY-MM-DD",
        [(3, "2026-02-30")],
        id="date-that-does-not-exist",
    ),
    pytest.param(
        _reject_nulls,
        _cells("test_coverage", [3, 10], ""),
        "nulls",
        "test_coverage",
        2,
        "`test_coverage` has empty cells; its null policy is reject",
        [(5, None), (12, None)],
        id="nulls-under-reject-policy",
    ),
    pytest.param(
        None,
        _cells("team", [8], ""),
        "nulls",
        "team",
        1,
        "null policy is reject",
        [(10, None)],
        id="null-category-rejected-by-default",
    ),
    pytest.param(
        None,
        _cells("test_coverage", [20], "140"),
        "range",
        "test_coverage",
        1,
        "`test_coverage` above 100",
        [(22, 140.0)],
        id="coverage-above-100",
    ),
    pytest.param(
        None,
        _cells("past_defects", [2, 3, 4, 5], "-3"),
        "range",
        "past_defects",
        4,
        "`past_defects` below 0",
        [(4, -3), (5, -3), (6, -3)],  # at most three examples
        id="negative-count",
    ),
    pytest.param(
        None,
        _cells("historical_failure_rate", [30], "1.5"),
        "range",
        "historical_failure_rate",
        1,
        "above 1.0",
        [(32, 1.5)],
        id="rate-above-1",
    ),
    pytest.param(
        None,
        _cells("team", [0], "ml-infra"),
        "categories",
        "team",
        1,
        "`team` has values outside ['payments', 'search', 'mobile', 'platform', 'identity']",
        [(2, "ml-infra")],
        id="unknown-team",
    ),
    pytest.param(
        None,
        _cells("high_risk", [6], "2"),
        "categories",
        "high_risk",
        1,
        "`high_risk` has values outside [0, 1]",
        [(8, 2)],
        id="label-outside-categories",
    ),
    pytest.param(
        None,
        _repeat_id,
        "duplicate_ids",
        "release_id",
        2,
        "`release_id` values repeat",
        [(6, "REL-11-000004"), (7, "REL-11-000004")],
        id="duplicate-ids",
    ),
    pytest.param(
        None,
        _all_positive,
        "label_balance",
        "high_risk",
        TRAIN_ROWS,
        "positive share 1.000 outside [0.05, 0.6]",
        [],
        id="label-balance-out-of-bounds",
    ),
]


@pytest.mark.parametrize(
    ("yaml_change", "csv_change", "check", "column", "count", "message", "examples"),
    SINGLE_VIOLATIONS,
)
def test_a_broken_rule_is_reported_with_examples(
    config_path, yaml_change, csv_change, check, column, count, message, examples
):
    if yaml_change is not None:
        edit_yaml(config_path, yaml_change)
    edit_csv(config_path, "train", csv_change)

    report = _validate(config_path)

    assert report["passed"] is False
    found = only_violation(report, "train")
    assert (found["check"], found["column"], found["count"]) == (check, column, count)
    assert message in found["message"]
    assert [(e["line"], e.get("value")) for e in found["examples"]] == examples


def test_examples_name_the_row_by_id(config_path):
    train = read_text_frame(data_path(config_path, "train"))
    edit_csv(config_path, "train", _cells("code_changes", [4], "lots"))

    (example,) = only_violation(_validate(config_path), "train")["examples"]

    assert example == {"line": 6, "id": train["release_id"].iloc[4], "value": "lots"}


def test_simulated_project_is_valid(config_path):
    report = _validate(config_path)

    assert report["passed"] is True
    assert report["violation_count"] == 0
    assert [(d["split"], d.get("rows")) for d in report["datasets"]] == [
        ("train", TRAIN_ROWS),
        ("eval", EVAL_ROWS),
        ("train+eval", None),
    ]
    assert all(d["violations"] == [] for d in report["datasets"])


def test_every_failed_rule_is_reported_not_just_the_first(config_path):
    edit_csv(
        config_path,
        "train",
        lambda f: set_cells(
            set_cells(f, "test_coverage", [1], "140"), "team", [2], "ml-infra"
        ).drop(columns=["files_modified"]),
    )

    report = _validate(config_path)

    found = {(v["check"], v["column"]) for v in violations(report, "train")}
    assert found == {
        ("missing_column", "files_modified"),
        ("range", "test_coverage"),
        ("categories", "team"),
    }
    assert report["violation_count"] == 3


# --- nulls: impute policy ------------------------------------------------------------------


@pytest.mark.parametrize("impute", [0.0, 55.5])
def test_imputed_nulls_are_counted_and_filled_with_the_declared_value(config_path, impute):
    edit_yaml(config_path, lambda d: d["columns"]["test_coverage"].update(nulls={"impute": impute}))
    null_rows = [3, 10, 11]
    path = edit_csv(config_path, "train", _cells("test_coverage", null_rows, ""))

    report = _validate(config_path)

    assert report["passed"] is True
    (train,) = [d for d in report["datasets"] if d["split"] == "train"]
    assert train["imputed_nulls"] == {"test_coverage": len(null_rows)}
    features, target = prepare(read_dataset(path), load_config(config_path))
    assert features.loc[null_rows, "test_coverage"].tolist() == [impute] * len(null_rows)
    assert not features.isna().any().any()
    assert list(features.columns) == load_config(config_path).features
    assert set(np.unique(target)) <= {0, 1}
    assert len(target) == TRAIN_ROWS


def test_columns_without_nulls_report_no_imputation(config_path):
    report = _validate(config_path)

    assert [d["imputed_nulls"] for d in report["datasets"] if "rows" in d] == [{}, {}]


def test_prepare_keeps_labels_and_values(config_path):
    config = load_config(config_path)
    frame = read_dataset(data_path(config_path, "eval"))

    features, target = prepare(frame, config)

    assert features.dtypes.unique().tolist() == [np.dtype("float64")]
    assert features["code_changes"].tolist() == frame["code_changes"].astype(float).tolist()
    assert target.tolist() == frame["high_risk"].astype(int).tolist()


# --- freshness -----------------------------------------------------------------------------


def _newest_eval_date(config_path: Path) -> date:
    dates = read_text_frame(data_path(config_path, "eval"))["release_date"]
    return date.fromisoformat(max(dates))


@pytest.mark.parametrize(
    ("days_after_newest", "stale"),
    [(0, False), (730, False), (731, True), (5000, True), (-30, True)],  # -30: rows from the future
)
def test_freshness_counts_days_from_as_of_to_the_newest_row(config_path, days_after_newest, stale):
    as_of = _newest_eval_date(config_path) + timedelta(days=days_after_newest)

    checks = [v["check"] for v in violations(_validate(config_path, as_of), "eval")]

    assert checks == (["freshness"] if stale else [])


def test_one_future_dated_row_cannot_hide_stale_data(config_path):
    as_of = _newest_eval_date(config_path) + timedelta(days=5000)  # everything else is stale
    edit_csv(config_path, "eval", lambda f: set_cells(f, "release_date", [0], "2062-01-01"))

    found = violations(_validate(config_path, as_of), "eval")

    assert [(v["check"], v["count"]) for v in found] == [("freshness", 1), ("freshness", 600)]
    assert "from the future" in found[0]["message"]
    assert found[0]["examples"][0]["value"] == "2062-01-01"
    assert "older than 730 days" in found[1]["message"]


def test_stale_data_names_the_newest_date_and_the_limit(config_path):
    newest = _newest_eval_date(config_path)

    report = _validate(config_path, date(2030, 1, 1))

    assert report["as_of"] == "2030-01-01"
    found = violations(report, "eval")
    assert [(v["check"], v["column"]) for v in found] == [("freshness", "release_date")]
    assert found[0]["message"] == (f"newest row is {newest}, older than 730 days before 2030-01-01")
    assert [v["check"] for v in violations(report, "train")] == ["freshness"]


def test_freshness_is_off_without_max_age_days(config_path):
    edit_yaml(config_path, lambda d: d["data"].pop("max_age_days"))

    assert _validate(config_path, date(2100, 1, 1))["passed"] is True


# --- train/eval overlap --------------------------------------------------------------------


def test_eval_ids_seen_in_train_overlap(config_path):
    train = read_text_frame(data_path(config_path, "train"))
    leaked = train["release_id"].iloc[[0, 1]].tolist()
    edit_csv(config_path, "eval", lambda f: set_cells(f, "release_id", [7], leaked[0]))
    edit_csv(config_path, "eval", lambda f: set_cells(f, "release_id", [9], leaked[1]))

    report = _validate(config_path)

    found = only_violation(report, "train+eval")
    assert (found["check"], found["column"], found["count"]) == (
        "train_eval_overlap",
        "release_id",
        2,
    )
    assert "also appear in train" in found["message"]
    assert [(e["line"], e["id"]) for e in found["examples"]] == [(9, leaked[0]), (11, leaked[1])]


def test_empty_ids_in_both_splits_are_nulls_not_overlap(config_path):
    edit_csv(config_path, "train", _cells("release_id", [0], ""))
    edit_csv(config_path, "eval", _cells("release_id", [0], ""))

    report = _validate(config_path)

    found = [
        (d["split"], v["check"], v["column"]) for d in report["datasets"] for v in d["violations"]
    ]
    assert found == [("train", "nulls", "release_id"), ("eval", "nulls", "release_id")]


def test_eval_rows_copied_from_train_under_new_ids_overlap_by_content(config_path):
    train = read_text_frame(data_path(config_path, "train"))
    path = data_path(config_path, "eval")
    evaluation = read_text_frame(path)
    copied = [2, 3, 4]
    source = train.iloc[[100, 200, 300]].drop(columns=["release_id"]).to_numpy()
    evaluation.loc[copied, COLUMNS[1:]] = source
    write_text_frame(evaluation, path)

    report = _validate(config_path)

    found = only_violation(report, "train+eval")
    assert (found["check"], found["column"], found["count"]) == ("train_eval_overlap", None, 3)
    assert found["message"] == (
        "eval rows repeat a train row (same features and label) under another id"
    )
    assert [e["line"] for e in found["examples"]] == [4, 5, 6]
    assert [e["id"] for e in found["examples"]] == evaluation["release_id"].iloc[copied].tolist()


def test_a_release_identical_in_features_but_not_label_is_no_overlap(config_path):
    train = read_text_frame(data_path(config_path, "train"))
    path = data_path(config_path, "eval")
    evaluation = read_text_frame(path)
    row = train.iloc[100].copy()
    row["release_id"] = evaluation["release_id"].iloc[2]
    row["high_risk"] = "0" if row["high_risk"] == "1" else "1"
    evaluation.iloc[2] = row
    write_text_frame(evaluation, path)

    assert _validate(config_path)["passed"] is True


# --- unreadable and empty files ------------------------------------------------------------


def test_header_only_file_breaks_min_rows(config_path, capsys):
    data_path(config_path, "train").write_text(",".join(COLUMNS) + "\n", encoding="utf-8")

    report = _validate(config_path)
    code, out, _ = _validate_cli(capsys, config_path)

    found = only_violation(report, "train")
    assert (found["check"], found["count"]) == ("min_rows", 0)
    assert found["message"] == "0 rows; the contract needs 500"
    assert code == 1
    assert "train (0 rows): 1 violation(s)" in out
    assert "[min_rows] -: 0 rows; the contract needs 500" in out


@pytest.mark.parametrize("rows", [499, 500])
def test_min_rows_is_inclusive(config_path, rows):
    edit_csv(config_path, "train", lambda f: f.head(rows))

    checks = [v["check"] for v in violations(_validate(config_path), "train")]

    assert checks == (["min_rows"] if rows < 500 else [])


EMPTY_HINT = "regenerate or restore the file; it needs a header row and data rows"


@pytest.mark.parametrize(
    ("content", "message", "hint"),
    [
        pytest.param(b"", "is empty (no header, no rows)", EMPTY_HINT, id="zero-bytes"),
        pytest.param(b"\n\n", "is empty (no header, no rows)", EMPTY_HINT, id="blank-lines"),
        pytest.param(
            b"a,b\n1,2\n3,4,5,6\n", "is not valid CSV", "fix the file format", id="ragged-rows"
        ),
        pytest.param(
            b"release_id\n\xff\xfe\xfa\n", "is not valid CSV", "fix the file format", id="not-utf8"
        ),
    ],
)
def test_unreadable_dataset_is_an_error_not_a_violation(
    config_path, capsys, content, message, hint
):
    path = data_path(config_path, "train")
    path.write_bytes(content)

    with pytest.raises(DataError) as raised:
        _validate(config_path)
    code, out, err = _validate_cli(capsys, config_path)

    assert str(path) in raised.value.message
    assert message in raised.value.message
    assert raised.value.hint == hint
    assert code == 2
    assert out == ""
    assert err.startswith(f"error: dataset {path} ")
    assert message in err
    assert f"fix: {hint}" in err


def test_missing_dataset_is_an_error(config_path, capsys):
    data_path(config_path, "eval").unlink()

    code, _, err = _validate_cli(capsys, config_path)

    assert code == 2
    assert "does not exist" in err
    assert "fix: check `data:` paths in slipway.yaml" in err


# --- the CLI -------------------------------------------------------------------------------


def test_cli_passes_valid_data_and_writes_the_report(config_path, capsys):
    out_dir = config_path.parent.parent / "out"

    code, out, _ = _validate_cli(capsys, config_path)

    assert code == 0
    assert out.splitlines() == [
        f"train ({TRAIN_ROWS} rows): 0 violation(s)",
        f"eval ({EVAL_ROWS} rows): 0 violation(s)",
        "train+eval: 0 violation(s)",
        "data is valid",
    ]
    report = json.loads((out_dir / "validation.json").read_text(encoding="utf-8"))
    assert report["schema"] == REPORT_SCHEMA == "slipway.validation/1"
    assert report["passed"] is True
    assert report["as_of"] == "2026-11-01"
    assert sorted(p.name for p in out_dir.iterdir()) == ["validation.json"]


def test_cli_reports_violation_with_line_and_exits_1(config_path, capsys):
    edit_csv(config_path, "train", _cells("code_changes", [4], "lots"))

    code, out, err = _validate_cli(capsys, config_path)

    assert code == 1
    assert "train (900 rows): 1 violation(s)" in out
    assert (
        "  [dtype] code_changes: `code_changes` must be a int; found text — 1 row(s), e.g. line 6"
        in out
    )
    assert out.splitlines()[-1] == "1 violation(s)"
    assert err == ""


def test_cli_json_writes_the_same_report_atomically(config_path, capsys):
    out_dir = config_path.parent.parent / "out"
    target = config_path.parent.parent / "reports" / "nested" / "validation-report.json"
    edit_csv(config_path, "eval", _cells("test_coverage", [0], "140"))

    code, _, _ = _validate_cli(capsys, config_path, "--json", target)

    assert code == 1
    report = json.loads(target.read_text(encoding="utf-8"))
    assert report == json.loads((out_dir / "validation.json").read_text(encoding="utf-8"))
    assert report["schema"] == "slipway.validation/1"
    assert report["model"] == "release-risk"
    assert report["contract_schema_version"] == 1
    assert (report["passed"], report["violation_count"]) == (False, 1)
    assert violations(report, "eval")[0]["check"] == "range"
    assert [p.name for p in target.parent.iterdir()] == ["validation-report.json"]
    assert [p.name for p in out_dir.iterdir()] == ["validation.json"]


def test_cli_rewrites_an_existing_report_in_place(config_path, capsys):
    out_dir = config_path.parent.parent / "out"
    out_dir.mkdir()
    (out_dir / "validation.json").write_text('{"stale": true}', encoding="utf-8")

    code, _, _ = _validate_cli(capsys, config_path)

    assert code == 0
    assert json.loads((out_dir / "validation.json").read_text())["passed"] is True
    assert [p.name for p in out_dir.iterdir()] == ["validation.json"]


def test_a_failed_write_keeps_the_old_report_and_leaves_no_temp_file(
    config_path, capsys, monkeypatch
):
    import slipway.fsutil

    out_dir = config_path.parent.parent / "out"
    out_dir.mkdir()
    (out_dir / "validation.json").write_text('{"old": true}', encoding="utf-8")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(slipway.fsutil.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _validate_cli(capsys, config_path)

    assert json.loads((out_dir / "validation.json").read_text()) == {"old": True}
    assert [p.name for p in out_dir.iterdir()] == ["validation.json"]


def test_cli_validates_only_the_files_given(config_path, capsys):
    out_dir = config_path.parent.parent / "out"
    edit_csv(config_path, "train", _cells("team", [0], "ml-infra"))

    code, out, _ = _validate_cli(capsys, config_path, data_path(config_path, "eval"))

    assert code == 0
    assert out.splitlines() == [f"eval ({EVAL_ROWS} rows): 0 violation(s)", "data is valid"]
    report = json.loads((out_dir / "validation.json").read_text())
    assert [d["split"] for d in report["datasets"]] == ["eval"]


def test_cli_rejects_a_malformed_as_of(config_path, capsys):
    with pytest.raises(SystemExit) as raised:
        main(["validate", "--config", str(config_path), "--as-of", "1 Nov 2026"])

    assert raised.value.code == 2
    assert "--as-of" in capsys.readouterr().err


def test_cli_freshness_uses_as_of(config_path, capsys):
    out = config_path.parent.parent / "out"

    code, stdout, _ = _cli(
        capsys, "validate", "--config", config_path, "--out", out, "--as-of", "2031-01-01"
    )

    assert code == 1
    assert "[freshness] release_date: newest row is" in stdout
    assert "older than 730 days before 2031-01-01" in stdout


def test_example_lines_count_blank_lines_and_quoted_line_breaks(config_path):
    """pandas skips blank lines and reads a quoted line break as part of the cell: the
    example's line is still the line of the file on which the bad row starts."""
    path = data_path(config_path, "eval")
    header, *rows = path.read_text().splitlines()
    first = rows[0].split(",", 1)
    rows[0] = f'"{first[0]}\nsecond half",{first[1]}'  # the id spans lines 2 and 3
    bad = rows[3].split(",")
    bad[COLUMNS.index("code_changes")] = "lots"
    rows[3] = ",".join(bad)
    lines = [header, "", *rows[:2], "   ", rows[2], "", rows[3], *rows[4:]]
    path.write_text("\n".join(lines) + "\n")
    assert lines.index(rows[3]) + 2 == 9  # + 1 for the quoted line break, + 1 from 0-based

    report = validate(load_config(config_path), {"eval": path}, AS_OF)

    found = only_violation(report, "eval")
    assert (found["check"], found["column"]) == ("dtype", "code_changes")
    assert found["examples"] == [{"line": 9, "id": bad[0], "value": "lots"}]
    assert path.read_text().splitlines()[8] == rows[3]


def test_row_count_and_freshness_are_checked_without_the_id_column(config_path):
    config = load_config(config_path)
    frame = read_dataset(data_path(config_path, "train")).drop(columns=["release_id"]).head(10)

    found, _ = check_frame(frame, config, date(2100, 1, 1))

    assert [(v.check, v.column) for v in found] == [
        ("missing_column", "release_id"),
        ("min_rows", None),
        ("freshness", "release_date"),
    ]


def test_a_missing_target_column_is_reported_once(config_path):
    config = load_config(config_path)
    frame = read_dataset(data_path(config_path, "train")).drop(columns=["high_risk"])

    found, _ = check_frame(frame, config, AS_OF)

    assert [(v.check, v.column) for v in found] == [("missing_column", "high_risk")]


# --- check_frame directly ------------------------------------------------------------------


def test_check_frame_without_id_or_target_still_checks_columns(config_path):
    config = load_config(config_path)
    frame = read_dataset(data_path(config_path, "train")).drop(columns=["release_id"])
    frame.loc[0, "test_coverage"] = 140.0

    found, imputed = check_frame(frame, config, AS_OF)

    assert [(v.check, v.column) for v in found] == [
        ("missing_column", "release_id"),
        ("range", "test_coverage"),
    ]
    assert found[1].examples == [{"line": 2, "value": 140.0}]
    assert imputed == {"test_coverage": 0}


@pytest.mark.parametrize(
    ("ids", "repeated"),
    [
        (["REL-000001", "REL-000002", "REL-000003"], []),  # fixed width, hashed in place
        (["REL-000001", "REL-000002", "REL-000001"], [0, 2]),
        (["R1", "R22", "R1"], [0, 2]),  # varying width: counted exactly
        (["REL-000001", None, "REL-000001", None], [0, 2]),  # empty ids are not repeats
    ],
)
def test_duplicate_ids_fast_and_exact_paths(ids, repeated):
    series = pd.Series(ids, dtype="string[pyarrow]")
    assert np.flatnonzero(duplicated(series)).tolist() == repeated
    sliced = pd.Series(["X-padding-0", *ids], dtype="string[pyarrow]").iloc[1:]
    assert np.flatnonzero(duplicated(sliced)).tolist() == repeated


def test_overlap_by_content_ignores_how_numbers_are_written(config_path):
    config = load_config(config_path)
    train = read_dataset(data_path(config_path, "train")).head(3)
    copied = train.copy()
    copied["release_id"] = ["NEW-1", "NEW-2", "NEW-3"]
    copied["code_changes"] = copied["code_changes"].astype(float)  # 70 written as 70.0
    found = check_overlap(train, copied, config)
    assert [(v.check, v.column, v.count) for v in found] == [("train_eval_overlap", None, 3)]


# --- small hand-built datasets -------------------------------------------------------------

SMALL_AS_OF = date(2026, 1, 11)
SMALL_HEADER = "id,day,n,x,label"


def _small_config(
    columns: dict | None = None, target: dict | None = None, **data: object
) -> ModelConfig:
    """A contract of five columns (at least 2 rows, 25-75% positives, 10 days fresh)."""
    return ModelConfig.model_validate(
        {
            "name": "small",
            "schema_version": 1,
            "data": {
                "train": "train.csv",
                "eval": "eval.csv",
                "lock": "data.lock.json",
                "id_column": "id",
                "date_column": "day",
                "min_rows": 2,
                "max_age_days": 10,
                "label_balance": {"min": 0.25, "max": 0.75},
                **data,
            },
            "target": target or {"column": "label", "positive": 1},
            "columns": {
                "id": {"dtype": "string"},
                "day": {"dtype": "date"},
                "n": {"dtype": "int", "min": 0, "max": 10},
                "x": {"dtype": "float", "min": -1.5, "max": 2.5, "nulls": {"impute": 0.5}},
                "label": {"dtype": "int", "categories": [0, 1]},
                **(columns or {}),
            },
            "features": ["n", "x"],
        }
    )


def _small_frame(tmp_path: Path, *rows: str, header: str = SMALL_HEADER) -> pd.DataFrame:
    """The rows (CSV text, one row each) read back as a dataset is read."""
    path = tmp_path / "small.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return read_dataset(path)


def _labelled(labels: str, day: str = "2026-01-10") -> list[str]:
    """One valid row per character of ``labels`` (its label), dated ``day``."""
    return [f"r{i},{day},{i % 10},0.5,{label}" for i, label in enumerate(labels)]


def _found(frame: pd.DataFrame, config: ModelConfig | None = None, as_of: date = SMALL_AS_OF):
    found, _ = check_frame(frame, config or _small_config(), as_of)
    return [(v.check, v.column, v.count, v.message, v.examples) for v in found]


@pytest.mark.parametrize(
    ("labels", "share"),
    [
        ("1000", None),  # 0.25: the lower bound is allowed
        ("1110", None),  # 0.75: so is the upper one
        ("10000", "0.200"),
        ("11110", "0.800"),
        ("0000", "0.000"),
    ],
)
def test_label_balance_bounds_are_inclusive(tmp_path, labels, share):
    found = _found(_small_frame(tmp_path, *_labelled(labels)))

    assert found == (
        []
        if share is None
        else [
            (
                "label_balance",
                "label",
                len(labels),
                f"positive share {share} outside [0.25, 0.75]",
                [],
            )
        ]
    )


def test_an_empty_label_is_left_out_of_the_share_and_floats_match_integer_categories(tmp_path):
    """One empty label makes pandas read the column as floats: 1.0 and 0.0 are still the
    categories 1 and 0, and the share counts the labelled rows only (1 of 5)."""
    rows = _labelled("1000")
    rows.insert(1, "rx,2026-01-10,1,0.5,")
    rows.append("ry,2026-01-10,1,0.5,0")

    found = _found(_small_frame(tmp_path, *rows))

    assert found == [
        (
            "nulls",
            "label",
            1,
            "`label` has empty cells; its null policy is reject",
            [{"line": 3, "id": "rx", "value": None}],
        ),
        ("label_balance", "label", 5, "positive share 0.200 outside [0.25, 0.75]", []),
    ]


def test_a_text_category_of_a_number_column_matches_nothing(tmp_path):
    config = _small_config(columns={"label": {"dtype": "int", "categories": [0, 1, "unknown"]}})
    frame = _small_frame(tmp_path, *_labelled("1020"))

    found = _found(frame, config)

    assert found == [
        (
            "categories",
            "label",
            1,
            "`label` has values outside [0, 1, 'unknown']",
            [{"line": 4, "id": "r2", "value": 2}],
        )
    ]


def test_example_values_are_plain_python_values_for_the_json_report(tmp_path):
    frame = _small_frame(
        tmp_path, "r0,2026-01-10,11,0.5,1", "r1,2026-01-10,1,2.75,0", "r2,2026-01-10,1,,0"
    )

    found, imputed = check_frame(frame, _small_config(), SMALL_AS_OF)

    assert json.dumps(to_dict(found)) == json.dumps(
        [
            {
                "check": "range",
                "column": "n",
                "count": 1,
                "message": "`n` above 10.0",
                "examples": [{"line": 2, "id": "r0", "value": 11}],
            },
            {
                "check": "range",
                "column": "x",
                "count": 1,
                "message": "`x` above 2.5",
                "examples": [{"line": 3, "id": "r1", "value": 2.75}],
            },
        ]
    )
    assert [type(v.examples[0]["value"]) for v in found] == [int, float]
    assert imputed == {"x": 1}


def test_examples_give_no_value_for_a_column_the_frame_lacks():
    frame = pd.DataFrame({"id": ["a", "b", "c"], "n": [1, 2, 3]})
    mask = np.array([False, True, True])

    assert _examples(frame, mask, "absent", "id") == [
        {"line": 3, "id": "b"},
        {"line": 4, "id": "c"},
    ]
    assert _examples(frame, mask, "n", "no_id") == [
        {"line": 3, "value": 2},
        {"line": 4, "value": 3},
    ]
    assert _examples(frame, mask, None, "id") == [{"line": 3, "id": "b"}, {"line": 4, "id": "c"}]


# --- freshness of small datasets -----------------------------------------------------------


@pytest.mark.parametrize(
    ("newest", "stale"),
    [("2026-01-01", False), ("2025-12-31", True)],  # 10 days before as_of, then 11
)
def test_freshness_allows_exactly_max_age_days(tmp_path, newest, stale):
    frame = _small_frame(tmp_path, f"r0,{newest},1,0.5,1", "r1,2025-12-01,1,0.5,0")

    found = _found(frame)

    message = f"newest row is {newest}, older than 10 days before 2026-01-11"
    assert found == ([("freshness", "day", 2, message, [])] if stale else [])


def test_rows_all_from_the_future_are_flagged_once_with_no_newest_date(tmp_path):
    frame = _small_frame(tmp_path, *_labelled("10", day="2026-01-12"))

    found = _found(frame)

    assert found == [
        (
            "freshness",
            "day",
            2,
            "`day` is after 2026-01-11: a date from the future hides stale data",
            [
                {"line": 2, "id": "r0", "value": "2026-01-12"},
                {"line": 3, "id": "r1", "value": "2026-01-12"},
            ],
        )
    ]


def test_freshness_reads_a_date_column_declared_as_text(tmp_path):
    config = _small_config(columns={"day": {"dtype": "string"}})
    frame = _small_frame(tmp_path, "r0,2025-12-31,1,0.5,1", "r1,someday,1,0.5,0")

    found = _found(frame, config)

    assert found == [
        (
            "freshness",
            "day",
            2,
            "newest row is 2025-12-31, older than 10 days before 2026-01-11",
            [],
        )
    ]


def test_parse_dates_reads_arrow_strings_with_empty_cells_and_far_dates():
    series = pd.Series(["2300-01-01", None, "2026-01-05"], dtype="str")

    parsed = parse_dates(series)

    assert parsed.dtype == np.dtype("datetime64[D]")
    assert [str(d) for d in parsed] == ["2300-01-01", "NaT", "2026-01-05"]


def test_parse_dates_finds_the_values_that_are_not_dates_row_by_row():
    for dtype in ("str", object):
        series = pd.Series(["2026-01-05", "2026-02-30", None, "01/11/2025"], dtype=dtype)

        parsed = parse_dates(series)

        assert parsed.dtype == np.dtype("datetime64[D]")
        assert [str(d) for d in parsed] == ["2026-01-05", "NaT", "NaT", "NaT"]


@pytest.mark.parametrize("dtype", ["str", object])
def test_parse_dates_row_by_row_keeps_far_dates_and_wants_two_digit_months_and_days(dtype):
    """A column with one value that is not a date is parsed row by row: a date before 1677 or
    after 2262 is still itself, and 2026-1-5 is refused there as on the fast path."""
    far = pd.Series(["3000-01-01", "bad", "1500-06-30", "2026-1-5", "2026-01-5"], dtype=dtype)
    fast = pd.Series(["2026-1-5"], dtype="str")

    assert [str(d) for d in parse_dates(far)] == ["3000-01-01", "NaT", "1500-06-30", "NaT", "NaT"]
    assert [str(d) for d in parse_dates(fast)] == ["NaT"]


def test_a_far_future_date_is_flagged_when_another_row_is_not_a_date(tmp_path):
    rows = ["r0,3000-01-01,1,0.5,1", "r1,bad,2,0.5,0", "r2,2026-01-10,3,0.5,1"]

    found = _found(_small_frame(tmp_path, *rows))

    assert found == [
        (
            "dtype",
            "day",
            1,
            "`day` must be a date written YYYY-MM-DD",
            [{"line": 3, "id": "r1", "value": "bad"}],
        ),
        (
            "freshness",
            "day",
            1,
            "`day` is after 2026-01-11: a date from the future hides stale data",
            [{"line": 2, "id": "r0", "value": "3000-01-01"}],
        ),
    ]


# --- labels, features, numbers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "dtype", "positive", "expected"),
    [
        pytest.param([1, 0, 1], "int64", 1, [True, False, True], id="integers"),
        pytest.param([1.0, None, 0.0], "float64", 1, [True, False, False], id="floats-with-gaps"),
        pytest.param(["yes", None, "no"], "str", "yes", [True, False, False], id="text"),
        pytest.param(["1", "x", "0"], "str", 1, [True, False, False], id="number-among-text"),
        pytest.param([1, 0], "int64", "yes", [False, False], id="text-positive-of-numbers"),
    ],
)
def test_positive_mask_compares_numbers_as_numbers_and_text_as_text(
    values, dtype, positive, expected
):
    config = _small_config(
        columns={"label": {"dtype": "string"}}, target={"column": "label", "positive": positive}
    )

    mask = positive_mask(pd.Series(values, dtype=dtype), config)

    assert mask.dtype == np.bool_
    assert mask.tolist() == expected


def test_prepare_keeps_the_frame_index_imputes_and_gives_integer_labels(tmp_path):
    frame = _small_frame(
        tmp_path, "r0,2026-01-10,1,0.25,1", "r1,2026-01-10,2,,0", "r2,2026-01-10,3,-1.5,1"
    ).iloc[1:]

    features, target = prepare(frame, _small_config())

    assert features.index.tolist() == [1, 2]
    assert features.to_dict("list") == {"n": [2.0, 3.0], "x": [0.5, -1.5]}
    assert features.dtypes.tolist() == [np.dtype("float64")] * 2
    assert target.dtype == np.int64
    assert target.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("series", "numbers", "text"),
    [
        pytest.param(pd.Series([3, 4]), [3.0, 4.0], [False, False], id="integers"),
        pytest.param(pd.Series(["3", "4"], dtype="str"), [3.0, 4.0], [False, False], id="digits"),
        pytest.param(
            pd.Series(["3", "x", None], dtype="str"),
            [3.0, np.nan, np.nan],
            [False, True, False],
            id="text-and-empty",
        ),
        pytest.param(pd.Series([True, False]), [1.0, 0.0], [False, False], id="booleans"),
    ],
)
def test_numeric_gives_floats_and_a_mask_of_text(series, numbers, text):
    values, not_numbers = _numeric(series)

    assert values.dtype == np.float64
    np.testing.assert_array_equal(values, numbers)
    assert not_numbers.dtype == np.bool_
    assert not_numbers.tolist() == text


# --- duplicate ids -------------------------------------------------------------------------


def _chunked(*parts: list[str]) -> pd.Series:
    """Arrow strings stored in several chunks, as ``pd.concat`` of two datasets leaves them."""
    return pd.concat([pd.Series(part, dtype="str") for part in parts], ignore_index=True)


@pytest.mark.parametrize(
    ("series", "repeated"),
    [
        pytest.param(pd.Series(["REL-0001", "REL-0002"], dtype="str"), [], id="unique-arrow"),
        pytest.param(pd.Series([7, 8, 7, None]), [0, 2], id="numbers"),
        pytest.param(pd.Series(["a", "b", None, None], dtype=object), [], id="objects"),
        pytest.param(_chunked(["REL-0001", "REL-0002"], ["REL-0001"]), [0, 2], id="chunked"),
        pytest.param(_chunked(["REL-0001"], ["REL-0002"]), [], id="chunked-unique"),
    ],
)
def test_duplicated_is_a_boolean_mask_of_repeats(series, repeated):
    mask = duplicated(series)

    assert mask.dtype == np.bool_
    assert np.flatnonzero(mask).tolist() == repeated


def _with_a_null_that_holds_bytes() -> pa.Array:
    """``["REL-0001", null]`` whose null slot still holds the 8 bytes ``REL-0002``."""
    validity = pa.py_buffer(np.packbits([1, 0], bitorder="little").tobytes())
    offsets = pa.py_buffer(np.array([0, 8, 16], dtype=np.int32).tobytes())
    return pa.Array.from_buffers(
        pa.string(), 2, [validity, offsets, pa.py_buffer(b"REL-0001REL-0002")], null_count=1
    )


@pytest.mark.parametrize(
    ("values", "unique"),
    [
        pytest.param(pa.array(["REL-0001", "REL-0002"]), True, id="8-bytes"),
        pytest.param(pa.array(["REL-001", "REL-002"]), False, id="7-bytes-too-short"),
        pytest.param(
            pa.array(["REL-0001", "REL-0002", "REL-0003"], pa.large_string()), True, id="large"
        ),
        pytest.param(pa.array(["REL-0001"]), False, id="one-value"),
        pytest.param(pa.array(["REL-0001", "REL-0001"]), False, id="all-the-same"),
        pytest.param(pa.array(["REL-0001", "REL-0002", "REL-00003"]), False, id="last-wider"),
        pytest.param(pa.array(["REL-0001", "REL-0002", "R"]).slice(0, 2), True, id="head"),
        pytest.param(pa.array(["X-padding", "REL-0001", "REL-0002"]).slice(1), True, id="tail"),
        pytest.param(pa.array(["A-00000001", "B-00000001"]), True, id="first-byte-differs"),
        pytest.param(pa.array(["REL-000001", "REL-000002"]), True, id="last-byte-differs"),
        pytest.param(pa.array(["ABCDEFGH1IJKLMNOP", "ABCDEFGH2IJKLMNOP"]), True, id="ninth-byte"),
        pytest.param(_with_a_null_that_holds_bytes(), False, id="null"),
        pytest.param(pa.array([1, 2, 3]), False, id="numbers"),
        pytest.param(pa.array([b"REL-0001", b"REL-0002"]), False, id="binary"),
    ],
)
def test_surely_unique_tells_only_distinct_fixed_width_strings(values, unique):
    assert _surely_unique(values) is unique


# --- line numbers --------------------------------------------------------------------------


def _example_lines(path: Path, lines: list[int]) -> list[int]:
    found = [Violation("dtype", "n", len(lines), "bad", [{"line": line} for line in lines])]
    number_lines(found, path)
    return [e["line"] for e in found[0].examples]


def test_number_lines_counts_a_row_with_an_empty_first_cell(tmp_path):
    path = tmp_path / "small.csv"
    path.write_text("id,n\n\n,1\nb,x\n", encoding="utf-8")

    assert _example_lines(path, [2, 3]) == [3, 4]


def test_number_lines_reads_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "small.csv"
    path.write_bytes(b"id,n\n\nr\xe9,1\nb,x\n")

    assert _example_lines(path, [3]) == [4]


def test_number_lines_keeps_the_line_of_a_row_past_the_end_of_the_file(tmp_path):
    path = tmp_path / "small.csv"
    path.write_text("id,n\n\na,1\n", encoding="utf-8")

    assert _example_lines(path, [2, 9]) == [3, 9]


# --- overlap of small datasets -------------------------------------------------------------


def _text_label_config() -> ModelConfig:
    return _small_config(
        columns={"label": {"dtype": "category", "categories": ["yes", "no"]}},
        target={"column": "label", "positive": "yes"},
    )


def test_overlap_by_content_tells_text_labels_apart(tmp_path):
    train = _small_frame(tmp_path, "t0,2026-01-10,1,0.5,yes", "t1,2026-01-10,2,0.5,no")
    evaluation = pd.DataFrame(
        {"id": ["e0", "e1"], "day": "2026-01-10", "n": [1, 2], "x": 0.5, "label": ["no", "no"]}
    )

    found = check_overlap(train, evaluation, _text_label_config())

    assert [(v.check, v.column, v.count, v.examples) for v in found] == [
        ("train_eval_overlap", None, 1, [{"line": 3, "id": "e1"}])
    ]


@pytest.mark.parametrize("without", ["train", "eval"])
def test_overlap_by_id_needs_the_id_column_in_both_splits(tmp_path, without):
    train = _small_frame(tmp_path, *_labelled("10"))
    evaluation = train.copy()
    if without == "train":
        train = train.drop(columns=["id"])
    else:
        evaluation = evaluation.drop(columns=["id"])

    found = check_overlap(train, evaluation, _small_config())

    assert [(v.check, v.column, v.count) for v in found] == [("train_eval_overlap", None, 2)]


def test_overlap_by_id_reads_train_ids_stored_in_chunks():
    config = _small_config()
    columns = {"day": "2026-01-10", "n": [1, 2, 3], "x": 0.5, "label": [1, 0, 1]}
    train = pd.DataFrame({"id": _chunked(["a0001", "a0002"], ["a0003"]), **columns})
    evaluation = pd.DataFrame({"id": pd.Series(["b0001", "a0003", None], dtype="str")})

    found = check_overlap(train, evaluation, config)

    assert [(v.check, v.column, v.count, v.message, v.examples) for v in found] == [
        (
            "train_eval_overlap",
            "id",
            1,
            "eval `id` values also appear in train",
            [{"line": 3, "id": "a0003", "value": "a0003"}],
        )
    ]
