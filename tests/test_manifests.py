"""The manifests' promotion rules and the JSON Schema committed beside them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from slipway.manifests import (
    SCHEMA_FILE,
    SCHEMA_LINE,
    Manifest,
    load_manifest,
    parse_manifest,
    render_manifest,
    schema_text,
)

REPO = Path(__file__).resolve().parent.parent
ENVIRONMENTS = REPO / "environments"


def test_the_committed_schema_is_the_manifest_model():
    committed = (ENVIRONMENTS / SCHEMA_FILE).read_text()
    assert committed == schema_text(), (
        "regenerate it: python -c 'from slipway.manifests import schema_text; "
        'print(schema_text(), end="")\' > environments/manifest.schema.json'
    )


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_each_manifest_points_editors_at_the_schema(environment):
    text = (ENVIRONMENTS / f"{environment}.yaml").read_text()
    assert text.splitlines()[0] == SCHEMA_LINE


def test_the_stage_path_is_staging_then_production():
    staging = load_manifest(ENVIRONMENTS / "staging.yaml")
    production = load_manifest(ENVIRONMENTS / "production.yaml")
    assert (staging.promotion.from_stage, staging.promotion.soak_hours) == (None, 0)
    assert (production.promotion.from_stage, production.promotion.soak_hours) == ("staging", 24)
    assert staging.target == production.target == "local"


def test_rules_with_a_freeze_window_round_trip():
    manifest = Manifest(
        environment="production",
        model="release-risk",
        version=3,
        promotion={
            "from": "staging",
            "soak_hours": 1.5,
            "freeze": [
                {"start": "2026-12-20T00:00:00Z", "end": "2027-01-04T00:00:00Z", "reason": "eoy"}
            ],
        },
    )
    text = render_manifest(manifest)
    assert text.splitlines()[0] == SCHEMA_LINE
    assert parse_manifest(text, "x") == manifest
    assert yaml.safe_load(text)["promotion"]["from"] == "staging"


def test_an_unknown_target_is_refused_with_its_key():
    text = (ENVIRONMENTS / "staging.yaml").read_text().replace("target: local", "target: mars")
    with pytest.raises(Exception, match="target"):
        parse_manifest(text, "staging.yaml")
