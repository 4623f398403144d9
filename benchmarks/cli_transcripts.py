"""What `accelc optimize` prints, exactly, for every sample and for a Hugging Face folder.

    python benchmarks/cli_transcripts.py                 # writes benchmarks/results/cli-transcripts.md

Each run is a fresh `accelc optimize SAMPLE -o OUT --force` process with stdout and stderr
captured together, as a CI log or a pipe sees them (on a terminal the progress lines are one
live line that is cleared at the end). The Hugging Face folder is a DistilBERT-sized BERT config
with random weights (biases and norm weights too), written with `save_pretrained` to a temporary
folder. The file records each transcript, its line count, exit code and wall time, and the CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_guard import cpu_flags  # noqa: E402

SAMPLES = ["mlp", "cnn", "multibranch_cnn", "resnet50", "bert", "gpt2", "vit"]


def save_hf_folder(folder: str) -> None:
    """A 6-layer BERT classifier from its config, every parameter random, saved like a download."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(num_hidden_layers=6, architectures=["BertForSequenceClassification"], num_labels=3)
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02) if p.dim() > 1 else p.uniform_(-0.5, 0.5).add_(1.0)
    model.save_pretrained(folder)


def transcript(args: list[str]) -> tuple[str, int, float]:
    start = time.perf_counter()
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "accelc"), *args], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return done.stdout, done.returncode, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default=",".join(SAMPLES))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "cli-transcripts.md"))
    args = parser.parse_args(argv)
    sections = [f"# `accelc optimize` transcripts\n\nCPU flags: {cpu_flags()}; {os.cpu_count()} cores. "
                "stdout and stderr together, not a terminal.\n"]
    with tempfile.TemporaryDirectory() as tmp:
        runs = [(name, [f"samples/{name}.py"]) for name in args.samples.split(",") if name]
        hf = os.path.join(tmp, "bert-6l-hf")
        save_hf_folder(hf)
        runs.append(("Hugging Face folder (BERT, 6 layers, save_pretrained)", [hf, "--batch", "8", "--seq", "128"]))
        for name, target in runs:
            out = os.path.join("out", "transcripts", name.split()[0].lower())  # relative to the repository
            text, code, seconds = transcript(["optimize", *target, "-o", out, "--force"])
            text = text.replace(tmp, "$TMP")
            shown = " ".join("$TMP/bert-6l-hf" if t == hf else t for t in target)
            sections.append(f"## {name}\n\n`accelc optimize {shown} -o OUT --force`: exit {code}, "
                            f"{len(text.splitlines())} lines, {seconds:.0f} s\n\n```\n{text.rstrip()}\n```\n")
            print(sections[-1], flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(sections))
    print(f"wrote {os.path.relpath(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
