"""The gate step: score candidate and production on the frozen eval set and judge them."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slipway.config import ModelConfig
from slipway.errors import ConfigError
from slipway.fsutil import read_json, write_json
from slipway.probabilities import fixed_threshold
from slipway.progress import Progress
from slipway.propose import gate_rules
from slipway.propose.contract import prepare, read_dataset
from slipway.propose.datasets import check_lock, split_paths
from slipway.propose.evaluation import Scores, bootstrap, flipped, group_recall, point_metrics
from slipway.registry import MODEL_COPY_DIR, ModelRef, Registry, load_copy

SCHEMA = "slipway.gate/1"
CHAMPION_ALIAS = "production"
P95_TAG = "slipway.latency_p95_ms"


def candidate_version(out_dir: Path, version: str | None) -> str:
    """The version to gate: the one given, else the one ``slipway train`` just registered."""
    if version:
        return version
    train_json = out_dir / "train.json"
    if not train_json.is_file():
        raise ConfigError(
            f"no --version given and no {train_json} from a previous `slipway train`",
            "run `slipway train` first or pass --version N",
        )
    return str(read_json(train_json)["version"])


def _gap(table: dict[str, dict], min_positives: int) -> float | None:
    recalls = [row["recall"] for row in table.values() if row["positives"] >= min_positives]
    return max(recalls) - min(recalls) if len(recalls) >= 2 else None


def _describe(ref: ModelRef, registry: Registry, metrics: dict, teams: dict) -> dict[str, Any]:
    return {
        "version": ref.version,
        "model_uri": ref.uri,
        "run_id": ref.run_id,
        "run_url": registry.run_url(ref.run_id),
        "git_commit": ref.tags.get("slipway.git_commit"),
        "metrics": metrics,
        "teams": teams,
    }


_PROBE_ROWS = 200


def _decisions(model: Any, features: pd.DataFrame, proba: np.ndarray) -> np.ndarray:
    """``model.predict(features)``, given ``proba`` (its positive-class probabilities).

    scikit-learn's ``FixedThresholdClassifier`` on ``predict_proba`` with classes ``[0, 1]``
    predicts ``proba >= threshold``: that is used when it matches ``predict`` on the first
    rows, so the model runs once over the eval set instead of twice.
    """
    threshold = getattr(model, "threshold", None)
    if (
        isinstance(threshold, int | float)
        and not isinstance(threshold, bool)
        and getattr(model, "response_method", None) == "predict_proba"
        and getattr(model, "pos_label", None) in (None, 1)
        and list(getattr(model, "classes_", [])) == [0, 1]
    ):
        decisions = (proba >= threshold).astype(np.int64)
        probe = model.predict(features.iloc[:_PROBE_ROWS])
        if np.array_equal(probe, decisions[:_PROBE_ROWS]):
            return decisions
    return np.asarray(model.predict(features))


@dataclass(frozen=True)
class Champion:
    """The production version and its fitted model."""

    ref: ModelRef
    model: Any


def load_champion(config: ModelConfig, registry: Registry) -> Champion | None:
    """The version behind the production alias, loaded; None before the first promotion."""
    ref = registry.alias(config.name, CHAMPION_ALIAS)
    return Champion(ref, registry.load(ref)) if ref is not None else None


@dataclass(frozen=True)
class Judgement:
    """Everything the gate decided about a candidate model, before it is recorded, and the
    candidate's eval-set scores (for its reference profile)."""

    status: str
    verdicts: list[gate_rules.Verdict]
    metrics: dict[str, Any]
    teams: dict[str, dict]
    p95_ms: float
    champion: Champion | None
    champion_metrics: dict[str, Any] | None
    champion_teams: dict[str, dict]
    eval: dict[str, Any]
    probabilities: np.ndarray  # the candidate's, per eval row
    labels: np.ndarray  # 0/1 per eval row
    threshold: float | None  # the candidate's decision threshold, when it has a fixed one


