"""Render BENCHMARKS.md (tables + a speedup plot per device) from the suite's results JSON.

    benchmarks/results/<device>-<date>.json ──► newest file per device ──► BENCHMARKS.md
                                                                      └──► <device>-<date>.svg

Ratios are of medians: ``x eager`` = eager median / system median and ``x best peer`` = the
fastest peer's median / system median (above 1 means faster). Peers are every system that is not
accelc, eager included (doing nothing is what a user would otherwise pick). The summary line is
the geometric mean, over every configuration where both ran, of best peer median / best accelc
median.

Usage: ``python benchmarks/render.py [--results DIR] [--markdown FILE]``.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
from collections import OrderedDict

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS_DIR = os.path.join(HERE, "results")
MARKDOWN = os.path.join(REPO, "BENCHMARKS.md")
_NAME = re.compile(r"^(?P<device>.+)-(?P<date>\d{4}-\d{2}-\d{2})\.json$")

# Fixed colours so a system keeps its colour across plots.
_COLOURS = {
    "compile": "#4e79a7", "compile-max-autotune": "#76b7b2", "compile-cudagraphs": "#a0cbe8", "onnxruntime": "#f28e2b",
    "onnxruntime-tensorrt": "#edc948", "ort-transformers-dynamo": "#e15759",
    "ort-transformers-torchscript": "#ff9da7", "accelc-torch": "#59a14f", "accelc-onnxruntime": "#8cd17d",
}
_FALLBACK_COLOURS = ["#b07aa1", "#9c755f", "#bab0ac", "#86bcb6", "#d37295"]


def is_accelc(name: str) -> bool:
    return name.startswith("accelc")


def _ok_medians(result: dict) -> dict[str, float]:
    return {s["name"]: s["median_ms"] for s in result["systems"] if s["status"] == "ok" and s.get("median_ms")}


def config_summary(result: dict) -> dict:
    """Per-system ratios for one run: to eager and to the best peer; the best peer and accelc."""
    medians = _ok_medians(result)
    peers = {n: m for n, m in medians.items() if not is_accelc(n)}
    ours = {n: m for n, m in medians.items() if is_accelc(n)}
    best_peer = min(peers, key=peers.get) if peers else None
    best_ours = min(ours, key=ours.get) if ours else None
    eager = medians.get("eager")
    return {
        "medians": medians,
        "vs_eager": {n: eager / m for n, m in medians.items()} if eager else {},
        "vs_best_peer": {n: peers[best_peer] / m for n, m in medians.items()} if best_peer else {},
        "best_peer": best_peer,
        "best_accelc": best_ours,
        "accelc_vs_best_peer": peers[best_peer] / ours[best_ours] if best_peer and best_ours else None,
    }


def geometric_mean(values: list[float]) -> float | None:
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def latest_results(results_dir: str = RESULTS_DIR) -> dict[str, str]:
    """The newest results file per device tag (quick smoke runs excluded)."""
    newest: dict[str, tuple[str, str]] = {}
    for path in glob.glob(os.path.join(results_dir, "*.json")):
        match = _NAME.match(os.path.basename(path))
        if not match:
            continue
        device, date = match["device"], match["date"]
        if device not in newest or date > newest[device][0]:
            newest[device] = (date, path)
    return {device: path for device, (date, path) in sorted(newest.items())}


def _label(run: dict) -> str:
    label = f"{run['sample']} b{run['batch']}"
    return label if run.get("precision", "fp32") == "fp32" else f"{label} {run['precision']}"


def render_svg(suite: dict, width: int = 920, height: int = 380) -> str:
    """Grouped bars: speedup over eager (log scale) per configuration and system."""
    runs = suite["runs"]
    systems: list[str] = []
    for run in runs:
        for s in run["result"]["systems"]:
            if s["name"] != "eager" and s["name"] not in systems:
                systems.append(s["name"])
    speedups = [config_summary(run["result"])["vs_eager"] for run in runs]
    values = [v for sp in speedups for v in sp.values() if v > 0] or [1.0]
    lo = 2.0 ** math.floor(math.log2(min(min(values), 1.0)))
    hi = 2.0 ** math.ceil(math.log2(max(max(values), 1.0) * 1.05))
    if hi <= lo:
        hi = lo * 2
    left, right, top, bottom = 56, 190, 28, 70
    plot_w, plot_h = width - left - right, height - top - bottom

    def y(v: float) -> float:
        return top + plot_h * (1 - (math.log2(v) - math.log2(lo)) / (math.log2(hi) - math.log2(lo)))

    colours = dict(_COLOURS)
    extra = iter(_FALLBACK_COLOURS * 4)
    for name in systems:
        colours.setdefault(name, next(extra))
    title = f"Speedup over eager, {suite['suite'].get('device_tag', suite['suite'].get('device', ''))} (log scale; higher is faster)"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="Helvetica, Arial, sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{_esc(title)}</text>',
    ]
    tick = lo
    while tick <= hi * 1.0001:
        ty = y(tick)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="{"#333" if tick == 1 else "#ddd"}"'
                   f' stroke-width="{1.2 if tick == 1 else 0.8}"/>')
        out.append(f'<text x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end">{tick:g}x</text>')
        tick *= 2
    group_w = plot_w / max(1, len(runs))
    bar_w = max(1.0, (group_w * 0.8) / max(1, len(systems)))
    for g, (run, sp) in enumerate(zip(runs, speedups)):
        x0 = left + g * group_w + group_w * 0.1
        for k, name in enumerate(systems):
            if name not in sp:
                continue
            v = sp[name]
            y1, y0 = sorted((y(v), y(1.0)))
            out.append(f'<rect x="{x0 + k * bar_w:.1f}" y="{y1:.1f}" width="{bar_w * 0.92:.1f}" height="{max(0.5, y0 - y1):.1f}" '
                       f'fill="{colours[name]}"><title>{_esc(name)} {_esc(_label(run))}: {v:.2f}x</title></rect>')
        cx = left + g * group_w + group_w / 2
        out.append(f'<text x="{cx:.1f}" y="{top + plot_h + 14}" text-anchor="end" '
                   f'transform="rotate(-35 {cx:.1f} {top + plot_h + 14})">{_esc(_label(run))}</text>')
    for k, name in enumerate(systems):
        ly = top + 10 + k * 18
        out.append(f'<rect x="{left + plot_w + 16}" y="{ly - 9}" width="12" height="12" fill="{colours[name]}"/>')
        out.append(f'<text x="{left + plot_w + 34}" y="{ly + 1}">{_esc(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _esc(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _fmt_ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def render_device(suite: dict, svg_rel: str) -> str:
    meta = suite["suite"]
    runs = suite["runs"]
    machine = meta.get("machine", {})
    where = machine.get("gpu") or machine.get("cpu", "")
    lines = [f"## {meta.get('device_tag', meta.get('device'))}: {where}", ""]
    versions = meta.get("versions", {})
    lines.append(
        f"Run {meta.get('date')} · {machine.get('cores', '?')} cores, {meta.get('threads', '?')} threads · "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if v)
    )
    lines.append("")
    for note in meta.get("notes", []):
        lines.append(f"- {note}")
    warnings = [f"{_label(run)}: {note}" for run in runs for note in run["result"].get("notes", []) if note.startswith("warning")]
    for warning in warnings:
        lines.append(f"- {warning}")
    if meta.get("notes") or warnings:
        lines.append("")
    summaries = [config_summary(run["result"]) for run in runs]
    ratios = [s["accelc_vs_best_peer"] for s in summaries if s["accelc_vs_best_peer"]]
    gm = geometric_mean(ratios)
    if gm is not None:
        lines += [f"**Geometric mean of best-peer median / best accelc median over {len(ratios)} configurations: "
                  f"{gm:.2f}x** (above 1: accelc's best backend is faster than the best peer).", ""]
    lines += [f"![speedup over eager per model and system]({svg_rel})", ""]

    by_sample: OrderedDict[str, list[tuple[dict, dict]]] = OrderedDict()
    for run, summary in zip(runs, summaries):
        by_sample.setdefault(run["sample"], []).append((run, summary))
    for sample, entries in by_sample.items():
        lines += [f"### {sample}", ""]
        shapes = "; ".join(
            f"b{run['batch']}: " + ", ".join(f"{d}{tuple(s)}" for d, s in run["result"]["input_shapes"]) for run, _ in entries
        )
        lines += [f"Inputs {shapes}.", ""]
        header = ["system"]
        for run, _ in entries:
            label = _label(run).split(" ", 1)[1]
            header += [f"{label} median ms", f"{label} x eager", f"{label} x best peer"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        names: list[str] = []
        for run, _ in entries:
            names += [s["name"] for s in run["result"]["systems"] if s["name"] not in names]
        reasons: OrderedDict[str, list[str]] = OrderedDict()
        for name in names:
            row = [f"**{name}**" if is_accelc(name) else name]
            for run, summary in entries:
                entry = next((s for s in run["result"]["systems"] if s["name"] == name), None)
                if entry is None:
                    row += ["", "", ""]
                elif entry["status"] != "ok":
                    row += [entry["status"], "", ""]
                    key = f"{entry['status']}: {entry['reason']}"
                    reasons.setdefault(key, []).append(f"{name} b{run['batch']}")
                else:
                    best = " (best peer)" if name == summary["best_peer"] else ""
                    tol = "" if entry.get("within_tolerance", True) else " ⚠"
                    row += [f"{entry['median_ms']:.3f}{tol}", _fmt_ratio(summary["vs_eager"].get(name)),
                            _fmt_ratio(summary["vs_best_peer"].get(name)) + best]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        for reason, where in reasons.items():
            lines.append(f"- {', '.join(where)}: {reason}")
        if reasons:
            lines.append("")
    return "\n".join(lines)


def render_markdown(suites: list[tuple[dict, str]]) -> str:
    """The whole BENCHMARKS.md from ``(suite, svg path relative to the markdown)`` pairs."""
    lines = [
        "# Benchmarks",
        "",
        "Generated by `benchmarks/run_suite.py` (rendered by `benchmarks/render.py`); do not edit by hand.",
        "",
        "Every sample model at batch 1 and 8, each system built and timed in one process on the same",
        "seeded inputs (rotated between calls) and the same thread count, in interleaved rounds.",
        "Numbers are medians of wall time per call; `x eager` and `x best peer` divide the other",
        "system's median by this one's (above 1 is faster). Peers are every non-accelc system, eager",
        "included. ⚠ marks outputs outside accelc's tolerance of eager fp32. Per-run JSON with p90,",
        "min/max, build time, memory and error is in `benchmarks/results/`.",
        "",
    ]
    if not suites:
        lines.append("No results yet: run `python benchmarks/run_suite.py`.")
    for suite, svg_rel in suites:
        lines += [render_device(suite, svg_rel), ""]
    return "\n".join(lines).rstrip() + "\n"


def write_all(results_dir: str = RESULTS_DIR, markdown: str = MARKDOWN, files: list[str] | None = None) -> str:
    """Render ``markdown`` (and one SVG per results file) from ``files`` or the newest per device."""
    paths = files if files is not None else list(latest_results(results_dir).values())
    suites = []
    for path in paths:
        with open(path) as f:
            suite = json.load(f)
        svg_path = os.path.splitext(path)[0] + ".svg"
        with open(svg_path, "w") as f:
            f.write(render_svg(suite))
        rel = os.path.relpath(svg_path, os.path.dirname(os.path.abspath(markdown))).replace(os.sep, "/")
        suites.append((suite, rel))
    text = render_markdown(suites)
    with open(markdown, "w") as f:
        f.write(text)
    return markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=RESULTS_DIR, help="folder of <device>-<date>.json files")
    parser.add_argument("--markdown", default=MARKDOWN, help="the markdown file to write")
    args = parser.parse_args(argv)
    print(f"wrote {write_all(args.results, args.markdown)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
