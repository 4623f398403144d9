"""The registry and the staged pipeline: both entry-point groups, lazy loading, broken plugins
isolated, stage-qualified names, --passes / --disable over every stage, plugin positions."""

import os
import subprocess
import sys

import pytest
import torch

import accelc
from accelc.errors import PassRegistryError
from accelc.registry import GROUPS, Registry, resolve
from accelc.stages import DEFAULT_PIPELINE, GRAPH, LOWERING, ONNX, STAGES, build_pipeline
from plugin_fixtures import make_plugin


def test_builtin_passes_register_through_both_groups():
    registry = Registry.discover()
    for stage in STAGES.values():
        for device in ("cpu", "cuda"):
            for name in stage.default_names(device):
                entry = registry.entry(stage.ir, name)
                assert entry.builtin and entry.source.startswith("accelc "), entry
                assert registry.load(stage.ir, name).description()
    assert registry.has("fx", "fuse_attention") and registry.has("onnx", "fuse_attention")  # two passes, one name


def test_reading_the_registry_imports_no_pass(tmp_path):
    code = ("import sys; from accelc.registry import Registry; r = Registry.discover(); "
            "assert r.names('fx') and r.names('onnx'); "
            "print(sorted(m for m in sys.modules if m.startswith('accelc_passes.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_out_of_tree_plugin_is_discovered(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(make_plugin(tmp_path / "site")))
    registry = Registry.discover()
    assert registry.has("fx", "break_relu") and registry.has("fx", "count_relus")
    assert "accelc-test-plugin 0.1" in registry.entry("fx", "break_relu").source
    assert not registry.entry("fx", "break_relu").builtin


def test_duplicate_pass_name_names_both_sources(tmp_path, monkeypatch):
    site = make_plugin(tmp_path / "site", entries={"fold_conv_bn": "accelc_test_plugin:FoldConvBnImpostor"})
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(PassRegistryError) as info:
        Registry.discover()
    message = str(info.value)
    assert "'fold_conv_bn' is registered twice" in message
    assert "accelc 0.1.0" in message and "accelc-test-plugin 0.1" in message


def test_entry_point_name_must_match_class_name(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(make_plugin(tmp_path / "site", entries={"other_name": "accelc_test_plugin:CountRelus"})))
    with pytest.raises(PassRegistryError, match="names must match"):
        Registry.discover().load("fx", "other_name")


def test_an_fx_pass_registered_as_onnx_is_refused(tmp_path, monkeypatch):
    site = make_plugin(tmp_path / "site", entries={"count_relus": "accelc_test_plugin:CountRelus"}, group=GROUPS["onnx"])
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(PassRegistryError, match="is not an accelc onnx Pass subclass"):
        Registry.discover().load("onnx", "count_relus")


def test_unknown_pass_is_a_clear_error():
    with pytest.raises(PassRegistryError, match="unknown fx pass 'no_such_pass'; known: "):
        resolve(["no_such_pass"])
    with pytest.raises(PassRegistryError, match="unknown pass 'no_such_pass'"):
        build_pipeline(Registry.discover(), disable=["no_such_pass"])
    with pytest.raises(PassRegistryError, match="unknown stage 'backend'"):
        build_pipeline(Registry.discover(), passes=["backend:fuse_attention"])


def test_a_broken_plugin_breaks_only_what_uses_it(tmp_path, monkeypatch):
    site = make_plugin(tmp_path / "site", dist="accelc-broken-plugin", package="accelc_broken_plugin",
                       entries={"broken_pass": "accelc_broken_plugin:Whatever"}, broken=True)
    monkeypatch.syspath_prepend(str(site))
    registry = Registry.discover()  # reading it is fine
    pipeline = build_pipeline(registry)  # so is the default pipeline, with a note
    assert pipeline.names(GRAPH) == DEFAULT_PIPELINE
    assert any("broken_pass" in note and "failed to import" in note for note in pipeline.notes)
    model, inputs = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).eval(), (torch.randn(2, 4),)
    fast = accelc.accelerate(model, inputs, backend="torch")
    assert fast.captured and any("broken_pass" in w for w in fast.report["warnings"])
    with pytest.raises(PassRegistryError, match="'broken_pass' from accelc-broken-plugin 0.1 .* failed to import"):
        accelc.accelerate(model, inputs, backend="torch", passes=["broken_pass"])


