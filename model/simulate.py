"""Simulated release histories for the release-risk example model.

Each row is one software release. Whether it turned out high-risk (an incident or a hotfix
within two weeks) depends on how much changed, the team's defect history, test coverage,
release cadence and the component's historical failure rate, plus noise. Knobs shift the
feature distributions (data drift), add a team nobody has seen (new category) and change how
features relate to risk (concept drift), so the drift checks have something real to find.

    python model/simulate.py --out model/data              # the committed sample
    python model/simulate.py --out /tmp/d --shift 0.5 --new-team --concept-drift 1.0
"""

from __future__ import annotations

import argparse
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

TEAMS = ("payments", "search", "mobile", "platform", "identity")
NEW_TEAM = "ml-infra"
# Teams differ in their defect history and testing culture.
TEAM_DEFECTS = {"payments": 4.5, "search": 5.5, "mobile": 6.5, "platform": 5.0, "identity": 4.0}
TEAM_COVERAGE = {
    "payments": 74.0,
    "search": 70.0,
    "mobile": 66.0,
    "platform": 72.0,
    "identity": 76.0,
}
END_DATE = date(2026, 11, 1)


def simulate(
    rows: int,
    *,
    seed: int = 7,
    end_date: date = END_DATE,
    days: int = 365,
    shift: float = 0.0,
    new_team: bool = False,
    concept_drift: float = 0.0,
    null_coverage: float = 0.01,
    id_prefix: str = "REL",
) -> pd.DataFrame:
    """Generate ``rows`` releases. ``shift`` moves the distributions (0 = reference, 1 = strong);
    ``concept_drift`` weakens coverage and strengthens churn as risk drivers (0 = none, 1 = strong).
    """
    rng = np.random.default_rng(seed)
    teams = list(TEAMS) + ([NEW_TEAM] if new_team else [])
    team = rng.choice(teams, size=rows)
    defect_rate = np.array([TEAM_DEFECTS.get(t, 10.0) for t in team])
    coverage_mean = np.array([TEAM_COVERAGE.get(t, 55.0) for t in team])

    code_changes = np.minimum(np.exp(rng.normal(5.5 + 0.6 * shift, 1.0, rows)), 100_000).round()
    files_modified = np.minimum(rng.poisson(1 + code_changes / 40), 5_000)
    past_defects = np.minimum(rng.poisson(defect_rate * (1 + 0.5 * shift)), 500)
    coverage = np.clip(rng.normal(coverage_mean - 10 * shift, 12, rows), 0, 100).round(1)
    frequency = np.clip(rng.gamma(2.0, 2.0 * (1 + shift), rows), 0, 60).round(2)
    failure_rate = np.clip(rng.beta(2, 12, rows) * (1 + 0.3 * shift), 0, 1).round(3)

    churn = np.log(code_changes + 1) - 5.5
    coverage_weight = 0.08 * (1 - 0.8 * concept_drift)
    churn_weight = 1.2 * (1 + concept_drift)
    logit = (
        -1.3
        + churn_weight * churn
        + 0.22 * (past_defects - 5)
        - coverage_weight * (coverage - 70)
        + 9.0 * (failure_rate - 0.14)
        + 0.08 * (frequency - 4)
        + rng.normal(0, 0.3, rows)
    )
    high_risk = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)

    offsets = np.sort(rng.integers(0, days, rows))[::-1]
    release_date = [(end_date - timedelta(days=int(o))).isoformat() for o in offsets]
    frame = pd.DataFrame(
        {
            "release_id": [f"{id_prefix}-{seed}-{i:06d}" for i in range(rows)],
            "release_date": release_date,
            "team": team,
            "code_changes": code_changes.astype(int),
            "files_modified": files_modified.astype(int),
            "past_defects": past_defects.astype(int),
            "test_coverage": coverage,
            "release_frequency": frequency,
            "historical_failure_rate": failure_rate,
            "high_risk": high_risk,
        }
    )
    if null_coverage > 0:
        frame.loc[rng.random(rows) < null_coverage, "test_coverage"] = np.nan
    return frame


def split(frame: pd.DataFrame, eval_rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out the most recent ``eval_rows`` releases as the frozen evaluation set."""
    ordered = frame.sort_values(["release_date", "release_id"], kind="stable")
    return ordered.iloc[:-eval_rows], ordered.iloc[-eval_rows:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    parser.add_argument("--train-rows", type=int, default=4000)
    parser.add_argument("--eval-rows", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--end-date", type=date.fromisoformat, default=END_DATE)
    parser.add_argument("--shift", type=float, default=0.0, help="data drift, 0 (none) to 1")
    parser.add_argument("--new-team", action="store_true", help="add a team never seen before")
    parser.add_argument("--concept-drift", type=float, default=0.0, help="0 (none) to 1")
    args = parser.parse_args(argv)
    frame = simulate(
        args.train_rows + args.eval_rows,
        seed=args.seed,
        end_date=args.end_date,
        shift=args.shift,
        new_team=args.new_team,
        concept_drift=args.concept_drift,
    )
    train, evaluation = split(frame, args.eval_rows)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.csv", train), ("eval.csv", evaluation)):
        tmp = args.out / f".{name}.tmp"
        part.to_csv(tmp, index=False)
        tmp.replace(args.out / name)
        print(f"wrote {len(part)} rows to {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
