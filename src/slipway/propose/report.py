"""Render the PR report (Markdown) from the JSON outputs; never the other way round."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from slipway.errors import ReportError
from slipway.fsutil import atomic_write_text, read_json
from slipway.github import MARKER

METRICS = ("recall", "precision", "f1", "accuracy", "roc_auc", "pr_auc", "log_loss")
CHART_METRICS = ("recall", "precision", "f1", "accuracy", "roc_auc", "pr_auc")
_REGENERATE = "regenerate the outputs with the slipway command that writes them"
ICON = {"pass": "✅", "fail": "❌", "inconclusive": "⚠️", "skipped": "➖"}


def _num(value: Any, digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and value != value:  # NaN
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _interval(pair: list[float] | None, signed: bool = False) -> str:
    return "—" if not pair else f"[{_num(pair[0], signed=signed)}, {_num(pair[1], signed=signed)}]"


def load_outputs(out_dir: Path) -> dict[str, dict | None]:
    """Whatever JSON outputs exist in ``out_dir``."""
    found: dict[str, dict | None] = {}
    for name in ("validation", "train", "gate", "package"):
        path = out_dir / f"{name}.json"
        try:
            found[name] = read_json(path) if path.is_file() else None
        except ValueError as exc:
            raise ReportError(f"{path} is not valid JSON ({exc})", _REGENERATE) from exc
        if found[name] is not None and not isinstance(found[name], dict):
            raise ReportError(f"{path} is not a JSON object", _REGENERATE)
    return found


def _headline(outputs: dict[str, dict | None]) -> list[str]:
    validation, train, gate = outputs["validation"], outputs["train"], outputs["gate"]
    if validation is not None and not validation["passed"]:
        return [f"## ❌ Data validation failed: {validation['violation_count']} violation(s)", ""]
    if gate is None:
        name = train["model"] if train else "model"
        return [f"## ⏳ {name}: no gate result yet", ""]
    version = gate["candidate"]["version"]
    if gate["status"] == "pass":
        head = f"## ✅ {gate['model']} v{version} passes every gate"
    else:
        head = f"## ❌ {gate['model']} v{version} fails: {', '.join(gate['failed']) or 'policy'}"
    champion = gate["champion"]
    against = f"production **v{champion['version']}**" if champion else "no production model yet"
    commit = (gate["candidate"].get("git_commit") or "unknown")[:7]
    lines = [
        head,
        "",
        f"Candidate **v{version}** (commit `{commit}`) vs {against}, on "
        f"{gate['eval']['rows']:,} frozen eval rows ({gate['eval']['positives']:,} high-risk; "
        f"eval sha256 `{gate['eval']['sha256'][:12]}`).",
    ]
    for item in gate["gates"]:
        if item["status"] == "inconclusive":
            lines.append(
                f"\n> ⚠️ **Inconclusive: {item['gate']} · {item['metric']}** — {item['reason']}."
            )
    return [*lines, ""]


def _metrics_table(gate: dict) -> list[str]:
    cand = gate["candidate"]["metrics"]
    champ = gate["champion"]["metrics"] if gate["champion"] else None
    intervals = {g["metric"]: g["interval"] for g in gate["gates"] if g["gate"] == "regression"}
    level = f"{gate['bootstrap']['confidence']:.0%}"
    lines = [
        f"### Candidate vs production\n\n| metric | candidate | production | Δ | {level} CI of Δ |",
        "|---|---:|---:|---:|---:|",
    ]
    for metric in METRICS:
        base = champ[metric] if champ else None
        delta = cand[metric] - base if base is not None else None
        ci = _interval(intervals.get(metric), signed=True) if metric in intervals else "—"
        lines.append(
            f"| {metric} | {_num(cand[metric])} | {_num(base)} | "
            f"{_num(delta, signed=True)} | {ci} |"
        )
    return [*lines, ""]


def _gate_list(gate: dict) -> list[str]:
    lines = ["### Gates", ""]
    for g in gate["gates"]:
        detail = (
            f"value {_num(g['value'])}, threshold {_num(g['threshold'])}, "
            f"baseline {_num(g['baseline'])}, Δ {_num(g['delta'], signed=True)}, "
            f"interval {_interval(g['interval'])}"
        )
        lines.append(
            f"- {ICON[g['status']]} **{g['gate']} · {g['metric']}** — {g['reason']}  \n"
            f"  <sub>{detail}</sub>"
        )
    return [*lines, ""]


def _teams(gate: dict) -> list[str]:
    cand = gate["candidate"]["teams"]
    if not cand:
        return []
    champ = gate["champion"]["teams"] if gate["champion"] else {}
    lines = [
        "### Recall per team",
        "",
        "| team | rows | high-risk | candidate | production |",
        "|---|---:|---:|---:|---:|",
    ]
    for team, row in cand.items():
        base = champ.get(team, {}).get("recall")
        lines.append(
            f"| {team} | {row['rows']} | {row['positives']} | {_num(row['recall'])} | "
            f"{_num(base)} |"
        )
    return [*lines, ""]


def _confusion(gate: dict) -> list[str]:
    lines = [
        "### Confusion matrices",
        "",
        "| model | true low · pred low | true low · pred high "
        "| true high · pred low | true high · pred high |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, side in (("candidate", gate["candidate"]), ("production", gate["champion"])):
        if side:
            (tn, fp), (fn, tp) = side["metrics"]["confusion_matrix"]
            lines.append(f"| {label} v{side['version']} | {tn} | {fp} | {fn} ❗ | {tp} |")
    return [*lines, "", "❗ missed high-risk releases: the number to keep low.", ""]


def _chart(gate: dict) -> list[str]:
    cand = gate["candidate"]["metrics"]
    champ = gate["champion"]["metrics"] if gate["champion"] else None
    title = "bars: candidate" + (", line: production" if champ else "")
    lines = [
        "```mermaid",
        "xychart-beta",
        f'    title "{title}"',
        f"    x-axis [{', '.join(CHART_METRICS)}]",
        '    y-axis "score" 0 --> 1',
        f"    bar [{', '.join(_num(cand[m]) for m in CHART_METRICS)}]",
    ]
    if champ:
        lines.append(f"    line [{', '.join(_num(champ[m]) for m in CHART_METRICS)}]")
    return [*lines, "```", ""]


def _validation(validation: dict | None) -> list[str]:
    if validation is None:
        return []
    lines = ["### Data validation", ""]
    for dataset in validation["datasets"]:
        count = len(dataset["violations"])
        rows = f"{dataset['rows']:,} rows, " if "rows" in dataset else ""
        imputed = dataset.get("imputed_nulls") or {}
        extra = (
            "; imputed nulls: " + ", ".join(f"{k} {v}" for k, v in imputed.items())
            if imputed
            else ""
        )
        lines.append(
            f"- {'✅' if not count else '❌'} **{dataset['split']}**: {rows}"
            f"{count} violation(s){extra}"
        )
        for v in dataset["violations"]:
            examples = ", ".join(
                f"line {e['line']}" + (f" = {e['value']!r}" if "value" in e else "")
                for e in v["examples"]
            )
            lines.append(
                f"  - `{v['check']}` {v['column'] or ''}: {v['message']} "
                f"({v['count']} rows{'; e.g. ' + examples if examples else ''})"
            )
    return [*lines, ""]


def _links(train: dict | None, package: dict | None) -> list[str]:
    if train is None:
        return []
    run = train["run_url"] or f"run `{train['run_id']}` in `{train['tracking_uri']}`"
    link = f"[{train['run_id']}]({train['run_url']})" if train["run_url"] else run
    lines = ["### MLflow", "", f"- Run: {link}", f"- Model: `{train['model_uri']}`"]
    if package is not None:
        lines.append(f"- Bento: `{package['bento_tag']}` (digest `{package['digest']}`)")
    return [*lines, ""]


def render(outputs: dict[str, dict | None]) -> str:
    """The whole report; the hidden marker lets a bot find and update its own comment."""
    lines = [MARKER, *_headline(outputs)]
    gate = outputs["gate"]
    if gate is not None:
        lines += _metrics_table(gate) + _gate_list(gate) + _chart(gate) + _teams(gate)
        lines += _confusion(gate)
    lines += _validation(outputs["validation"]) + _links(outputs["train"], outputs.get("package"))
    return "\n".join(lines).rstrip() + "\n"


def write_report(out_dir: Path) -> tuple[Path, str]:
    """Write ``report.md`` and append it to the GitHub step summary when there is one."""
    try:
        markdown = render(load_outputs(out_dir))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        # Outputs may come from an untrusted artifact: a field missing or of the wrong type is
        # reported, never rendered half-way.
        raise ReportError(
            f"the outputs in {out_dir} are not Slipway's: {type(exc).__name__} {exc}",
            _REGENERATE,
        ) from exc
    path = out_dir / "report.md"
    atomic_write_text(path, markdown)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with Path(summary).open("a", encoding="utf-8") as handle:
            handle.write(markdown)
    return path, markdown
