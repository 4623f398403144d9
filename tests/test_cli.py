"""The command line: the happy path, and every bad input as one line with a non-zero exit."""

import json
import subprocess
import sys

import pytest

from accelc.cli import main
from support import TINY_CNN
from test_capture import UNTRACEABLE

RAISES_ON_INPUTS = """
import torch

class Mismatch(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.lin(x)

def get_model():
    return Mismatch()

def get_inputs():
    return (torch.randn(1, 5),)
"""


def test_optimize_run_explain(cli, model_file, tmp_path):
    path, out = model_file(TINY_CNN), tmp_path / "out"
    code, stdout, stderr = cli("optimize", path, "-o", out)
    assert code == 0, stderr
    for expected in ("graph passes", "fold_conv_bn(folded 1)", "remove_noops(removed 1)", "max error", "latency", "eager"):
        assert expected in stdout
    assert "capturing with torch.export" in stderr and "verifying" in stderr  # progress
    report = json.loads((out / "report.json").read_text())
    assert report["latency"]["eager"]["median_ms"] > 0 and report["verification"]["ok"]
    code, stdout, _ = cli("run", out)
    assert code == 0 and "latency: median" in stdout and "outputs [(2, 4)]" in stdout
    code, stdout, _ = cli("explain", path, "--disable", "fold_conv_bn")
    assert code == 0 and "capture: torch.export (non-strict)" in stdout and "remove_noops: fired" in stdout
    assert "fold_conv_bn" not in stdout


@pytest.mark.parametrize("backend, shown, hidden", [
    ("torch", "lowering passes pack_linear_weights(packed 1)", "onnx passes"),
    ("onnxruntime", "onnx passes fold_bias_add(folded 1)", "lowering passes"),
])
def test_summary_lists_the_passes_of_the_stages_that_run(backend, shown, hidden):
    from accelc.cli import summary_table

    report = {"model": "m.py", "capture": {"method": "torch.export"}, "backend": backend,
              "passes": [{"name": "remove_noops", "status": "fired", "stats": {"removed": 2}}],
              "runtime_lowering": [{"name": "pack_linear_weights", "status": "fired", "stats": {"packed": 1}}],
              "onnx": {"onnx_passes": [{"name": "fold_bias_add", "status": "fired", "stats": {"folded": 1}},
                                       {"name": "fuse_attention", "status": "rolled back", "stats": {},
                                        "reason": "changed the outputs"}]}}
    report["verification"] = {"ok": True, "max_abs_error": 2.4e-6, "inputs_checked": 8}
    report["onnx"]["verification"] = {"ok": True, "max_abs_error": 0.065}  # e.g. int8: what runs has its own error
    table = " ".join(summary_table(report).split())
    assert f"max error {'0.065' if backend == 'onnxruntime' else '2.4e-06'} abs (ok, 8 inputs)" in table
    assert "graph passes remove_noops(removed 2)" in table and shown in table and hidden not in table
    assert ("fuse_attention: rolled back" in table) == (backend == "onnxruntime")
    assert " build " not in table  # no phases recorded: no build row


def test_summary_gives_the_build_time_and_its_longest_phases():
    from accelc.cli import summary_table

    report = {"capture": {"method": "torch.export"}, "backend": "onnxruntime",
              "build_seconds": {"capture": 3.1, "eager references": 5.0, "graph stage": 2.2, "final check": 4.4,
                                "onnx export": 8.3, "auto timing": 0.9, "total": 26.0}}
    table = " ".join(summary_table(report).split())
    assert "build 26.0 s (onnx export 8.3, eager references 5.0, final check 4.4, capture 3.1)" in table


def test_passes_lists_every_stage(cli):
    code, stdout, _ = cli("passes")
    assert code == 0
    graph, rest = stdout.split("graph stage:", 1)[1].split("lowering stage:", 1)
    lowering, onnx_rows = rest.split("onnx stage:", 1)
    assert "fold_conv_bn" in graph and "eliminate_dead_code" in graph and "pack_linear_weights" not in graph
    assert "pack_linear_weights" in lowering and "bind_direct_calls" in lowering
    # each row: name, its place in the cpu and cuda default lists
    assert onnx_rows.split("\n")[2].split()[:3] == ["fuse_attention", "1", "1"]
    assert "split_causal_attention" in onnx_rows and "quantize_int8" in onnx_rows


