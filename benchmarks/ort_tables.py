"""Markdown tables from the ONNX Runtime benchmark JSON files (bench_onnxruntime.py, bench_ort_precision.py).

    python benchmarks/ort_tables.py benchmarks/results/onnxruntime-cpu.json benchmarks/results/onnxruntime-cpu-seq512.json \\
        --precision benchmarks/results/ort-precision-cpu.json --sessions benchmarks/results/ort-sessions-cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys

LATENCY_COLUMNS = [
    ("eager", "eager"), ("ort_default", "ORT default"), ("aa_ort_default_twin", "ORT default, twin session (A/A)"),
    ("ort_transformers_dynamo", "ORT + transformers opt. (dynamo)"),
    ("ort_transformers_torchscript", "ORT + transformers opt. (TorchScript)"), ("accelc_ort", "accelc ORT"),
]


def _cell(row: dict, key: str) -> str:
    if key in row["median_ms"]:
        return f"{row['median_ms'][key]:.3f}"
    return "failed" if key in row.get("notes", {}) else "–"


def _markdown(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])


def latency_table(rows: list[dict]) -> str:
    head = ["sample", "batch", "seq"] + [title for _, title in LATENCY_COLUMNS] + [
        "accelc vs best ORT", "A/A ratio", "attention fused / present", "accelc max err", "provider"]
    body = []
    for row in rows:
        cells = [row["sample"], str(row["batch"]), str(row["seq"] or "–")]
        cells += [_cell(row, key) for key, _ in LATENCY_COLUMNS]
        cells += [f"{row['accelc_vs_best_ort']}×", f"{row.get('aa_ratio', '–')}",
                  f"{row['attention_found'].get('accelc_ort', 0)} / {row['attention_present']}",
                  f"{row['max_abs_error']['accelc_ort']:.2g}", (row.get("provider") or "?").replace("ExecutionProvider", "")]
        body.append(cells)
    return _markdown(head, body)


def precision_table(rows: list[dict]) -> str:
    head = ["sample", "eager ms", "fp32 ms", "fp16 ms (speed, abs / rel error)", "int8 ms (speed, abs / rel error)"]
    body = []
    for row in rows:
        cells = [row["sample"], f"{row['median_ms']['eager']:.3f}", f"{row['median_ms']['ort_fp32']:.3f}"]
        for key in ("ort_fp16", "ort_int8"):
            if key in row["median_ms"]:
                cells.append(f"{row['median_ms'][key]:.3f} ({row['speedup_vs_ort_fp32'][key]}×, "
                             f"{row['max_abs_error'][key]:.2g} / {row['relative_error'][key]:.2g})")
            else:
                cells.append(f"failed: {row['notes'].get(key, '?')[:80]}")
        body.append(cells)
    return _markdown(head, body)


def sessions_table(rows: list[dict]) -> str:
    head = ["sample (batch 1)", "plain sessions, ms", "accelc ORT, ms", "spread of the plain sessions", "accelc vs their median"]
    body = []
    for row in rows:
        plain = [v for k, v in row["median_ms"].items() if k.startswith("ort_plain")]
        cells = [row["sample"], ", ".join(f"{p:.4g}" for p in plain), f"{row['median_ms']['accelc_ort']:.4g}",
                 str(row["plain_spread"]), f"{row['accelc_vs_plain_median']}×"]
        body.append(cells)
    return _markdown(head, body)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("latency", nargs="*", help="bench_onnxruntime.py JSON files")
    parser.add_argument("--precision", help="a bench_ort_precision.py JSON file")
    parser.add_argument("--sessions", help="a bench_ort_sessions.py JSON file")
    args = parser.parse_args(argv)
    rows = [row for path in args.latency for row in json.load(open(path))["results"]]
    if rows:
        print(latency_table(rows) + "\n")
    if args.precision:
        print(precision_table(json.load(open(args.precision))["results"]) + "\n")
    if args.sessions:
        print(sessions_table(json.load(open(args.sessions))["results"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
