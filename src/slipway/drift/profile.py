"""The reference profile of a model version: what the drift check compares live traffic with.

Built once, when the version is gated, from the rows it was trained on and the eval-set
probabilities the gate scored (schema ``slipway.profile/1``):

- ``features``: per numeric feature the bins fixed from the training values (quantile edges,
  :data:`QUANTILE_BINS` of them at most; ties merge bins) and the counts in them, the sorted
  training values for an exact KS test (all of them, or :data:`SAMPLE_MAX` evenly spaced
  order statistics), and the null and out-of-range rates against the data contract; the
  group column (``group_column``, e.g. the team) as a categorical one, with its frequencies.
  Values are the rows as read, before imputation, as the prediction log records requests;
  the bins and the sample hold the values present, the rates are shares of all rows.
- ``prediction``: the distribution of eval probabilities on its own quantile bins, and the
  share predicted high-risk at the model's decision threshold.
- ``metrics``: the gate's eval metrics.
- ``calibration``: reliability bins and the expected calibration error (ECE) with a bootstrap
  interval. Estimating performance without labels (CBPE) takes each probability at its word,
  which is sound only when the model is calibrated: ``calibrated`` when the whole interval is
  within :data:`ECE_TOLERANCE` (see :func:`calibration_verdict`); otherwise the bins'
  positive rates are the calibration map.

The version's run stores it as ``profile/reference.json`` and the version is tagged with the
SHA-256 of those bytes (``slipway.profile_sha256``); :func:`load_profile` refuses any other.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slipway.config import Column, ModelConfig
from slipway.drift.statistics import bin_counts, bin_index, category_counts
from slipway.errors import DriftError
from slipway.fsutil import atomic_write_text
from slipway.registry import ModelRef, Registry

SCHEMA = "slipway.profile/1"
ARTIFACT_DIR = "profile"
ARTIFACT = f"{ARTIFACT_DIR}/reference.json"  # in the version's run
PROFILE_TAG = "slipway.profile_sha256"
QUANTILE_BINS = 10  # deciles
SAMPLE_MAX = 50_000  # sorted training values kept per feature for the KS test
CALIBRATION_BINS = 10  # equal-width reliability bins on [0, 1]
# At most this ECE counts as calibrated. A perfectly calibrated model shows an ECE of about
# 0.026 on 1,500 eval rows from sampling noise alone (0.037 at the 95th percentile).
ECE_TOLERANCE = 0.05
# Fewer eval rows and the verdict is inconclusive: on 10 bins the ECE's upward bias is then
# about the tolerance itself, more than the bootstrap corrects (simulated: a calibrated model
# on 100 rows would be called miscalibrated 7% of the time, on 200 rows never in 100 tries).
CALIBRATION_MIN_ROWS = 200
CALIBRATION_CONFIDENCE = 0.95
CALIBRATION_RESAMPLES = 200
SEED = 0  # the calibration bootstrap's: a profile is reproducible from its inputs


def quantile_edges(values: np.ndarray, bins: int = QUANTILE_BINS) -> list[float]:
    """Bin edges at the ``k / bins`` quantiles of ``values``, duplicates merged: the
    ``ceil(n k / bins)``-th smallest value (the inverse of the empirical CDF, in integers), so
    an edge is an observed value and a tie never splits; first and last are the minimum and
    the maximum. One value makes one bin, ``[v, v]``."""
    ordered = np.sort(values)
    n = ordered.size
    ranks = [max(-(-n * k // bins), 1) - 1 for k in range(bins + 1)]
    edges = np.unique(ordered[ranks])
    return [float(edges[0])] * 2 if edges.size == 1 else edges.tolist()


def sorted_sample(values: np.ndarray, limit: int = SAMPLE_MAX) -> np.ndarray:
    """``values`` sorted; past ``limit``, ``limit`` evenly spaced order statistics of them
    (deterministic: the same ECDF to within ``1 / limit``)."""
    ordered = np.sort(values)
    if ordered.size <= limit:
        return ordered
    return ordered[np.linspace(0, ordered.size - 1, limit).round().astype(np.int64)]


def numeric_feature(values: np.ndarray, spec: Column) -> dict[str, Any]:
    """The profile of one numeric column's training values (NaN for null)."""
    present = values[~np.isnan(values)]
    outside = np.zeros(present.size, dtype=bool)
    if spec.min is not None:
        outside |= present < spec.min
    if spec.max is not None:
        outside |= present > spec.max
    rows = max(values.size, 1)
    edges = quantile_edges(present) if present.size else []
    return {
        "kind": "numeric",
        "edges": edges,
        "counts": bin_counts(edges, present).tolist() if present.size else [],
        "null_rate": (values.size - present.size) / rows,
        "out_of_range_rate": int(outside.sum()) / rows,
        "sample": sorted_sample(present).tolist(),
    }