def test_a_plugin_joins_the_default_pipeline_where_it_asks(tmp_path, monkeypatch):
    site = make_plugin(tmp_path / "site", entries={"count_relus_after_folding": "accelc_test_plugin:CountRelusAfterFolding",
                                                   "break_relu": "accelc_test_plugin:BreakRelu"})
    monkeypatch.syspath_prepend(str(site))
    names = build_pipeline(Registry.discover()).names(GRAPH)
    assert names[names.index("fold_constants") + 1] == "count_relus_after_folding"
    assert "break_relu" not in names  # no declared place: runs only where --passes names it


def test_passes_replace_the_stages_they_name_and_disable_reaches_every_stage():
    registry = Registry.discover()
    default = build_pipeline(registry)
    assert default.names(GRAPH) == DEFAULT_PIPELINE
    assert default.names(LOWERING) == STAGES[LOWERING].default_names("cpu")
    assert default.names(ONNX) == STAGES[ONNX].default_names("cpu")
    chosen = build_pipeline(registry, passes=["remove_noops", "onnx:fold_bias_add"])
    assert chosen.names(GRAPH) == ["remove_noops"] and chosen.names(ONNX) == ["fold_bias_add"]
    assert chosen.names(LOWERING) == default.names(LOWERING)  # not named: kept
    off = build_pipeline(registry, disable=["pack_linear_weights", "split_causal_attention", "fuse_attention"])
    assert "pack_linear_weights" not in off.names(LOWERING)
    assert "split_causal_attention" not in off.names(ONNX)
    assert "fuse_attention" not in off.names(GRAPH) and "fuse_attention" not in off.names(ONNX)  # bare: both stages
    only_onnx = build_pipeline(registry, disable=["onnx:fuse_attention"])
    assert "fuse_attention" in only_onnx.names(GRAPH) and "fuse_attention" not in only_onnx.names(ONNX)
    with pytest.raises(PassRegistryError, match="write graph:fuse_attention or onnx:fuse_attention"):
        build_pipeline(registry, passes=["fuse_attention"])


@pytest.mark.parametrize("name, stage_key", [("bind_direct_calls", "runtime_lowering"), ("fold_constants", "passes")])
def test_disable_is_honoured_in_the_fx_stages(name, stage_key):
    model, inputs = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval(), (torch.randn(2, 8),)
    report = accelc.accelerate(model, inputs, backend="torch", disable=[name]).report
    assert name not in [r["name"] for r in report[stage_key]]
    assert name not in report["pipeline"]["stages"][GRAPH if stage_key == "passes" else LOWERING]


def test_disable_is_honoured_in_the_onnx_stage():
    model, inputs = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU(approximate="tanh")).eval(), (torch.randn(2, 8),)
    report = accelc.accelerate(model, inputs, backend="onnxruntime", disable=["split_causal_attention",
                                                                             "onnx:fuse_fast_gelu"]).report
    assert report["backend"] == "onnxruntime", report.get("backend_fallback")
    ran = [r["name"] for r in report["onnx"]["onnx_passes"]]
    assert "split_causal_attention" not in ran and "fuse_fast_gelu" not in ran and "fold_bias_add" in ran
    fused = accelc.accelerate(model, inputs, backend="onnxruntime").report["onnx"]["onnx_passes"]
    assert {r["name"]: r["status"] for r in fused}["fuse_fast_gelu"] == "fired"  # what the disable took away


def test_plugin_listed_from_the_command_line(tmp_path):
    site = make_plugin(tmp_path / "site")
    env = dict(os.environ, PYTHONPATH=str(site) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    listed = subprocess.run([sys.executable, "-m", "accelc.cli", "passes"], capture_output=True, text=True, env=env, timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert "break_relu" in listed.stdout and "accelc-test-plugin" in listed.stdout
    for stage in STAGES:
        assert f"{stage} stage:" in listed.stdout
    assert "split_causal_attention" in listed.stdout
