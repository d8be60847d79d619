"""The model project's configuration, ``model/slipway.yaml``, validated on load."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slipway.errors import ConfigError
from slipway.fsutil import DEFAULT_CONFIG

REGRESSION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
THRESHOLD_METRICS = (*REGRESSION_METRICS, "pr_auc")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Impute(_Strict):
    """Replace a null with an explicit value before training and serving."""

    impute: float | int | str


class Column(_Strict):
    """One column of the data contract."""

    dtype: Literal["int", "float", "category", "string", "date"]
    min: float | None = None
    max: float | None = None
    categories: list[str | int] | None = None
    nulls: Literal["reject"] | Impute = "reject"

    @model_validator(mode="after")
    def _coherent(self) -> Column:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.dtype == "category" and not self.categories:
            raise ValueError("a category column needs its list of allowed `categories`")
        if self.dtype in ("int", "float") and isinstance(self.nulls, Impute):
            try:
                float(self.nulls.impute)
            except ValueError:
                raise ValueError(
                    f"nulls.impute {self.nulls.impute!r} is not a number but the column is "
                    f"{self.dtype}"
                ) from None
        return self


class Bounds(_Strict):
    min: float = 0.0
    max: float = 1.0


class DataSource(_Strict):
    """Where fresh labelled rows come from when the labelled prediction log cannot fill a new
    training window (``slipway retrain-pr``): a command that writes CSV files in the contract's
    columns into the directory ``{out}``; ``{since}`` and ``{until}`` are the dates it covers."""

    command: list[str] = Field(min_length=1)


class DataConfig(_Strict):
    train: Path
    eval: Path
    lock: Path
    id_column: str
    date_column: str | None = None
    min_rows: int = Field(default=100, ge=1)
    max_age_days: int | None = Field(default=None, ge=1)
    label_balance: Bounds = Bounds(min=0.05, max=0.95)
    source: DataSource | None = None


class Target(_Strict):
    column: str
    positive: int | str = 1


class Training(_Strict):
    seed: int = 42
    params: dict[str, Any] = Field(default_factory=dict)


class Threshold(_Strict):
    min: float | None = None
    max: float | None = None


class Regression(_Strict):
    metrics: list[Literal["accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"]] = [
        "recall",
        "roc_auc",
    ]
    tolerance: float = Field(default=0.02, ge=0)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    resamples: int = Field(default=2000, ge=100)
    on_inconclusive: Literal["warn", "fail"] = "warn"


class Fairness(_Strict):
    metric: Literal["recall"] = "recall"
    max_gap: float = Field(default=0.15, ge=0, le=1)
    min_positives: int = Field(default=20, ge=1)


class Stability(_Strict):
    # The share of eval rows whose decision changes against production's, at most. `negative`
    # counts only the changes from a right decision to a wrong one (the negative flip rate): a
    # model retrained on a changed world must change the decisions production now gets wrong.
    # `all` counts every change.
    max_flip_rate: float = Field(default=0.15, ge=0, le=1)
    flips: Literal["negative", "all"] = "negative"


class Latency(_Strict):
    p95_ms: float = Field(default=50.0, gt=0)
    calls: int = Field(default=200, ge=20)


class Gates(_Strict):
    thresholds: dict[
        Literal["accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss"],
        Threshold,
    ] = Field(default_factory=dict)
    regression: Regression = Regression()
    fairness: Fairness = Fairness()
    stability: Stability = Stability()
    latency: Latency = Latency()


class Canary(_Strict):
    """The limits a canary is judged by (``slipway canary-report``): candidate vs stable."""

    min_predictions: int = Field(default=200, ge=1)  # per route, before any verdict but wait
    max_error_rate_increase: float = Field(default=0.01, ge=0, le=1)  # absolute
    max_p95_ratio: float = Field(default=1.5, gt=0)  # candidate p95 latency / stable p95
    max_high_risk_share_change: float = Field(default=0.10, ge=0, le=1)  # absolute, either way
    max_recall_drop: float = Field(default=0.05, ge=0, le=1)  # absolute, with labels
    confidence: float = Field(default=0.95, gt=0.5, lt=1)


class Persistence(_Strict):
    """``drifted`` needs the condition in ``k`` of the last ``n`` windows."""

    k: int = Field(default=2, ge=1)
    n: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _k_of_n(self) -> Persistence:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) is more than n ({self.n}): no window count reaches it")
        return self


class Drift(_Strict):
    """How ``slipway drift ENV`` judges the prediction log against a version's profile."""

    window_days: float = Field(default=1.0, gt=0)  # one window: this many days of the log
    persistence: Persistence = Persistence()
    psi_tolerance: float = Field(default=0.2, gt=0)  # PSI interval's low end above it: drifted
    fdr: float = Field(default=0.05, gt=0, lt=1)  # Benjamini-Hochberg false discovery rate
    min_rows: int = Field(default=200, ge=1)  # fewer rows in a window: inconclusive
    prediction_tolerance: float = Field(default=0.10, ge=0, le=1)  # high-risk share, absolute
    performance_tolerance: float = Field(default=0.05, ge=0, le=1)  # metric drop, absolute
    quality_tolerance: float = Field(default=0.05, ge=0, le=1)  # null/range rate rise, absolute
    labels: Path | None = None  # delayed labels: a CSV/JSONL file or a directory of them
    log: str | None = None  # the prediction log: a path or a URI; None: the environment's
    max_age_days: int | None = Field(default=90, ge=1)  # retrain on schedule past this age
    confidence: float = Field(default=0.95, gt=0.5, lt=1)


