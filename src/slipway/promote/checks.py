"""The checks a promotion must pass before it merges (``slipway promote ENV --check``).

Each check is a pure function of what the pull request changes, the registry's tags on the
version and the time, and explains its verdict. Deploys record on a version where it ran and
how its smoke tests went (:func:`deployed_tag`, :func:`smoke_tag`); the soak check reads them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from slipway.manifests import Manifest
from slipway.promote.kubernetes import IMAGE_TAG, owned
from slipway.registry import PACKAGE_DIGEST_TAG

PASS, FAIL, SKIPPED = "pass", "fail", "skipped"
GATE_TAG = "slipway.gate"
DIGEST_TAG = PACKAGE_DIGEST_TAG  # set by `slipway package`: the Bento's digest
OVERRIDE_FREEZE_LABEL = "slipway/override-freeze"
# What a promotion may move: the stable version and its digest, and the rollout of a candidate
# beside it (starting, finishing or aborting a canary). The rest are the environment's rules.
PROMOTED_FIELDS = frozenset({"version", "digest", "rollout", "kubernetes.image"})


def deployed_tag(environment: str) -> str:
    """Tag on a version: when it started serving in ``environment`` (ISO 8601, UTC)."""
    return f"slipway.deployed.{environment}"


def smoke_tag(environment: str) -> str:
    """Tag on a version: ``pass`` or ``fail``, its smoke tests in ``environment``."""
    return f"slipway.smoke.{environment}"


@dataclass(frozen=True)
class Check:
    """One check's verdict and why."""

    check: str
    status: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def one_environment(changed: list[str]) -> Check:
    """A promotion PR changes exactly one manifest and nothing else (but for a kubernetes
    target, the objects rendered from that manifest)."""
    manifests = sorted(
        p
        for p in changed
        if p.startswith("environments/") and p.count("/") == 1 and p.endswith(".yaml")
    )
    environment = (
        manifests[0].removeprefix("environments/").removesuffix(".yaml") if manifests else ""
    )
    others = sorted(p for p in changed if p not in manifests and not owned(p, environment))
    if len(manifests) == 1 and not others:
        return Check("one-environment", PASS, f"changes only {manifests[0]}")
    if not manifests:
        return Check("one-environment", FAIL, "changes no environment manifest")
    if len(manifests) > 1:
        return Check(
            "one-environment", FAIL, f"changes {len(manifests)} manifests: {', '.join(manifests)}"
        )
    return Check("one-environment", FAIL, f"also changes {', '.join(others)}; promote alone")


def promoted_fields(before: Manifest | None, after: Manifest) -> Check:
    """Only ``version``, ``digest`` and ``rollout`` move; the rules of the environment (its
    promotion path, soak, freeze windows, target) change by an ordinary reviewed PR."""
    if before is None:
        return Check("fields", PASS, "a new manifest")
    old, new = before.model_dump(), after.model_dump()
    moved = sorted(key for key in new if new[key] != old.get(key))
    if "kubernetes" in moved and old["kubernetes"] and new["kubernetes"]:  # the image moves
        changed = {k for k, v in new["kubernetes"].items() if v != old["kubernetes"].get(k)}
        if changed == {"image"}:
            moved = sorted({*moved} - {"kubernetes"} | {"kubernetes.image"})
    rules = [key for key in moved if key not in PROMOTED_FIELDS]
    if rules:
        return Check("fields", FAIL, f"also changes {', '.join(rules)}: not a promotion")
    if not moved:
        return Check("fields", FAIL, "changes neither version, digest nor rollout")
    return Check("fields", PASS, f"changes {' and '.join(moved)}")


def gate_passed(version: int, tags: dict[str, str]) -> Check:
    """The version passed its gate (the verdict ``slipway gate`` tagged it with)."""
    verdict = tags.get(GATE_TAG)
    if verdict == "pass":
        return Check("gate", PASS, f"v{version} passed its gate")
    if verdict is None:
        return Check("gate", FAIL, f"v{version} was never gated; run `slipway gate`")
    return Check("gate", FAIL, f"v{version}'s gate verdict is {verdict}")


def candidate_gated(manifest: Manifest, tags: dict[str, str] | None) -> Check:
    """A rollout's candidate passed its gate too; ``tags`` are the candidate's (None: no
    candidate, or it could not be read)."""
    candidate = manifest.rollout.candidate_version
    if candidate is None:
        return Check("candidate", SKIPPED, "no candidate in the rollout")
    if tags is None:
        return Check("candidate", FAIL, f"candidate v{candidate} is not in the registry")
    verdict = tags.get(GATE_TAG)
    if verdict == "pass":
        return Check("candidate", PASS, f"candidate v{candidate} passed its gate")
    return Check("candidate", FAIL, f"candidate v{candidate}'s gate verdict is {verdict or 'none'}")


