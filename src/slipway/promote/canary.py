"""``slipway canary-report ENV``: whether a canary's candidate ships, decided by its predictions.

:func:`canary_report` reads the prediction log of the manifest's rollout (served predictions of
the stable version on route ``stable`` and of the candidate on route ``canary``, from the
canary's first prediction on), joins delayed labels when given, and judges each limit under
``canary:`` in slipway.yaml on the interval of the candidate-vs-stable difference:

- **broken** when the whole interval is beyond the limit, **met** when it is all within,
  **undecided** otherwise; the intervals of all limits hold together with ``confidence``
  (each gets 1 - (1 - confidence) / m, Bonferroni over the m limits judged);
- the verdict is **abort** as soon as any limit is broken, however few the predictions; else
  **wait** until both routes have ``min_predictions``, then **promote** when every limit is
  met, and **wait** while any is undecided.

Errors and latency are counted per scored batch (one request, or the requests the adaptive
batcher merged): the rows of a batch share its time and its failure, so they are one
observation, not many. :func:`finish` and :func:`abort` rewrite the manifest in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slipway.config import Canary, ModelConfig
from slipway.errors import ConfigError, PromotionError
from slipway.fsutil import write_json
from slipway.intervals import newcombe, quantile, quantile_interval, ratio_interval, wilson
from slipway.manifests import Manifest, load_manifest, update_manifest
from slipway.promote import checks
from slipway.promote.rollout_log import Sample, read_labels, read_rollout, sample
from slipway.registry import Registry

SCHEMA = "slipway.canary/1"
PROMOTE, ABORT, WAIT = "promote", "abort", "wait"
MET, BROKEN, UNDECIDED, SKIPPED = "met", "broken", "undecided", "skipped"


@dataclass(frozen=True)
class Estimate:
    """A figure and its interval; a bound of None is unbounded."""

    value: float | None
    low: float | None
    high: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "interval": [self.low, self.high]}


@dataclass(frozen=True)
class Judgement:
    """One limit's verdict on the candidate-vs-stable estimate, and why."""

    limit: str
    status: str
    estimate: Estimate
    threshold: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "status": self.status,
            **self.estimate.to_dict(),
            "threshold": self.threshold,
            "reason": self.reason,
        }


def _bound(value: float | None, spec: str, none: str) -> str:
    return none if value is None else format(value, spec)


def _shown(estimate: Estimate, spec: str) -> str:
    value = _bound(estimate.value, spec, "n/a")
    return f"{value} [{_bound(estimate.low, spec, '-∞')}, {_bound(estimate.high, spec, '∞')}]"


def at_most(limit: str, what: str, estimate: Estimate, threshold: float, spec: str) -> Judgement:
    """Allowed: at most ``threshold``. Met when the interval's top is within it, broken when
    its bottom is beyond it, else undecided."""
    shown = f"{what} {_shown(estimate, spec)}"
    if estimate.high is not None and estimate.high <= threshold:
        return Judgement(limit, MET, estimate, threshold, f"{shown} ≤ {threshold:{spec}}")
    if estimate.low is not None and estimate.low > threshold:
        return Judgement(limit, BROKEN, estimate, threshold, f"{shown} > {threshold:{spec}}")
    reason = f"{shown} straddles {threshold:{spec}}: undecided"
    return Judgement(limit, UNDECIDED, estimate, threshold, reason)


def within(limit: str, what: str, estimate: Estimate, threshold: float, spec: str) -> Judgement:
    """Allowed: between ``-threshold`` and ``threshold``. Met when the whole interval is inside,
    broken when it is all above or all below, else undecided."""
    shown = f"{what} {_shown(estimate, spec)}"
    band = f"±{threshold:{spec.lstrip('+')}}"
    low, high = estimate.low, estimate.high
    if low is not None and high is not None and -threshold <= low and high <= threshold:
        return Judgement(limit, MET, estimate, threshold, f"{shown} within {band}")
    if (low is not None and low > threshold) or (high is not None and high < -threshold):
        return Judgement(limit, BROKEN, estimate, threshold, f"{shown} outside {band}")
    reason = f"{shown} reaches past {band}: undecided"
    return Judgement(limit, UNDECIDED, estimate, threshold, reason)


def skipped(limit: str, reason: str) -> Judgement:
    return Judgement(limit, SKIPPED, Estimate(None, None, None), 0.0, reason)


def verdict(
    predictions: dict[str, int], min_predictions: int, judgements: Sequence[Judgement]
) -> tuple[str, list[str]]:
    """``(promote | abort | wait, reasons)``: abort as soon as any limit is broken (its whole
    interval beyond the limit, however few predictions: that is no guess); otherwise wait until
    every route has ``min_predictions``, then promote when all are met (or skipped), else wait."""
    broken = [f"{j.limit}: {j.reason}" for j in judgements if j.status == BROKEN]
    if broken:
        return ABORT, broken
    short = [
        f"{route} has {n} of {min_predictions} predictions: {min_predictions - n} more needed"
        for route, n in predictions.items()
        if n < min_predictions
    ]
    if short:
        return WAIT, short
    undecided = [f"{j.limit}: {j.reason}" for j in judgements if j.status == UNDECIDED]
    if undecided:
        return WAIT, undecided
    return PROMOTE, [f"{j.limit}: {j.reason}" for j in judgements]


