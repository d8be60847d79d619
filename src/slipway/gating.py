"""The gate step: score candidate and production on the frozen eval set and judge them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from slipway import gates
from slipway.config import ModelConfig
from slipway.contract import prepare, read_dataset
from slipway.datasets import check_lock, split_paths
from slipway.errors import ConfigError
from slipway.evaluation import Scores, bootstrap, group_recall, point_metrics
from slipway.fsutil import read_json, write_json
from slipway.registry import ModelRef, Registry
from slipway.training import Progress

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


def run_gate(
    config: ModelConfig,
    registry: Registry,
    out_dir: Path,
    version: str | None = None,
    progress: Progress = lambda _message: None,
) -> dict[str, Any]:
    """Evaluate, judge, tag the candidate with the verdict and write ``gate.json``."""
    rules = config.gates
    digests = check_lock(config)
    candidate = registry.get(config.name, candidate_version(out_dir, version))
    champion = registry.alias(config.name, CHAMPION_ALIAS)
    frame = read_dataset(split_paths(config)["eval"])
    features, y = prepare(frame, config)
    groups = (
        frame[config.group_column].astype("string").fillna("(none)").to_numpy(dtype=object)
        if config.group_column
        else None
    )

    def score(ref: ModelRef) -> tuple[Any, Scores]:
        model = registry.load(ref)
        return model, Scores(model.predict_proba(features)[:, 1], model.predict(features))

    progress(f"scoring {config.name} v{candidate.version} on {len(y)} eval rows")
    cand_model, cand = score(candidate)
    champ = None
    if champion is not None:
        progress(f"scoring production v{champion.version} on the same rows")
        _, champ = score(champion)
    cand_metrics = point_metrics(y, cand)
    champ_metrics = point_metrics(y, champ) if champ else None
    min_pos = rules.fairness.min_positives
    cand_teams = group_recall(y, cand.pred, groups) if groups is not None else {}
    champ_teams = group_recall(y, champ.pred, groups) if groups is not None and champ else {}

    progress(f"paired bootstrap: {rules.regression.resamples} resamples")
    samples = bootstrap(
        y,
        cand,
        champ,
        groups,
        resamples=rules.regression.resamples,
        seed=config.training.seed,
        min_positives=min_pos,
    )
    progress(f"timing {rules.latency.calls} single-row predictions")
    cand_ms = gates.measure_latency(cand_model, features, rules.latency.calls)
    # Production's own figure, recorded when it was gated, is the baseline: timing it again
    # would double the cost of this step.
    champ_p95 = champion.tags.get(P95_TAG) if champion else None

    confidence = rules.regression.confidence
    flip_rate = float(np.mean(cand.pred != champ.pred)) if champ else None
    verdicts = [
        *gates.thresholds(rules, cand_metrics, champ_metrics, samples, confidence),
        *gates.regression(rules, cand_metrics, champ_metrics, samples),
        gates.fairness(
            rules,
            _gap(cand_teams, min_pos),
            _gap(champ_teams, min_pos) if champ else None,
            samples,
            confidence,
        ),
        gates.stability(rules, flip_rate, samples, confidence),
        gates.latency(
            rules, cand_ms, float(champ_p95) if champ_p95 else None, config.training.seed
        ),
    ]
    status = gates.overall(verdicts, rules.regression.on_inconclusive)
    document = {
        "schema": SCHEMA,
        "model": config.name,
        "status": status,
        "failed": [f"{v.gate}:{v.metric}" for v in verdicts if v.status == gates.FAIL],
        "inconclusive": [
            f"{v.gate}:{v.metric}" for v in verdicts if v.status == gates.INCONCLUSIVE
        ],
        "candidate": _describe(candidate, registry, cand_metrics, cand_teams),
        "champion": _describe(champion, registry, champ_metrics, champ_teams) if champion else None,
        "eval": {"rows": len(y), "positives": int(y.sum()), "sha256": digests["eval"]},
        "bootstrap": {"resamples": rules.regression.resamples, "confidence": confidence},
        "gates": [gates.to_dict(v) for v in verdicts],
        "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if candidate.run_id:
        registry.log_metrics(
            candidate.run_id,
            {f"eval_{k}": v for k, v in cand_metrics.items() if k != "confusion_matrix"},
        )
    registry.tag(
        config.name,
        candidate.version,
        {
            "slipway.gate": status,
            "slipway.gate_eval_digest": digests["eval"],
            "slipway.gate_champion": champion.version if champion else "none",
            P95_TAG: f"{np.percentile(cand_ms, 95):.3f}",
        },
    )
    write_json(out_dir / "gate.json", document)
    return document
