"""The drift check's HTML report: one self-contained page rendered from ``drift.json``.

Inline CSS and SVG only, no script and nothing fetched, so the page opens from a CI artifact
or an air-gapped disk: the verdict and its windows, performance and the high-risk share over
the windows, and per feature (and for the predicted probability) the reference histogram
beside the current window's, on the profile's bins.
"""

from __future__ import annotations

import html
from typing import Any

CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em;max-width:72em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .5em}
th{background:#f4f4f4}.drifted{color:#b00;font-weight:bold}
.charts{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}figcaption{font-weight:bold}
svg text{font:11px system-ui,sans-serif}"""
REFERENCE, CURRENT, ESTIMATE = "#9aa5b1", "#d9480f", "#1c7ed6"


def shown(value: float | None, spec: str = ".3f") -> str:
    """A figure, or n/a."""
    return "n/a" if value is None else format(value, spec)


def shown_interval(interval: list[float | None] | None, spec: str = ".3f") -> str:
    """`` [low, high]``, or nothing when there is no interval."""
    if not interval or interval[0] is None:
        return ""
    return f" [{shown(interval[0], spec)}, {shown(interval[1], spec)}]"


def short_time(moment: str) -> str:
    """An ISO time of drift.json, without midnight, ``T`` and ``Z``."""
    return moment.replace("T00:00:00Z", "").replace("T", " ").replace("Z", "")


def _e(value: Any) -> str:
    return html.escape(str(value))


def _shares(counts: list[int]) -> list[float]:
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def histogram_svg(title: str, labels: list[str], reference: list[int], current: list[int]) -> str:
    """Reference (grey) and current (orange) shares per bin, side by side."""
    width, height, left, bottom = 360, 190, 30, 40
    ref, cur = _shares(reference), _shares(current)
    top = max([*ref, *cur, 0.01])
    slot = (width - left - 10) / max(len(labels), 1)
    base = height - bottom
    parts = [f'<text x="0" y="10">{top:.2f}</text>']
    for i, label in enumerate(labels):
        x = left + i * slot
        for j, (share, colour) in enumerate(((ref[i], REFERENCE), (cur[i], CURRENT))):
            h = share / top * (base - 10)
            parts.append(
                f'<rect x="{x + 2 + j * (slot - 4) / 2:.1f}" y="{base - h:.1f}" '
                f'width="{(slot - 4) / 2:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{_e(label)}: {share:.3f}</title></rect>"
            )
        middle = x + slot / 2
        parts.append(
            f'<text x="{middle:.1f}" y="{base + 12}" text-anchor="end" '
            f'transform="rotate(-35 {middle:.1f} {base + 12})">{_e(label)}</text>'
        )
    return _figure(title, width, height, base, parts)


def line_svg(title: str, labels: list[str], series: dict[str, tuple[str, list]]) -> str:
    """Lines over the windows on 0 to 1; a missing value breaks its line."""
    width, height, left, bottom = 520, 220, 34, 30
    base = height - bottom
    step = (width - left - 20) / max(len(labels) - 1, 1)
    parts = [f'<text x="0" y="14">1.0</text><text x="0" y="{base}">0</text>']
    for i, label in enumerate(labels):
        parts.append(
            f'<text x="{left + i * step:.1f}" y="{height - 10}" text-anchor="middle">'
            f"{_e(label)}</text>"
        )
    for n, (name, (colour, values)) in enumerate(series.items()):
        runs: list[list[str]] = [[]]
        for i, value in enumerate(values):
            if value is None:
                runs.append([])
                continue
            x, y = left + i * step, base - value * (base - 10)
            runs[-1].append(f"{x:.1f},{y:.1f}")
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                f"<title>{_e(name)}: {value:.3f}</title></circle>"
            )
        parts += [
            f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" stroke-width="2"/>'
            for run in runs
            if len(run) > 1
        ]
        parts.append(f'<text x="{width - 150}" y="{14 + 14 * n}" fill="{colour}">{_e(name)}</text>')
    return _figure(title, width, height, base, parts)


def _figure(title: str, width: int, height: int, base: float, parts: list[str]) -> str:
    return (
        f'<figure><figcaption>{_e(title)}</figcaption><svg width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img"><line x1="30" y1="{base}" x2="{width}" '
        f'y2="{base}" stroke="#666"/>{"".join(parts)}</svg></figure>'
    )


def _bin_labels(bins: dict[str, Any]) -> list[str]:
    if "categories" in bins:
        return [str(c) for c in bins["categories"]]
    edges = bins["edges"]
    return [f"{edges[i]:.3g}–{edges[i + 1]:.3g}" for i in range(len(edges) - 1)]


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    cells = ("".join(f"<td{_class(cell)}>{_e(cell)}</td>" for cell in row) for row in rows)
    return f"<table><tr>{head}</tr>{''.join(f'<tr>{c}</tr>' for c in cells)}</table>"


def _class(cell: Any) -> str:
    return ' class="drifted"' if cell == "drifted" else ""


def _feature_row(name: str, f: dict[str, Any]) -> list[Any]:
    return [
        name,
        f["rows"],
        shown(f["psi"]),
        shown_interval(f["psi_interval"]).strip(),
        f["test"],
        shown(f["statistic"], ".4f"),
        shown(f["pvalue"], ".2g"),
        shown(f["adjusted_pvalue"], ".2g"),
        f["status"],
    ]


def _metric_row(name: str, guess: dict[str, Any], real: dict[str, Any] | None) -> list[Any]:
    real = real or {"value": None, "interval": None, "status": "skipped"}
    return [
        name,
        shown(real["value"]),
        shown_interval(real["interval"]).strip(),
        real["status"],
        shown(guess["value"]),
        shown_interval(guess["interval"]).strip(),
        guess["status"],
        shown(guess["reference"]),
    ]


def _quality_row(name: str, quality: dict[str, Any]) -> list[Any]:
    nulls, outside = quality["null_rate"][name], quality["out_of_range_rate"][name]
    imputed = quality["imputed_rate"].get(name)
    return [
        name,
        shown(nulls["value"]),
        shown(nulls["reference"]),
        shown(imputed["value"]) if imputed else "—",
        shown(outside["value"]),
        shown(outside["reference"]),
        nulls["status"],
        outside["status"],
    ]


def render_html(document: dict[str, Any]) -> str:
    """The page: verdict, windows, charts over time, histograms, tables and notes."""
    versions = ", ".join(f"v{v}" for v in document["versions"]) or "no version"
    title = f"Drift in {document['environment']}: {document['model']} {versions}"
    body = [f"<h1>{_e(title)}: {_e(document['status'])}</h1>"]
    if document["persistence"] is None:
        for version, problem in (document.get("problems") or {}).items():
            body.append(f"<p>v{_e(version)}: {_e(problem['error'])}; fix: {_e(problem['fix'])}</p>")
        body += [f"<p>{_e(note)}</p>" for note in document.get("notes", [])]
        return _page(body)
    body.append(f"<p>{_e(document['reason'])}.</p>")
    windows = document["windows"]
    rows = [
        [w["since"], w["until"], w["rows"], w["labelled"], w["status"], " ".join(w["triggers"])]
        for w in windows
    ]
    body.append(_table(["since", "until", "predictions", "labelled", "status", "triggers"], rows))
    days = document["window"]["days"]
    labels = [short_time(w["until"])[5 : 10 if days >= 1 else 16] for w in windows]
    accuracy = {
        "realised": (CURRENT, [w["performance"].get("accuracy") for w in windows]),
        "estimated (no labels)": (ESTIMATE, [w["estimated"].get("accuracy") for w in windows]),
    }
    share = {
        "current": (CURRENT, [w["high_risk_share"] for w in windows]),
        "reference": (REFERENCE, [document["prediction"]["reference"]] * len(windows)),
    }
    body += [
        '<h2>Over time</h2><div class="charts">',
        line_svg("Accuracy per window", labels, accuracy),
        line_svg("Share predicted high-risk", labels, share),
        "</div><h2>Current window (grey: reference, orange: current)</h2><div class='charts'>",
    ]
    for name, f in document["features"].items():
        caption = f"{name}: PSI {shown(f['psi'])}{shown_interval(f['psi_interval'])}, {f['status']}"
        bins = f["bins"]
        body.append(histogram_svg(caption, _bin_labels(bins), bins["reference"], bins["current"]))
    prediction = document["prediction"]
    bins = prediction["bins"]
    caption = f"predicted probability: share high-risk {prediction['status']}"
    body.append(histogram_svg(caption, _bin_labels(bins), bins["reference"], bins["current"]))
    body.append("</div>")
    header = ["feature", "values", "PSI", "interval", "test", "statistic", "p", "adjusted p"]
    features = [_feature_row(n, f) for n, f in document["features"].items()]
    body.append(_table([*header, "status"], features))
    performance, estimated = document["performance"], document["estimated"]
    metrics = [
        _metric_row(m, guess, performance["metrics"].get(m))
        for m, guess in estimated["metrics"].items()
    ]
    header = ["metric", "realised", "interval", "status", "estimated", "interval", "status"]
    body += [f"<h2>Performance ({performance['labelled']:,} labelled)</h2>"]
    body.append(_table([*header, "gate time"], metrics))
    quality = document["quality"]
    header = ["feature", "null rate", "reference", "imputed", "out of range", "reference"]
    body += ["<h2>Data quality</h2>"]
    quality_rows = [_quality_row(n, quality) for n in quality["null_rate"]]
    body.append(_table([*header, "nulls", "range"], quality_rows))
    if quality.get("rejections"):
        rejected = [
            [
                r["field"],
                r["reason"],
                r["requests"],
                ", ".join(f"{v['value']} ×{v['count']}" for v in r["values"]),
            ]
            for r in quality["rejections"]
        ]
        body.append(_table(["rejected field", "reason", "requests", "values"], rejected))
    notes = document.get("notes") or []
    if notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    return _page(body)


def _page(body: list[str]) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>slipway drift</title><style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