def route_figures(found: Sample, confidence: float, labelled: bool) -> dict[str, Any]:
    """One route's figures, each with its interval at ``confidence``."""
    batches, failed = len(found.batches), found.failed_batches()
    latencies = found.latencies()
    low, high = quantile_interval(latencies, 0.95, confidence)
    error_low, error_high = wilson(failed, batches, confidence)
    share_low, share_high = wilson(found.high_risk, found.answered, confidence)
    recall = None
    if labelled:
        recall_low, recall_high = wilson(found.caught, found.positives, confidence)
        value = found.caught / found.positives if found.positives else None
        recall = {
            **Estimate(value, recall_low, recall_high).to_dict(),
            "labelled_positives": found.positives,
        }
    return {
        "version": found.version,
        "predictions": found.predictions,
        "errors": found.errors,
        "batches": batches,
        "failed_batches": failed,
        "error_rate": Estimate(
            failed / batches if batches else None, error_low, error_high
        ).to_dict(),
        "p95_latency_ms": Estimate(quantile(latencies, 0.95), low, high).to_dict(),
        "high_risk_share": Estimate(
            found.high_risk / found.answered if found.answered else None, share_low, share_high
        ).to_dict(),
        "recall": recall,
    }


def _difference(k1: int, n1: int, k2: int, n2: int, confidence: float) -> Estimate:
    value = k1 / n1 - k2 / n2 if n1 and n2 else None
    return Estimate(value, *newcombe(k1, n1, k2, n2, confidence))


def limit_level(confidence: float, labelled: bool) -> float:
    """The confidence of each limit's interval: ``confidence`` split over the limits judged
    (four with labels, else three), so all of them hold together with ``confidence``."""
    return 1 - (1 - confidence) / (4 if labelled else 3)


def judge(stable: Sample, canary: Sample, limits: Canary, labelled: bool) -> list[Judgement]:
    """Every limit of ``canary:`` on candidate vs stable, the intervals simultaneous."""
    level = limit_level(limits.confidence, labelled)
    errors = _difference(
        canary.failed_batches(),
        len(canary.batches),
        stable.failed_batches(),
        len(stable.batches),
        level,
    )
    share = _difference(canary.high_risk, canary.answered, stable.high_risk, stable.answered, level)
    each = 1 - (1 - level) / 2  # the ratio's two quantile intervals share its level
    canary_p95, stable_p95 = quantile(canary.latencies(), 0.95), quantile(stable.latencies(), 0.95)
    ratio = Estimate(
        canary_p95 / stable_p95 if canary_p95 is not None and stable_p95 else None,
        *ratio_interval(
            quantile_interval(canary.latencies(), 0.95, each),
            quantile_interval(stable.latencies(), 0.95, each),
        ),
    )
    found = [
        at_most(
            "max_error_rate_increase",
            "error rate change",
            errors,
            limits.max_error_rate_increase,
            "+.4f",
        ),
        at_most("max_p95_ratio", "p95 latency ratio", ratio, limits.max_p95_ratio, ".3f"),
        within(
            "max_high_risk_share_change",
            "high-risk share change",
            share,
            limits.max_high_risk_share_change,
            "+.4f",
        ),
    ]
    if labelled:
        drop = _difference(stable.caught, stable.positives, canary.caught, canary.positives, level)
        found.append(
            at_most("max_recall_drop", "recall drop", drop, limits.max_recall_drop, "+.4f")
        )
    else:
        found.append(skipped("max_recall_drop", "no labels given (--labels): not judged"))
    return found


def canary_report(
    environment: str,
    config: ModelConfig,
    manifest: Manifest,
    log_dir: Path,
    labels_path: Path | None = None,
    now: datetime | None = None,
    started: datetime | None = None,
) -> dict[str, Any]:
    """The canary's figures per route, each limit's judgement and the verdict. ``started``:
    when the server running this rollout started; nothing logged before it counts (an earlier
    canary of the same candidate, or the stable version alone)."""
    if manifest.rollout.mode != "canary" or manifest.version is None:
        raise ConfigError(
            f"{environment} runs no canary (rollout mode {manifest.rollout.mode})",
            "set rollout.mode: canary with a candidate_version in environments/"
            f"{environment}.yaml, or report on an environment that runs one",
        )
    now = now or datetime.now(UTC)
    labels = {}
    if labels_path is not None:
        labels = read_labels(
            labels_path, config.data.id_column, config.target.column, config.target.positive
        )
    chosen, seen = read_rollout(log_dir, manifest, now, started)
    stable_version, candidate = str(manifest.version), str(manifest.rollout.candidate_version)
    stable = sample(stable_version, chosen["stable"], labels)
    canary = sample(candidate, chosen["canary"], labels)
    labelled = labels_path is not None
    judgements = judge(stable, canary, config.canary, labelled)
    decided, reasons = verdict(
        {"stable": stable.predictions, "canary": canary.predictions},
        config.canary.min_predictions,
        judgements,
    )
    return {
        "schema": SCHEMA,
        "environment": environment,
        "model": manifest.model,
        "stable_version": stable_version,
        "candidate_version": candidate,
        "canary_percent": manifest.rollout.canary_percent,
        "log_dir": str(log_dir),
        "labels": str(labels_path) if labels_path else None,
        "records": seen,
        "limits": config.canary.model_dump(),
        "limit_confidence": limit_level(config.canary.confidence, labelled),
        "routes": {
            "stable": route_figures(stable, config.canary.confidence, labelled),
            "canary": route_figures(canary, config.canary.confidence, labelled),
        },
        "judgements": [j.to_dict() for j in judgements],
        "verdict": decided,
        "reasons": reasons,
        "generated_at": now.isoformat(timespec="seconds"),
    }


