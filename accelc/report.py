"""report.html: the report as a self-contained page (no scripts, no external assets).

Sections: a summary, the passes table, refusals, verification, a latency bar chart (inline SVG),
and, when present, the partition plan and pipeline timeline that other parts of accelc add.
"""

from __future__ import annotations

import html
import json

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:14px}
th{background:#f0f0f0}.fired{color:#0a7d20}.rolled{color:#b00020;font-weight:bold}.failed{color:#b00020}
.banner{background:#fff3cd;border:1px solid #e0c060;padding:8px 12px;margin:1em 0}
.ok{color:#0a7d20}.bad{color:#b00020}code{background:#f4f4f4;padding:1px 4px}
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _fmt_err(value) -> str:
    return "" if value is None else f"{value:.3g}"


def render_latency_svg(latency: dict) -> str:
    """Horizontal bars of median latency with min–max whiskers, one per system."""
    systems = [(name, t) for name, t in latency.items() if isinstance(t, dict) and "median_ms" in t]
    if not systems:
        return ""
    width, bar_h, left = 640, 28, 110
    top = max(t["max_ms"] for _, t in systems) or 1.0
    scale = (width - left - 120) / top
    rows = []
    for i, (name, t) in enumerate(systems):
        y = 10 + i * (bar_h + 12)
        w = max(1.0, t["median_ms"] * scale)
        color = "#3b7dd8" if name != "eager" else "#999"
        rows.append(
            f'<text x="{left - 8}" y="{y + bar_h * 0.65}" text-anchor="end">{_e(name)}</text>'
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>'
            f'<line x1="{left + t["min_ms"] * scale:.1f}" x2="{left + t["max_ms"] * scale:.1f}" '
            f'y1="{y + bar_h / 2}" y2="{y + bar_h / 2}" stroke="#222"/>'
            f'<text x="{left + w + 6:.1f}" y="{y + bar_h * 0.65}">{t["median_ms"]:.2f} ms</text>'
        )
    height = 20 + len(systems) * (bar_h + 12)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="13" '
        f'role="img" aria-label="median latency">{"".join(rows)}</svg>'
    )


def render_html(report: dict) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>accelc report: {_e(report.get('model'))}</title>",
             f"<style>{_STYLE}</style></head><body>", f"<h1>accelc report: {_e(report.get('model') or 'model')}</h1>"]
    if report.get("fallback"):
        parts.append(f"<div class='banner'><b>Fallback:</b> {_e(report['fallback'])}</div>")
    cap = report.get("capture") or {}
    nodes = report.get("nodes") or {}
    parts.append("<table>")
    for label, value in [
        ("device", report.get("device")), ("backend", report.get("backend")), ("precision", report.get("precision")),
        ("capture", f"{cap.get('method')} in {cap.get('seconds')} s"),
        ("nodes before → after", f"{nodes.get('before')} → {nodes.get('after')}"),
    ]:
        parts.append(f"<tr><th>{_e(label)}</th><td>{_e(value)}</td></tr>")
    parts.append("</table>")
    if cap.get("failure"):
        parts.append(f"<p class='bad'>Capture failed at <code>{_e(cap.get('location'))}</code>: {_e(cap['failure'])}</p>")

    parts.append("<h2>Passes</h2><table><tr><th>#</th><th>pass</th><th>status</th><th>counts</th>"
                 "<th>nodes</th><th>max error</th><th>ms</th><th>why</th></tr>")
    lowering = [dict(r, name=f"{r['name']} (runtime, redone at load)") for r in report.get("runtime_lowering") or []]
    for i, rec in enumerate((report.get("passes") or []) + lowering, 1):
        css = {"fired": "fired", "rolled back": "rolled", "failed": "failed"}.get(rec["status"], "")
        counts = ", ".join(f"{k} {v}" for k, v in (rec.get("stats") or {}).items())
        parts.append(
            f"<tr><td>{i}</td><td>{_e(rec['name'])}</td><td class='{css}'>{_e(rec['status'])}</td><td>{_e(counts)}</td>"
            f"<td>{rec.get('nodes_before')} → {rec.get('nodes_after')}</td><td>{_fmt_err(rec.get('max_abs_error'))}</td>"
            f"<td>{rec.get('seconds', 0) * 1e3:.1f}</td><td>{_e(rec.get('reason'))}</td></tr>"
        )
    parts.append("</table>")

    refusals = report.get("refusals") or []
    if refusals:
        parts.append(f"<details><summary>{len(refusals)} candidates left alone, and why</summary><table>"
                     "<tr><th>pass</th><th>node</th><th>why</th><th>source</th></tr>")
        for r in refusals[:500]:
            parts.append(f"<tr><td>{_e(r['pass_name'])}</td><td>{_e(r['node'])}</td><td>{_e(r['reason'])}</td><td>{_e(r.get('location'))}</td></tr>")
        parts.append("</table></details>")

    ver = report.get("verification")
    if ver:
        css = "ok" if ver.get("ok") else "bad"
        parts.append(f"<h2>Verification</h2><p class='{css}'>{'passed' if ver.get('ok') else 'FAILED'} on "
                     f"{_e(ver.get('inputs_checked'))} seeded inputs; max abs error {_fmt_err(ver.get('max_abs_error'))}, "
                     f"max error relative to output scale {_fmt_err(ver.get('max_rel_error'))}. {_e(ver.get('message'))}</p>")

    latency = report.get("latency")
    if latency:
        parts.append("<h2>Latency (median, whiskers min–max)</h2>")
        parts.append(render_latency_svg(latency))
        if latency.get("speedup"):
            parts.append(f"<p>speed-up over eager: <b>{latency['speedup']:.2f}×</b></p>")

    parts.extend(_extra_sections(report))
    if report.get("fingerprint"):
        parts.append(f"<h2>Fingerprint</h2><pre>{_e(json.dumps(report['fingerprint'], indent=2))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _extra_sections(report: dict) -> list[str]:
    """Sections owned by other subsystems (partition plan, pipeline timeline, ONNX export)."""
    out = []
    if report.get("plan"):
        from .partition.plan import Plan
        from .partition.render import render_plan_html

        plan = Plan.from_json(json.dumps(report["plan"]))
        out.append("<h2>Partition plan</h2><p>Stages in colour, bar width proportional to the stage's cost; "
                   "the numbers between stages are the bytes crossing each cut.</p>" + render_plan_html(plan))
    if report.get("timeline"):
        from .partition.render import render_timeline_html
        from .runtime.pipeline import Interval, Timeline

        t = report["timeline"]
        timeline = Timeline(t["stages"], t["microbatches"], [Interval(**iv) for iv in t["intervals"]], t["wall_s"])
        out.append("<h2>Pipeline timeline</h2><p>Each stage's busy time per micro-batch in one run: gaps are "
                   "the pipeline bubble, the fullest lane is the slowest stage.</p>" + render_timeline_html(timeline))
    if report.get("onnx"):
        out.append(f"<h2>ONNX Runtime</h2><pre>{_e(json.dumps(report['onnx'], indent=2, default=str))}</pre>")
    return out