def one_open_promotion(path: str, number: int | None, open_files: dict[int, list[str]]) -> Check:
    """No other open pull request changes the same manifest. ``open_files``: each open pull
    request's number → the files it changes; ``number`` is this one's."""
    others = sorted(n for n, files in open_files.items() if n != number and path in files)
    if others:
        listed = ", ".join(f"#{n}" for n in others)
        return Check(
            "one-open-promotion",
            FAIL,
            f"{listed} also change{'s' if len(others) == 1 else ''} {path}; "
            "merge or close it first",
        )
    return Check("one-open-promotion", PASS, f"no other open pull request changes {path}")


def image_matches(manifest: Manifest, tags: dict[str, str]) -> Check:
    """A kubernetes target names the image the containerize job pushed for that version."""
    if manifest.kubernetes is None:
        return Check("image", SKIPPED, f"target {manifest.target} runs the Bento, not an image")
    stored, named = tags.get(IMAGE_TAG), manifest.kubernetes.image
    if stored is None:
        return Check(
            "image",
            FAIL,
            f"v{manifest.version} has no pushed image; run the image workflow for it",
        )
    if named != stored:
        return Check(
            "image", FAIL, f"kubernetes.image is {named}, but v{manifest.version}'s is {stored}"
        )
    return Check("image", PASS, f"kubernetes.image is the image pushed for v{manifest.version}")


def rendered(differ: list[str] | None) -> Check:
    """A kubernetes target's committed objects are what its manifest renders (None: a local
    target, nothing rendered)."""
    if differ is None:
        return Check("rendered", SKIPPED, "target local: nothing is rendered")
    if differ:
        return Check(
            "rendered",
            FAIL,
            f"{', '.join(differ)} differ from what the manifest renders; run `slipway render "
            "ENV` and commit them",
        )
    return Check("rendered", PASS, "the committed objects are what the manifest renders")


def digest_matches(manifest: Manifest, tags: dict[str, str]) -> Check:
    """The manifest names the digest of the Bento packaged for that version."""
    stored = tags.get(DIGEST_TAG)
    if stored is None:
        return Check("digest", FAIL, f"v{manifest.version} has no Bento; run `slipway package`")
    if manifest.digest != stored:
        return Check(
            "digest", FAIL, f"the manifest says {manifest.digest}, v{manifest.version} is {stored}"
        )
    return Check("digest", PASS, f"{stored} is v{manifest.version}'s Bento")


def soaked(manifest: Manifest, tags: dict[str, str], now: datetime) -> Check:
    """The version ran in the stage before this one, for the soak time, with passing smoke
    tests. Soaked exactly the required hours passes."""
    stage = manifest.promotion.from_stage
    if stage is None:
        return Check("stage", SKIPPED, f"{manifest.environment} is the first stage")
    started = tags.get(deployed_tag(stage))
    if started is None:
        return Check("stage", FAIL, f"v{manifest.version} never ran in {stage}; promote it there")
    smoke = tags.get(smoke_tag(stage))
    if smoke != "pass":
        return Check("stage", FAIL, f"v{manifest.version}'s smoke tests in {stage}: {smoke}")
    try:
        since = datetime.fromisoformat(started)
    except ValueError:
        return Check("stage", FAIL, f"{deployed_tag(stage)} is not a time: {started!r}")
    since = since if since.tzinfo else since.replace(tzinfo=UTC)
    ran = now - since
    needed = timedelta(hours=manifest.promotion.soak_hours)
    hours = ran.total_seconds() / 3600
    if ran < needed:
        left = (needed - ran).total_seconds() / 3600
        return Check(
            "stage",
            FAIL,
            f"v{manifest.version} has run in {stage} for {hours:.1f} h of the "
            f"{manifest.promotion.soak_hours:g} h soak; {left:.1f} h to go",
        )
    return Check(
        "stage",
        PASS,
        f"v{manifest.version} ran in {stage} for {hours:.1f} h "
        f"(soak {manifest.promotion.soak_hours:g} h) with passing smoke tests",
    )


def not_frozen(manifest: Manifest, now: datetime, override_by: str | None) -> Check:
    """No freeze window covers ``now``, or someone lifted it with the override label."""
    windows = [w for w in manifest.promotion.freeze if w.covers(now)]
    if not windows:
        return Check("freeze", PASS, "no freeze window in force")
    window = windows[0]
    until = window.end.isoformat()
    if override_by:
        return Check(
            "freeze",
            PASS,
            f"frozen until {until} ({window.reason}), lifted by @{override_by} with "
            f"{OVERRIDE_FREEZE_LABEL}",
        )
    return Check(
        "freeze",
        FAIL,
        f"frozen until {until} ({window.reason}); the label {OVERRIDE_FREEZE_LABEL} lifts it",
    )


def verdict(checks: list[Check]) -> str:
    """``pass`` when no check failed; skipped checks do not fail a promotion."""
    return FAIL if any(c.status == FAIL for c in checks) else PASS