class ModelConfig(_Strict):
    """Everything Slipway knows about one model project."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    schema_version: int = Field(ge=1)
    # GitHub users or teams (`org/team`) who answer for the model: reviewers of its promotions.
    owners: list[str] = Field(default_factory=list)
    intended_use: str | None = None
    data: DataConfig
    target: Target
    group_column: str | None = None
    columns: dict[str, Column]
    features: list[str] = Field(min_length=1)
    training: Training = Training()
    gates: Gates = Gates()
    canary: Canary = Canary()
    drift: Drift = Drift()
    root: Path = Path()

    @model_validator(mode="after")
    def _columns_known(self) -> ModelConfig:
        declared = set(self.columns)
        named = [self.data.id_column, self.target.column, *self.features]
        if self.data.date_column:
            named.append(self.data.date_column)
        if self.group_column:
            named.append(self.group_column)
        missing = [name for name in named if name not in declared]
        if missing:
            raise ValueError(f"columns {missing} are used but not declared under `columns`")
        if self.target.column in self.features:
            raise ValueError(f"the target `{self.target.column}` cannot also be a feature")
        not_numeric = [f for f in self.features if self.columns[f].dtype not in ("int", "float")]
        if not_numeric:
            raise ValueError(f"features {not_numeric} must be declared with dtype int or float")
        return self

    def path(self, relative: Path) -> Path:
        """Resolve a path from the config against the model project directory."""
        return relative if relative.is_absolute() else self.root / relative

    def with_params(self, overrides: dict[str, Any]) -> ModelConfig:
        """A copy whose training params are updated with ``overrides``."""
        training = self.training.model_copy(
            update={"params": {**self.training.params, **overrides}}
        )
        return self.model_copy(update={"training": training})


def load_config(path: Path = DEFAULT_CONFIG) -> ModelConfig:
    """Load and validate ``slipway.yaml``; every problem is reported with its key path."""
    if not path.is_file():
        raise ConfigError(
            f"no model configuration at {path}",
            "run from the repository root or pass --config PATH/TO/slipway.yaml",
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}", "fix the YAML syntax") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a mapping of settings", "see README: slipway.yaml")
    try:
        return ModelConfig.model_validate({**raw, "root": path.parent})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(
            f"{path} is invalid: {problems}", "correct those keys (README: slipway.yaml reference)"
        ) from exc


def parse_param(text: str) -> tuple[str, Any]:
    """Parse a ``KEY=VALUE`` override; the value is read as YAML (numbers, booleans, null)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--param {text!r} is not KEY=VALUE", "write e.g. --param max_depth=6")
    return key.strip(), yaml.safe_load(value)
