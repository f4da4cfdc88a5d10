"""The QC report of a dataset: one static HTML page, worst cases first.

``DIR/report.html`` lists every case of the ledger, worst first, with its QC
picture inline (a thumbnail that the browser loads as it scrolls into view,
full size on click), its status, the status, confidence, joint space and head
radius of each side, and its time. Radio buttons above the table filter the
rows by what needs a look (failed, a side not found or of low confidence) or
by one status, in CSS alone: the page has no script and no external resource,
so it opens from disk in any browser; all values are escaped.
"""

from __future__ import annotations

import datetime as _dt
import html
from pathlib import Path

from .._atomic import atomic_write_text
from .._version import __version__

__all__ = ["write_report", "severity_key", "REPORT_NAME"]

REPORT_NAME = "report.html"

#: Case statuses from worst to best.
_CASE_RANK = {"failed": 0, "running": 1, "pending": 1, "skipped": 2, "done": 3}
#: Side statuses from worst to best.
_SIDE_RANK = {"not_found": 0, "low_confidence": 1, "truncated": 2, "implant": 3, "ok": 4}
_SIDES = ("right", "left")

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th { background: #eee; position: sticky; top: 0; }
td.text { text-align: left; }
.failed { background: #f8d0d0; } .skipped, .pending, .running { background: #f4ecc4; }
.not_found, .low_confidence { color: #a00; font-weight: bold; } .truncated, .implant { color: #a60; }
.ok { color: #070; }
td.case { text-align: left; vertical-align: top; }
td.case img { display: block; width: 240px; height: auto; border: 1px solid #999; background: #000; }
tr.review { background: #f8d0d0; }
.filters { margin: 0.8em 0; } .filters label { margin-right: 1em; cursor: pointer; }
"""

#: The row filters: (id, label, row class shown); ``None`` shows every row.
_FILTERS = (("all", "all", None), ("look", "needs a look", "look"), ("failed", "failed", "case-failed"),
            ("not_found", "a side not found", "side-not_found"),
            ("low_confidence", "a side of low confidence", "side-low_confidence"),
            ("truncated", "a side truncated", "side-truncated"), ("implant", "an implant", "side-implant"),
            ("ok", "both sides ok", "side-ok"))


def _filter_css() -> str:
    """Hide the rows a checked filter does not show (the inputs precede the table as its siblings)."""
    return "\n".join(f"#show-{key}:checked ~ #cases tbody tr:not(.{shown}) {{ display: none; }}"
                      for key, _, shown in _FILTERS if shown)


def _filter_inputs() -> str:
    return "\n".join(f'<input type="radio" name="show" id="show-{key}"{" checked" if shown is None else ""}>'
                      f'<label for="show-{key}">{html.escape(label)}</label>' for key, label, shown in _FILTERS)



def severity_key(row: dict) -> tuple:
    """Sort key putting the cases a person should look at first: failed, then weakest sides."""
    sides = row.get("sides") or {}
    side_ranks = [_SIDE_RANK.get(s.get("status"), 0) for s in sides.values()] or [0]
    confidences = [s.get("confidence") or 0.0 for s in sides.values()] or [0.0]
    return (_CASE_RANK.get(row["status"], 0), min(side_ranks), min(confidences), row["case_id"])


def _number(value, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _side_cells(side: dict | None) -> str:
    if not side:
        return '<td class="text"></td>' + "<td></td>" * 3
    status = html.escape(str(side.get("status") or ""))
    title = html.escape(side.get("message") or "", quote=True)
    return (f'<td class="text {status}" title="{title}">{status}</td>'
            f"<td>{_number(side.get('confidence'))}</td>"
            f"<td>{_number(side.get('joint_space_min_mm'))}</td>"
            f"<td>{_number(side.get('head_radius_mm'))}</td>")


def _row_classes(row: dict) -> str:
    """The row's status, ``case-<status>``, ``side-<status>`` of its weakest side, and ``look`` when a
    person should check it (failed, or a side not found or of low confidence)."""
    sides = [s for s in (row.get("sides") or {}).values() if s]
    weakest = min((s.get("status") or "" for s in sides), key=lambda st: _SIDE_RANK.get(st, 0), default="")
    look = row["status"] == "failed" or any(s.get("status") in ("not_found", "low_confidence") for s in sides)
    classes = [row["status"], f"case-{row['status']}"] + ([f"side-{weakest}"] if weakest else [])
    return " ".join(html.escape(c, quote=True) for c in classes + (["look"] if look else []))


def _row_html(row: dict) -> str:
    case_id = html.escape(row["case_id"])
    outputs = row.get("outputs") or {}
    qc = outputs.get("qc")
    if qc:
        href = html.escape(Path(qc).as_posix(), quote=True)
        case = (f'<a href="{href}"><img src="{href}" loading="lazy" alt="QC picture of {case_id}">'
                f"{case_id}</a>")
    else:
        case = case_id
    sides = row.get("sides") or {}
    status = html.escape(row["status"])
    error = html.escape(row.get("error") or "")
    return (f'<tr class="{_row_classes(row)}"><td class="case">{case}</td><td class="text">{status}</td>'
            + "".join(_side_cells(sides.get(side)) for side in _SIDES)
            + f"<td>{_number(row.get('t_total'), 1)}</td><td class=\"text\">{error}</td></tr>")


def _generations_html(summary: dict | None) -> str:
    """The generations of a regenerated dataset and the current one's changes, largest first."""
    if not summary:
        return ""
    from .generations import describe_change, largest_changes

    lines = ["<h2>Generations</h2>", "<table id=\"generations\"><thead><tr><th>generation</th><th>state</th>"
             "<th>thagpu</th><th>config</th><th>device</th><th>cases</th><th>finished</th><th>counts</th></tr></thead><tbody>"]
    for entry in summary["generations"]:
        finished = (_dt.datetime.fromtimestamp(entry["finished_at"], _dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
                    if entry.get("finished_at") else "")
        counts = ", ".join(f"{n} {k}" for k, n in sorted((entry.get("counts") or {}).items()))
        lines.append("<tr>" + "".join(f'<td class="text">{html.escape(str(v or ""))}</td>' for v in (
            entry["generation"], entry["state"], entry.get("version"), entry.get("config_hash"), entry.get("device"),
            entry.get("only"), finished, counts)) + "</tr>")
    lines.append("</tbody></table>")
    totals = summary["totals"]
    review = ", ".join(totals["review"]) or "none"
    lines.append(f'<p id="changes-totals">Generation {summary["current"]}: {totals["regenerated"]} case(s) '
                 f'regenerated, {totals["side_status_changes"]} side status change(s), median lowest class Dice '
                 f'old vs new {_number(totals["median_min_dice"], 3) or "-"}; manual labels to look at again '
                 f'(the new pseudo label agrees with them much less than the old one did): {html.escape(review)}.</p>')
    if summary["changes"]:
        lines.append("<table id=\"changes\"><thead><tr><th>case</th><th>status</th><th>lowest Dice old vs new</th>"
                     "<th>Dice per class</th><th>sides</th><th>manual label Dice old / new</th><th>note</th></tr>"
                     "</thead><tbody>")
        for case_id, record in largest_changes(summary["changes"]):
            manual = record.get("manual") or {}
            dice = ", ".join(f"{name} {_number(v, 3) or '-'}" for name, v in record.get("dice", {}).items())
            status, sides = describe_change(record)
            row_class = "review" if manual.get("review") else ""
            lines.append(f'<tr class="{row_class}"><td class="text">{html.escape(case_id)}</td>'
                         f'<td class="text">{html.escape(status)}</td><td>{_number(record.get("min_dice"), 3)}</td>'
                         f'<td class="text">{html.escape(dice)}</td><td class="text">{html.escape(sides)}</td>'
                         f'<td>{_number(manual.get("dice_previous"), 3)} / {_number(manual.get("dice_new"), 3)}'
                         f'{" review" if manual.get("review") else ""}</td>'
                         f'<td class="text">{html.escape(record.get("note") or "")}</td></tr>')
        lines.append("</tbody></table>")
    return "\n".join(lines) + "\n"


def write_report(dataset_dir, rows: list, generations: dict | None = None) -> Path:
    """Write ``dataset_dir/report.html`` from ledger rows (atomically) and return its path.

    ``generations``: :func:`thagpu.dataset.generations.generation_summary` of a regenerated dataset;
    the page then ends with its generations and the current one's changes, largest first.
    """
    dataset_dir = Path(dataset_dir)
    rows = sorted(rows, key=severity_key)
    counts: dict = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    totals = ", ".join(f"{n} {status}" for status, n in sorted(counts.items(), key=lambda kv: _CASE_RANK.get(kv[0], 0)))
    side_heads = "".join(f'<th>{side} side</th><th>{side} confidence</th><th>{side} joint space min (mm)</th>'
                         f'<th>{side} head radius (mm)</th>' for side in _SIDES)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>thagpu dataset QC report</title>
<style>{_STYLE}{_filter_css()}</style></head>
<body>
<h1>thagpu dataset QC report</h1>
<p id="totals">{len(rows)} cases: {html.escape(totals)}. Worst first: failed, then cases whose weakest side is
<code>not_found</code> or <code>low_confidence</code>, then by confidence. Each case shows its QC picture;
click it for full size.</p>
<p>thagpu {html.escape(__version__)}, written {stamp}. Sides are the patient's.</p>
<span class="filters">Show:</span>
{_filter_inputs()}
<table id="cases">
<thead><tr><th>case</th><th>status</th>{side_heads}<th>time (s)</th><th>error</th></tr></thead>
<tbody>
{chr(10).join(_row_html(row) for row in rows)}
</tbody></table>
{_generations_html(generations)}</body></html>
"""
    path = dataset_dir / REPORT_NAME
    atomic_write_text(path, page)
    return path
