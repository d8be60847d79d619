"""The retrain pull request's title and body, rendered from ``retrain.json``.

The body carries the evidence a reviewer needs to merge without opening another tab: why (the
triggers, and why the others did not fire), the drift check's Markdown summary (``drift.md``;
without it, a summary of ``drift.json``), what the new window holds (rows, dates, labels,
digests, where its rows came from) and what happens next.
"""

from __future__ import annotations

import re
from typing import Any

MARKER = "<!-- slipway:retrain"  # hidden first line of the body: the evidence's fingerprint
MAX_BODY = 65536  # GitHub's limit on a pull request's body
_HEADING = re.compile(r"^(#{1,6}) ")
CUT = "The full drift report is `drift.md` among the drift workflow run's artifacts."


def title(document: dict[str, Any]) -> str:
    """The title, "Retrain MODEL: TRIGGER": which of drift and age brought it."""
    parts = []
    for trigger in document["triggers"]:
        if trigger["kind"] == "drift":
            parts.append(f"drift in {document['environment']}")
        else:
            age = f"v{trigger['version']} is {trigger['age_days']:.0f} days old"
            parts.append(age if parts else f"{document['environment']} {age}")
    return f"Retrain {document['model']}: {', '.join(parts)}"


def body(document: dict[str, Any], drift_markdown: str | None) -> str:
    """The pull request's body, rendered from ``retrain.json`` (and ``drift.md`` when there)."""
    window = document["window"]
    lines = [
        f"{MARKER} {document['fingerprint']} -->",
        f"Retrains **{document['model']}** on a new training window: "
        f"{title(document).split(': ', 1)[1]}.",
        "",
        "### Why",
        "",
        *(_trigger_line(document, t) for t in document["triggers"]),
        *(f"- not a trigger: {reason}" for reason in document["not_triggered"]),
        "",
    ]
    drift = next((t for t in document["triggers"] if t["kind"] == "drift"), None)
    if drift is not None:
        lines += ["### Drift evidence", "", nested(drift_markdown or "", 4), ""]
    lines += [*_window_lines(document, window), *_next_lines(document)]
    text = "\n".join(lines) + "\n"
    if len(text) > MAX_BODY and drift_markdown not in (None, CUT):
        return body(document, CUT)
    return text


def nested(markdown: str, top: int) -> str:
    """``markdown`` with its headings moved so that its highest is level ``top`` (at most 6),
    to sit under a section of the body; fenced code (Mermaid charts) is left alone."""
    lines, fenced, levels = markdown.strip().splitlines(), False, []
    for line in lines:
        fenced = fenced != line.startswith("```")
        if not fenced and (match := _HEADING.match(line)):
            levels.append(len(match.group(1)))
    shift = top - min(levels) if levels else 0
    out, fenced = [], False
    for line in lines:
        fenced = fenced != line.startswith("```")
        match = None if fenced else _HEADING.match(line)
        if match:
            line = "#" * min(len(match.group(1)) + shift, 6) + line[len(match.group(1)) :]
        out.append(line)
    return "\n".join(out)


def _trigger_line(document: dict[str, Any], trigger: dict[str, Any]) -> str:
    if trigger["kind"] == "drift":
        window = trigger.get("window") or {}
        since, until = _moment(window.get("since")), _moment(window.get("until"))
        span = f", window {since} → {until} UTC" if window else ""
        found = ", ".join(f"`{item}`" for item in trigger["found"])
        return f"- **drift** in {document['environment']}{span}: {found}"
    return (
        f"- **age**: {document['environment']} runs **v{trigger['version']}**, registered "
        f"{trigger['registered_at'][:10]}, **{trigger['age_days']:.0f} days** ago; "
        f"`drift.max_age_days` is {trigger['max_age_days']}"
    )


def _window_lines(document: dict[str, Any], window: dict[str, Any]) -> list[str]:
    train, evaluation = window["splits"]["train"], window["splits"]["eval"]
    before = window["previous"]
    origin, log, labels = window["from"], window["log"], window["labels"]
    bad = labels.get("malformed", 0) + labels.get("conflicting", 0)
    left_out = f"; {bad:,} left out: malformed, or a release labelled both ways" if bad else ""
    rows = [
        f"- {origin['current']:,} kept from the current data (the {origin['left_out']:,} oldest "
        "left out)",
        f"- {origin['log']:,} labelled predictions from the {document['environment']} log "
        f"(`{log.get('source')}`: {log.get('records', 0):,} records read; {labels['labels']:,} "
        f"labels read, {labels['unknown']:,} for releases the log does not hold{left_out})",
    ]
    ran = window["data_source"]
    if ran["command"]:
        command = " ".join(ran["command"])
        rows.append(
            f"- {ran['rows']:,} from the data source (`{command}`)"
            if ran["ran"]
            else f"- none from the data source (`{command}`): not run, {ran.get('reason')}"
        )

    def share(split: dict[str, Any]) -> str:
        return f"{split['positive']:,} ({split['positive'] / max(split['rows'], 1):.1%})"

    def dates(split: dict[str, Any]) -> str:
        return " → ".join(split["dates"]) if split["dates"] else "—"

    return [
        "### The new training window",
        "",
        "| | train | eval |",
        "|---|---:|---:|",
        f"| rows | {train['rows']:,} (was {before['rows']['train']:,}) "
        f"| {evaluation['rows']:,} (was {before['rows']['eval']:,}) |",
        f"| dates | {dates(train)} | {dates(evaluation)} |",
        f"| positive labels | {share(train)} | {share(evaluation)} |",
        f"| sha256 | `{train['sha256'][:12]}` (was `{before['sha256']['train'][:12]}`) "
        f"| `{evaluation['sha256'][:12]}` (was `{before['sha256']['eval'][:12]}`) |",
        "",
        "Where the rows come from:",
        "",
        *rows,
        "",
        f"The split: {window['rule']}. Both files pass the data contract and the lock "
        "records their digests.",
        "",
    ]


