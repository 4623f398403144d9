"""Every flag of every subcommand, through the command line: what each one changes.

``COVERAGE`` maps each (subcommand, option string) of :func:`accelc.cli.build_parser` to the test
that checks its effect; :func:`test_every_flag_has_a_test` fails when the parser and the table
disagree, so a flag added without a test is named there. Each test calls :func:`accelc.cli.main`
in-process on tiny model files and asserts what the flag does to the report, the artifact folder
or the output, not only the exit code. Builds are shared between tests (``built``), and use the
PyTorch backend without the latency measurement wherever the flag under test does not need them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import accelc
from accelc.cli import build_parser, main
from support import TINY_CNN

TEST_CLI = Path(__file__).with_name("test_cli.py")

# (subcommand, option string) -> the test that checks what it does: a test of this file, or
# "tests/test_cli.py::NAME". "accelc" is the top-level parser.
COVERAGE: dict[tuple[str, str], str] = {
    ("accelc", "-h"): "test_help_lists_every_flag",
    ("accelc", "--help"): "test_help_lists_every_flag",
    ("accelc", "-v"): "test_verbose_shows_the_traceback_only_when_given",
    ("accelc", "--verbose"): "test_verbose_shows_the_traceback_only_when_given",
    ("accelc", "--version"): "test_version",

    ("optimize", "-h"): "test_help_lists_every_flag",
    ("optimize", "--help"): "test_help_lists_every_flag",
    ("optimize", "-v"): "test_verbose_shows_the_traceback_only_when_given",
    ("optimize", "--verbose"): "test_verbose_shows_the_traceback_only_when_given",
    ("optimize", "-o"): "test_optimize_output",
    ("optimize", "--output"): "test_optimize_output",
    ("optimize", "--force"): "test_optimize_force",
    ("optimize", "--no-bench"): "test_optimize_no_bench",
    ("optimize", "--backend"): "test_optimize_backend",
    ("optimize", "--static"): "test_optimize_static",
    ("optimize", "--dynamic"): "test_optimize_dynamic",
    ("optimize", "--device"): "test_optimize_device",
    ("optimize", "--precision"): "test_optimize_precision",
    ("optimize", "--passes"): "test_optimize_passes",
    ("optimize", "--disable"): "test_optimize_disable",
    ("optimize", "--no-verify"): "test_optimize_no_verify",
    ("optimize", "--stages"): "test_optimize_stages",
    ("optimize", "--devices"): "test_optimize_devices",
    ("optimize", "--microbatches"): "test_optimize_microbatches",
    ("optimize", "--profile"): "test_optimize_profile",
    ("optimize", "--branches"): "test_optimize_branches",
    ("optimize", "--tolerance"): "test_optimize_precision_auto_and_tolerance",
    ("optimize", "--calibration"): "test_optimize_calibration",

    ("run", "-h"): "test_help_lists_every_flag",
    ("run", "--help"): "test_help_lists_every_flag",
    ("run", "-v"): "test_verbose_shows_the_traceback_only_when_given",
    ("run", "--verbose"): "test_verbose_shows_the_traceback_only_when_given",
    ("run", "--device"): "test_run_device_and_seconds",
    ("run", "--seconds"): "test_run_device_and_seconds",

    # `accelc passes` itself: tests/test_cli.py::test_passes_lists_every_stage
    ("passes", "-h"): "test_help_lists_every_flag",
    ("passes", "--help"): "test_help_lists_every_flag",
    ("passes", "-v"): "test_verbose_shows_the_traceback_only_when_given",
    ("passes", "--verbose"): "test_verbose_shows_the_traceback_only_when_given",

    ("explain", "-h"): "test_help_lists_every_flag",
    ("explain", "--help"): "test_help_lists_every_flag",
    ("explain", "-v"): "test_verbose_shows_the_traceback_only_when_given",
    ("explain", "--verbose"): "test_verbose_shows_the_traceback_only_when_given",
    ("explain", "--backend"): "test_explain_backend",
    ("explain", "--static"): "test_explain_shapes",
    ("explain", "--dynamic"): "test_explain_shapes",
    ("explain", "--device"): "test_explain_device",
    ("explain", "--precision"): "test_explain_precision",
    ("explain", "--passes"): "test_explain_passes",
    ("explain", "--disable"): "test_explain_disable",  # onnx:NAME: tests/test_cli.py::test_explain_is_a_dry_run
    ("optimize", "--batch"): "tests/test_hf_folder.py::test_optimize_bert_folder",
    ("optimize", "--seq"): "tests/test_hf_folder.py::test_optimize_bert_folder",
    ("explain", "--batch"): "tests/test_hf_folder.py::test_explain_gpt2_folder",
    ("explain", "--seq"): "tests/test_hf_folder.py::test_explain_gpt2_folder",
    ("bench", "--batch"): "test_bench_example_sizes_reach_the_loader",
    ("bench", "--seq"): "test_bench_example_sizes_reach_the_loader",

    ("bench", "-h"): "test_help_lists_every_flag",
    ("bench", "--help"): "test_help_lists_every_flag",
    ("bench", "-v"): "test_verbose_shows_the_traceback_only_when_given",
    ("bench", "--verbose"): "test_verbose_shows_the_traceback_only_when_given",
    ("bench", "--against"): "test_bench_json",
    ("bench", "--json"): "test_bench_json",
    ("bench", "--device"): "test_bench_json",
    ("bench", "--seconds"): "test_bench_json",
    ("bench", "--precision"): "test_bench_planned_systems",
    ("bench", "--max-autotune"): "test_bench_planned_systems",
}

# PENDING: flags that exist in the parser but whose tests are still being written. The guard
# tolerates them; move each into COVERAGE (and out of here) with its test.
PENDING: set[tuple[str, str]] = set()

# The bad values test: every refusal is exit code 2, one error line, no traceback, nothing written.
BAD_VALUES = [
    # argparse refuses these before accelc runs, in accelc's one-line form
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["optimize", "{mlp}"], "the following arguments are required: -o/--output"),
    (["optimize", "{mlp}", "-o", "{out}", "--backend", "nope"], "argument --backend: invalid choice: 'nope'"),
    (["optimize", "{mlp}", "-o", "{out}", "--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
    (["optimize", "{mlp}", "-o", "{out}", "--stages", "two"], "argument --stages: invalid int value: 'two'"),
    (["optimize", "{mlp}", "-o", "{out}", "--microbatches", "1.5"], "argument --microbatches: invalid int value"),
    (["optimize", "{mlp}", "-o", "{out}", "--branches", "x"], "argument --branches: invalid int value"),
    (["explain", "{mlp}", "--backend", "nope"], "argument --backend: invalid choice: 'nope'"),
    (["bench", "{mlp}", "--precision", "int8"], "argument --precision: invalid choice: 'int8'"),
    (["bench", "{mlp}", "--seconds", "abc"], "argument --seconds: 'abc' is not a number above 0"),
    (["run", "{art}", "--seconds", "abc"], "argument --seconds: 'abc' is not a number above 0"),
    (["run", "{art}", "--seconds", "-1"], "argument --seconds: '-1' is not a number above 0"),
    (["bench", "{mlp}", "--seconds", "0"], "argument --seconds: '0' is not a number above 0"),
    # accelc refuses these, before any capture ("accelc: error: ...")
    (["optimize", "{mlp}", "-o", "{out}", "--stages", "0"], "--stages needs at least 1 stage, got 0"),
    (["optimize", "{mlp}", "-o", "{out}", "--microbatches", "0"], "--microbatches needs at least 1, got 0"),
    (["optimize", "{mlp}", "-o", "{out}", "--stages", "2", "--microbatches", "3"],
     "--microbatches 3 needs every input's first dimension"),
    (["optimize", "{mlp}", "-o", "{out}", "--microbatches", "2"], "--microbatches 2 applies to a graph cut into stages"),
    (["optimize", "{mlp}", "-o", "{out}", "--profile"], "--profile applies to a graph cut into stages"),
    (["optimize", "{mlp}", "-o", "{out}", "--branches", "0"], "--branches needs at least 1 worker thread, got 0"),
    (["optimize", "{mlp}", "-o", "{out}", "--stages", "2", "--branches", "2"], "two ways to split one graph"),
    (["optimize", "{mlp}", "-o", "{out}", "--devices", "cpu,tpu"], "unknown device 'tpu'"),
    (["optimize", "{mlp}", "-o", "{out}", "--dynamic", "garbage"], "--dynamic 'garbage': write AXIS=LO..HI or AXIS=static"),
    (["optimize", "{mlp}", "-o", "{out}", "--dynamic", "bogus=1..4"], "unknown dynamic axis 'bogus'"),
    (["optimize", "{mlp}", "-o", "{out}", "--dynamic", "batch=8..1"], "need 1 <= lo <= hi"),
    (["explain", "{mlp}", "--dynamic", "garbage"], "--dynamic 'garbage'"),
    (["explain", "{mlp}", "--device", "tpu"], "unknown device 'tpu'"),
    (["explain", "{mlp}", "--precision", "int8", "--backend", "torch"], "--precision int8 is ONNX Runtime's dynamic quantisation"),
    (["optimize", "{mlp}", "-o", "{out}", "--tolerance", "0.1"], "--tolerance is the error --precision auto may accept"),
    (["optimize", "{mlp}", "-o", "{out}", "--precision", "auto", "--tolerance", "2"], "--tolerance is a relative error between 0 and 1"),
    (["optimize", "{mlp}", "-o", "{out}", "--tolerance", "x"], "argument --tolerance: invalid float value"),
    (["optimize", "{mlp}", "-o", "{out}", "--precision", "auto", "--stages", "2"], "--precision auto chooses among the CPU's precisions"),
    (["optimize", "{mlp}", "-o", "{out}", "--precision", "int8", "--calibration", "{out}.pt"], "no such file"),
    (["bench", "{mlp}", "--against", "tvm"], "unknown system 'tvm' in --against"),
    (["bench", "{mlp}", "--against", "eager", "--device", "tpu"], "unknown device 'tpu'"),
    (["run", "{art}", "--device", "tpu"], "unknown device 'tpu'"),
]

MLP = """
import torch
from torch import nn

