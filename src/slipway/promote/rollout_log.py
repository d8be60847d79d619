"""The prediction log of a rollout: each route's records, added up, joined with delayed labels.

:func:`read_rollout` picks the served records of a manifest's rollout from every log file
(``predictions*.jsonl``); :func:`read_labels` reads the labels that arrive later (CSV or JSON
lines); :func:`sample` adds up one route's records. A batch (the rows one ``predict`` call
scored for a version) is known by its timestamp and latency, which its rows share.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slipway.errors import DataError
from slipway.manifests import Manifest
from slipway.serve.prediction_log import is_smoke

ROUTES = ("stable", "canary")


@dataclass
class Sample:
    """What one route's log records add up to."""

    version: str
    predictions: int = 0  # records, failed ones included
    errors: int = 0  # records that failed
    answered: int = 0  # records with an output
    high_risk: int = 0
    positives: int = 0  # labelled positive releases answered (each once)
    caught: int = 0  # of those, predicted high-risk
    # (timestamp, latency_ms) of each batch → whether it failed
    batches: dict[tuple[str, float | None], bool] = field(default_factory=dict)

    def failed_batches(self) -> int:
        return sum(self.batches.values())

    def latencies(self) -> list[float]:
        """The latency of each batch that was answered (and timed)."""
        return [
            latency
            for (_at, latency), failed in self.batches.items()
            if not failed and latency is not None
        ]


def sample(version: str, records: Iterable[dict[str, Any]], labels: dict[str, bool]) -> Sample:
    """Add up one route's records; each labelled release counts once, by its last answer."""
    found = Sample(version)
    last: dict[str, bool] = {}
    for record in records:
        found.predictions += 1
        output = record.get("output")
        failed = bool(record.get("error")) or not isinstance(output, dict)
        latency = record.get("latency_ms")
        key = (str(record.get("timestamp")), float(latency) if latency is not None else None)
        found.batches[key] = found.batches.get(key, False) or failed
        if failed:
            found.errors += 1
            continue
        found.answered += 1
        high_risk = bool(output.get("high_risk"))
        found.high_risk += high_risk
        if labels.get(str(record.get("release_id"))):
            last[str(record["release_id"])] = high_risk
    found.positives, found.caught = len(last), sum(last.values())
    return found


def _records(log_dir: Path) -> Iterator[dict[str, Any] | None]:
    """Every record of every log file, oldest file first; None for a line that is not JSON
    (a line being written while the log was read)."""
    for path in sorted(log_dir.glob("predictions*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    yield None
                    continue
                yield record if isinstance(record, dict) else None


def read_rollout(
    log_dir: Path, manifest: Manifest, now: datetime, started: datetime | None = None
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """The served records of the manifest's rollout up to ``now``, by route, and what was read.

    Records before ``started`` (when the server of this rollout started) are not this rollout's;
    stable records before the canary's first prediction are left out: both routes are compared
    over the same time.
    """
    wanted = {"stable": str(manifest.version), "canary": str(manifest.rollout.candidate_version)}
    routes: dict[str, list[tuple[datetime, dict[str, Any]]]] = {r: [] for r in ROUTES}
    read = unreadable = 0
    for record in _records(log_dir):
        read += 1
        if record is None:
            unreadable += 1
            continue
        route = record.get("route")
        if (
            route not in wanted
            or record.get("served") is not True
            or is_smoke(record)
            or str(record.get("model_version")) != wanted[route]
            or record.get("model", manifest.model) != manifest.model
            or record.get("environment", manifest.environment) != manifest.environment
        ):
            continue
        try:
            at = datetime.fromisoformat(str(record["timestamp"]))
        except (KeyError, ValueError):
            unreadable += 1
            continue
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        if at <= now and (started is None or at >= started):
            routes[route].append((at, record))
    since = min((at for at, _ in routes["canary"]), default=None)
    chosen = {
        route: [r for at, r in found if since is not None and at >= since]
        for route, found in routes.items()
    }
    used = sum(len(found) for found in chosen.values())
    seen = {"read": read, "unreadable": unreadable, "used": used}
    return chosen, {**seen, "since": since.isoformat() if since else None}


def read_labels(path: Path, id_column: str, target: str, positive: Any) -> dict[str, bool]:
    """``release id → label is positive`` from a CSV or JSON-lines file (by its suffix); a row
    whose label is empty or null is not labelled yet."""
    if not path.is_file():
        raise DataError(f"no labels file at {path}", "pass --labels PATH to a CSV or JSONL file")
    with path.open(encoding="utf-8", newline="") as handle:
        if path.suffix in (".jsonl", ".ndjson", ".json"):
            try:
                rows = [json.loads(line) for line in handle if line.strip()]
            except ValueError as exc:
                raise DataError(f"{path} is not JSON lines: {exc}", "one object a line") from exc
        else:
            rows = list(csv.DictReader(handle))
    labels: dict[str, bool] = {}
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or id_column not in row or target not in row:
            raise DataError(
                f"{path} row {number} lacks `{id_column}` or `{target}`",
                f"give every row both columns ({id_column}, {target})",
            )
        raw = row[target]
        if raw is None or raw == "":
            continue
        value = str(int(raw) if isinstance(raw, bool) else raw) == str(positive)
        key = str(row[id_column])
        if labels.setdefault(key, value) != value:
            raise DataError(f"{path} labels {key} both ways", "keep one label per release")
    return labels