def test_explain_is_a_dry_run(cli, model_file, monkeypatch):
    import accelc.onnx.export
    import accelc.timing

    def refuse(*args, **kwargs):
        raise AssertionError("explain exported or timed something")

    monkeypatch.setattr(accelc.onnx.export, "export_graph", refuse)
    monkeypatch.setattr(accelc.timing, "compare_latency", refuse)
    code, stdout, stderr = cli("explain", model_file(TINY_CNN), "--disable", "onnx:fuse_attention,to_channels_last")
    assert code == 0, stderr
    assert "graph stage:" in stdout and "fold_conv_bn: fired (folded 1)" in stdout
    assert "lowering stage:" in stdout and "fuse_conv_pointwise: fired" in stdout and "to_channels_last" not in stdout
    onnx_line = next(line for line in stdout.splitlines() if line.startswith("onnx stage (not run):"))
    assert "split_causal_attention" in onnx_line and "fuse_attention" not in onnx_line
    assert "needs the ONNX export" in stdout and "auto would build" in stdout


@pytest.mark.parametrize("source, args, message, exit_code", [
    (None, [], "nope.py: no such file", 2),
    ("import torch\ndef f(:\n", [], "model.py:2: syntax error", 4),
    ("import torch\nwidth = 3\ndef helper(): pass\n", [], "defines neither get_model() nor `model` (it defines: helper, width", 4),
    ("import torch\ndef get_model(): return 'a model'\ndef get_inputs(): return ()\n", [], "gave a str, not a torch.nn.Module", 4),
    ("import torch\ndef get_model(): return torch.nn.Linear(2, 2)\ndef get_inputs(): return [[1.0, 2.0]]\n", [], "example input 0 is a list, not a tensor", 4),
    (RAISES_ON_INPUTS, [], "the model raised RuntimeError: mat1 and mat2 shapes cannot be multiplied (1x5 and 4x2) at ", 4),
    (TINY_CNN, ["--passes", "fold_conv_bn,not_a_pass"], "unknown pass 'not_a_pass'", 2),
    (TINY_CNN, ["--disable", "not_a_pass"], "unknown pass 'not_a_pass'", 2),
    (TINY_CNN, ["--device", "tpu"], "device 'tpu'", 2),
    (TINY_CNN, ["--precision", "int8", "--backend", "torch"], "--precision int8 is ONNX Runtime's dynamic quantisation on the CPU", 2),
    (UNTRACEABLE, [], "nothing optimised to save: could not capture the model at ", 5),
])
def test_bad_inputs(cli, model_file, tmp_path, source, args, message, exit_code):
    path = model_file(source) if source is not None else tmp_path / "nope.py"
    out = tmp_path / "out"
    code, stdout, stderr = cli("optimize", path, "-o", out, *args)
    assert code == exit_code, (code, stderr)
    assert message in stderr, stderr
    error_lines = [line for line in stderr.splitlines() if line.startswith("accelc: error:")]
    assert len(error_lines) == 1 and "Traceback" not in stderr
    assert not out.exists()


def test_capture_failure_quotes_the_users_line_and_the_fix_first(cli, model_file, tmp_path):
    code, _, stderr = cli("optimize", model_file(UNTRACEABLE), "-o", tmp_path / "out")
    assert code == 5
    message = next(line for line in stderr.splitlines() if line.startswith("accelc: error:"))
    assert "model.py:6 (`if x.sum() > 0:`): a branch or size there depends on a tensor's values" in message
    assert message.index("torch.cond") < message.index("torch.export said")


def test_model_error_names_the_users_line(cli, model_file, tmp_path):
    code, _, stderr = cli("optimize", model_file(RAISES_ON_INPUTS), "-o", tmp_path / "out")
    assert code == 4 and "model.py:10 when run on its own example inputs" in stderr