def get_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()

def get_inputs():
    return (torch.randn(2, 16),)
"""

# Two independent conv chains joined by a cat: structure for --branches.
BRANCHY = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.b = nn.Sequential(nn.Conv2d(8, 8, 5, padding=2), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        y = torch.cat([self.a(y), self.b(y)], dim=1)
        return self.head(y.mean(dim=(2, 3)))

def get_model():
    torch.manual_seed(0)
    return Net().eval()

def get_inputs():
    return (torch.randn(2, 3, 16, 16),)
"""

NOTHING = "import torch\nwidth = 3\n"  # defines neither get_model() nor `model`: exit 4 at load

FAST = ("--backend", "torch", "--no-bench")


# ---------------------------------------------------------------- helpers and shared builds


@dataclass
class Result:
    code: int
    out: str
    err: str
    folder: Path | None = None

    @property
    def report(self) -> dict:
        return json.loads((self.folder / "report.json").read_text())

    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if "error:" in line]


def invoke(*args) -> Result:
    """``accelc ARGS`` in this process: exit code (argparse's SystemExit too), stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse: --help, --version, and values it refuses
            code = exc.code
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, source in (("mlp", MLP), ("cnn", TINY_CNN), ("branchy", BRANCHY), ("nothing", NOTHING)):
        paths[name] = folder / f"{name}.py"
        paths[name].write_text(textwrap.dedent(source))
    return paths


@pytest.fixture(scope="module")
def built(models, tmp_path_factory):
    """``built(model, *flags)``: ``accelc optimize MODEL -o FOLDER FLAGS``, run once per module
    for each distinct command and shared by the tests that look at it."""
    cache: dict[tuple, Result] = {}

    def build(model: str, *flags: str) -> Result:
        key = (model, *flags)
        if key not in cache:
            folder = tmp_path_factory.mktemp(model) / "out"
            result = invoke("optimize", models[model], "-o", folder, *flags)
            assert result.code == 0, result.err
            result.folder = folder
            cache[key] = result
        return cache[key]

    return build


def _names(records) -> list[str]:
    return [r["name"] for r in records]


def parser_flags() -> set[tuple[str, str]]:
    parser = build_parser()
    flags = {("accelc", s) for action in parser._actions for s in action.option_strings}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                flags |= {(command, s) for a in sub._actions for s in a.option_strings}
    return flags


# ---------------------------------------------------------------- the guard


def test_every_flag_has_a_test():
    flags = parser_flags()
    untested = sorted(flags - set(COVERAGE) - PENDING)
    assert not untested, (
        "flags without a test in tests/test_cli_flags.py: "
        + ", ".join(f"`accelc {c} {f}`" if c != "accelc" else f"`accelc {f}`" for c, f in untested)
        + "; write a test of what each does and add it to COVERAGE (or to PENDING while that test is written)")
    gone = sorted(set(COVERAGE) - flags)
    assert not gone, f"COVERAGE names flags the parser no longer has: {gone}; remove them (and their tests)"
    assert not (PENDING & set(COVERAGE)), f"in both PENDING and COVERAGE: {sorted(PENDING & set(COVERAGE))}"
    for key, test in COVERAGE.items():
        if "::" in test:  # a test in another file of tests/
            path, name = test.split("::")
            assert f"def {name}(" in (TEST_CLI.parent / Path(path).name).read_text(), f"{key}: {test} does not exist"
        else:
            assert callable(globals().get(test)) and test.startswith("test_"), f"{key}: {test} is not a test here"


# ---------------------------------------------------------------- every subcommand


@pytest.mark.parametrize("command", ["accelc", "optimize", "run", "passes", "explain", "bench"])
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_lists_every_flag(command, flag):
    result = invoke(*([] if command == "accelc" else [command]), flag)
    assert result.code == 0 and not result.err
    assert result.out.startswith("usage: accelc" + ("" if command == "accelc" else f" {command}"))
    for c, option in parser_flags():
        if c == command:
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", result.out), \
                f"`accelc {command} {flag}` does not mention {option}"


def test_version():
    result = invoke("--version")
    assert result.code == 0 and result.out.strip() == f"accelc {accelc.__version__}"


FAILURES = {  # a cheap failure of each subcommand: (arguments, exit code)
    "optimize": (["optimize", "{nothing}", "-o", "{tmp}/out"], 4),
    "explain": (["explain", "{nothing}"], 4),
    "bench": (["bench", "{nothing}", "--against", "eager"], 4),
    "run": (["run", "{tmp}/missing"], 2),
    "passes": (["passes"], 3),  # the registry raises (monkeypatched below): an internal error
}


@pytest.mark.parametrize("verbose", [None, "--verbose before", "--verbose after", "-v before", "-v after"])
@pytest.mark.parametrize("command", list(FAILURES))
def test_verbose_shows_the_traceback_only_when_given(command, verbose, models, tmp_path, monkeypatch):
    import accelc.registry

    def broken(cls, *args, **kwargs):
        raise RuntimeError("registry exploded")

    if command == "passes":
        monkeypatch.setattr(accelc.registry.Registry, "discover", classmethod(broken))
    template, code = FAILURES[command]
    args = [a.format(nothing=models["nothing"], tmp=tmp_path) for a in template]
    if verbose:
        flag, where = verbose.split()
        args = [flag, *args] if where == "before" else [*args, flag]
    result = invoke(*args)
    assert result.code == code, result.err
    errors = [line for line in result.err.splitlines() if line.startswith(("accelc: error:", "accelc: internal error:"))]
    assert len(errors) == 1, result.err
    assert ("Traceback (most recent call last)" in result.err) == bool(verbose), result.err


@pytest.mark.parametrize("template, message", BAD_VALUES,
                         ids=[" ".join(a for a in args if "{" not in a and a != "-o") for args, _ in BAD_VALUES])
def test_bad_values_are_one_line_and_exit_2(template, message, models, built, tmp_path):
    art = built("mlp", *FAST).folder if "{art}" in template else None
    out = tmp_path / "out"
    result = invoke(*[a.format(mlp=models["mlp"], out=out, art=art) for a in template])
    assert result.code == 2, (result.code, result.err)
    assert "Traceback" not in result.err
    errors = result.error_lines()
    assert len(errors) == 1 and message in errors[0], result.err
    assert errors[0].startswith("accelc: error: ") and "usage:" not in result.err, result.err  # no usage block
    assert not out.exists()


# ---------------------------------------------------------------- optimize


def test_optimize_output(models, built, tmp_path):
    out = tmp_path / "nested" / "artifact"
    result = invoke("optimize", models["mlp"], "--output", out, *FAST)
    assert result.code == 0, result.err
    assert {"model.pt2", "report.json", "report.html", "fingerprint.json", "accelc.log"} <= {p.name for p in out.iterdir()}
    assert "artifact: " in result.out and str(Path("nested") / "artifact") in result.out
    short = built("mlp", *FAST)  # the shared builds use -o
    assert (short.folder / "model.pt2").is_file() and short.report["model"] == "mlp.py"


def test_optimize_force(models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    refused = invoke("optimize", models["mlp"], "-o", out, *FAST)
    assert refused.code == 2 and "already exists and is not empty" in refused.err and "--force" in refused.err
    assert [p.name for p in out.iterdir()] == ["old.txt"] and (out / "old.txt").read_text() == "keep me"
    replaced = invoke("optimize", models["mlp"], "-o", out, "--force", *FAST)
    assert replaced.code == 0, replaced.err
    assert not (out / "old.txt").exists() and (out / "model.pt2").is_file() and (out / "report.json").is_file()


def test_optimize_no_bench(models, built, tmp_path, monkeypatch):
    import accelc.api

    seen = []
    real = accelc.api.measure_latency

    def quick(model, fast, inputs, device, *args, **kwargs):  # the same measurement, on a 0.2 s budget
        seen.append(device)
        return real(model, fast, inputs, device, seconds=0.2)

    monkeypatch.setattr(accelc.api, "measure_latency", quick)
    timed = invoke("optimize", models["mlp"], "-o", tmp_path / "out", "--backend", "torch")
    assert timed.code == 0, timed.err
    latency = json.loads((tmp_path / "out" / "report.json").read_text())["latency"]
    assert latency["eager"]["median_ms"] > 0 and latency["accelc"]["median_ms"] > 0 and seen
    assert "latency" in timed.out
    untimed = built("mlp", *FAST)
    assert untimed.report.get("latency") is None
    assert not any(line.startswith("latency") for line in untimed.out.splitlines())


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino", "auto"])
def test_optimize_backend(backend, built):
    if backend == "openvino":
        pytest.importorskip("openvino")
    result = built("mlp", "--backend", backend, "--no-bench")
    report, files = result.report, {p.name for p in result.folder.iterdir()}
    if backend == "auto":  # every runtime built and timed (OpenVINO where installed), the fastest kept
        choice = report["backend_choice"]
        assert {"torch", "onnxruntime"} <= set(choice) and report["backend"] == choice["chosen"]
        assert ("openvino" in choice) == (importlib.util.find_spec("openvino") is not None)
    else:
        assert report["backend"] == backend and "backend_choice" not in report
    assert ("model.onnx" in files) == (report["backend"] == "onnxruntime")
    assert ({"model.xml", "model.bin", "openvino_runtime.json"} <= files) == (report["backend"] == "openvino")


def test_optimize_static(built):
    inferred = built("mlp", *FAST).report["dynamic"]
    assert inferred["dynamic"] == {"batch": [1, None]} and inferred["inputs"][0]["shape"] == ["batch", 16]
    static = built("mlp", "--static", *FAST).report["dynamic"]
    assert static["dynamic"] == {} and static["inputs"][0]["shape"] == [2, 16]
    assert static["requested"] == {"static": True} and static["verified_at"] == []


@pytest.mark.parametrize("spec, ranges, shape", [
    ("batch=1..8", {"batch": [1, 8]}, ["batch", 16]),
    ("batch=static", {}, [2, 16]),
])
def test_optimize_dynamic(spec, ranges, shape, built):
    dynamic = built("mlp", "--dynamic", spec, *FAST).report["dynamic"]
    assert dynamic["dynamic"] == ranges and dynamic["inputs"][0]["shape"] == shape
    if ranges:  # verified at both ends of the range
        assert dynamic["requested"] == ranges and {1, 8} <= {p["batch"] for p in dynamic["verified_at"]}


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_optimize_device(device, built):
    result = built("mlp", "--device", device, *FAST)
    assert result.report["device"].startswith(device)
    assert json.loads((result.folder / "fingerprint.json").read_text())["device"].startswith(device)


@pytest.mark.parametrize("precision, flags", [
    ("fp32", FAST),
    ("fp16", FAST),
    ("bf16", FAST),
    ("int8", ("--no-bench",)),  # auto: int8 is ONNX Runtime's, so that is what runs
], ids=["fp32", "fp16", "bf16", "int8"])
def test_optimize_precision(precision, flags, built):
    args = flags if precision == "fp32" else ("--precision", precision, *flags)
    report = built("mlp", *args).report
    assert report["precision"] == precision
    lowered = next(r for r in report["passes"] if r["name"] == "lower_precision")
    assert (lowered["status"] == "fired") == (precision in ("fp16", "bf16"))
    if precision == "int8":
        assert report["backend"] == "onnxruntime"
        quantised = next(r for r in report["onnx"]["onnx_passes"] if r["name"] == "quantize_int8")
        assert quantised["status"] == "fired" and quantised["stats"]["quantised"] == 2
        assert report["onnx"]["verification"]["ok"]


def test_optimize_calibration(models, built, tmp_path):
    """--calibration FILE (a torch.save'd list of input sets): the int8 convolutions take their
    activation ranges from it; a file that is not one, or without int8, is a one-line error."""
    import torch

    sets = tmp_path / "calibration.pt"
    torch.save([(torch.randn(2, 3, 8, 8),) for _ in range(3)], sets)
    report = built("cnn", "--no-bench", "--backend", "onnxruntime", "--precision", "int8", "--calibration", sets).report
    passes = {r["name"]: r for r in report["onnx"]["onnx_passes"]}
    assert passes["quantize_conv_int8"]["status"] == "fired", passes["quantize_conv_int8"]
    assert passes["quantize_conv_int8"]["stats"]["calibration_sets"] == 4 and report["onnx"]["verification"]["ok"]
    uncalibrated = built("cnn", "--no-bench", "--backend", "onnxruntime", "--precision", "int8").report
    assert {r["name"]: r for r in uncalibrated["onnx"]["onnx_passes"]}["quantize_conv_int8"]["status"] == "no change"
    assert any("--calibration" in r["reason"] for r in uncalibrated["refusals"] if r["pass_name"] == "quantize_conv_int8")
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a tensor file")
    for flags, message in ((("--precision", "int8", "--calibration", garbage), "is not a torch.save'd list"),
                           (("--calibration", sets), "use them with --precision int8 or auto")):
        result = invoke("optimize", models["cnn"], "-o", tmp_path / "out", *flags)
        assert result.code == 2 and "Traceback" not in result.err, result.err
        assert len(result.error_lines()) == 1 and message in result.error_lines()[0], result.err
        assert not (tmp_path / "out").exists()


def test_optimize_precision_auto_and_tolerance(built):
    """--precision auto tries every precision this CPU and backend have; --tolerance is the bar a
    lower one must meet. At 1e-9 none can, so fp32 is kept and each says why."""
    strict = built("mlp", "--no-bench", "--precision", "auto", "--tolerance", "1e-9")
    candidates = strict.report["precision_candidates"]
    assert strict.report["precision"] == "fp32" and strict.report["precision_tolerance"] == 1e-9
    assert [c["precision"] for c in candidates if c["chosen"]] == ["fp32"]
    lower = [c for c in candidates if c["precision"] != "fp32"]
    assert any(c["precision"] == "int8" for c in lower)  # ONNX Runtime's int8 is on every CPU
    assert all(not c["chosen"] and c["reason"] for c in lower)
    # bf16 (on CPUs that have it) is measured and found above the tolerance; int8's quantisation
    # itself refuses to fire above it (its error budget is the tolerance), on every CPU.
    assert any("above the tolerance" in c["reason"] or "above the budget 1e-09" in c["reason"] for c in lower)
    assert any(line.startswith("precision kept") and "fp32" in line for line in strict.out.splitlines())
    loose = built("mlp", "--no-bench", "--precision", "auto", "--tolerance", "0.2").report
    kept = next(c for c in loose["precision_candidates"] if c["chosen"])
    assert loose["precision"] == kept["precision"] and kept["max_rel_error"] <= 0.2
    assert all(c["median_ms"] is None or kept["median_ms"] <= c["median_ms"] for c in loose["precision_candidates"])


def test_optimize_passes(built):
    """A name replaces the default list of its stage (``onnx:`` picks the stage); other stages keep theirs."""
    default = built("mlp", *FAST).report["pipeline"]["stages"]
    report = built("mlp", "--backend", "onnxruntime", "--no-bench", "--passes", "onnx:fold_bias_add,eliminate_dead_code").report
    assert report["pipeline"]["stages"] == {"graph": ["eliminate_dead_code"], "lowering": default["lowering"],
                                            "onnx": ["fold_bias_add"]}
    assert _names(report["passes"]) == ["eliminate_dead_code"]
    assert _names(report["onnx"]["onnx_passes"]) == ["fold_bias_add"]


def test_optimize_disable(built):
    """``onnx:fuse_attention`` leaves the onnx stage's fuse_attention out and keeps the graph
    stage's; a plain name leaves it out of every stage that has it."""
    default = built("mlp", *FAST).report["pipeline"]["stages"]
    report = built("mlp", "--backend", "onnxruntime", "--no-bench", "--disable", "onnx:fuse_attention,eliminate_dead_code").report
    graph, onnx = _names(report["passes"]), _names(report["onnx"]["onnx_passes"])
    assert "fuse_attention" in graph and "eliminate_dead_code" not in graph
    assert graph == [n for n in default["graph"] if n != "eliminate_dead_code"]
    assert onnx == [n for n in default["onnx"] if n != "fuse_attention"]


def test_optimize_no_verify(built):
    """The fired graph passes are checked (once, together) and the last one kept records the
    stage's error; with --no-verify none is (the final check against eager still runs)."""
    checked = built("cnn", *FAST).report
    unchecked = built("cnn", "--no-verify", *FAST).report
    for report in (checked, unchecked):  # the same passes fire either way
        assert {"remove_noops", "fold_conv_bn"} <= {r["name"] for r in report["passes"] if r["status"] == "fired"}
    fired = [r for r in checked["passes"] if r["status"] == "fired"]
    assert isinstance(fired[-1]["max_abs_error"], float)
    assert all(r["max_abs_error"] is None for r in unchecked["passes"])
    assert unchecked["verification"]["ok"] and unchecked["verification"]["inputs_checked"] > 0


def test_optimize_stages(built):
    result = built("mlp", "--stages", "2", "--no-bench")
    report = result.report
    assert report["partition"]["stages"] == 2 and report["partition"]["microbatches"] == 1
    assert report["backend"] == "torch" and not report.get("backend_fallback")
    assert (result.folder / "plan.json").is_file()
    assert len(json.loads((result.folder / "plan.json").read_text())["stages"]) == 2


def test_optimize_devices(built):
    report = built("mlp", "--devices", "cpu,cpu", "--profile", "--no-bench").report
    assert report["partition"]["devices"] == ["cpu", "cpu"] and report["partition"]["stages"] == 2
    assert not report.get("backend_fallback")


def test_optimize_profile(built):
    assert built("mlp", "--stages", "2", "--no-bench").report["partition"]["profiled"] is False
    assert built("mlp", "--devices", "cpu,cpu", "--profile", "--no-bench").report["partition"]["profiled"] is True


def test_optimize_microbatches(models, tmp_path):
    out = tmp_path / "out"
    result = invoke("optimize", models["mlp"], "-o", out, "--stages", "2", "--microbatches", "2", "--no-bench")
    assert result.code == 0, result.err
    report = json.loads((out / "report.json").read_text())
    assert report["partition"]["microbatches"] == 2 and not report.get("backend_fallback")


def test_optimize_branches(built):
    result = built("branchy", "--branches", "2", "--no-bench")
    report = result.report
    assert report["backend"] == "torch" and not report.get("backend_fallback")
    assert report["branches"]["workers"] == 2 and report["branches"]["heavy_groups"] >= 2
    assert "partition" not in report


# ---------------------------------------------------------------- run


@pytest.mark.parametrize("flags, device, seconds", [
    (["--device", "cpu", "--seconds", "0.2"], "cpu", 0.2),
    ([], "cpu", 2.0),  # the defaults: the recorded device, 2 s
    pytest.param(["--device", "cuda", "--seconds", "0.2"], "cuda", 0.2, marks=pytest.mark.gpu),
])
def test_run_device_and_seconds(flags, device, seconds, built, monkeypatch):
    import accelc.timing

    seen = {}
    real = accelc.timing.compare_latency

    def spy(models, inputs, seconds, device=None, **kwargs):
        seen.update(seconds=seconds, device=str(device))
        return real(models, inputs, seconds=min(seconds, 0.2), device=device, **kwargs)

    monkeypatch.setattr(accelc.timing, "compare_latency", spy)
    artifact = built("mlp", *FAST).folder
    result = invoke("run", artifact, *flags)
    assert result.code == 0, result.err
    assert f"on {device}" in result.out and "outputs [(2, 4)]" in result.out
    assert "latency: median" in result.out and " ms over " in result.out
    assert seen["seconds"] == seconds and seen["device"].startswith(device)


# ---------------------------------------------------------------- explain


def _explain(models, *flags, model="mlp") -> list[str]:
    result = invoke("explain", models[model], *flags)
    assert result.code == 0, result.err
    return result.out.splitlines()


@pytest.mark.parametrize("backend, onnx_listed, auto_line", [
    ("torch", False, False), ("onnxruntime", True, False), ("openvino", False, False), ("auto", True, True),
])
def test_explain_backend(backend, onnx_listed, auto_line, models):
    lines = _explain(models, "--backend", backend)
    assert any(line.startswith("onnx stage (not run):") for line in lines) == onnx_listed
    assert any(line.startswith("backend: auto would build") for line in lines) == auto_line
    assert "lowering stage:" in lines
    # A named ONNX Runtime or OpenVINO builds the PyTorch runtime, and so its lowering stage, only as a fallback.
    assert any("the lowering stage runs only if" in line for line in lines) == (backend in ("onnxruntime", "openvino"))


@pytest.mark.parametrize("flags, shapes", [
    ((), "shapes: input_1 (batch, 16); dynamic batch 1.."),
    (("--static",), "shapes: input_1 (2, 16); static"),
    (("--dynamic", "batch=1..8"), "shapes: input_1 (batch, 16); dynamic batch 1..8"),
])
def test_explain_shapes(flags, shapes, models):
    assert shapes in _explain(models, "--backend", "torch", *flags)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_explain_device(device, models):
    lines = _explain(models, "--backend", "torch", "--device", device)
    lowering = lines[lines.index("lowering stage:") + 1:]
    assert any(line.strip().startswith("pack_linear_weights:") for line in lowering) == (device == "cpu")  # a CPU lowering


@pytest.mark.parametrize("precision, status", [("fp32", "no change"), ("bf16", "fired")])
def test_explain_precision(precision, status, models):
    lines = _explain(models, "--backend", "torch", "--precision", precision)
    assert any(line.strip().startswith(f"lower_precision: {status}") for line in lines)


def test_explain_passes(models):
    lines = _explain(models, "--backend", "torch", "--passes", "fuse_linear_activation")  # not in the default list
    graph = lines[lines.index("graph stage:") + 1:lines.index("lowering stage:")]
    assert [line.strip() for line in graph] == ["fuse_linear_activation: fired (fused 1)"]
    assert any(line.strip().startswith("bind_direct_calls:") for line in lines)  # the lowering stage keeps its list


def test_explain_disable(models):
    lines = _explain(models, "--disable", "fuse_attention")  # a plain name: out of the graph and the onnx stage
    onnx = next(line for line in lines if line.startswith("onnx stage (not run):"))
    assert "fuse_attention" not in onnx and "fold_bias_add" in onnx
    assert not any("fuse_attention" in line for line in lines)
    assert any(line.strip().startswith("eliminate_dead_code:") for line in lines)


@pytest.mark.parametrize("flags", [["--no-verify"], ["--stages", "2"], ["--devices", "cpu,cpu"],
                                   ["--microbatches", "2"], ["--profile"], ["--branches", "2"]])
def test_explain_refuses_the_build_only_flags(flags, models):
    """A dry run builds nothing, so the flags that shape a build are not explain's: refused in one line."""
    result = invoke("explain", models["mlp"], *flags)
    assert result.code == 2 and f"unrecognized arguments: {flags[0]}" in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err


# ---------------------------------------------------------------- bench


def test_bench_example_sizes_reach_the_loader(models, monkeypatch):
    """--batch/--seq size a Hugging Face folder's inputs (tests/test_hf_folder.py); the bench hands
    them to the same loader, which refuses them for a model.py."""
    result = invoke("bench", models["mlp"], "--batch", "4", "--seq", "8", "--against", "eager")
    assert result.code == 2 and "only a Hugging Face model folder takes --batch and --seq" in result.err, result.err


def test_bench_json(models, tmp_path):
    target = tmp_path / "bench.json"
    result = invoke("bench", models["mlp"], "--against", "eager,accelc", "--json", target, "--seconds", "0.2",
                    "--device", "cpu", "--precision", "fp32")
    assert result.code == 0, result.err
    data = json.loads(target.read_text())
    assert [s["name"] for s in data["systems"]] == ["eager", "accelc-torch", "accelc-onnxruntime", "accelc-openvino"]
    with_openvino = importlib.util.find_spec("openvino") is not None
    assert all(s["status"] == "ok" and s["median_ms"] > 0 for s in data["systems"] if with_openvino
               or s["name"] != "accelc-openvino"), data["systems"]
    assert data["device"] == "cpu" and data["precision"] == "fp32" and data["seconds"] == 0.2
    assert any("timing budget 0.2 s" in note for note in data["notes"])
    assert f"wrote {target}" in result.out
    for name in ("eager", "accelc-torch", "accelc-onnxruntime"):
        assert name in result.out  # the table


@pytest.mark.parametrize("flags, planned, precision", [
    ([], ["eager", "compile", "accelc-torch"], "fp32"),
    (["--max-autotune", "--precision", "bf16"], ["eager", "compile", "compile-max-autotune", "accelc-torch"], "bf16"),
], ids=["defaults", "max-autotune bf16"])
def test_bench_planned_systems(flags, planned, precision, models, tmp_path, monkeypatch):
    """Which systems the bench builds, and at what precision. torch.compile (max-autotune above
    all) takes minutes on a CPU, so its builder and accelc's are replaced by the eager model: the
    seam is accelc.bench.systems, where run_bench looks each builder up."""
    from accelc.bench import Built
    from accelc.bench import memory as bench_memory
    from accelc.bench import systems

    calls = []

    def fake_compile(ctx, mode=None):
        calls.append(("compile", mode, ctx.precision))
        return Built(ctx.eager_model, ctx.inputs, note=f"mode={mode}" if mode else "")

    def fake_accelc(ctx, backend, dynamic=None):
        calls.append((f"accelc-{backend}", None, ctx.precision))
        return Built(ctx.eager_model, ctx.inputs)

    monkeypatch.setattr(systems, "_build_compile", fake_compile)
    monkeypatch.setattr(systems, "_build_accelc", fake_accelc)
    # Memory is not what this test reads: skip the full garbage collection before each reading
    # (seconds per system in a test process that holds every earlier test's objects).
    monkeypatch.setattr(bench_memory, "_release_freed_memory", lambda: None)
    target = tmp_path / "bench.json"
    result = invoke("bench", models["mlp"], "--against", "compile,accelc-torch", "--seconds", "0.2", "--json", target,
                    *flags)
    assert result.code == 0, result.err
    data = json.loads(target.read_text())
    assert [s["name"] for s in data["systems"]] == planned and data["precision"] == precision
    assert all(s["status"] == "ok" for s in data["systems"]), data["systems"]
    modes = [mode for kind, mode, _ in calls if kind == "compile"]
    assert modes == ([None, "max-autotune"] if "--max-autotune" in flags else [None])
    assert {p for _, _, p in calls} == {precision}


def test_main_returns_the_exit_code_of_a_usage_error(capsys):
    """main() returns 2 for values argparse refuses, like accelc's own refusals (no SystemExit)."""
    assert main(["optimize", "m.py", "-o", "out", "--backend", "nope"]) == 2
    assert main(["--version"]) == 0
    assert capsys.readouterr().err.startswith("accelc: error: argument --backend")
