"""Score a scikit-learn model's positive-class probability, fast where that is exact.

:func:`probability_function` returns ``frame -> P(positive)``: the model's ``predict_proba``, or
for a binary forest pipeline the same arithmetic without scikit-learn's per-tree dispatch, used
only when it gives exactly ``predict_proba``'s answers on probe rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd


def probability_function(model: Any, probe: pd.DataFrame) -> Callable[[pd.DataFrame], np.ndarray]:
    """``frame -> P(positive)`` for ``model``: its ``predict_proba``, or the same arithmetic.

    scikit-learn wraps every tree of a forest, and every transformer of a ColumnTransformer, in
    a joblib call with a configuration context and warning filters, even with ``n_jobs=1``, and
    checks the frame again at each step: for a few rows that costs ~10x the arithmetic. For a
    binary forest at the end of a pipeline (possibly inside a threshold classifier) this
    function scales the features as the pipeline's StandardScalers do, ``(x - mean_) /
    scale_``, or else calls the steps' ``transform``, and adds up ``tree_.predict`` in the
    forest's order, as scikit-learn does. It is used only when it gives exactly
    ``predict_proba``'s answers on ``probe``; any other model is scored as is.
    """

    def predict_proba(frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(model.predict_proba(frame))[:, 1]

    parts = _forest_parts(model)
    if parts is None:
        return predict_proba
    transform, forest = parts

    def sum_of_trees(frame: pd.DataFrame) -> np.ndarray:
        x = np.ascontiguousarray(transform(frame), dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != forest.n_features_in_ or not np.isfinite(x).all():
            return predict_proba(frame)  # scikit-learn's checks and messages
        total = np.zeros((len(x), forest.n_classes_))
        for tree in forest.estimators_:
            total += tree.tree_.predict(x)[:, : forest.n_classes_]
        total /= len(forest.estimators_)
        return total[:, 1]

    try:
        same = np.array_equal(sum_of_trees(probe), predict_proba(probe))
    except Exception:
        same = False
    return sum_of_trees if same else predict_proba


def _forest_parts(model: Any) -> tuple[Callable[[pd.DataFrame], Any], Any] | None:
    """(frame -> the forest's input, the forest) of a binary forest pipeline, else None."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.model_selection import FixedThresholdClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if isinstance(model, FixedThresholdClassifier):
        model = getattr(model, "estimator_", None)
    steps = model.steps if isinstance(model, Pipeline) else [("model", model)]
    forest = steps[-1][1]
    if (
        not isinstance(forest, RandomForestClassifier | ExtraTreesClassifier)
        or getattr(forest, "n_outputs_", None) != 1
        or len(getattr(forest, "classes_", [])) != 2
    ):
        return None
    if len(steps) == 1:
        return (lambda frame: frame.to_numpy()), forest
    head = model[:-1]
    transformer = steps[0][1] if len(steps) == 2 else None
    scalers = [
        (list(columns), scaler)
        for _name, scaler, columns in getattr(transformer, "transformers_", [])
        if scaler != "drop"
    ]
    if not isinstance(transformer, ColumnTransformer) or not all(
        isinstance(scaler, StandardScaler) and all(isinstance(c, str) for c in columns)
        for columns, scaler in scalers
    ):
        return head.transform, forest

    def scale(frame: pd.DataFrame) -> np.ndarray:
        blocks = []
        for columns, scaler in scalers:
            x = np.column_stack([frame[c].to_numpy(dtype=np.float64) for c in columns])
            if scaler.with_mean:
                x = x - scaler.mean_
            if scaler.with_std:
                x = x / scaler.scale_
            blocks.append(x)
        return np.hstack(blocks)

    return scale, forest


def fixed_threshold(model: Any) -> float | None:
    """The threshold of a scikit-learn ``FixedThresholdClassifier`` on ``predict_proba``.

    Its ``predict`` is ``predict_proba(X)[:, 1] >= threshold`` for classes ``[0, 1]``; anything
    else returns None and is asked for ``predict``.
    """
    threshold = getattr(model, "threshold", None)
    if (
        isinstance(threshold, int | float)
        and getattr(model, "response_method", None) == "predict_proba"
        and getattr(model, "pos_label", None) in (None, 1)
        and list(getattr(model, "classes_", [])) == [0, 1]
    ):
        return float(threshold)
    return None
