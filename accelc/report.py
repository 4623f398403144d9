"""report.html: the report as a self-contained page (no scripts, no external assets, no raw JSON).

``render_html(report)`` turns ``report.json`` (a dict) into one page. Its sections, in order:

1. **Warnings banner**: every ``report["warnings"]`` entry, the fallback and backend fallback,
   and a saved result that measured slower than another option, in a warning colour.
2. **Summary**: model, device, the backend that runs, precision, capture, shapes in words with
   their dynamic ranges, nodes, the build time by phase, and (when used) the partition or branch
   grouping.
3. **Passes**: one table per stage (graph; lowering; onnx, one table per region for a partial
   export), each saying whether its output is the one that runs. Every row has a status, what
   the pass changed, nodes before → after, max error, its time as a bar scaled to the slowest
   pass of the page, and a "why" that is never empty.
4. **Left alone**: the refusals, grouped per pass in ``<details>`` blocks, with source locations.
5. **Verification**: the final check against eager, and ONNX Runtime's own check.
6. **Latency**: every system measured (eager, the saved result, each backend ``auto`` timed) as
   bars labelled in ms, the kept backend marked, a saved result slower than an option flagged.
7. **Precision candidates**, when ``report["precision_candidates"]`` lists several: latency and
   error of each, the kept one marked.
8. **ONNX Runtime**: export, providers, nodes, probes, regions, as key/value tables; then
   **OpenVINO** (route, settings, the precision it runs at) when it was built.
9. **Partition plan** and **pipeline timeline** (drawn by :mod:`accelc.partition.render`).
10. **Fingerprint**: versions and machine, as a key/value table.
"""

from __future__ import annotations

import html
import json
from collections import Counter

