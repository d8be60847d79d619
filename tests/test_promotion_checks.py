"""Promotion checks on small hand-made cases: both sides of every limit, every verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from slipway.manifests import Manifest, Rollout
from slipway.promote import checks
from slipway.promote.checks import FAIL, PASS, SKIPPED

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32


LEFT_OUT = object()  # a promotion rule given as this is left out of the manifest


def _production(**promotion) -> Manifest:
    rules = {"from": "staging", "soak_hours": 24, **promotion}
    rules = {name: value for name, value in rules.items() if value is not LEFT_OUT}
    return Manifest(
        environment="production",
        model="release-risk",
        version=7,
        digest=DIGEST,
        promotion=rules,
    )


def _tags(hours_ago: float | None = 30, smoke: str | None = "pass", **extra) -> dict[str, str]:
    tags = {"slipway.gate": "pass", "slipway.digest": DIGEST}
    if hours_ago is not None:
        tags[checks.deployed_tag("staging")] = (NOW - timedelta(hours=hours_ago)).isoformat()
    if smoke is not None:
        tags[checks.smoke_tag("staging")] = smoke
    return {**tags, **extra}


@pytest.mark.parametrize(
    ("changed", "status", "reason"),
    [
        (["environments/staging.yaml"], PASS, "changes only environments/staging.yaml"),
        ([], FAIL, "changes no environment manifest"),
        (["model/train.py"], FAIL, "changes no environment manifest"),
        (
            ["environments/staging.yaml", "environments/production.yaml"],
            FAIL,
            "changes 2 manifests: environments/production.yaml, environments/staging.yaml",
        ),
        (
            ["environments/staging.yaml", "model/train.py"],
            FAIL,
            "also changes model/train.py; promote alone",
        ),
    ],
)
def test_one_environment_per_pull_request(changed, status, reason):
    assert checks.one_environment(changed) == checks.Check("one-environment", status, reason)


def test_only_version_digest_and_rollout_may_move():
    before = _production()
    assert checks.promoted_fields(None, before).status == PASS
    moved = before.model_copy(update={"version": 8, "digest": "sha256:" + "cd" * 32})
    assert checks.promoted_fields(before, moved) == checks.Check(
        "fields", PASS, "changes digest and version"
    )
    assert checks.promoted_fields(before, before) == checks.Check(
        "fields", FAIL, "changes neither version, digest nor rollout"
    )
    canary = Rollout(mode="canary", candidate_version=8, canary_percent=10)
    started = before.model_copy(update={"rollout": canary})
    assert checks.promoted_fields(before, started) == checks.Check(
        "fields", PASS, "changes rollout"
    )
    moved_target = before.model_copy(update={"target": "other"})
    assert checks.promoted_fields(before, moved_target) == checks.Check(
        "fields", FAIL, "also changes target: not a promotion"
    )
    loosened = _production(soak_hours=0.5)
    found = checks.promoted_fields(before, loosened.model_copy(update={"version": 8}))
    assert found == checks.Check("fields", FAIL, "also changes promotion: not a promotion")


@pytest.mark.parametrize(
    ("verdict", "status", "reason"),
    [
        ("pass", PASS, "v7 passed its gate"),
        ("fail", FAIL, "v7's gate verdict is fail"),
        ("inconclusive", FAIL, "v7's gate verdict is inconclusive"),
        (None, FAIL, "v7 was never gated; run `slipway gate`"),
    ],
)
def test_gate_verdict(verdict, status, reason):
    tags = {} if verdict is None else {"slipway.gate": verdict}
    assert checks.gate_passed(7, tags) == checks.Check("gate", status, reason)


def test_digest_must_be_the_packaged_one():
    manifest = _production()
    assert checks.digest_matches(manifest, {"slipway.digest": DIGEST}).status == PASS
    other = "sha256:" + "00" * 32
    found = checks.digest_matches(manifest, {"slipway.digest": other})
    assert found == checks.Check("digest", FAIL, f"the manifest says {DIGEST}, v7 is {other}")
    assert checks.digest_matches(manifest, {}).reason == "v7 has no Bento; run `slipway package`"


@pytest.mark.parametrize(
    ("hours_ago", "status"),
    [(24, PASS), (24 + 1 / 3600, PASS), (24 - 1 / 3600, FAIL), (0, FAIL), (100, PASS)],
)
def test_soak_limit_on_both_sides(hours_ago, status):
    assert checks.soaked(_production(), _tags(hours_ago), NOW).status == status


def test_soak_reasons_are_exact():
    short = checks.soaked(_production(), _tags(hours_ago=6), NOW)
    assert short.reason == "v7 has run in staging for 6.0 h of the 24 h soak; 18.0 h to go"
    done = checks.soaked(_production(), _tags(hours_ago=30), NOW)
    assert done.reason == "v7 ran in staging for 30.0 h (soak 24 h) with passing smoke tests"
    assert checks.soaked(_production(), _tags(hours_ago=None), NOW) == checks.Check(
        "stage", FAIL, "v7 never ran in staging; promote it there"
    )
    failed = checks.soaked(_production(), _tags(smoke="fail"), NOW)
    assert failed == checks.Check("stage", FAIL, "v7's smoke tests in staging: fail")
    assert checks.soaked(_production(), _tags(smoke=None), NOW).status == FAIL
    garbled = _tags(**{checks.deployed_tag("staging"): "yesterday"})
    assert checks.soaked(_production(), garbled, NOW).status == FAIL


def test_zero_soak_needs_only_a_passing_run_in_the_stage_before():
    manifest = _production(soak_hours=0)
    assert checks.soaked(manifest, _tags(hours_ago=0), NOW).status == PASS
    assert checks.soaked(manifest, _tags(hours_ago=0, smoke="fail"), NOW).status == FAIL


def test_the_first_stage_has_no_stage_before_it():
    staging = Manifest(environment="staging", model="release-risk", version=3)
    assert checks.soaked(staging, {}, NOW) == checks.Check(
        "stage", SKIPPED, "staging is the first stage"
    )


def test_a_deploy_time_without_a_zone_is_read_as_utc():
    tags = _tags(**{checks.deployed_tag("staging"): "2026-11-30T12:00:00"})
    assert checks.soaked(_production(), tags, NOW).status == PASS  # exactly 24 h


FREEZE = {"start": "2026-12-01T00:00:00+00:00", "end": "2026-12-02T00:00:00+00:00", "reason": "x"}


@pytest.mark.parametrize(
    ("moment", "status"),
    [
        (datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC), PASS),
        (datetime(2026, 12, 1, 0, 0, tzinfo=UTC), FAIL),  # the start is frozen
        (datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC), FAIL),
        (datetime(2026, 12, 2, 0, 0, tzinfo=UTC), PASS),  # the end is not
    ],
)
def test_freeze_window_edges(moment, status):
    manifest = _production(freeze=[FREEZE])
    assert checks.not_frozen(manifest, moment, None).status == status


def test_freeze_reasons_and_the_override():
    manifest = _production(freeze=[{**FREEZE, "reason": "year-end release freeze"}])
    frozen = checks.not_frozen(manifest, NOW, None)
    assert frozen == checks.Check(
        "freeze",
        FAIL,
        "frozen until 2026-12-02T00:00:00+00:00 (year-end release freeze); "
        "the label slipway/override-freeze lifts it",
    )
    lifted = checks.not_frozen(manifest, NOW, "octocat")
    assert lifted.status == PASS and "lifted by @octocat with slipway/override-freeze" in (
        lifted.reason
    )
    assert checks.not_frozen(_production(), NOW, None).reason == "no freeze window in force"


def test_verdict_fails_on_any_failure_and_ignores_skips():
    ok, skipped = checks.Check("a", PASS, ""), checks.Check("b", SKIPPED, "")
    assert checks.verdict([ok, skipped]) == PASS
    assert checks.verdict([ok, checks.Check("c", FAIL, "")]) == FAIL
    assert checks.verdict([]) == PASS


@pytest.mark.parametrize(
    ("rules", "named"),
    [
        ({"soak_hours": -1}, "soak_hours"),
        ({"from": LEFT_OUT, "soak_hours": 5}, "needs `from`"),
        ({"from": None, "soak_hours": 5}, "needs `from`"),  # written as null: the same
        ({"from": "production"}, "from"),
        ({"freeze": [{**FREEZE, "end": FREEZE["start"]}]}, "end after it starts"),
        ({"freeze": [{**FREEZE, "start": "2026-12-01T00:00:00"}]}, "timezone"),
    ],
)
def test_invalid_promotion_rules_are_refused(rules, named):
    with pytest.raises(ValueError, match=named):
        _production(**rules)


def _canary(candidate: int | None) -> Manifest:
    if candidate is None:
        return _production()
    rollout = Rollout(mode="canary", candidate_version=candidate, canary_percent=10)
    return _production().model_copy(update={"rollout": rollout})


@pytest.mark.parametrize(
    ("candidate", "tags", "status", "reason"),
    [
        (None, None, SKIPPED, "no candidate in the rollout"),
        (8, {"slipway.gate": "pass"}, PASS, "candidate v8 passed its gate"),
        (8, {"slipway.gate": "fail"}, FAIL, "candidate v8's gate verdict is fail"),
        (8, {}, FAIL, "candidate v8's gate verdict is none"),
        (8, None, FAIL, "candidate v8 is not in the registry"),
    ],
)
def test_a_rollout_candidate_must_have_passed_its_gate(candidate, tags, status, reason):
    found = checks.candidate_gated(_canary(candidate), tags)
    assert found == checks.Check("candidate", status, reason)


@pytest.mark.parametrize(
    ("open_files", "status", "reason"),
    [
        ({}, PASS, "no other open pull request changes environments/production.yaml"),
        (
            {5: ["environments/production.yaml"]},
            PASS,
            "no other open pull request changes environments/production.yaml",
        ),  # this pull request itself
        (
            {6: ["environments/staging.yaml"]},
            PASS,
            "no other open pull request changes environments/production.yaml",
        ),
        (
            {6: ["environments/production.yaml"]},
            FAIL,
            "#6 also changes environments/production.yaml; merge or close it first",
        ),
        (
            {9: ["environments/production.yaml"], 6: ["README.md", "environments/production.yaml"]},
            FAIL,
            "#6, #9 also change environments/production.yaml; merge or close it first",
        ),
    ],
)
def test_one_open_promotion_per_environment(open_files, status, reason):
    found = checks.one_open_promotion("environments/production.yaml", 5, open_files)
    assert found == checks.Check("one-open-promotion", status, reason)


IMAGE = "registry.example/release-risk:v7@sha256:" + "ef" * 32


def _on_kubernetes(image: str | None = IMAGE, **kubernetes) -> Manifest:
    section = {
        "repository": "registry.example/release-risk",
        "git_url": "https://git.example/deploy.git",
        "image": image,
        **kubernetes,
    }
    return Manifest(
        environment="production",
        model="release-risk",
        version=7,
        digest=DIGEST,
        target="kubernetes",
        kubernetes=section,
    )


def test_a_kubernetes_promotion_may_change_its_rendered_objects_and_no_one_elses():
    own = [
        "environments/production.yaml",
        "environments/kubernetes/production/deployment.yaml",
        "environments/kubernetes/argocd/production.yaml",
        "environments/kubernetes/flux/production.yaml",
    ]
    assert checks.one_environment(own) == checks.Check(
        "one-environment", PASS, "changes only environments/production.yaml"
    )
    theirs = [
        "environments/production.yaml",
        "environments/kubernetes/staging/deployment.yaml",
        "environments/kubernetes/argocd/staging.yaml",
    ]
    assert checks.one_environment(theirs) == checks.Check(
        "one-environment",
        FAIL,
        "also changes environments/kubernetes/argocd/staging.yaml, "
        "environments/kubernetes/staging/deployment.yaml; promote alone",
    )
    # A file one folder down is not a manifest; a manifest is a .yaml right in environments/.
    assert checks.one_environment(["environments/old/production.yaml"]).status == FAIL
    assert checks.one_environment(["environments/production.yml"]).reason == (
        "changes no environment manifest"
    )


def test_the_image_of_a_kubernetes_target_moves_as_kubernetes_image_and_nothing_else_does():
    before = _on_kubernetes()
    image = "registry.example/release-risk:v8@sha256:" + "12" * 32
    moved = _on_kubernetes(image=image).model_copy(update={"version": 8})
    assert checks.promoted_fields(before, moved) == checks.Check(
        "fields", PASS, "changes kubernetes.image and version"
    )
    # The image and the replicas together: the section as a whole is a rule change.
    bigger = _on_kubernetes(image=image, min_replicas=3)
    assert checks.promoted_fields(before, bigger) == checks.Check(
        "fields", FAIL, "also changes kubernetes: not a promotion"
    )
    assert checks.promoted_fields(before, _on_kubernetes(min_replicas=3)) == checks.Check(
        "fields", FAIL, "also changes kubernetes: not a promotion"
    )
    # An image named for the first time (none before) moves the section from a default too.
    first = _on_kubernetes(image=None)
    assert checks.promoted_fields(first, before) == checks.Check(
        "fields", PASS, "changes kubernetes.image"
    )


def test_the_image_check_on_every_branch():
    manifest = _on_kubernetes()
    assert checks.image_matches(manifest, {"slipway.image": IMAGE}) == checks.Check(
        "image", PASS, "kubernetes.image is the image pushed for v7"
    )
    other = "registry.example/release-risk:v7@sha256:" + "00" * 32
    assert checks.image_matches(manifest, {"slipway.image": other}) == checks.Check(
        "image", FAIL, f"kubernetes.image is {IMAGE}, but v7's is {other}"
    )
    assert checks.image_matches(manifest, {}) == checks.Check(
        "image", FAIL, "v7 has no pushed image; run the image workflow for it"
    )
    assert checks.image_matches(_production(), {"slipway.image": IMAGE}) == checks.Check(
        "image", SKIPPED, "target local runs the Bento, not an image"
    )


def test_the_rendered_check_on_every_branch():
    assert checks.rendered(None) == checks.Check(
        "rendered", SKIPPED, "target local: nothing is rendered"
    )
    assert checks.rendered([]) == checks.Check(
        "rendered", PASS, "the committed objects are what the manifest renders"
    )
    assert checks.rendered(["a.yaml", "b.yaml"]) == checks.Check(
        "rendered",
        FAIL,
        "a.yaml, b.yaml differ from what the manifest renders; run `slipway render ENV` and "
        "commit them",
    )


def test_deploy_and_smoke_tags_and_the_check_as_a_dict():
    assert checks.deployed_tag("staging") == "slipway.deployed.staging"
    assert checks.smoke_tag("staging") == "slipway.smoke.staging"
    assert checks.Check("gate", PASS, "why").to_dict() == {
        "check": "gate",
        "status": "pass",
        "reason": "why",
    }


def test_soak_verdicts_exactly_on_each_side_of_the_limit_and_with_bad_tags():
    manifest = _production(soak_hours=1.5)
    at = checks.soaked(manifest, _tags(hours_ago=1.5), NOW)
    assert at == checks.Check(
        "stage", PASS, "v7 ran in staging for 1.5 h (soak 1.5 h) with passing smoke tests"
    )
    short = checks.soaked(manifest, _tags(hours_ago=1.5 - 1 / 3600), NOW)
    assert short == checks.Check(
        "stage", FAIL, "v7 has run in staging for 1.5 h of the 1.5 h soak; 0.0 h to go"
    )
    assert checks.soaked(manifest, _tags(smoke=None), NOW) == checks.Check(
        "stage", FAIL, "v7's smoke tests in staging: None"
    )
    garbled = _tags(**{checks.deployed_tag("staging"): "yesterday"})
    assert checks.soaked(manifest, garbled, NOW) == checks.Check(
        "stage", FAIL, "slipway.deployed.staging is not a time: 'yesterday'"
    )
    # A time with its own zone is compared as that moment: 13:00+02:00 is 11:00 UTC, 1 h ago.
    zoned = _tags(**{checks.deployed_tag("staging"): "2026-12-01T13:00:00+02:00"})
    assert checks.soaked(manifest, zoned, NOW).reason == (
        "v7 has run in staging for 1.0 h of the 1.5 h soak; 0.5 h to go"
    )


def test_every_check_names_itself_on_every_branch():
    manifest = _production()
    assert checks.digest_matches(manifest, {"slipway.digest": DIGEST}) == checks.Check(
        "digest", PASS, f"{DIGEST} is v7's Bento"
    )
    assert checks.digest_matches(manifest, {}) == checks.Check(
        "digest", FAIL, "v7 has no Bento; run `slipway package`"
    )
    assert checks.not_frozen(manifest, NOW, None) == checks.Check(
        "freeze", PASS, "no freeze window in force"
    )
    frozen = _production(freeze=[FREEZE])
    assert checks.not_frozen(frozen, NOW, "octocat").check == "freeze"
    assert checks.promoted_fields(None, manifest) == checks.Check("fields", PASS, "a new manifest")


def test_moving_to_a_kubernetes_target_or_changing_two_rules_is_not_a_promotion():
    local = _production()
    assert checks.promoted_fields(local, _on_kubernetes()) == checks.Check(
        "fields", FAIL, "also changes kubernetes, promotion, target: not a promotion"
    )
    assert checks.promoted_fields(_on_kubernetes(), local) == checks.Check(
        "fields", FAIL, "also changes kubernetes, promotion, target: not a promotion"
    )


def test_soak_hours_are_seconds_over_3600_to_the_tenth():
    manifest = _production(soak_hours=1)
    # 1,980 s ran: 0.55 h shown as 0.6, and 1,620 s to go: 0.45 h shown as 0.5.
    ran = checks.soaked(manifest, _tags(hours_ago=1980 / 3600), NOW)
    assert ran.reason == "v7 has run in staging for 0.6 h of the 1 h soak; 0.5 h to go"
