"""``slipway drift ENV``: windows of the prediction log, and delayed labels, against the
reference profile of each version the environment serves.

:func:`check_drift` reads the last ``n`` windows (``drift.persistence.n``, each
``drift.window_days`` long, the newest ending at ``until``) in one pass, chunk by chunk, and
keeps per version and window only counts, never the rows (:class:`~slipway.drift.tally.Tally`).
Then, per window:

- a **feature** is ``drifted`` only when its PSI interval's low end is above
  ``psi_tolerance`` and its Benjamini-Hochberg adjusted p-value (across the features tested in
  the window) is below ``fdr``; ``inconclusive`` on fewer than ``min_rows`` values; else
  ``stable`` (:func:`feature_status`);
- the **prediction** share predicted high-risk drifts when its Wilson interval is all outside
  the reference ± ``prediction_tolerance`` (:func:`share_status`);
- **performance** (delayed labels joined by release id) and its label-free **estimate**
  (CBPE: each probability through the profile's reliability bins unless the profile says the
  model is calibrated) drift when the interval's high end is below the gate-time value minus
  ``performance_tolerance`` (:func:`drop_status`);
- live **quality** (null, imputed and out-of-range rates) is flagged when its interval's low end
  is above the reference plus ``quality_tolerance``; it is reported, not a retrain trigger: a
  retrain does not mend a broken upstream;
- a window is ``drifted`` when any trigger is, else ``inconclusive`` below ``min_rows``
  predictions, else ``no_drift`` (:func:`window_status`); the status is ``drifted`` when ``k``
  of the ``n`` windows are (:func:`persistent_status`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from slipway.config import Drift, ModelConfig
from slipway.drift.labels import Labels
from slipway.drift.logs import read_window
from slipway.drift.notes import found_notes
from slipway.drift.statistics import bh_adjusted
from slipway.drift.tally import (
    Reference,
    Tally,
    expected_metrics,
    feature_figures,
    realised_metrics,
)
from slipway.intervals import wilson
from slipway.progress import Progress

SCHEMA = "slipway.drift/1"
DRIFTED, NO_DRIFT, INCONCLUSIVE, ERROR = "drifted", "no_drift", "inconclusive", "error"
STABLE, SKIPPED = "stable", "skipped"
NAMED = 10  # unmatched label ids named in the output


# --- verdicts -------------------------------------------------------------------------------


def feature_status(
    rows: int,
    min_rows: int,
    psi_low: float | None,
    tolerance: float,
    adjusted: float | None,
    fdr: float,
) -> str:
    """Drifted only when the PSI interval's low end exceeds ``tolerance`` and the adjusted
    p-value is below ``fdr``; inconclusive on fewer than ``min_rows`` values."""
    if rows < min_rows or psi_low is None or adjusted is None:
        return INCONCLUSIVE
    return DRIFTED if psi_low > tolerance and adjusted < fdr else STABLE


def share_status(
    rows: int, min_rows: int, interval: Sequence[float], reference: float, tolerance: float
) -> str:
    """Drifted when the whole interval is outside ``reference ± tolerance``."""
    if rows < min_rows:
        return INCONCLUSIVE
    low, high = interval
    return DRIFTED if low > reference + tolerance or high < reference - tolerance else STABLE


def drop_status(
    rows: int,
    min_rows: int,
    interval: Sequence[float | None],
    reference: float | None,
    tolerance: float,
) -> str:
    """Drifted when the interval's high end is below ``reference - tolerance``; skipped with
    no reference to compare with, inconclusive on fewer than ``min_rows`` rows or no value."""
    if reference is None:
        return SKIPPED
    if rows < min_rows or interval[1] is None:
        return INCONCLUSIVE
    return DRIFTED if interval[1] < reference - tolerance else STABLE


def rise_status(
    rows: int, min_rows: int, interval: Sequence[float], reference: float, tolerance: float
) -> str:
    """A rate (nulls, out of range) drifted when its interval's low end is above
    ``reference + tolerance``."""
    if rows < min_rows:
        return INCONCLUSIVE
    return DRIFTED if interval[0] > reference + tolerance else STABLE


def window_status(statuses: Iterable[str], rows: int, min_rows: int) -> str:
    """Drifted when any trigger is; else inconclusive on fewer than ``min_rows``
    predictions; else no drift."""
    if DRIFTED in set(statuses):
        return DRIFTED
    return INCONCLUSIVE if rows < min_rows else NO_DRIFT


def persistent_status(windows: Sequence[str], k: int) -> str:
    """Drifted when at least ``k`` windows are; inconclusive when the inconclusive ones could
    make it ``k``; else no drift."""
    drifted = sum(status == DRIFTED for status in windows)
    if drifted >= k:
        return DRIFTED
    if drifted + sum(status == INCONCLUSIVE for status in windows) >= k:
        return INCONCLUSIVE
    return NO_DRIFT


def window_bounds(until: datetime, length: timedelta, n: int) -> list[tuple[datetime, datetime]]:
    """The ``n`` windows of ``length`` ending at ``until``, oldest first."""
    return [(until - (i + 1) * length, until - i * length) for i in reversed(range(n))]


# --- judging a window -----------------------------------------------------------------------


def _rate(k: int, n: int, reference: float, drift: Drift) -> dict[str, Any]:
    interval = wilson(k, n, drift.confidence)
    return {
        "value": k / n if n else None,
        "interval": list(interval),
        "reference": reference,
        "tolerance": drift.quality_tolerance,
        "status": rise_status(n, drift.min_rows, interval, reference, drift.quality_tolerance),
    }


def judge(tally: Tally, drift: Drift, labelled: bool) -> dict[str, Any]:
    """Every check on one window of one version, its triggers and its status."""
    reference, profile = tally.reference, tally.reference.profile
    features = {name: feature_figures(tally, name, drift) for name in reference.features}
    tested = {
        n: f["pvalue"]
        for n, f in features.items()
        if f["rows"] >= drift.min_rows and f["pvalue"] is not None
    }
    for name, adjusted in (bh_adjusted(tested) if tested else {}).items():
        features[name]["adjusted_pvalue"] = adjusted
    for entry in features.values():
        entry["status"] = feature_status(
            entry["rows"],
            drift.min_rows,
            entry["psi_interval"][0],
            drift.psi_tolerance,
            entry["adjusted_pvalue"],
            drift.fdr,
        )
    rows, share = tally.rows, profile["prediction"]["high_risk_share"]
    interval = wilson(tally.high_risk, rows, drift.confidence)
    prediction = {
        "rows": rows,
        "high_risk": tally.high_risk,
        "high_risk_share": tally.high_risk / rows if rows else None,
        "interval": list(interval),
        "reference": share,
        "tolerance": drift.prediction_tolerance,
        "status": share_status(rows, drift.min_rows, interval, share, drift.prediction_tolerance),
        "bins": {
            "edges": profile["prediction"]["probability_edges"],
            "reference": profile["prediction"]["probability_counts"],
            "current": tally.probability.tolist(),
        },
    }
    references = profile.get("metrics") or {}
    labelled_rows = int(tally.confusion.sum())
    performance: dict[str, Any] = {"labelled": labelled_rows, "metrics": {}}
    if labelled:
        for name, figure in realised_metrics(tally.confusion, drift.confidence).items():
            ref = references.get(name)
            status = drop_status(
                labelled_rows, drift.min_rows, figure["interval"], ref, drift.performance_tolerance
            )
            performance["metrics"][name] = {**figure, "reference": ref, "status": status}
    estimated: dict[str, Any] = {"calibrated": reference.calibrated, "metrics": {}}
    for name, figure in expected_metrics(tally.expected, rows, drift.confidence).items():
        ref = references.get(name)
        status = drop_status(
            rows, drift.min_rows, figure["interval"], ref, drift.performance_tolerance
        )
        realised = performance["metrics"].get(name, {}).get("value") if labelled_rows else None
        estimated["metrics"][name] = {
            **figure,
            "reference": ref,
            "status": status,
            "realised": realised,
        }
    quality: dict[str, Any] = {"null_rate": {}, "imputed_rate": {}, "out_of_range_rate": {}}
    for name, spec in reference.features.items():
        nulls = _rate(tally.nulls[name], rows, spec["null_rate"], drift)
        quality["null_rate"][name] = nulls
        if name in reference.imputed:  # the service imputes exactly the nulls it is sent
            quality["imputed_rate"][name] = nulls
        outside = _rate(tally.outside[name], rows, spec["out_of_range_rate"], drift)
        quality["out_of_range_rate"][name] = outside
    triggers = [f"data:{n}" for n, f in features.items() if f["status"] == DRIFTED]
    triggers += ["prediction"] if prediction["status"] == DRIFTED else []
    for kind, part in (("performance", performance), ("estimated", estimated)):
        triggers += [f"{kind}:{m}" for m, f in part["metrics"].items() if f["status"] == DRIFTED]
    status = window_status([DRIFTED] if triggers else [], rows, drift.min_rows)
    return {
        "status": status,
        "rows": rows,
        "triggers": triggers,
        "features": features,
        "prediction": prediction,
        "performance": performance,
        "estimated": estimated,
        "quality": quality,
    }


# --- the check ------------------------------------------------------------------------------


def check_drift(
    config: ModelConfig,
    environment: str,
    profiles: dict[str, dict[str, Any]],
    source: str | Path,
    until: datetime,
    length: timedelta,
    labels: Labels | None = None,
    progress: Progress = lambda _line: None,
    chunk_rows: int = 200_000,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The drift document (schema :data:`SCHEMA`) of the versions of ``profiles`` (version →
    profile, the stable one first) in ``environment``: the log at ``source`` read once over
    the ``drift.persistence.n`` windows of ``length`` ending at ``until``."""
    drift = config.drift
    until = _utc(until)
    bounds = window_bounds(until, length, drift.persistence.n)
    references = {str(v): Reference(p, config) for v, p in profiles.items()}
    names: dict[str, None] = {}
    for reference in references.values():
        names.update(dict.fromkeys(reference.features))
    categorical = {
        n for r in references.values() for n, f in r.features.items() if f["kind"] == "categorical"
    }
    read = read_window(
        source,
        config.name,
        environment,
        set(references),
        bounds[0][0],
        until,
        list(names),
        progress,
        chunk_rows,
        categorical=categorical,
    )
    tallies = {v: [Tally(r) for _ in bounds] for v, r in references.items()}
    step = timedelta(milliseconds=1)
    until_ms, length_ms = (until - _EPOCH) // step, max(length // step, 1)
    matched: set[str] = set()
    values = labels.values if labels is not None else None
    for chunk in read:
        age = (until_ms - chunk.timestamp.astype(np.int64) - 1) // length_ms
        index = len(bounds) - 1 - age
        for version, tally in tallies.items():
            mine = chunk.model_version.matches(version)
            for w in np.unique(index[mine]).tolist():
                tally[w].add(chunk, mine & (index == w), values, matched)
    counts = read.counts.to_dict()
    results = [
        version_result(v, [judge(t, drift, labels is not None) for t in tally], bounds, drift)
        for v, tally in tallies.items()
    ]
    stable = {k: v for k, v in results[0].items() if k != "version"}
    labelled = None
    if labels is not None:
        unmatched = sorted(set(labels.values) - matched)
        labelled = {
            **labels.to_dict(),
            "matched": len(matched),
            "unmatched": len(unmatched),
            "unmatched_ids": unmatched[:NAMED],
        }
    rejected = {f"{r['field']}/{r['reason']}": r["errors"] for r in counts["rejections"]}
    document = _document(config, environment, list(references), until, length, stable["status"])
    document.update(stable)
    document["quality"] = {
        **stable["quality"],
        "dropped": counts["dropped"],
        "write_errors": counts["write_errors"],
        "rejected": rejected,
        "rejections": counts["rejections"],
    }
    document["candidate"] = results[1] if len(results) > 1 else None
    document["records"] = {k: v for k, v in counts.items() if k != "rejections"}
    document["labels"] = labelled
    document["source"] = str(source)
    document["notes"] = [*notes, *found_notes(config, environment, results, counts, labelled)]
    return _finish(document)