def test_existing_output_folder_is_refused_before_any_work(cli, model_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    code, _, stderr = cli("optimize", model_file(TINY_CNN), "-o", out)
    assert code == 2 and "already exists and is not empty" in stderr and "--force" in stderr
    assert "capturing" not in stderr and (out / "old.txt").read_text() == "keep me"


def test_run_on_missing_artifact(cli, tmp_path):
    code, _, stderr = cli("run", tmp_path / "missing")
    assert code == 2 and "no such artifact folder" in stderr


def test_traceback_only_with_verbose(model_file, tmp_path):
    path = model_file("import torch\nx = 1\n")
    cmd = [sys.executable, "-m", "accelc.cli"]
    plain = subprocess.run(cmd + ["optimize", str(path), "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert plain.returncode == 4 and "Traceback" not in plain.stderr
    errors = [line for line in plain.stderr.splitlines() if not line.startswith("[")]  # progress lines start with [
    assert len(errors) == 1 and errors[0].startswith("accelc: error: model.py defines neither")
    verbose = subprocess.run(cmd + ["--verbose", "optimize", str(path), "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert verbose.returncode == 4 and "Traceback" in verbose.stderr


def test_verbose_after_the_subcommand_and_version(cli, capsys):
    code, out, err = cli("passes", "--verbose")
    assert code == 0 and "fold_conv_bn" in out
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("accelc ")


def test_bench_json_writes_the_file(cli, model_file, tmp_path):
    path = model_file(TINY_CNN)
    target = tmp_path / "bench.json"
    code, out, err = cli("bench", path, "--against", "eager", "--seconds", "0.2", "--json", target)
    assert code == 0, err
    assert json.loads(target.read_text())["systems"]


NOISY = """
import logging, warnings
import torch

class Noisy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        warnings.warn("a library warning nobody asked for")
        logging.getLogger("torch.some_library").warning("a torch log line nobody asked for")
        # torch.onnx has its own stderr handler and does not propagate (torch's log registry)
        logging.getLogger("torch.onnx").warning("an exporter line nobody asked for")
        return self.lin(x)

def get_model():
    return Noisy().eval()

def get_inputs():
    return (torch.randn(2, 4),)
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_library_noise_goes_to_the_log_file(cli, model_file, tmp_path, verbose):
    out = tmp_path / "out"
    code, stdout, stderr = cli("optimize", model_file(NOISY), "-o", out, "--backend", "torch", "--no-bench",
                               *(["--verbose"] if verbose else []))
    assert code == 0, stderr
    log = (out / "accelc.log").read_text()
    assert "a library warning nobody asked for" in log and "a torch log line nobody asked for" in log
    assert "an exporter line nobody asked for" in log
    if verbose:  # shown where each library prints it (torch: its own handler on the real stderr)
        assert "hidden" not in stderr
    else:
        assert "nobody asked for" not in stdout + stderr
        assert "messages from torch and other libraries hidden (in " in stderr and "accelc.log" in stderr


LATE_LOGGER = """
import logging, sys
import torch

# What transformers does on its first import: its own stderr handler, not propagating.
late = logging.getLogger("transformers.late_library")
late.addHandler(logging.StreamHandler(sys.stderr))
late.propagate = False

class Model(torch.nn.Module):
    def forward(self, x):
        late.warning("a late library line nobody asked for")
        return x * 2

def get_model():
    return Model()

def get_inputs():
    return (torch.randn(2, 4),)
"""


def test_a_library_that_sets_up_logging_while_the_model_file_loads_is_captured(cli, model_file, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = cli("optimize", model_file(LATE_LOGGER), "-o", out, "--backend", "torch", "--no-bench")
    assert code == 0, stderr
    assert "a late library line nobody asked for" in (out / "accelc.log").read_text()
    assert "nobody asked for" not in stdout + stderr


def test_a_saved_result_slower_than_an_option_auto_timed_is_a_warning():
    from accelc.api import slower_than_options

    report = {"latency": {"accelc": {"median_ms": 2.0}}, "backend_choice": {"torch": 1.0, "onnxruntime": 1.9,
                                                                             "chosen": "onnxruntime"}}
    warning = slower_than_options(report)
    assert "slower than torch (1 ms)" in warning and "--backend torch" in warning
    report["backend_choice"]["torch"] = 1.95  # within timing noise of the saved result: not a warning
    assert slower_than_options(report) is None
    assert slower_than_options({"latency": {"accelc": {"median_ms": 2.0}}}) is None  # auto timed nothing
