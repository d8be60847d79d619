"""``model/slipway.yaml``: loading, validation errors that name the key, and ``--param``."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract_helpers import MODEL, edit_yaml, make_project
from slipway.cli import main
from slipway.config import Impute, load_config, parse_param
from slipway.errors import ConfigError


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def _set(path: str, value):
    """A yaml change setting the dotted ``path`` to ``value``."""

    def change(document: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            document = document[key]
        document[last] = value

    return change


def _delete(path: str):
    def change(document: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            document = document[key]
        del document[last]

    return change


def _add_feature(name: str):
    return lambda document: document["features"].append(name)


# id, change to the parsed yaml, texts the error must contain (the key path first)
INVALID = [
    pytest.param(
        _set("colour", "blue"),
        ["colour", "Extra inputs are not permitted"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        _set("data.trian", "data/train.csv"),
        ["data.trian", "Extra inputs"],
        id="unknown-nested-key",
    ),
    pytest.param(
        _set("columns.code_changes.maximum", 5),
        ["columns.code_changes.maximum"],
        id="unknown-column-key",
    ),
    pytest.param(
        _add_feature("lines_added"),
        ["(top level)", "['lines_added']", "not declared under `columns`"],
        id="feature-not-declared",
    ),
    pytest.param(
        _set("data.id_column", "release"),
        ["['release']", "not declared under `columns`"],
        id="id-column-not-declared",
    ),
    pytest.param(
        _set("group_column", "squad"), ["['squad']", "not declared"], id="group-column-not-declared"
    ),
    pytest.param(
        _add_feature("high_risk"),
        ["the target `high_risk` cannot also be a feature"],
        id="target-is-a-feature",
    ),
    pytest.param(
        _add_feature("team"),
        ["['team']", "must be declared with dtype int or float"],
        id="feature-not-numeric",
    ),
    pytest.param(
        _set("columns.test_coverage.nulls", {"impute": "unknown"}),
        ["columns.test_coverage", "nulls.impute 'unknown' is not a number"],
        id="impute-text-into-number-column",
    ),
    pytest.param(
        _set("columns.team", {"dtype": "category"}),
        ["columns.team", "needs its list of allowed `categories`"],
        id="category-without-categories",
    ),
    pytest.param(
        _set("columns.team", {"dtype": "category", "categories": []}),
        ["columns.team", "categories"],
        id="category-with-empty-categories",
    ),
    pytest.param(
        _set("columns.code_changes", {"dtype": "int", "min": 10, "max": 5}),
        ["columns.code_changes", "min (10.0) is greater than max (5.0)"],
        id="min-above-max",
    ),
    pytest.param(_set("columns.team.dtype", "text"), ["columns.team.dtype"], id="unknown-dtype"),
    pytest.param(
        _set("columns.test_coverage.nulls", "allow"),
        ["columns.test_coverage.nulls"],
        id="unknown-null-policy",
    ),
    pytest.param(
        _delete("schema_version"), ["schema_version", "Field required"], id="missing-schema-version"
    ),
    pytest.param(_set("schema_version", 0), ["schema_version"], id="schema-version-zero"),
    pytest.param(_set("name", "Release Risk"), ["name", "pattern"], id="name-not-a-slug"),
    pytest.param(
        _delete("data.id_column"), ["data.id_column", "Field required"], id="missing-id-column"
    ),
    pytest.param(_set("data.min_rows", 0), ["data.min_rows"], id="min-rows-zero"),
    pytest.param(_set("features", []), ["features"], id="no-features"),
    pytest.param(
        _set("gates.regression.confidence", 0.4),
        ["gates.regression.confidence"],
        id="confidence-too-low",
    ),
    pytest.param(
        _set("gates.thresholds.speed", {"min": 1}), ["gates.thresholds"], id="unknown-metric"
    ),
]


@pytest.mark.parametrize(("change", "expected"), INVALID)
def test_invalid_config_names_the_key(config_path, change, expected):
    edit_yaml(config_path, change)

    with pytest.raises(ConfigError) as raised:
        load_config(config_path)

    assert raised.value.message.startswith(f"{config_path} is invalid: ")
    for text in expected:
        assert text in raised.value.message
    assert raised.value.hint == "correct those keys (README: slipway.yaml reference)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("name: [unclosed\n", "is not valid YAML", id="yaml-syntax"),
        pytest.param("- a\n- list\n", "must be a mapping of settings", id="a-list"),
        pytest.param("", "must be a mapping of settings", id="empty-file"),
    ],
)
def test_unparsable_config_is_a_config_error(config_path, text, expected):
    config_path.write_text(text, encoding="utf-8")

    with pytest.raises(ConfigError, match=expected) as raised:
        load_config(config_path)

    assert str(config_path) in raised.value.message
    assert raised.value.hint


@pytest.mark.parametrize("missing", ["nowhere/slipway.yaml", "."], ids=["no-file", "a-directory"])
def test_missing_config_says_how_to_point_at_one(tmp_path, missing):
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path / missing)

    assert raised.value.message == f"no model configuration at {tmp_path / missing}"
    assert "--config" in raised.value.hint


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            _set("colour", "blue"), "colour: Extra inputs are not permitted", id="unknown-key"
        ),
        pytest.param(_add_feature("lines_added"), "['lines_added']", id="undeclared-feature"),
        pytest.param(
            _set("columns.team", {"dtype": "category"}), "columns.team", id="no-categories"
        ),
        pytest.param(
            _set("columns.past_defects", {"dtype": "int", "min": 9, "max": 1}),
            "columns.past_defects",
            id="min-above-max",
        ),
    ],
)
@pytest.mark.parametrize("command", ["validate", "lock"])
def test_cli_exits_2_with_error_and_fix(config_path, capsys, tmp_path, change, expected, command):
    edit_yaml(config_path, change)

    code = main([command, "--config", str(config_path), "--out", str(tmp_path / "out")])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.startswith(f"error: {config_path} is invalid: ")
    assert expected in captured.err
    assert "\n  fix: correct those keys" in captured.err
    assert not (tmp_path / "out").exists()


def test_cli_missing_config_exits_2(tmp_path, capsys):
    code = main(["validate", "--config", str(tmp_path / "slipway.yaml")])

    err = capsys.readouterr().err
    assert code == 2
    assert f"error: no model configuration at {tmp_path / 'slipway.yaml'}" in err
    assert "fix: run from the repository root or pass --config" in err


def test_committed_config_loads():
    config = load_config(MODEL / "slipway.yaml")

    assert (config.name, config.schema_version) == ("release-risk", 1)
    assert config.root == MODEL
    assert config.path(config.data.train) == MODEL / "data" / "train.csv"
    assert config.data.min_rows == 500
    assert config.columns["test_coverage"].nulls == Impute(impute=0.0)
    assert config.columns["team"].nulls == "reject"
    assert config.target.column not in config.features


@pytest.mark.parametrize(
    ("column", "impute"),
    [("test_coverage", 50), ("test_coverage", "12.5"), ("team", "unknown"), ("release_id", "n/a")],
)
def test_impute_values_that_fit_the_column_are_accepted(config_path, column, impute):
    edit_yaml(config_path, _set(f"columns.{column}.nulls", {"impute": impute}))

    assert load_config(config_path).columns[column].nulls == Impute(impute=impute)


def test_absolute_data_paths_are_kept(config_path, tmp_path):
    elsewhere = tmp_path / "elsewhere" / "train.csv"
    edit_yaml(config_path, _set("data.train", str(elsewhere)))

    config = load_config(config_path)

    assert config.path(config.data.train) == elsewhere
    assert config.path(config.data.eval) == config_path.parent / "data" / "eval.csv"


def test_defaults_apply_to_omitted_sections(config_path):
    edit_yaml(config_path, _delete("gates"))
    edit_yaml(config_path, _delete("training"))

    config = load_config(config_path)

    assert config.training.seed == 42
    assert config.training.params == {}
    assert config.gates.regression.metrics == ["recall", "roc_auc"]
    assert config.gates.thresholds == {}


def test_with_params_overrides_without_touching_the_original():
    config = load_config(MODEL / "slipway.yaml")

    changed = config.with_params({"max_depth": 3, "learning_rate": 0.1})

    assert changed.training.params["max_depth"] == 3
    assert changed.training.params["learning_rate"] == 0.1
    assert changed.training.params["n_estimators"] == 100
    assert config.training.params["max_depth"] == 8
    assert "learning_rate" not in config.training.params


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_depth=6", ("max_depth", 6)),
        ("threshold=0.35", ("threshold", 0.35)),
        ("class_weight=null", ("class_weight", None)),
        ("bootstrap=false", ("bootstrap", False)),
        ("model=gradient_boosting", ("model", "gradient_boosting")),
        (" max_depth =6", ("max_depth", 6)),
        ("note=a=b", ("note", "a=b")),
    ],
)
def test_parse_param(text, expected):
    assert parse_param(text) == expected


@pytest.mark.parametrize("text", ["max_depth", "=6", ""])
def test_parse_param_rejects_text_that_is_not_key_value(text):
    with pytest.raises(ConfigError, match="is not KEY=VALUE") as raised:
        parse_param(text)

    assert raised.value.hint == "write e.g. --param max_depth=6"
