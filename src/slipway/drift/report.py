"""The drift check's outputs, all rendered from its JSON document (``slipway.drift/1``).

:func:`write_reports` writes ``drift.json`` (atomically), ``drift.md`` (the summary, with
Mermaid charts GitHub draws) and ``drift.html`` (one self-contained page: inline CSS and SVG,
no script and nothing fetched): the reference and the current histogram of every feature and
of the predicted probability, and performance over the windows, realised and estimated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slipway.drift.page import render_html
from slipway.drift.page import short_time as _day
from slipway.drift.page import shown as _f
from slipway.drift.page import shown_interval as _iv
from slipway.fsutil import atomic_write_text, write_json

ICONS = {"drifted": "🔴", "no_drift": "🟢", "inconclusive": "⚪", "error": "❌"}
SUMMARY = {
    "drifted": "drifted",
    "no_drift": "no drift",
    "inconclusive": "inconclusive: the windows cannot tell",
    "error": "the check could not run",
}


def write_reports(document: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """``drift.json``, ``drift.md`` and ``drift.html`` in ``out_dir``; their paths."""
    paths = {kind: out_dir / f"drift.{kind}" for kind in ("json", "md", "html")}
    write_json(paths["json"], document)
    atomic_write_text(paths["md"], render_markdown(document))
    atomic_write_text(paths["html"], render_html(document))
    return paths


def _cell(text: Any) -> str:
    """Text sent by clients, safe in a Markdown table cell and code span."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("`", "'")


def headline(document: dict[str, Any]) -> str:
    """One line: the verdict, where and for which versions."""
    status = document["status"]
    versions = ", ".join(f"v{v}" for v in document["versions"]) or "no version"
    return (
        f"{ICONS.get(status, '')} Drift in {document['environment']}: {document['model']} "
        f"{versions} — {SUMMARY.get(status, status)}"
    )


def render_markdown(document: dict[str, Any]) -> str:
    """The summary: verdict, windows, features, prediction, performance, quality, notes."""
    lines = [f"## {headline(document)}", ""]
    if document["status"] == "error" or document["persistence"] is None:
        for version, problem in (document.get("problems") or {}).items():
            lines.append(f"- **v{version}**: {problem['error']}  \n  fix: {problem['fix']}")
        lines += [f"- {note}" for note in document.get("notes", [])]
        return "\n".join([*lines, ""])
    lines += _verdict_lines(document)
    lines += _windows_table(document["windows"], document["window"]["days"])
    lines += _features_section(document)
    lines += _prediction_lines(document["prediction"])
    lines += _performance_section(document)
    lines += _quality_section(document["quality"])
    if document.get("candidate"):
        lines += _candidate_lines(document["candidate"])
    records = document.get("records") or {}
    shown = ", ".join(f"{k} {v:,}" for k, v in records.items() if v and k != "bytes")
    lines += ["### Records", "", f"`{document.get('source')}`: {shown or 'nothing read'}", ""]
    if document.get("notes"):
        lines += ["### Notes", "", *[f"- {note}" for note in document["notes"]], ""]
    return "\n".join(lines)


def _verdict_lines(document: dict[str, Any]) -> list[str]:
    window = document["window"]
    return [
        f"**{document['status']}**: {document['reason']}.",
        "",
        f"Current window {_day(window['since'])} → {_day(window['until'])} "
        f"(every window {window['days']:g} day{'' if window['days'] == 1 else 's'}).",
        "",
    ]


def window_label(until: str, days: float) -> str:
    """A window by its end: the day, and the time too when windows are shorter than a day."""
    shown = _day(until)
    return shown[5:10] if days >= 1 else shown[5:16]


def _windows_table(windows: list[dict[str, Any]], days: float) -> list[str]:
    lines = [
        "| window | predictions | labelled | high-risk share | accuracy | estimated | status |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for w in windows:
        lines.append(
            f"| {_day(w['since'])} → {_day(w['until'])} | {w['rows']:,} | {w['labelled']:,} | "
            f"{_f(w['high_risk_share'])} | {_f(w['performance'].get('accuracy'))} | "
            f"{_f(w['estimated'].get('accuracy'))} | "
            f"{' '.join([w['status'], *(f'`{t}`' for t in w['triggers'])])} |"
        )
    lines.append("")
    points = [w for w in windows if w["estimated"].get("accuracy") is not None]
    if len(points) >= 2:
        labels = ", ".join(f'"{window_label(w["until"], days)}"' for w in points)
        lines += [
            "```mermaid",
            "xychart-beta",
            '    title "Accuracy per window: estimated (bar), realised (line)"',
            f"    x-axis [{labels}]",
            '    y-axis "accuracy" 0 --> 1',
            f"    bar [{', '.join(_f(w['estimated']['accuracy']) for w in points)}]",
        ]
        if all(w["performance"].get("accuracy") is not None for w in points):
            lines.append(
                f"    line [{', '.join(_f(w['performance']['accuracy']) for w in points)}]"
            )
        lines += ["```", ""]
    return lines


