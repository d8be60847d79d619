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
from slipway.config import load_config
from slipway.errors import DataError
from slipway.propose.contract import check_frame, prepare, read_dataset
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
    assert "under another id" in found["message"]
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


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"", "is empty (no header, no rows)", id="zero-bytes"),
        pytest.param(b"\n\n", "is empty (no header, no rows)", id="blank-lines"),
        pytest.param(b"a,b\n1,2\n3,4,5,6\n", "is not valid CSV", id="ragged-rows"),
        pytest.param(b"release_id\n\xff\xfe\xfa\n", "is not valid CSV", id="not-utf8"),
    ],
)
def test_unreadable_dataset_is_an_error_not_a_violation(config_path, capsys, content, message):
    path = data_path(config_path, "train")
    path.write_bytes(content)

    with pytest.raises(DataError) as raised:
        _validate(config_path)
    code, out, err = _validate_cli(capsys, config_path)

    assert str(path) in raised.value.message
    assert message in raised.value.message
    assert code == 2
    assert out == ""
    assert err.startswith(f"error: dataset {path} ")
    assert message in err
    assert "fix:" in err


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
    from slipway.propose.contract import duplicated

    series = pd.Series(ids, dtype="string[pyarrow]")
    assert np.flatnonzero(duplicated(series)).tolist() == repeated
    sliced = pd.Series(["X-padding-0", *ids], dtype="string[pyarrow]").iloc[1:]
    assert np.flatnonzero(duplicated(sliced)).tolist() == repeated


def test_overlap_by_content_ignores_how_numbers_are_written(config_path):
    from slipway.propose.contract import check_overlap

    config = load_config(config_path)
    train = read_dataset(data_path(config_path, "train")).head(3)
    copied = train.copy()
    copied["release_id"] = ["NEW-1", "NEW-2", "NEW-3"]
    copied["code_changes"] = copied["code_changes"].astype(float)  # 70 written as 70.0
    found = check_overlap(train, copied, config)
    assert [(v.check, v.column, v.count) for v in found] == [("train_eval_overlap", None, 3)]
