"""HTML fragments (inline SVG, no external assets) for report.html: the plan and a timeline.

``render_plan_html(plan)``: one bar per stage (width = cost share, label = device, backend,
threads, nodes, ms) with the bytes crossing each cut between bars, and below it every call node
as a small square in topological order coloured by its stage (hover shows the node name).

``render_timeline_html(timeline)``: one lane per stage, one box per micro-batch busy interval,
so the pipeline's bubble (empty lane time) and the slowest stage (the fullest lane) show.
"""

from __future__ import annotations

from html import escape

from .plan import Plan

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7"]


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def render_plan_html(plan: Plan, width: int = 900) -> str:
    """The plan as an inline SVG: stage bars with cut sizes, and the node strip coloured by stage."""
    total = sum(s.cost_s for s in plan.stages) or 1.0
    gap = 70 if plan.num_stages > 1 else 0
    usable = width - gap * (plan.num_stages - 1)
    parts: list[str] = []
    x = 0.0
    for s in plan.stages:
        w = max(40.0, usable * s.cost_s / total)
        label = f"stage {s.index}: {s.device} · {s.backend} · {s.threads} thr"
        detail = f"{len(s.nodes)} nodes · {s.cost_s * 1e3:.2f} ms{' (measured)' if plan.profiled else ' (est.)'}"
        parts.append(f'<rect x="{x:.1f}" y="10" width="{w:.1f}" height="46" rx="4" fill="{_colour(s.index)}">'
                     f'<title>{escape(label)}\n{escape(detail)}</title></rect>')
        parts.append(f'<text x="{x + 4:.1f}" y="28" font-size="11" fill="#fff">{escape(label)}</text>')
        parts.append(f'<text x="{x + 4:.1f}" y="46" font-size="11" fill="#fff">{escape(detail)}</text>')
        x += w
        if s.index < plan.num_stages - 1:
            cut = plan.cuts[s.index]
            parts.append(f'<line x1="{x + 5:.1f}" y1="33" x2="{x + gap - 5:.1f}" y2="33" stroke="#555" marker-end="url(#arrow)"/>')
            parts.append(f'<text x="{x + gap / 2:.1f}" y="26" font-size="10" text-anchor="middle">{_human_bytes(cut.bytes)}</text>')
            parts.append(f'<text x="{x + gap / 2:.1f}" y="50" font-size="10" text-anchor="middle">{len(cut.tensors)} tensor(s)</text>')
            x += gap
    # node strip
    names = [(n, s.index) for s in plan.stages for n in s.nodes]
    cell = 9
    per_row = max(1, width // cell)
    rows = (len(names) + per_row - 1) // per_row
    strip_y = 72
    for k, (name, stage) in enumerate(names):
        cx, cy = (k % per_row) * cell, strip_y + (k // per_row) * cell
        parts.append(f'<rect x="{cx}" y="{cy}" width="{cell - 1}" height="{cell - 1}" fill="{_colour(stage)}">'
                     f'<title>{escape(name)} (stage {stage})</title></rect>')
    height = strip_y + rows * cell + 8
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">'
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto">'
           '<path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>' + "".join(parts) + "</svg>")
    caption = (f"{plan.num_stages} stage(s), balance {plan.balance():.2f} (slowest / mean stage); "
               f"cuts: {', '.join(_human_bytes(c.bytes) for c in plan.cuts) or 'none'}. "
               "Squares: call nodes in topological order, coloured by stage.")
    return f'<figure class="accelc-plan">{svg}<figcaption>{escape(caption)}</figcaption></figure>'


def render_timeline_html(timeline, width: int = 900) -> str:
    """One lane per stage with a box per micro-batch; the caption gives each stage's busy share."""
    lane, left = 26, 70
    end = max([iv.end_s for iv in timeline.intervals] + [timeline.wall_s, 1e-9])
    scale = (width - left - 10) / end
    parts: list[str] = []
    for s in range(timeline.stages):
        y = 8 + s * lane
        parts.append(f'<text x="0" y="{y + 15}" font-size="11">stage {s}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{width - left - 10}" height="{lane - 6}" fill="#eee"/>')
    for iv in timeline.intervals:
        x, w = left + iv.start_s * scale, max(1.0, (iv.end_s - iv.start_s) * scale)
        y = 8 + iv.stage * lane
        fill = _colour(iv.microbatch)
        parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{lane - 6}" fill="{fill}" stroke="#fff">'
                     f'<title>stage {iv.stage}, micro-batch {iv.microbatch}: {(iv.end_s - iv.start_s) * 1e3:.2f} ms</title></rect>')
        if w > 18:
            parts.append(f'<text x="{x + 3:.1f}" y="{y + 14}" font-size="10" fill="#fff">{iv.microbatch}</text>')
    axis_y = 8 + timeline.stages * lane + 12
    parts.append(f'<text x="{left}" y="{axis_y}" font-size="10">0</text>')
    parts.append(f'<text x="{width - 10}" y="{axis_y}" font-size="10" text-anchor="end">{end * 1e3:.1f} ms</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{axis_y + 6}" font-family="sans-serif">'
           + "".join(parts) + "</svg>")
    busy = timeline.busy_s()
    wall = timeline.wall_s or end
    share = ", ".join(f"stage {s} busy {b / wall:.0%}" for s, b in enumerate(busy))
    slowest = max(range(len(busy)), key=busy.__getitem__) if busy else 0
    caption = (f"{timeline.microbatches} micro-batch(es) over {timeline.stages} stage(s) in {wall * 1e3:.1f} ms; "
               f"{share}; slowest stage {slowest}. Grey is idle time (the bubble).")
    return f'<figure class="accelc-timeline">{svg}<figcaption>{escape(caption)}</figcaption></figure>'
