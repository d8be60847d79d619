"""What a drift check left out or could not judge, as sentences that name and count it, so an
empty window, a malformed log, a log of another model or labels for unknown releases are never
a silent pass."""

from __future__ import annotations

from typing import Any

from slipway.config import ModelConfig

LEFT_OUT = {
    "malformed": "{n} log lines could not be read (not JSON, a field of the wrong type, or no "
    "timestamp): left out",
    "other_model": "{n} records of another model than {model}: left out",
    "other_environment": "{n} records of another environment than {environment}: left out",
    "other_version": "{n} predictions of versions {environment} does not serve now: left out",
    "failed": "{n} predictions failed in scoring (no output): left out",
    "rejected": "{n} requests were rejected by the service: see quality.rejected",
    "dropped": "the service's log dropped {n} records (its queue was full)",
    "write_errors": "{n} writes of the service's log failed",
}
LABEL_NOTES = {
    "malformed": "{n} label rows could not be read (no id or label, not JSON, or an unreadable "
    "labelled_at): left out",
    "conflicting": "{n} release ids are labelled both ways: left out",
    "later": "{n} labels were given at or after the window's end: not counted",
}


def found_notes(
    config: ModelConfig,
    environment: str,
    results: list[dict[str, Any]],
    counts: dict[str, Any],
    labels: dict[str, Any] | None,
) -> list[str]:
    """Everything the check left out or could not judge, named and counted."""
    notes = []
    if counts["files"] == 0:
        notes.append("no prediction log files in the source: every window is empty")
    if counts["used"] == 0 and counts["other_model"]:
        notes.append(
            f"no prediction of {config.name} in the log, but {counts['other_model']} "
            "records of another model: is the source another model's log?"
        )
    for key, text in LEFT_OUT.items():
        if counts[key]:
            notes.append(text.format(n=counts[key], model=config.name, environment=environment))
    for result in results:
        for window in result["windows"]:
            span = f"{window['since']} to {window['until']}"
            if window["rows"] == 0:
                notes.append(f"v{result['version']}: no predictions from {span}: inconclusive")
            elif window["rows"] < config.drift.min_rows:
                notes.append(
                    f"v{result['version']}: {window['rows']} predictions from {span}, "
                    f"fewer than min_rows ({config.drift.min_rows}): inconclusive"
                )
    if labels is None:
        notes.append(
            "no delayed labels: realised performance not judged (set drift.labels or pass --labels)"
        )
        return notes
    for key, text in LABEL_NOTES.items():
        if labels[key]:
            notes.append(text.format(n=labels[key]))
    if labels["unmatched"]:
        named = ", ".join(labels["unmatched_ids"])
        more = " …" if labels["unmatched"] > len(labels["unmatched_ids"]) else ""
        notes.append(
            f"{labels['unmatched']} labels name release ids no prediction in the "
            f"windows has (older predictions, or ids never logged): {named}{more}"
        )
    return notes