def _features_section(document: dict[str, Any]) -> list[str]:
    features = document["features"]
    lines = [
        "### Features (current window)",
        "",
        "| feature | values | PSI [interval] | tolerance | test | statistic | p | adjusted p "
        "| unseen | status |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for name, f in features.items():
        lines.append(
            f"| {name} | {f['rows']:,} | {_f(f['psi'])}{_iv(f['psi_interval'])} | "
            f"{f['tolerance']:g} | {f['test']} | {_f(f['statistic'], '.4f')} | "
            f"{_f(f['pvalue'], '.2g')} | {_f(f['adjusted_pvalue'], '.2g')} | {f['unseen']} | "
            f"{f['status']} |"
        )
    lines.append("")
    shown = [n for n, f in features.items() if f["psi"] is not None]
    if shown:
        top = max([features[n]["psi"] for n in shown] + [features[shown[0]]["tolerance"]])
        tolerance = features[shown[0]]["tolerance"]
        lines += [
            "```mermaid",
            "xychart-beta",
            f'    title "PSI per feature (line: tolerance {tolerance:g})"',
            f"    x-axis [{', '.join(f'{chr(34)}{n}{chr(34)}' for n in shown)}]",
            f'    y-axis "PSI" 0 --> {top * 1.1:.3f}',
            f"    bar [{', '.join(_f(features[n]['psi']) for n in shown)}]",
            f"    line [{', '.join(f'{tolerance:g}' for _ in shown)}]",
            "```",
            "",
        ]
    return lines


def _prediction_lines(prediction: dict[str, Any]) -> list[str]:
    return [
        "### Prediction",
        "",
        f"High-risk share {_f(prediction['high_risk_share'])}{_iv(prediction['interval'])} of "
        f"{prediction['rows']:,} predictions vs {_f(prediction['reference'])} at gate time "
        f"(± {prediction['tolerance']:g}): **{prediction['status']}**.",
        "",
    ]


def _performance_section(document: dict[str, Any]) -> list[str]:
    performance, estimated = document["performance"], document["estimated"]
    how = (
        "takes each probability as it is (the profile found the model calibrated)"
        if estimated["calibrated"]
        else "maps each probability through the eval set's reliability bins (the profile did "
        "not find the model calibrated)"
    )
    lines = [
        "### Performance",
        "",
        f"{performance['labelled']:,} labelled predictions. The estimate without labels {how}.",
        "",
        "| metric | realised [interval] | status | estimated [interval] | status | gate time |",
        "|---|---:|---|---:|---|---:|",
    ]
    for name, guess in estimated["metrics"].items():
        real = performance["metrics"].get(name)
        realised = f"{_f(real['value'])}{_iv(real['interval'])}" if real else "no labels"
        lines.append(
            f"| {name} | {realised} | {real['status'] if real else 'skipped'} | "
            f"{_f(guess['value'])}{_iv(guess['interval'])} | {guess['status']} | "
            f"{_f(guess['reference'])} |"
        )
    return [*lines, ""]


def _quality_section(quality: dict[str, Any]) -> list[str]:
    lines = [
        "### Data quality",
        "",
        "| feature | null rate (reference) | imputed | out of range (reference) | status |",
        "|---|---:|---:|---:|---|",
    ]
    for name, nulls in quality["null_rate"].items():
        outside = quality["out_of_range_rate"][name]
        imputed = quality["imputed_rate"].get(name)
        worst = "drifted" if "drifted" in (nulls["status"], outside["status"]) else nulls["status"]
        lines.append(
            f"| {name} | {_f(nulls['value'])} ({_f(nulls['reference'])}) | "
            f"{_f(imputed['value']) if imputed else '—'} | {_f(outside['value'])} "
            f"({_f(outside['reference'])}) | {worst} |"
        )
    lines.append("")
    if quality.get("rejections"):
        lines += ["Requests the service rejected:", "", "| field | reason | requests | values |"]
        lines.append("|---|---|---:|---|")
        for r in quality["rejections"]:
            values = ", ".join(f"`{_cell(v['value'])}` ×{v['count']}" for v in r["values"])
            field, reason = _cell(r["field"]), _cell(r["reason"])
            lines.append(f"| {field} | {reason} | {r['requests']:,} | {values} |")
        lines.append("")
    if quality.get("dropped"):
        lines += [f"The service's log dropped {quality['dropped']:,} records.", ""]
    return lines


def _candidate_lines(candidate: dict[str, Any]) -> list[str]:
    triggers = ", ".join(f"`{t}`" for t in candidate["triggers"]) or "none"
    return [
        f"### Candidate v{candidate['version']}",
        "",
        f"**{candidate['status']}** (current window {candidate['current']}; triggers {triggers}); "
        "drift.json's `candidate` holds its checks.",
        "",
    ]


def render_text(document: dict[str, Any]) -> list[str]:
    """The verdict as lines for a terminal: status, windows, what drifted, notes."""
    lines = [headline(document)]
    if document["persistence"] is None:
        lines += [f"  {note}" for note in document.get("notes", [])]
        return lines
    lines.append(f"  {document['reason']}")
    for w in document["windows"]:
        triggers = f" ({', '.join(w['triggers'])})" if w["triggers"] else ""
        lines.append(
            f"  {_day(w['since'])} → {_day(w['until'])}: {w['status']}{triggers}, "
            f"{w['rows']:,} predictions, {w['labelled']:,} labelled"
        )
    for name, f in document["features"].items():
        lines.append(
            f"  {f['status']:>12}  {name}: PSI {_f(f['psi'])}{_iv(f['psi_interval'])}, "
            f"{f['test']} p {_f(f['pvalue'], '.2g')} (adjusted {_f(f['adjusted_pvalue'], '.2g')})"
        )
    prediction = document["prediction"]
    lines.append(
        f"  {prediction['status']:>12}  high-risk share {_f(prediction['high_risk_share'])}"
        f"{_iv(prediction['interval'])} vs {_f(prediction['reference'])}"
    )
    realised = document["performance"]["metrics"]
    for name, guess in document["estimated"]["metrics"].items():
        real = realised.get(name)
        if real:
            lines.append(
                f"  {real['status']:>12}  {name} {_f(real['value'])}{_iv(real['interval'])} "
                f"vs {_f(real['reference'])} at gate time"
            )
        lines.append(
            f"  {guess['status']:>12}  estimated {name} {_f(guess['value'])}"
            f"{_iv(guess['interval'])} vs {_f(guess['reference'])}"
        )
    if document.get("candidate"):
        candidate = document["candidate"]
        lines.append(f"  candidate v{candidate['version']}: {candidate['status']}")
    lines += [f"  note: {note}" for note in document.get("notes", [])]
    return lines