def judge(
    config: ModelConfig,
    model: Any,
    champion: Callable[[], Champion | None],
    digests: dict[str, str],
    progress: Progress = lambda _message: None,
) -> Judgement:
    """Score ``model`` and the champion on the eval set and run every gate.

    ``champion`` is called once the candidate is scored, so a champion still loading in
    the background has until then.
    """
    rules = config.gates
    frame = read_dataset(split_paths(config)["eval"])
    features, y = prepare(frame, config)
    groups = (
        frame[config.group_column].astype("string").fillna("(none)").to_numpy(dtype=object)
        if config.group_column
        else None
    )

    def score(fitted: Any) -> Scores:
        proba = fitted.predict_proba(features)[:, 1]
        return Scores(proba, _decisions(fitted, features, proba))

    progress(f"scoring {config.name} on {len(y)} eval rows")
    cand = score(model)
    cand_metrics = point_metrics(y, cand)
    cand_teams = group_recall(y, cand.pred, groups) if groups is not None else {}
    champ = None
    production = champion()
    if production is not None:
        progress(f"scoring production v{production.ref.version} on the same rows")
        champ = score(production.model)
    champ_metrics = point_metrics(y, champ) if champ else None
    champ_teams = group_recall(y, champ.pred, groups) if groups is not None and champ else {}
    min_pos = rules.fairness.min_positives

    progress(f"paired bootstrap: {rules.regression.resamples} resamples")
    samples = bootstrap(
        y,
        cand,
        champ,
        groups,
        resamples=rules.regression.resamples,
        seed=config.training.seed,
        min_positives=min_pos,
        negative_flips=rules.stability.flips == "negative",
    )
    progress(f"timing {rules.latency.calls} single-row predictions")
    cand_ms = gate_rules.measure_latency(model, features, rules.latency.calls)
    # Production's own figure, recorded when it was gated, is the baseline: timing it again
    # would double the cost of this step.
    champ_p95 = production.ref.tags.get(P95_TAG) if production else None

    confidence = rules.regression.confidence
    negative = rules.stability.flips == "negative"
    flip_rate = float(np.mean(flipped(y, cand.pred, champ.pred, negative))) if champ else None
    verdicts = [
        *gate_rules.thresholds(rules, cand_metrics, champ_metrics, samples, confidence),
        *gate_rules.regression(rules, cand_metrics, champ_metrics, samples),
        gate_rules.fairness(
            rules,
            _gap(cand_teams, min_pos),
            _gap(champ_teams, min_pos) if champ else None,
            samples,
            confidence,
        ),
        gate_rules.stability(rules, flip_rate, samples, confidence),
        gate_rules.latency(
            rules, cand_ms, float(champ_p95) if champ_p95 else None, config.training.seed
        ),
    ]
    return Judgement(
        status=gate_rules.overall(verdicts, rules.regression.on_inconclusive),
        verdicts=verdicts,
        metrics=cand_metrics,
        teams=cand_teams,
        p95_ms=float(np.percentile(cand_ms, 95)),
        champion=production,
        champion_metrics=champ_metrics,
        champion_teams=champ_teams,
        eval={"rows": len(y), "positives": int(y.sum()), "sha256": digests["eval"]},
        probabilities=cand.proba,
        labels=y,
        threshold=fixed_threshold(model),
    )


def record(
    config: ModelConfig,
    registry: Registry,
    out_dir: Path,
    candidate: ModelRef,
    judgement: Judgement,
    profile: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Log the eval metrics to the candidate's run, tag it with the verdict, write ``gate.json``.

    ``profile`` (the artifact and SHA-256 of the candidate's reference profile) is named in
    ``gate.json`` when given.
    """
    verdicts, champion = judgement.verdicts, judgement.champion
    document = {
        "schema": SCHEMA,
        "model": config.name,
        "status": judgement.status,
        "failed": [f"{v.gate}:{v.metric}" for v in verdicts if v.status == gate_rules.FAIL],
        "inconclusive": [
            f"{v.gate}:{v.metric}" for v in verdicts if v.status == gate_rules.INCONCLUSIVE
        ],
        "candidate": _describe(candidate, registry, judgement.metrics, judgement.teams),
        "champion": (
            _describe(champion.ref, registry, judgement.champion_metrics, judgement.champion_teams)
            if champion
            else None
        ),
        "eval": judgement.eval,
        **({"profile": profile} if profile is not None else {}),
        "bootstrap": {
            "resamples": config.gates.regression.resamples,
            "confidence": config.gates.regression.confidence,
        },
        "gates": [gate_rules.to_dict(v) for v in verdicts],
        "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if candidate.run_id:
        registry.log_metrics(
            candidate.run_id,
            {f"eval_{k}": v for k, v in judgement.metrics.items() if k != "confusion_matrix"},
        )
    registry.tag(
        config.name,
        candidate.version,
        {
            "slipway.gate": judgement.status,
            "slipway.gate_eval_digest": judgement.eval["sha256"],
            "slipway.gate_champion": champion.ref.version if champion else "none",
            P95_TAG: f"{judgement.p95_ms:.3f}",
        },
    )
    write_json(out_dir / "gate.json", document)
    return document


def evaluate(
    config: ModelConfig,
    registry: Registry,
    out_dir: Path,
    version: str | None = None,
    progress: Progress = lambda _message: None,
) -> tuple[ModelRef, Judgement]:
    """Load the candidate (the copy ``train`` left, else from the registry) and judge it
    against the champion; :func:`record` records the judgement."""
    digests = check_lock(config)
    candidate = registry.get(config.name, candidate_version(out_dir, version))
    with ThreadPoolExecutor(1, thread_name_prefix="champion") as pool:
        champion = pool.submit(load_champion, config, registry)  # the registry loads it meanwhile
        model = load_copy(out_dir / MODEL_COPY_DIR, candidate)
        if model is None:
            progress(f"loading {config.name} v{candidate.version} from the registry")
            model = registry.load(candidate)
        else:
            progress(f"using {out_dir / MODEL_COPY_DIR}: v{candidate.version}'s registered bytes")
        judgement = judge(config, model, champion.result, digests, progress)
    return candidate, judgement