def _next_lines(document: dict[str, Any]) -> list[str]:
    files = ", ".join(f"`{path}`" for path in document["files"])
    return [
        "### What changes",
        "",
        f"{files}: one commit each.",
        "",
        "### What happens next",
        "",
        "`pr.yml` runs on this pull request: it validates the new data, trains a candidate on "
        f"the new training set and gates it against {document['environment']} on the new eval "
        "set; its comment shows the candidate vs production, gate by gate. Merging it changes "
        f"no environment ({document['environment']} keeps "
        f"{_version(document)} until a promotion is merged): `autopromote.yml` opens the "
        "promotion of the new version to staging.",
        "",
        "Not wanted? Close it: a retrain pull request closed without merging is not opened "
        "again until the evidence changes materially (another production version, or another "
        "set of triggers and drifted features).",
    ]


def _version(document: dict[str, Any]) -> str:
    return f"v{document['version']}" if document.get("version") else "what it runs"


def _moment(text: Any) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM`` (UTC, as the drift check writes it)."""
    return str(text)[:16].replace("T", " ") if text else "—"


def drift_summary(drift: dict[str, Any]) -> str:
    """``drift.json`` in a few tables, for when its Markdown summary is not there."""
    window = drift.get("window") or {}
    lines = [
        f"The drift check of {drift.get('environment')} (versions "
        f"{', '.join(map(str, drift.get('versions') or [])) or '—'}, window "
        f"{_moment(window.get('since'))} → {_moment(window.get('until'))} UTC) says "
        f"**{drift.get('status')}**.",
    ]
    windows = drift.get("windows") or []
    if windows:
        lines.append(
            "Windows: " + ", ".join(f"{w.get('since', '')[:10]} {w.get('status')}" for w in windows)
        )
    features = drift.get("features") or {}
    if features:
        order = {"drifted": 0, "inconclusive": 1}
        lines += [
            "",
            "| feature | status | PSI [interval] | tolerance | test | adjusted p | rows |",
            "|---|---|---:|---:|---|---:|---:|",
        ]
        for name, f in sorted(
            features.items(), key=lambda i: (order.get(i[1].get("status"), 2), i[0])
        ):
            low, high = (f.get("psi_interval") or [None, None])[:2]
            lines.append(
                f"| {name} | {f.get('status')} | {_num(f.get('psi'))} [{_num(low)}, {_num(high)}] "
                f"| {_num(f.get('tolerance'))} | {f.get('test') or '—'} "
                f"| {_p(f.get('adjusted_pvalue'))} | {f.get('rows', '—')} |"
            )
    prediction = drift.get("prediction") or {}
    if prediction:
        low, high = (prediction.get("interval") or [None, None])[:2]
        lines += [
            "",
            f"Prediction: high-risk share {_num(prediction.get('high_risk_share'))} "
            f"[{_num(low)}, {_num(high)}] vs {_num(prediction.get('reference'))} at the gate: "
            f"{prediction.get('status') or '—'}.",
        ]
    lines += _metric_lines(drift)
    return "\n".join(lines)


def _metric_lines(drift: dict[str, Any]) -> list[str]:
    lines = []
    for key, what in (("performance", "realised, with labels"), ("estimated", "estimated")):
        metrics = (drift.get(key) or {}).get("metrics") or {}
        if not metrics:
            continue
        labelled = (drift.get(key) or {}).get("labelled")
        count = f", {labelled:,} labelled" if isinstance(labelled, int) else ""
        lines += ["", f"| {key} ({what}{count}) | now [interval] | at the gate | status |"]
        lines.append("|---|---:|---:|---|")
        for name, m in metrics.items():
            low, high = (m.get("interval") or [None, None])[:2]
            interval = f" [{_num(low)}, {_num(high)}]" if m.get("interval") else ""
            lines.append(
                f"| {name} | {_num(m.get('value'))}{interval} | {_num(m.get('reference'))} "
                f"| {m.get('status')} |"
            )
    return lines


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "—"


def _p(value: Any) -> str:
    """A p-value: four decimals, or the power of ten below 0.0001."""
    if not isinstance(value, int | float):
        return "—"
    return f"{value:.1e}" if value < 1e-4 else f"{value:.4f}"