def categorical_feature(values: pd.Series, spec: Column) -> dict[str, Any]:
    """The profile of one categorical column: counts per category of the contract (or, with
    none declared, per category seen); values outside the contract count as out of range."""
    present = values.dropna().astype(str)
    declared = spec.categories is not None
    categories = [str(c) for c in spec.categories] if declared else sorted(set(present))
    counts, unseen = category_counts(categories, present.tolist())
    rows = max(len(values), 1)
    return {
        "kind": "categorical",
        "categories": categories,
        "counts": counts,
        "null_rate": (len(values) - len(present)) / rows,
        "out_of_range_rate": unseen / rows,
    }


def prediction_profile(probabilities: np.ndarray, threshold: float) -> dict[str, Any]:
    """The eval-set probabilities: quantile bins, sorted values, the share at or above
    ``threshold`` (predicted high-risk)."""
    high_risk = int((probabilities >= threshold).sum())
    edges = quantile_edges(probabilities)
    return {
        "rows": int(probabilities.size),
        "threshold": float(threshold),
        "high_risk": high_risk,
        "high_risk_share": high_risk / probabilities.size,
        "probability_edges": edges,
        "probability_counts": bin_counts(edges, probabilities).tolist(),
        "sample": sorted_sample(probabilities).tolist(),
    }


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS
) -> float:
    """ECE on equal-width bins: sum over bins of ``rows/n * |positive rate - mean
    probability|``, which is ``sum |sum(labels - probabilities)| / n`` over the bins."""
    index = bin_index(np.linspace(0, 1, bins + 1), probabilities)
    residual = np.bincount(index, weights=labels - probabilities, minlength=bins)
    return float(np.abs(residual).sum() / probabilities.size)


def ece_interval(
    probabilities: np.ndarray,
    labels: np.ndarray,
    confidence: float = CALIBRATION_CONFIDENCE,
    resamples: int = CALIBRATION_RESAMPLES,
    seed: int = SEED,
    bins: int = CALIBRATION_BINS,
) -> tuple[float, float]:
    """Bootstrap interval of the ECE, corrected for its bias: ``n`` rows drawn with
    replacement per resample (fixed seed), and the basic interval ``(2 ece - q_high,
    2 ece - q_low)`` of the resampled ECEs' quantiles, at least 0. Resampling adds noise, and
    noise only raises an ECE, so a percentile interval would sit above the true value; the
    basic interval subtracts that excess, which also moves it below the plain estimate."""
    n = probabilities.size
    index = bin_index(np.linspace(0, 1, bins + 1), probabilities)
    residual = labels - probabilities
    drawn = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    cells = np.arange(resamples)[:, None] * bins + index[drawn]  # (resample, bin) per draw
    sums = np.bincount(cells.ravel(), weights=residual[drawn].ravel(), minlength=resamples * bins)
    values = np.abs(sums.reshape(resamples, bins)).sum(axis=1) / n
    tail = (1 - confidence) / 2
    q_low, q_high = np.quantile(values, [tail, 1 - tail])
    ece = expected_calibration_error(probabilities, labels, bins)
    return max(0.0, 2 * ece - float(q_high)), max(0.0, 2 * ece - float(q_low))


def calibration_verdict(
    interval: tuple[float, float],
    rows: int,
    tolerance: float = ECE_TOLERANCE,
    min_rows: int = CALIBRATION_MIN_ROWS,
) -> str:
    """``calibrated`` when the whole ECE interval is at most ``tolerance``, ``miscalibrated``
    when all of it is above, else ``inconclusive`` (the eval set cannot tell), as it always
    is on fewer than ``min_rows`` rows."""
    low, high = interval
    if rows < min_rows:
        return "inconclusive"
    if high <= tolerance:
        return "calibrated"
    if low > tolerance:
        return "miscalibrated"
    return "inconclusive"


def calibration(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS
) -> dict[str, Any]:
    """Reliability bins, ECE, its interval and the verdict on the eval set."""
    edges = np.linspace(0, 1, bins + 1)
    index = bin_index(edges, probabilities)
    rows = np.bincount(index, minlength=bins)
    mass = np.bincount(index, weights=probabilities, minlength=bins)
    hits = np.bincount(index, weights=labels, minlength=bins)
    table = [
        {
            "low": float(edges[b]),
            "high": float(edges[b + 1]),
            "rows": int(rows[b]),
            "mean_probability": float(mass[b] / rows[b]) if rows[b] else None,
            "positive_rate": float(hits[b] / rows[b]) if rows[b] else None,
        }
        for b in range(bins)
    ]
    interval = ece_interval(probabilities, labels, bins=bins)
    verdict = calibration_verdict(interval, probabilities.size)
    return {
        "ece": expected_calibration_error(probabilities, labels, bins),
        "ece_interval": list(interval),
        "confidence": CALIBRATION_CONFIDENCE,
        "tolerance": ECE_TOLERANCE,
        "min_rows": CALIBRATION_MIN_ROWS,
        "verdict": verdict,
        "calibrated": verdict == "calibrated",
        "bins": table,
    }


