"""Does OpenVINO's CPU plugin keep a layer in fp32 at bf16 when the IR marks it? (per-layer
fallback for ``--precision auto``'s OpenVINO bf16 candidate)

    python benchmarks/probe_openvino_fp32_marks.py

Converts a three-layer MLP (1024 wide, 4000 outputs) to OpenVINO, compiles it at
``INFERENCE_PRECISION_HINT=bf16`` and prints the relative error against eager fp32 (max |out -
eager| / max |eager|), first unmarked, then with every MatMul marked in each way the IR can say
"keep this node's precision": the ``precise_0`` run-time info set from Python (which ``save_model``
writes as ``DisablePrecisionConversion`` = ``dynamic:f16``) and that attribute rewritten in the
IR to name bf16. A mark the plugin honours brings the error down to fp32's (about 1e-7); the
same error as unmarked means it runs the layer at bf16 anyway. Prints the CPU flags and
OpenVINO's version, since the answer depends on both. On a CPU without native bf16 OpenVINO
runs f32 whatever the hint, and the probe says so.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_guard import cpu_flags  # noqa: E402


def main() -> int:
    import openvino as ov

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 1024),
                                torch.nn.GELU(), torch.nn.Linear(1024, 4000)).eval()
    x = torch.randn(4, 256)
    with torch.inference_mode():
        reference = model(x).numpy()
    core = ov.Core()
    print(f"CPU flags: {cpu_flags()}; OpenVINO {ov.__version__}")

    def error(ov_model, label: str) -> None:
        compiled = core.compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
        out = compiled([x.numpy()])[0]
        runs = compiled.get_property("INFERENCE_PRECISION_HINT")
        print(f"{label}: runs at {runs}, relative error {np.abs(out - reference).max() / np.abs(reference).max():.2e}")

    converted = ov.convert_model(model, example_input=x)
    error(converted, "unmarked")
    for op in converted.get_ordered_ops():
        if op.get_type_name() == "MatMul":
            op.get_rt_info()["precise_0"] = ""
    with tempfile.TemporaryDirectory() as folder:
        xml = os.path.join(folder, "marked.xml")
        ov.save_model(converted, xml, compress_to_fp16=False)
        text = open(xml).read()
        print(f"marks written to the IR: {text.count('DisablePrecisionConversion')}")
        error(core.read_model(xml), "every MatMul marked (precise_0: DisablePrecisionConversion dynamic:f16)")
        for value in ("dynamic:bf16", "dynamic:f16,bf16"):
            with open(xml, "w") as f:
                f.write(text.replace('value="dynamic:f16"', f'value="{value}"'))
            error(core.read_model(xml), f"every MatMul marked (DisablePrecisionConversion {value})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
