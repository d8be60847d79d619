"""The release-risk model: a scikit-learn pipeline built from the params in slipway.yaml.

Slipway calls ``build_pipeline(params, features, seed)`` and fits what it returns. Change the
recipe here (or the params in slipway.yaml) and open a pull request: the gates decide.
"""

from __future__ import annotations

from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

ESTIMATORS = {
    "random_forest": RandomForestClassifier,
    "logistic_regression": LogisticRegression,
    "gradient_boosting": HistGradientBoostingClassifier,
}


def build_pipeline(
    params: dict[str, Any], features: list[str], seed: int
) -> FixedThresholdClassifier:
    """Scale the numeric features, fit the chosen estimator, predict high-risk above ``threshold``.

    ``threshold`` is low on purpose: missing a risky release costs more than testing a safe one.
    """
    params = dict(params)
    kind = params.pop("model", "random_forest")
    threshold = float(params.pop("threshold", 0.5))
    if kind not in ESTIMATORS:
        raise ValueError(f"unknown model {kind!r}; choose one of {sorted(ESTIMATORS)}")
    estimator = ESTIMATORS[kind](random_state=seed, **params)
    pipeline = Pipeline(
        [
            ("scale", ColumnTransformer([("numeric", StandardScaler(), features)])),
            ("model", estimator),
        ]
    )
    return FixedThresholdClassifier(pipeline, threshold=threshold, response_method="predict_proba")
