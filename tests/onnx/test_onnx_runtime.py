"""End to end: every small sample through build_onnx_runtime matches eager; model.onnx reloads in
plain onnxruntime (no accelc) with eager's answers; the runtime reloads from its folder, and the
temporary folder of a build goes with the runtime."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from accelc.onnx.session import provider_plan
from accelc.runtime.onnxruntime import load_onnx_runtime
from accelc.verify import compare_outputs, flat_outputs

from onnx_samples import build, captured, captured_dynamic

SAMPLES = ["mlp", "cnn", "resnet50", "bert", "gpt2", "vit"]

PLAIN_ORT = """
import json, sys, numpy as np, onnxruntime as ort
folder = sys.argv[1]
s = ort.InferenceSession(folder + "/model.onnx", providers=["CPUExecutionProvider"])
feeds = {i.name: np.load(folder + "/in_" + i.name + ".npy") for i in s.get_inputs()}
for k, out in enumerate(s.run(None, feeds)):
    np.save(folder + f"/out_{k}.npy", out)
print("accelc" in sys.modules)
"""


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_through_onnx_runtime_matches_eager(name, tmp_path):
    model, inputs, gm = captured(name)
    runtime, report = build(gm, inputs, "cpu")
    with torch.inference_mode():
        expected = model(*inputs)
    got = runtime(*inputs)
    assert compare_outputs(got, expected).ok, compare_outputs(got, expected).message
    assert type(got) is type(expected) or isinstance(expected, torch.Tensor)
    assert report["providers"]["used"] == "CPUExecutionProvider"
    assert report["export"]["exporter"] in ("dynamo", "torchscript")
    json.dumps(report)  # the report section is plain data

    # The artifact's model.onnx in plain onnxruntime, in a process that never imports accelc.
    folder = tmp_path / "artifact"
    runtime.save(str(folder))
    arg_names = runtime.meta["arg_names"]
    for arg, x in zip(arg_names, inputs):
        np.save(folder / f"in_{arg}.npy", x.numpy())
    run = subprocess.run([sys.executable, "-c", PLAIN_ORT, str(folder)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().endswith("False")
    assert "Removing initializer" not in run.stderr  # no unused initializers for plain ORT to warn about
    plain = [torch.from_numpy(np.load(folder / f"out_{k}.npy")) for k in range(len(flat_outputs(expected)))]
    assert compare_outputs(plain, flat_outputs(expected)).ok

    reloaded = load_onnx_runtime(str(folder), "cpu")
    assert compare_outputs(reloaded(*inputs), expected).ok


def test_transformer_exports_fuse_every_attention_block():
    for name in ("bert", "gpt2", "vit"):
        _, inputs, gm = captured(name)
        _, report = build(gm, inputs, "cpu")
        attention = next(r for r in report["onnx_passes"] if r["name"] == "fuse_attention")
        assert attention["status"] == "fired", (name, attention)
        assert attention["stats"]["fused"] == attention["stats"]["attention_present"] == 2, (name, attention)


def test_cpu_pipeline_keeps_gemms_whole_and_layer_norm_unfused():
    """On the CPU provider: MultiHeadAttention with separate Q/K/V GEMMs, biases inside Gemm, no
    SkipLayerNormalization/BiasGelu (slower kernels there), and ORT told not to fuse them back."""
    import onnx

    from onnx_samples import op_counts

    model, inputs, gm = captured("bert")
    runtime, report = build(gm, inputs, "cpu")
    ops = op_counts(onnx.load(runtime.model_file()))
    # each MultiHeadAttention sits in drop_padded_keys' If: unmasked on the kept keys, or as it was
    assert ops.get("If") == 2 and "MultiHeadAttention" not in ops and "Attention" not in ops
    assert not {"SkipLayerNormalization", "BiasGelu"} & set(ops)
    assert ops.get("Gemm", 0) >= 6 and ops.get("MatMul", 0) == 6  # Q, K, V per layer stay MatMuls
    assert report["providers"]["disabled_fusions"] == ["SkipLayerNormFusion", "BiasGeluFusion"]
    assert runtime.meta["disabled_fusions"] == report["providers"]["disabled_fusions"]
    with torch.inference_mode():
        assert compare_outputs(runtime(*inputs), model(*inputs)).ok


def test_torchscript_exporter_is_the_fallback(monkeypatch):
    """When the dynamo exporter fails, the TorchScript exporter exports the graph module and the
    report keeps the dynamo failure."""
    import accelc.onnx.export as export_module

    def refuse(*args, **kwargs):
        raise RuntimeError("dynamo exporter refused this graph")

    monkeypatch.setattr(export_module, "_dynamo_export", refuse)
    model, inputs, gm = captured("gpt2")
    runtime, report = build(gm, inputs, "cpu")
    assert report["export"]["exporter"] == "torchscript"
    assert any("dynamo exporter refused" in a for a in report["export"]["attempts"])
    with torch.inference_mode():
        assert compare_outputs(runtime(*inputs), model(*inputs)).ok


def test_dynamic_batch_where_the_model_allows():
    model, inputs, spec, gm = captured_dynamic("mlp")
    runtime, report = build(gm, inputs, "cpu", dynamic_shapes=spec)
    assert report["export"]["dynamic_axes"] == {"x": {"0": "batch"}}
    assert runtime.meta["dynamic_axes"] == {"x": {"0": "batch"}} and "static" not in runtime.meta
    batch = torch.cat([inputs[0]] * 3)
    with torch.inference_mode():
        expected = model(batch)
    torch.testing.assert_close(runtime(batch), expected, rtol=1e-4, atol=1e-5)


def test_static_without_dynamic_shapes():
    _, inputs, gm = captured("mlp")
    runtime, report = build(gm, inputs, "cpu")
    assert report["export"]["dynamic_axes"] == {} and runtime.meta["dynamic_axes"] == {}


def test_a_built_runtime_owns_its_temporary_folder(tmp_path, monkeypatch):
    """The build's folder (export, candidates, model.onnx) goes with close(), or with the runtime
    when it is garbage-collected; save() first copies model.onnx out, and a runtime loaded from
    an artifact owns none of it."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where mkdtemp puts the build's folder
    os.makedirs(tmp_path / "tmp")
    _, inputs, gm = captured("mlp")
    runtime, _ = build(gm, inputs, "cpu", passes=[])
    folder = os.path.dirname(runtime.model_path)
    assert os.path.dirname(folder) == str(tmp_path / "tmp") and os.path.basename(folder).startswith("accelc-onnx-")
    runtime.save(str(tmp_path / "artifact"))
    runtime.close()
    assert not os.path.exists(folder)
    runtime.close()  # a second close has nothing left to do

    loaded = load_onnx_runtime(str(tmp_path / "artifact"))
    loaded.close()
    del loaded
    gc.collect()
    assert os.path.isfile(tmp_path / "artifact" / "model.onnx")

    runtime, _ = build(gm, inputs, "cpu", passes=[])
    folder = os.path.dirname(runtime.model_path)
    del runtime
    gc.collect()
    assert not os.path.exists(folder) and os.listdir(tmp_path / "tmp") == []