def version_result(
    version: str,
    judged: list[dict[str, Any]],
    bounds: list[tuple[datetime, datetime]],
    drift: Drift,
) -> dict[str, Any]:
    """One version's status over its windows (oldest first), and its newest window's checks."""
    statuses = [j["status"] for j in judged]
    status = persistent_status(statuses, drift.persistence.k)
    triggers: list[str] = []
    for window in judged:
        if status == DRIFTED and window["status"] == DRIFTED:
            triggers += [t for t in window["triggers"] if t not in triggers]
    current = judged[-1]
    reason = (
        f"{statuses.count(DRIFTED)} of the last {len(judged)} windows drifted, "
        f"{statuses.count(INCONCLUSIVE)} inconclusive ({DRIFTED} needs {drift.persistence.k}); "
        f"the current window is {current['status']}"
    )
    if triggers:
        reason += f"; triggers: {', '.join(triggers)}"
    return {
        "version": version,
        "status": status,
        "reason": reason,
        "current": current["status"],
        "triggers": triggers,
        "persistence": {
            "k": drift.persistence.k,
            "n": drift.persistence.n,
            "drifted": statuses.count(DRIFTED),
            "inconclusive": statuses.count(INCONCLUSIVE),
        },
        "windows": [
            _summary(j, since, until) for j, (since, until) in zip(judged, bounds, strict=True)
        ],
        **{
            key: current[key]
            for key in ("features", "prediction", "performance", "estimated", "quality")
        },
    }