def _number(value: Any) -> float | None:
    return float(value) if math.isfinite(value) else None


def build_profile(
    config: ModelConfig,
    train_features: pd.DataFrame,
    eval_probabilities: np.ndarray,
    eval_labels: np.ndarray,
    threshold: float,
    metrics: dict[str, float],
    version: str,
) -> dict[str, Any]:
    """The reference profile of ``version`` (see the module docstring).

    ``train_features`` is the training set as read, before imputation (every feature and the
    group column); ``eval_probabilities`` and ``eval_labels`` (0/1) are the gate's eval
    set, ``threshold`` the model's decision threshold, ``metrics`` the gate's eval metrics
    (entries that are not numbers, such as the confusion matrix, are left out).
    """
    probabilities = np.asarray(eval_probabilities, dtype=np.float64)
    labels = np.asarray(eval_labels, dtype=np.float64)
    features: dict[str, Any] = {}
    for name in config.features:
        values = pd.to_numeric(train_features[name], errors="coerce").to_numpy(np.float64)
        features[name] = numeric_feature(values, config.columns[name])
    if config.group_column:
        group = config.group_column
        features[group] = categorical_feature(train_features[group], config.columns[group])
    return {
        "schema": SCHEMA,
        "model": config.name,
        "version": str(version),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": len(train_features),
        "features": features,
        "prediction": prediction_profile(probabilities, threshold),
        "metrics": {
            key: _number(value)
            for key, value in metrics.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        },
        "calibration": calibration(probabilities, labels),
    }


def profile_bytes(profile: dict[str, Any]) -> bytes:
    """The stored form: compact UTF-8 JSON (strict: no NaN), keys in insertion order."""
    text = json.dumps(profile, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (text + "\n").encode("utf-8")


def store_profile(
    registry: Registry, ref: ModelRef, profile: dict[str, Any], copy_to: Path | None = None
) -> str:
    """Log ``profile`` as :data:`ARTIFACT` of the version's run, then tag the version with
    its SHA-256 (returned): the tag never names a profile that is not stored. With
    ``copy_to``, the same bytes are also written there (atomically)."""
    if (profile.get("model"), profile.get("version")) != (ref.name, ref.version):
        raise DriftError(
            f"the profile of {profile.get('model')} v{profile.get('version')} cannot be "
            f"stored with {ref.uri}",
            "build the profile for the version it is stored with",
        )
    if ref.run_id is None:
        raise DriftError(
            f"{ref.uri} has no run to store its reference profile with",
            "register the version with `slipway train`, which logs it with a run",
        )
    body = profile_bytes(profile)
    sha256 = hashlib.sha256(body).hexdigest()
    with tempfile.TemporaryDirectory(prefix="slipway-profile-") as tmp:
        local = Path(tmp) / Path(ARTIFACT).name
        local.write_bytes(body)
        if copy_to is not None:
            atomic_write_text(copy_to, body.decode("utf-8"))
        try:
            registry.log_artifact(ref.run_id, str(local), ARTIFACT_DIR)
        except Exception as exc:
            raise DriftError(
                f"cannot store {ARTIFACT} with {ref.uri}: {type(exc).__name__}: {exc}",
                f"check the registry's artifact store, then run `slipway gate --version "
                f"{ref.version}` again; the version was not tagged",
            ) from exc
    registry.tag(ref.name, ref.version, {PROFILE_TAG: sha256})
    return sha256


def load_profile(registry: Registry, model: str, version: str) -> dict[str, Any]:
    """The reference profile stored with ``model`` v``version``, its bytes checked against the
    version's :data:`PROFILE_TAG`; :class:`DriftError` when there is none or it differs."""
    ref = registry.get(model, str(version))
    again = f"run `slipway gate --version {ref.version}`, which builds and stores it"
    expected = ref.tags.get(PROFILE_TAG)
    if not expected or ref.run_id is None:
        raise DriftError(f"{ref.uri} has no reference profile (no {PROFILE_TAG} tag)", again)
    with tempfile.TemporaryDirectory(prefix="slipway-profile-") as tmp:
        try:
            body = Path(registry.download_artifact(ref.run_id, ARTIFACT, tmp)).read_bytes()
        except Exception as exc:
            raise DriftError(
                f"cannot download {ARTIFACT} of {ref.uri}: {type(exc).__name__}: {exc}",
                f"check the registry's artifact store, or {again}",
            ) from exc
    if hashlib.sha256(body).hexdigest() != expected:
        raise DriftError(
            f"the reference profile of {ref.uri} is not the one its gate stored: its SHA-256 "
            f"is not {expected}",
            f"{again} again",
        )
    profile = json.loads(body)
    if profile.get("schema") != SCHEMA or (profile.get("model"), profile.get("version")) != (
        ref.name,
        ref.version,
    ):
        raise DriftError(
            f"{ARTIFACT} of {ref.uri} is not a {SCHEMA} profile of that version",
            f"{again} again",
        )
    return profile