def test_a_failed_build_leaves_no_folder(tmp_path, monkeypatch):
    import tempfile

    import accelc.onnx.build as build_module

    def refuse(*args, **kwargs):
        raise RuntimeError("no export today")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(build_module, "export_graph", refuse)
    _, inputs, gm = captured("mlp")
    with pytest.raises(RuntimeError, match="no export today"):
        build(gm, inputs, "cpu", passes=[])
    assert os.listdir(tmp_path) == []


def test_provider_plan_on_cpu_is_cpu_only(tmp_path):
    assert [name for name, _ in provider_plan(torch.device("cpu"), str(tmp_path))] == ["CPUExecutionProvider"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dynamic", [True, False])
def test_cuda_io_binding_and_cuda_graph(dynamic):
    """Static: IO binding into preallocated buffers, replayed by a CUDA graph. Dynamic (batch and
    seq): no CUDA graph, ORT allocates each output at the call's size."""
    from onnx_samples import inputs_at

    if dynamic:
        model, inputs, spec, gm = captured_dynamic("bert")
    else:
        (model, inputs, gm), spec = captured("bert"), None
    probes = [inputs_at("bert", (3, 7)), inputs_at("bert", (2, 33))] if dynamic else None
    runtime, report = build(gm, inputs, "cuda", dynamic_shapes=spec, probe_inputs=probes)
    assert report["providers"]["used"] in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    assert runtime.io_binding
    model = model.cuda()
    for feed in [inputs] + (probes or []):
        cuda_inputs = tuple(x.cuda() for x in feed)
        with torch.inference_mode():
            expected = model(*cuda_inputs)
        for _ in range(3):  # replays reuse the captured CUDA graph's buffers
            got = runtime(*cuda_inputs)
            assert all(t.is_cuda for t in flat_outputs(got))
            assert compare_outputs(got, expected).ok
    if dynamic:
        assert not runtime.cuda_graph


def test_int8_through_accelerate_and_plain_ort(tmp_path):
    """--precision int8: the fx passes run at fp32, the ONNX model is quantised, the result is
    checked against eager with the int8 tolerance, and the artifact reloads in plain ORT."""
    import accelc
    from accelc.errors import UserInputError
    from accelc.verify import tolerance_for_precision

    model, inputs, _ = captured("bert")
    fast = accelc.accelerate(model, inputs, backend="auto", precision="int8")
    report = fast.report
    assert report["backend"] == "onnxruntime", report.get("backend_fallback")
    assert "backend_choice" not in report  # no fp32 PyTorch runtime to race against
    assert all(p.get("status") != "rolled back" for p in report["passes"])
    quantised = next(p for p in report["onnx"]["onnx_passes"] if p["name"] == "quantize_int8")
    assert quantised["status"] == "fired" and quantised["stats"]["quantised"] >= 12, quantised
    with torch.inference_mode():
        expected = model(*inputs)
    int8 = tolerance_for_precision("int8")
    check = compare_outputs(fast(*inputs), expected, int8)
    assert check.ok, check.message
    assert check.max_abs_error > 1e-5  # really quantised: int8 is not bit-exact

    folder = tmp_path / "artifact"
    fast.save(str(folder))
    for arg, x in zip(fast.runner.meta["arg_names"], inputs):
        np.save(folder / f"in_{arg}.npy", x.numpy())
    run = subprocess.run([sys.executable, "-c", PLAIN_ORT, str(folder)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    plain = [torch.from_numpy(np.load(folder / f"out_{k}.npy")) for k in range(len(flat_outputs(expected)))]
    assert compare_outputs(plain, flat_outputs(expected), int8).ok

    with pytest.raises(UserInputError, match="int8"):
        accelc.accelerate(model, inputs, backend="torch", precision="int8")


def _small_cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()


def test_cpu_session_is_pinned_to_the_example_sizes_and_other_sizes_get_the_dynamic_one(tmp_path):
    """The example's sizes run on a session with every dynamic size pinned (as fast as a static
    model); another size opens the dynamic session once; both answer like eager. The artifact
    keeps the dynamic model.onnx and pins the same sizes when it is loaded."""
    import accelc

    model, x = _small_cnn(), torch.randn(2, 3, 32, 32)
    fast = accelc.accelerate(model, (x,), backend="onnxruntime", measure=False)
    runtime = fast.runner
    assert runtime.pinned_dims == {"batch": 2, "height": 32, "width": 32}
    assert fast.report["onnx"]["providers"]["pinned_dims"] == runtime.pinned_dims
    assert runtime._dynamic_run is None  # released after the build's checks at other sizes
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), model(x))
        assert runtime._dynamic_run is None
        for shape in [(1, 3, 32, 32), (3, 3, 40, 24), (2, 3, 32, 33)]:
            other = torch.randn(shape)
            torch.testing.assert_close(fast(other), model(other), rtol=1e-4, atol=1e-5)
        assert runtime._dynamic_run is not None
        torch.testing.assert_close(fast(x), model(x))

    fast.save(str(tmp_path / "art"))
    loaded = accelc.load(str(tmp_path / "art"))
    assert loaded.runner.pinned_dims == runtime.pinned_dims
    import onnx

    dims = [d.dim_param or d.dim_value for d in onnx.load(str(tmp_path / "art" / "model.onnx")).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]  # plain ONNX Runtime still takes any size


def test_pinned_and_dynamic_sessions_serve_threads_at_mixed_sizes():
    import threading

    import accelc

    model = _small_cnn()
    fast = accelc.accelerate(model, (torch.randn(2, 3, 32, 32),), backend="onnxruntime", measure=False)
    shapes = [(2, 3, 32, 32), (1, 3, 32, 32), (4, 3, 28, 36)]
    errors = []

    def work(seed):
        generator = torch.Generator().manual_seed(seed)
        try:
            for k in range(12):
                x = torch.randn(shapes[(seed + k) % len(shapes)], generator=generator)
                with torch.inference_mode():
                    torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)
        except Exception as exc:  # reported below, on the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_the_session_opens_while_model_onnx_is_still_being_written(tmp_path, monkeypatch):
    """The CPU session opens from memory while a thread writes model.onnx and its weights; what
    reads the files (the session for other sizes, save) waits for them, and gets them whole."""
    import threading

    import onnx

    from accelc.onnx.weights_apart import WeightsApart

    release = threading.Event()
    real_write = WeightsApart.write
    monkeypatch.setattr(WeightsApart, "write", lambda self, path: release.wait(30) and real_write(self, path))
    model, inputs, gm = captured("mlp")
    runtime, _ = build(gm, inputs, "cpu")
    assert not os.path.exists(runtime.model_path)  # not written yet: the session did not need it
    with torch.inference_mode():
        torch.testing.assert_close(runtime(*inputs), model(*inputs), rtol=1e-4, atol=1e-5)
    release.set()
    runtime.save(str(tmp_path / "art"))
    saved = onnx.load(str(tmp_path / "art" / "model.onnx"))
    assert [i.name for i in saved.graph.input] == runtime.input_names