def write_report(document: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / "canary.json"
    write_json(path, document)
    return path


def render(document: dict[str, Any]) -> list[str]:
    """The report as lines of text, from its JSON."""
    lines = []
    for route, figures in document["routes"].items():
        specs = {"error_rate": ".4f", "p95_latency_ms": ".2f", "high_risk_share": ".3f"}
        shown = {
            key: _shown(Estimate(figures[key]["value"], *figures[key]["interval"]), spec)
            for key, spec in specs.items()
        }
        lines.append(
            f"{route} v{figures['version']}: {figures['predictions']} predictions, "
            f"{figures['errors']} errors in {figures['failed_batches']} of {figures['batches']} "
            f"batches; error rate {shown['error_rate']}, p95 {shown['p95_latency_ms']} ms, "
            f"high-risk share {shown['high_risk_share']}"
        )
        if recall := figures["recall"]:
            value = _shown(Estimate(recall["value"], *recall["interval"]), ".3f")
            lines.append(f"  recall {value} on {recall['labelled_positives']} labelled positives")
    lines += [f"{j['status']:>10}  {j['limit']}: {j['reason']}" for j in document["judgements"]]
    lines.append(f"verdict: {document['verdict']}")
    lines += [f"  - {reason}" for reason in document["reasons"]]
    return lines


def finish(manifest_path: Path, registry: Registry) -> dict[str, Any]:
    """The candidate becomes the stable version (with its packaged digest) and the rollout
    ends; refused, nothing written, unless the candidate passed its gate and was packaged."""
    current = _canary_manifest(manifest_path)
    candidate = int(current.rollout.candidate_version or 0)
    ref = registry.get(current.model, str(candidate))
    tags = ref.tags
    reasons = []
    if (gate := checks.gate_passed(candidate, tags)).status != checks.PASS:
        reasons.append(gate.reason)
    if checks.DIGEST_TAG not in tags:
        reasons.append(f"v{candidate} has no Bento; run `slipway package`")
    if reasons:
        raise PromotionError(
            f"the canary is not finished: {'; '.join(reasons)}",
            "gate and package the candidate first, or abort the canary",
        )
    title = f"Finish the canary: {current.model} v{candidate} to {current.environment}"
    changes = {"version": candidate, "digest": tags[checks.DIGEST_TAG]}
    return _rewrite(manifest_path, current, changes, title, tags, ref.run_id)


def abort(manifest_path: Path, registry: Registry | None = None) -> dict[str, Any]:
    """The rollout ends and the stable version keeps all the traffic; ``registry`` (optional)
    gives the pull request the stable version's tags."""
    current = _canary_manifest(manifest_path)
    tags: dict[str, str] = {}
    run_id = None
    if registry is not None:
        ref = registry.get(current.model, str(current.version))
        tags, run_id = ref.tags, ref.run_id
    title = (
        f"Abort the canary of {current.model} v{current.rollout.candidate_version} "
        f"in {current.environment}"
    )
    return _rewrite(manifest_path, current, {}, title, tags, run_id)


def _canary_manifest(path: Path) -> Manifest:
    manifest = load_manifest(path)
    if manifest.rollout.mode != "canary":
        raise ConfigError(
            f"{path} runs no canary (rollout mode {manifest.rollout.mode})",
            "nothing to finish or abort; start a canary with rollout.mode: canary",
        )
    return manifest


def _rewrite(
    path: Path,
    current: Manifest,
    changes: dict[str, Any],
    title: str,
    tags: dict[str, str],
    run_id: str | None,
) -> dict[str, Any]:
    """End the rollout (with ``changes``) and describe it as :func:`promotion.promote` does."""
    ended = {"rollout.mode": "none", "rollout.candidate_version": None, "rollout.canary_percent": 0}
    before = path.read_text(encoding="utf-8")
    updated = update_manifest(path, {**changes, **ended})
    after = path.read_text(encoding="utf-8")
    return {
        "environment": current.environment,
        "title": title,
        "path": str(path),
        "from_version": current.version,
        "version": updated.version,
        "digest": updated.digest,
        "diff": [
            f"-{a}\n+{b}"
            for a, b in zip(before.splitlines(), after.splitlines(), strict=True)
            if a != b
        ],
        "tags": tags,
        "run_id": run_id,
        "manifest": current,
        "before": before,
    }