from .backends import RUNTIME_WORDS
from .timing import SLOWER_MARGIN

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1150px;color:#222}
h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:2px}
table{border-collapse:collapse;margin:.6em 0 1em}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:14px;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;white-space:nowrap}td.st{white-space:nowrap}td.why{min-width:14em}
table.kv th{width:13em}table.kv table{margin:0}
.fired{color:#0a7d20;font-weight:bold}.nochange{color:#666}.rolled,.failed{color:#b00020;font-weight:bold}
.banner{background:#fff3cd;border:1px solid #e0a800;border-left:6px solid #e0a800;padding:8px 12px;margin:1em 0}
.banner ul{margin:.3em 0;padding-left:1.4em}
.ok{color:#0a7d20}.bad{color:#b00020}code{background:#f4f4f4;padding:1px 4px}
.role{margin:.2em 0;color:#444}.role b{color:#222}
.bar{display:inline-block;width:120px;height:10px;background:#eee;margin-right:6px;vertical-align:middle}
.bar span{display:block;height:100%;background:#3b7dd8}.bar.err span{background:#d8893b}
tr.kept td{background:#eef7ee}.muted{color:#777}
details{margin:.4em 0}summary{cursor:pointer}
"""

_STATUS_CLASS = {"fired": "fired", "no change": "nochange", "rolled back": "rolled", "failed": "failed"}
_STAGE_TITLES = {"graph": "Graph stage", "lowering": "Lowering stage (PyTorch runtime)",
                 "onnx": "ONNX stage (ONNX Runtime)"}
_SLOWER_MARGIN = SLOWER_MARGIN  # the margin accelc.api warns at: the chart and the warning agree
_MAX_REFUSAL_ROWS = 500


# -- formatting ------------------------------------------------------------------------------

def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _one_line(value) -> str:
    """An exception (or a multi-line message) as one line of text."""
    if isinstance(value, BaseException):
        text = str(value).strip().splitlines()
        return f"{type(value).__name__}: {text[0]}" if text else type(value).__name__
    lines = str(value).strip().splitlines()
    return lines[0] + (" …" if len(lines) > 1 else "") if lines else ""


def _fmt_err(value) -> str:
    return "" if value is None else f"{value:.3g}"


def _fmt_ms(ms) -> str:
    if ms is None:
        return ""
    return f"{ms:.3f} ms" if ms < 0.1 else f"{ms:.2f} ms"


def _words(key) -> str:
    return str(key).replace("_", " ")


def _bar(fraction: float, css: str = "") -> str:
    """A horizontal CSS bar, ``fraction`` (0..1) of its full width."""
    width = 0.0 if fraction != fraction else max(0.0, min(1.0, fraction)) * 100  # NaN: empty
    return f"<span class='bar {css}'><span style='width:{width:.1f}%'></span></span>"


def _table(headers: list[str], rows: list[list[str]], css: str = "") -> str:
    """A table of already-escaped cells."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cells) + "</tr>" for cells in rows)
    return f"<table class='{css}'><tr>{head}</tr>{body}</table>"


def _kv_table(mapping: dict, skip: tuple = (), depth: int = 0) -> str:
    """A dict as rows of key and value; nested dicts and lists of dicts become tables of their own."""
    rows = [f"<tr><th>{_e(_words(k))}</th><td>{_value_html(v, depth + 1)}</td></tr>"
            for k, v in mapping.items() if k not in skip]
    return f"<table class='kv'>{''.join(rows)}</table>" if rows else "<p class='muted'>nothing recorded</p>"


def _is_scalar(value) -> bool:
    return not isinstance(value, (dict, list, tuple))


def _value_html(value, depth: int = 0) -> str:
    """One value, readable: no JSON, exceptions and long messages as one line; a small dict deep
    inside another (an input's dynamic axes) as one line of ``key: value`` pairs."""
    if value is None:
        return "<span class='muted'>—</span>"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _e(f"{value:.4g}")
    if isinstance(value, int):
        return _e(value)
    if isinstance(value, dict):
        if not value:
            return "<span class='muted'>none</span>"
        if depth >= 2 and all(_is_scalar(v) for v in value.values()):
            return _e(", ".join(f"{_words(k)}: {_one_line(v)}" for k, v in value.items()))
        return _kv_table(value, depth=depth)
    if isinstance(value, (list, tuple)):
        return _list_html(list(value), depth)
    return _e(_one_line(value))


def _list_html(items: list, depth: int = 0) -> str:
    if not items:
        return "<span class='muted'>none</span>"
    if all(isinstance(i, dict) for i in items):
        keys = list(dict.fromkeys(k for i in items for k in i))
        return _table([_words(k) for k in keys],
                      [[f"<td>{_value_html(i.get(k), depth + 1)}</td>" for k in keys] for i in items])
    if any(not _is_scalar(i) for i in items):
        return "<br>".join(_value_html(i, depth + 1) for i in items)
    return _e(", ".join(_one_line(i) for i in items))


# -- what runs -------------------------------------------------------------------------------

def _runs(report: dict) -> str:
    """Whose output runs: "eager", "onnx", "openvino", "lowering" or "graph" (partitioned,
    branch-parallel)."""
    backend = str(report.get("backend") or "")
    executor = report.get("partition") or report.get("branches")
    if report.get("fallback") or (report.get("backend_fallback") and executor):
        return "eager"
    if backend.startswith("onnxruntime"):
        return "onnx"
    if backend == "openvino":
        return "openvino"
    if executor or report.get("runtime_lowering") is None:
        return "graph"
    return "lowering"


def _runner_words(report: dict) -> str:
    runs = _runs(report)
    backend = report.get("backend") or "torch"
    if runs == "eager":
        return f"eager PyTorch (the model itself; {backend} was not used)"
    if runs == "onnx":
        return f"{backend}: ONNX Runtime runs the onnx stage's output"
    if runs == "openvino":
        settings = (report.get("openvino") or {}).get("settings") or {}
        at = f" at {settings['inference_precision']}" if settings.get("inference_precision") else ""
        return f"openvino: OpenVINO's CPU plugin runs the graph stage's output{at}, converted from its ONNX export"
    if runs == "graph":
        how = "partitioned into stages" if report.get("partition") else (
            "branch-parallel" if report.get("branches") else "as optimised")
        return f"{backend}: the graph stage's output, {how}, in PyTorch"
    return f"{backend}: the PyTorch runtime runs the lowering stage's output"


def _stage_role(report: dict, stage: str, built: bool) -> str:
    """One sentence: does this stage's output run, was it built for comparison, or not built?"""
    runs = _runs(report)
    if stage == "graph":
        if runs == "eager":
            return "<b>not used</b>: the model runs eagerly (see the warnings above)"
        return "<b>runs</b>: every runtime starts from this stage's output" + (
            "" if runs != "graph" else ", and here nothing lowers it further")
    if not built:
        return "<b>not built</b>: " + _e(_not_built_why(report, stage))
    if runs == stage:
        return "<b>runs</b>: this stage's output is the model that is saved and run"
    if stage == "onnx" and report.get("backend_fallback"):
        return f"<b>built, not used</b>: {_e(_one_line(report['backend_fallback']))}"
    other = {"onnx": "ONNX Runtime runs the onnx stage's output",
             "lowering": "the PyTorch runtime runs the lowering stage's output",
             "openvino": "OpenVINO runs the graph stage's output"}.get(runs, "it is not what runs")
    return f"<b>built for comparison only</b>: {other}"


def _not_built_why(report: dict, stage: str) -> str:
    if report.get("fallback"):
        return "the model runs eagerly"
    if report.get("partition"):
        return "the partitioned executor runs the graph stage's output"
    if report.get("branches"):
        return "the branch-parallel executor runs the graph stage's output"
    fallback = report.get("backend_fallback") or ""
    if stage == "onnx" and "ONNX" in fallback:
        return _one_line(fallback)
    if stage == "onnx" and report.get("backend") == "openvino":
        return "OpenVINO was asked for: it converts the plain export, without ONNX Runtime's passes"
    backend = str(report.get("backend") or "").split(" ")[0]  # "onnxruntime (partial)" is ONNX Runtime's too
    runs = RUNTIME_WORDS.get(backend, backend)
    if report.get("auto_remembered"):
        return f"auto remembered {runs} as the fastest runtime at an earlier build of this graph here, and built it alone"
    if stage == "onnx":
        return "the PyTorch runtime was asked for, so nothing was exported"
    return f"{runs} was asked for: the PyTorch runtime is built only when that fails"


def _stage_tables(report: dict) -> list[tuple[str, str, list[tuple[str, list[dict]]]]]:
    """(stage, role sentence, [(caption, records)]) for the graph, lowering and onnx stages."""
    onnx = report.get("onnx") or {}
    lowering = report.get("runtime_lowering")
    if onnx.get("partial"):
        onnx_tables = [(f"region {name}", part.get("onnx_passes") or [])
                       for name, part in (onnx.get("onnx_parts") or {}).items()]
    else:
        onnx_tables = [("", onnx.get("onnx_passes") or [])] if onnx else []
    return [
        ("graph", _stage_role(report, "graph", True), [("", report.get("passes") or [])]),
        ("lowering", _stage_role(report, "lowering", lowering is not None),
         [("", lowering)] if lowering is not None else []),
        ("onnx", _stage_role(report, "onnx", bool(onnx)), onnx_tables),
    ]


# -- 1. banner and 2. summary ----------------------------------------------------------------

def _banner_lines(report: dict) -> list[str]:
    lines = []
    if report.get("fallback"):
        lines.append(f"<b>Fallback:</b> {_e(report['fallback'])}")
    if report.get("backend_fallback"):
        lines.append(f"<b>Backend fallback:</b> {_e(report['backend_fallback'])}")
    warnings = [str(w) for w in report.get("warnings") or ()]
    lines.extend(_e(w) for w in warnings)
    slower = _slower_than(report)
    already_said = any("measured slower than" in w or ", slower than " in w for w in warnings)
    if slower and not already_said:
        lines.append("<b>The saved result measured slower than</b> "
                     + _e(", ".join(f"{name} ({_fmt_ms(ms)})" for name, ms in slower))
                     + " (see the latency chart)")
    return lines


def _banner(report: dict) -> str:
    lines = _banner_lines(report)
    if not lines:
        return ""
    return ("<div class='banner' role='alert'><b>Warnings</b><ul>"
            + "".join(f"<li>{line}</li>" for line in lines) + "</ul></div>")


def _shapes_words(report: dict) -> str:
    dynamic = report.get("dynamic")
    if not dynamic:
        shapes = ", ".join(f"{i.get('dtype', '')} ({', '.join(map(str, i.get('shape', [])))})"
                           for i in report.get("inputs") or [])
        return f"{shapes}; static" if shapes else "not recorded"
    inputs = ", ".join(f"{i.get('name')}: {i.get('dtype', '')} ({', '.join(map(str, i.get('shape', [])))})"
                       for i in dynamic.get("inputs") or [])
    ranges = ", ".join(f"{name} from {lo} to {'any size' if hi is None else hi}"
                       for name, (lo, hi) in (dynamic.get("dynamic") or {}).items())
    words = f"{inputs}; " + (f"dynamic: {ranges}" if ranges else "every size static")
    narrowed = [_one_line(n) for n in dynamic.get("narrowed") or ()]
    return words + ("; narrowed: " + "; ".join(narrowed) if narrowed else "")


def _capture_words(capture: dict) -> str:
    if not capture:
        return "not recorded"
    words = f"{capture.get('method')}"
    if capture.get("seconds") is not None:
        words += f" in {capture['seconds']:.1f} s"
    if capture.get("failure"):
        words += f"; failed: {_one_line(capture['failure'])}"
        if capture.get("location"):
            words += f" at {capture['location']}"
    attempts = capture.get("attempts") or []
    if attempts:
        words += f"; after {len(attempts)} failed attempt{'s' if len(attempts) > 1 else ''}: " + "; ".join(
            _one_line(a) for a in attempts)
    return words


def build_time_words(report: dict, longest: int | None = None) -> str | None:
    """``26.0 s (onnx export 8.3, eager references 5.0, ...)``: the build's wall time and its
    phases, longest first (the ``longest`` of them); None when the build recorded none."""
    phases = dict(report.get("build_seconds") or {})
    total = phases.pop("total", None)
    if not total:
        return None
    ranked = sorted(phases.items(), key=lambda item: -item[1])[:longest]
    return f"{total:.1f} s (" + ", ".join(f"{name} {seconds:.1f}" for name, seconds in ranked) + ")"


def _summary(report: dict) -> str:
    nodes = report.get("nodes") or {}
    rows = [
        ("model", report.get("model")),
        ("device", report.get("device")),
        ("backend that runs", _runner_words(report)),
        ("precision", report.get("precision")),
        ("capture", _capture_words(report.get("capture") or {})),
        ("shapes", _shapes_words(report)),
        ("nodes (graph stage)", f"{nodes.get('before')} → {nodes.get('after')}" if nodes else None),
        ("build time", build_time_words(report)),
    ]
    if report.get("partition"):
        p = report["partition"]
        rows.append(("partition", f"{p.get('stages')} stages on {', '.join(map(str, p.get('devices') or []))}; "
                                  f"{p.get('microbatches')} micro-batch(es); balance {p.get('balance')}"
                                  + ("; profiled" if p.get("profiled") else "")))
    if report.get("branches"):
        b = report["branches"]
        rows.append(("branches", f"{b.get('workers')} workers, {b.get('groups')} groups "
                                 f"({b.get('heavy_groups')} heavy), {b.get('threads_per_worker')} threads each"))
    speedup = (report.get("latency") or {}).get("speedup")
    if speedup:
        rows.append(("speed-up over eager", f"{speedup:.2f}×"))
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v if v is not None else '—')}</td></tr>" for k, v in rows)
    return f"<h2>Summary</h2><table class='kv'>{cells}</table>"


# -- 3. pass tables and 4. refusals ----------------------------------------------------------

def _changed(stats: dict) -> str:
    return ", ".join(f"{_words(k)} {v}" for k, v in (stats or {}).items()) or "—"


def _refusal_phrase(refusals: list[dict]) -> str:
    """"3 left alone: <reason>; 1 left alone: <other reason>" by how often each reason occurs."""
    counts = Counter(_one_line(r.get("reason")) for r in refusals)
    return "; ".join(f"{n} left alone: {reason}" for reason, n in counts.most_common())


def _why(rec: dict, refusals: list[dict]) -> str:
    """Never empty: the record's reason, or what fired, or what was left alone, or that there was nothing."""
    mine = [r for r in refusals
            if r.get("pass_name") == rec.get("name") and r.get("stage", "graph") == rec.get("stage", "graph")]
    left = _refusal_phrase(mine)
    if rec.get("reason"):
        return _one_line(rec["reason"]) + (f"; {left}" if left else "")
    status = rec.get("status")
    if status == "fired":
        done = ", ".join(f"{_words(k)} {v}" for k, v in (rec.get("stats") or {}).items() if v)
        phrase = done or "rewrote the graph"
        return phrase + (f"; {left}" if left else "")
    if left:
        return left
    if status == "no change":
        return "nothing to rewrite"
    return f"{status or 'no status'}, no reason recorded"


def _pass_rows(records: list[dict], refusals: list[dict], slowest: float) -> list[list[str]]:
    rows = []
    for i, rec in enumerate(records, 1):
        status = rec.get("status") or "?"
        seconds = rec.get("seconds") or 0.0
        rows.append([
            f"<td class='num'>{i}</td>",
            f"<td>{_e(rec.get('name'))}</td>",
            f"<td class='st {_STATUS_CLASS.get(status, '')}'>{_e(status)}</td>",
            f"<td>{_e(_changed(rec.get('stats')))}</td>",
            f"<td class='num'>{_e(rec.get('nodes_before'))} → {_e(rec.get('nodes_after'))}</td>",
            f"<td class='num'>{_e(_fmt_err(rec.get('max_abs_error')))}</td>",
            f"<td class='num'>{_bar(seconds / slowest)}{seconds * 1e3:.1f} ms</td>",
            f"<td class='why'>{_e(_why(rec, refusals))}</td>",
        ])
    return rows


def _passes_section(report: dict) -> str:
    stages = _stage_tables(report)
    refusals = report.get("refusals") or []
    every = [r for _, _, tables in stages for _, records in tables for r in records]
    slowest = max([r.get("seconds") or 0.0 for r in every] + [1e-9])
    headers = ["#", "pass", "status", "what it changed", "nodes before → after", "max abs error (checked)", "time",
               "why"]
    parts = ["<h2>Passes</h2><p>One table per stage. A stage's passes are checked together, once, against "
             "the stage's references; the error is on the last pass kept (or on each pass a bisection checked), "
             "and a wrong pass is found by bisection and rolled back. "
             f"Time bars are scaled to the slowest pass on this page ({slowest * 1e3:.1f} ms).</p>"]
    for stage, role, tables in stages:
        parts.append(f"<h3>{_e(_STAGE_TITLES[stage])}</h3><p class='role'>{role}</p>")
        for caption, records in tables:
            if caption:
                parts.append(f"<h4>{_e(caption)}</h4>")
            if records:
                parts.append(_table(headers, _pass_rows(records, refusals, slowest), "passes"))
            else:
                parts.append("<p class='muted'>no passes ran in this stage</p>")
    return "".join(parts)


def _refusals_section(refusals: list[dict]) -> str:
    if not refusals:
        return ""
    groups: dict[tuple, list[dict]] = {}
    for r in refusals:
        groups.setdefault((r.get("stage", "graph"), r.get("pass_name")), []).append(r)
    parts = [f"<h2>Left alone, and why</h2><p>{len(refusals)} candidates that a pass looked at and did not rewrite, "
             "per pass.</p>"]
    for (stage, name), items in groups.items():
        rows = [[f"<td>{_e(r.get('node'))}</td>", f"<td>{_e(_one_line(r.get('reason')))}</td>",
                 f"<td>{_e(r.get('location') or '—')}</td>"] for r in items[:_MAX_REFUSAL_ROWS]]
        more = len(items) - _MAX_REFUSAL_ROWS
        reasons = Counter(_one_line(r.get("reason")) for r in items).most_common()
        parts.append(f"<details><summary><b>{_e(name)}</b> ({_e(stage)} stage): {len(items)} left alone: "
                     + _e("; ".join(f"{reason} ({n})" if n > 1 else reason for reason, n in reasons)) + "</summary>"
                     + _table(["node", "why", "source"], rows)
                     + (f"<p class='muted'>and {more} more</p>" if more > 0 else "") + "</details>")
    return "".join(parts)


# -- 5. verification -------------------------------------------------------------------------

def _check_words(check: dict, what: str) -> str:
    ok = check.get("ok")
    inputs = check.get("inputs_checked")
    words = (f"<b class='{'ok' if ok else 'bad'}'>{'passed' if ok else 'FAILED'}</b>"
             + (f" on {_e(inputs)} input sets" if inputs is not None else "")
             + f"; max abs error {_e(_fmt_err(check.get('max_abs_error')) or '—')}, "
               f"max error relative to the output's scale {_e(_fmt_err(check.get('max_rel_error')) or '—')}")
    if check.get("message"):
        words += f"; {_e(_one_line(check['message']))}"
    return f"<p><b>{_e(what)}:</b> {words}</p>"


def _verification_section(report: dict) -> str:
    ver = report.get("verification")
    onnx = report.get("onnx") or {}
    parts = []
    if ver:
        parts.append(_check_words(ver, "optimised graph vs eager"))
        if ver.get("tolerance"):
            parts.append(f"<p class='muted'>tolerance: {_e(ver['tolerance'])}</p>")
    if onnx.get("verification"):
        role = "the runtime that runs" if _runs(report) == "onnx" else "built for comparison"
        parts.append(_check_words(onnx["verification"], f"ONNX Runtime vs eager ({role})"))
    elif onnx and report.get("backend_fallback"):
        parts.append(f"<p><b>ONNX Runtime vs eager:</b> <b class='bad'>not used</b>: "
                     f"{_e(_one_line(report['backend_fallback']))}</p>")
    openvino = report.get("openvino") or {}
    if openvino.get("verification"):
        role = "the runtime that runs" if _runs(report) == "openvino" else "built for comparison"
        parts.append(_check_words(openvino["verification"], f"OpenVINO vs eager ({role})"))
    if not parts:
        return ""
    return "<h2>Verification</h2>" + "".join(parts)


# -- 6. latency and backend comparison -------------------------------------------------------

def _systems(report: dict) -> list[dict]:
    """Every system measured: {label, median, low, high, chosen, saved}, eager first."""
    latency = report.get("latency") or {}
    choice = dict(report.get("backend_choice") or {})
    chosen = choice.pop("chosen", None)
    systems = []
    for name in ("eager", "accelc"):
        t = latency.get(name)
        if isinstance(t, dict) and t.get("median_ms") is not None:
            label = "eager" if name == "eager" else f"accelc, saved: {report.get('backend') or 'torch'}"
            systems.append({"label": label, "name": name, "median": t["median_ms"], "low": t.get("min_ms"),
                            "high": t.get("p90_ms", t.get("max_ms")), "chosen": False, "saved": name == "accelc"})
    for name, ms in choice.items():
        if isinstance(ms, (int, float)):
            systems.append({"label": f"{name} (timed by auto)", "name": name, "median": float(ms), "low": None,
                            "high": None, "chosen": name == chosen, "saved": False})
    return systems


def _slower_than(report: dict) -> list[tuple[str, float]]:
    """(name, ms) of each measured option faster than the saved result: eager at all, another
    backend past the noise margin (the backend that was kept is the saved result itself)."""
    systems = _systems(report)
    saved = next((s for s in systems if s["saved"]), None)
    if saved is None:
        return []
    out = []
    for s in systems:
        if s["saved"] or s["chosen"]:
            continue
        margin = 1.0 if s["name"] == "eager" else _SLOWER_MARGIN
        if saved["median"] > s["median"] * margin:
            out.append((s["name"], s["median"]))
    return out


def render_latency_svg(report: dict) -> str:
    """Horizontal bars of median latency (whiskers min–max where known), one per system measured:
    eager, the saved result and each backend ``auto`` timed, the kept one outlined."""
    systems = _systems(report)
    if not systems:
        return ""
    slower = bool(_slower_than(report))
    bar_h, left, area = 26, 260, 380
    width = left + area * 1.15 + 200
    scale = area / (max(s["median"] for s in systems) or 1.0)  # whiskers past the slowest median are cut
    clip = lambda ms: left + min(ms * scale, area * 1.15)  # noqa: E731
    rows = []
    for i, s in enumerate(systems):
        y = 10 + i * (bar_h + 12)
        w = max(1.0, s["median"] * scale)
        colour = "#999" if s["name"] == "eager" else ("#b00020" if s["saved"] and slower else
                                                      "#3b7dd8" if s["saved"] else "#7fa7e0")
        note = " ✓ kept" if s["chosen"] else (" ⚠ slower" if s["saved"] and slower else "")
        outline = ' stroke="#0a7d20" stroke-width="3"' if s["chosen"] else ""
        rows.append(f'<text x="{left - 8}" y="{y + bar_h * 0.68:.1f}" text-anchor="end">{_e(s["label"])}</text>'
                    f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"{outline}/>')
        end = left + w
        if s["low"] is not None and s["high"] is not None:
            end = max(end, clip(s["high"]))
            rows.append(f'<line x1="{clip(s["low"]):.1f}" x2="{clip(s["high"]):.1f}" '
                        f'y1="{y + bar_h / 2}" y2="{y + bar_h / 2}" stroke="#222"/>')
        rows.append(f'<text x="{end + 6:.1f}" y="{y + bar_h * 0.68:.1f}">{_e(_fmt_ms(s["median"]) + note)}</text>')
    height = 20 + len(systems) * (bar_h + 12)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" font-size="13" '
            f'font-family="system-ui,sans-serif" role="img" aria-label="median latency per system">'
            f'{"".join(rows)}</svg>')


def _latency_section(report: dict) -> str:
    svg = render_latency_svg(report)
    if not svg:
        return ""
    parts = ["<h2>Latency: every system measured</h2>",
             "<p>Median per call; whiskers from the fastest call to the 90th percentile (cut short past the "
             "chart). Eager and the saved result are timed together at the example; the backends <code>auto</code> "
             "compared are timed in a separate run; the kept one is outlined and marked ✓.</p>", svg]
    speedup = (report.get("latency") or {}).get("speedup")
    if speedup:
        parts.append(f"<p>speed-up of the saved result over eager: <b>{speedup:.2f}×</b></p>")
    slower = _slower_than(report)
    if slower:
        parts.append("<p class='bad'><b>The saved result is slower than</b> "
                     + _e(", ".join(f"{name} ({_fmt_ms(ms)})" for name, ms in slower)) + ".</p>")
    return "".join(parts)


# -- 7. precision candidates -----------------------------------------------------------------

def _kept_fp32_note(candidate: dict) -> str:
    kept = candidate.get("layers_kept_fp32")
    return f" ({len(kept)} layers kept fp32: {', '.join(kept)})" if kept else ""


def _precision_section(report: dict) -> str:
    candidates = report.get("precision_candidates")
    if not isinstance(candidates, list) or not candidates or not all(isinstance(c, dict) for c in candidates):
        return ""
    slowest = max([c.get("median_ms") or 0.0 for c in candidates] + [1e-12])
    worst = max([c.get("max_abs_error") or 0.0 for c in candidates] + [1e-30])
    rows = []
    for c in candidates:
        kept = bool(c.get("chosen"))
        ms, err = c.get("median_ms"), c.get("max_abs_error")
        rows.append((kept, [
            f"<td>{_e(c.get('precision'))}{_e(_kept_fp32_note(c))}</td>",
            f"<td>{_e(c.get('backend') or '—')}</td>",
            f"<td class='num'>{_bar((ms or 0.0) / slowest)}{_e(_fmt_ms(ms) or '—')}</td>",
            f"<td class='num'>{_bar((err or 0.0) / worst, 'err')}{_e(_fmt_err(err) or '—')}</td>",
            f"<td class='num'>{_e(_fmt_err(c.get('max_rel_error')) or '—')}</td>",
            f"<td class='{'fired' if kept else 'muted'}'>{'✓ kept' if kept else 'not kept'}</td>",
            f"<td>{_e(_one_line(c['reason']) if c.get('reason') else ('kept' if kept else '—'))}</td>",
        ]))
    columns = ["precision", "backend", "median latency", "max abs error", "max rel error", "kept", "why"]
    head = "".join(f"<th>{h}</th>" for h in columns)
    body = "".join(f"<tr class='{'kept' if kept else ''}'>{''.join(cells)}</tr>" for kept, cells in rows)
    tolerance = report.get("precision_tolerance")
    bar = (f" The fastest whose relative error (max |out − eager| / max |eager|) is at most {_e(tolerance)} is kept."
           if tolerance is not None else "")
    return ("<h2>Precision candidates</h2><p>Each precision tried, its latency and its error against eager fp32; "
            f"bars are scaled to the slowest and the least exact candidate.{bar}</p>"
            f"<table><tr>{head}</tr>{body}</table>")


# -- 8. ONNX Runtime, 9. partition plan and timeline, 10. fingerprint -------------------------

def _onnx_section(report: dict) -> str:
    onnx = report.get("onnx")
    if not onnx:
        return ""
    skip = ("onnx_passes", "onnx_parts", "kept_in_pytorch", "partial")
    parts = ["<h2>ONNX Runtime</h2><p>The export, the session's providers and the checks; its passes are in "
             "the ONNX stage's table above.</p>"]
    if onnx.get("partial"):
        kept = onnx.get("kept_in_pytorch") or []
        parts.append(f"<p><b>Partial export:</b> {len(kept)} op(s) ONNX cannot express stay in PyTorch; "
                     f"{len(onnx.get('onnx_parts') or {})} region(s) run in ONNX Runtime.</p>")
        if kept:
            parts.append(_list_html(kept))
    parts.append(_kv_table(onnx, skip=skip))
    for name, part in (onnx.get("onnx_parts") or {}).items():
        parts.append(f"<h3>region {_e(name)}</h3>" + _kv_table(part if isinstance(part, dict) else {"value": part},
                                                               skip=("onnx_passes",)))
    return "".join(parts)


def _openvino_section(report: dict) -> str:
    openvino = report.get("openvino")
    if not openvino:
        return ""
    why = (report.get("auto_left_out") or {}).get("openvino")
    left_out = f"<p class='bad'><b>Left out of auto:</b> {_e(_one_line(why))}</p>" if why else ""
    return ("<h2>OpenVINO</h2>" + left_out + "<p>The route from the graph to OpenVINO's CPU plugin, the settings it "
            "was compiled with and the precision it runs at.</p>" + _kv_table(openvino))


def _extra_sections(report: dict) -> list[str]:
    """Sections owned by other subsystems (partition plan, pipeline timeline)."""
    out = []
    if report.get("plan"):
        from .partition.plan import Plan
        from .partition.render import render_plan_html

        plan = Plan.from_json(json.dumps(report["plan"]))
        unused = (f"<p class='bad'><b>Not used:</b> {_e(_one_line(report['backend_fallback']))}</p>"
                  if _runs(report) == "eager" and report.get("backend_fallback") else "")
        out.append("<h2>Partition plan</h2>" + unused + "<p>Stages in colour, bar width proportional to the "
                   "stage's cost; the numbers between stages are the bytes crossing each cut.</p>"
                   + render_plan_html(plan))
    if report.get("timeline"):
        from .partition.render import render_timeline_html
        from .runtime.pipeline import Interval, Timeline

        t = report["timeline"]
        timeline = Timeline(t["stages"], t["microbatches"], [Interval(**iv) for iv in t["intervals"]], t["wall_s"])
        out.append("<h2>Pipeline timeline</h2><p>Each stage's busy time per micro-batch in one run: gaps are "
                   "the pipeline bubble, the fullest lane is the slowest stage.</p>" + render_timeline_html(timeline))
    return out


def _fingerprint_section(report: dict) -> str:
    fingerprint = report.get("fingerprint")
    if not fingerprint:
        return ""
    body = _kv_table(fingerprint) if isinstance(fingerprint, dict) else f"<p>{_value_html(fingerprint)}</p>"
    return "<h2>Fingerprint</h2>" + body


# -- the page --------------------------------------------------------------------------------

def render_html(report: dict) -> str:
    """The whole page for ``report`` (report.json's dict), every value escaped."""
    model = report.get("model") or "model"
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>accelc report: {_e(model)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>accelc report: {_e(model)}</h1>",
        _banner(report),
        _summary(report),
        _passes_section(report),
        _refusals_section(report.get("refusals") or []),
        _verification_section(report),
        _latency_section(report),
        _precision_section(report),
        _onnx_section(report),
        _openvino_section(report),
        *_extra_sections(report),
        _fingerprint_section(report),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)