def test_a_failed_write_of_model_onnx_is_raised_where_the_file_is_needed(tmp_path):
    import onnx

    from accelc.onnx.export import PendingWrite
    from accelc.onnx.weights_apart import weights_apart

    pending = PendingWrite(str(tmp_path / "missing-folder" / "model.onnx"), weights_apart(onnx.helper.make_model(
        onnx.helper.make_graph([], "empty", [], []))))
    with pytest.raises(FileNotFoundError):
        pending.wait()


def test_model_onnx_is_the_model_the_stage_checked(monkeypatch, tmp_path):
    """When the onnx stage changed the model, its check serialised the result's graph already:
    that graph and those weights are model.onnx, not a second serialisation."""
    import onnx

    from accelc.onnx import optimize
    from accelc.onnx.weights_apart import WeightsApart

    made, written = [], []
    real_apart, real_write = optimize.weights_apart, WeightsApart.write
    monkeypatch.setattr(optimize, "weights_apart", lambda m: made.append(real_apart(m)) or made[-1])
    monkeypatch.setattr(WeightsApart, "write", lambda self, path: written.append(self) or real_write(self, path))
    model, inputs, gm = captured("bert")
    runtime, report = build(gm, inputs, "cpu")
    assert any(r["status"] == "fired" for r in report["onnx_passes"])
    runtime.model_file()
    assert len(made) == 1 and [id(w) for w in written] == [id(made[0])]  # one check, and that model written
    runtime.save(str(tmp_path / "art"))
    saved = onnx.load(str(tmp_path / "art" / "model.onnx"))
    assert len(saved.graph.node) == report["nodes"]["optimised"] != report["nodes"]["exported"]  # the stage's result
    with torch.inference_mode():
        assert compare_outputs(runtime(*inputs), model(*inputs)).ok


def test_unused_initializers_are_dropped_and_the_used_ones_kept_in_order():
    """Read by a node, by a node of an If branch, or as a graph output: kept, in their order;
    read by nothing: dropped (plain ONNX Runtime warns once per unused initializer)."""
    import onnx
    from onnx import helper, numpy_helper

    from accelc.onnx.weights_apart import without_unused_initializers

    weight = lambda name: numpy_helper.from_array(np.full((2,), float(len(name)), dtype=np.float32), name)  # noqa: E731
    branch = helper.make_graph([helper.make_node("Add", ["x", "in_branch"], ["b"])], "branch", [],
                               [helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [2])])
    nodes = [helper.make_node("Add", ["x", "used"], ["y"]),
             helper.make_node("If", ["cond"], ["z"], then_branch=branch, else_branch=branch)]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2]), helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [2]) for n in ("y", "z", "as_output")],
        initializer=[weight(n) for n in ("unused_a", "used", "in_branch", "unused_b", "as_output")])
    model = without_unused_initializers(helper.make_model(graph))
    assert [i.name for i in model.graph.initializer] == ["used", "in_branch", "as_output"]
    onnx.checker.check_model(model)
