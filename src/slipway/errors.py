"""Every error Slipway raises says what went wrong and what to do next.

An error is a problem with the input, the configuration or the environment: the CLI exits 2.
A check that runs and says no (data validation, a gate) is a result, not an error: exit 1.
"""

from __future__ import annotations


class SlipwayError(Exception):
    """Base class: ``message`` says what is wrong, ``hint`` says how to fix it."""

    exit_code = 2

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.hint}" if self.hint else self.message


class ConfigError(SlipwayError):
    """``slipway.yaml`` (or another configuration file) is missing or invalid."""


class DataError(SlipwayError):
    """A dataset cannot be read at all (missing, empty, not CSV) or its lock does not match."""


class TrainingError(SlipwayError):
    """The model project's ``train.py`` failed to build or fit the pipeline."""


class RegistryError(SlipwayError):
    """The MLflow tracking server or registry cannot be reached or refused a request."""


class PackagingError(SlipwayError):
    """A model version cannot be imported into the BentoML store or its Bento cannot be built."""


class ServingError(SlipwayError):
    """An environment cannot be served (nothing deployed, server not starting) or stopped."""


class ReportError(SlipwayError):
    """The JSON outputs a report is rendered from are unreadable or not Slipway's."""


class DriftError(SlipwayError):
    """A drift check cannot run: a version has no reference profile, or not the one stored."""


class PromotionError(SlipwayError):
    """A version may not be promoted (not gated, not packaged); no manifest was changed."""

    exit_code = 1


class GitHubError(SlipwayError):
    """GitHub refused a request or could not be reached; ``status`` is the HTTP status or None."""

    def __init__(
        self, message: str, hint: str = "", status: int | None = None, endpoint: str = ""
    ) -> None:
        super().__init__(message, hint)
        self.status = status
        self.endpoint = endpoint