def _summary(window: dict[str, Any], since: datetime, until: datetime) -> dict[str, Any]:
    """One window in a line of figures: what the charts over time draw."""
    return {
        "since": _iso(since),
        "until": _iso(until),
        "status": window["status"],
        "rows": window["rows"],
        "labelled": window["performance"]["labelled"],
        "triggers": window["triggers"],
        "psi": {n: f["psi"] for n, f in window["features"].items()},
        "high_risk_share": window["prediction"]["high_risk_share"],
        "performance": {m: f["value"] for m, f in window["performance"]["metrics"].items()},
        "estimated": {m: f["value"] for m, f in window["estimated"]["metrics"].items()},
    }


def unjudged(
    config: ModelConfig,
    environment: str,
    versions: Sequence[str],
    until: datetime,
    length: timedelta,
    status: str,
    notes: Sequence[str],
    problems: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The document of a check that judged nothing: ``error`` (a version has no profile:
    ``problems`` names each with its fix) or nothing deployed (``inconclusive``)."""
    document = _document(config, environment, list(versions), _utc(until), length, status)
    document["problems"] = problems or {}
    document["notes"] = list(notes)
    document["reason"] = "; ".join(notes)
    return _finish(document)


def _document(
    config: ModelConfig,
    environment: str,
    versions: list[str],
    until: datetime,
    length: timedelta,
    status: str,
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "environment": environment,
        "model": config.name,
        "versions": versions,
        "status": status,
        "reason": "",
        "current": None,
        "triggers": [],
        "window": {
            "since": _iso(until - length),
            "until": _iso(until),
            "days": length / timedelta(days=1),
        },
        "windows": [],
        "persistence": None,
        "features": {},
        "prediction": None,
        "performance": None,
        "estimated": None,
        "quality": None,
        "candidate": None,
        "records": None,
        "labels": None,
        "problems": {},
        "settings": config.drift.model_dump(mode="json"),
    }


def _finish(document: dict[str, Any]) -> dict[str, Any]:
    document["generated_at"] = _iso(datetime.now(UTC))
    return document


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
