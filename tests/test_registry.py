"""Entry-point discovery: built-ins, an out-of-tree plugin, duplicate names, unknown names."""

import os
import subprocess
import sys

import pytest

from accelc.errors import PassRegistryError
from accelc.pipeline import DEFAULT_PIPELINE, build_pipeline
from accelc.registry import discover, resolve
from plugin_fixtures import make_plugin


def test_builtin_passes_register_through_entry_points():
    registry = discover()
    for name in DEFAULT_PIPELINE:
        assert name in registry, name
        assert registry[name].source.startswith("accelc ")
        assert registry[name].description


def test_out_of_tree_plugin_is_discovered(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(make_plugin(tmp_path / "site")))
    registry = discover()
    assert "break_relu" in registry and "count_relus" in registry
    assert "accelc-test-plugin 0.1" in registry["break_relu"].source


def test_duplicate_pass_name_names_both_sources(tmp_path, monkeypatch):
    site = make_plugin(tmp_path / "site", entries={"fold_conv_bn": "accelc_test_plugin:FoldConvBnImpostor"})
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(PassRegistryError) as info:
        discover()
    message = str(info.value)
    assert "'fold_conv_bn' is registered twice" in message
    assert "accelc 0.1.0" in message and "accelc-test-plugin 0.1" in message


def test_entry_point_name_must_match_class_name(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(make_plugin(tmp_path / "site", entries={"other_name": "accelc_test_plugin:CountRelus"})))
    with pytest.raises(PassRegistryError, match="names must match"):
        discover()


def test_unknown_pass_is_a_clear_error():
    with pytest.raises(PassRegistryError, match="unknown pass 'no_such_pass'; known passes: "):
        resolve(["no_such_pass"])


def test_pipeline_editing():
    assert build_pipeline() == DEFAULT_PIPELINE
    assert build_pipeline(["a", "b"], ["b"]) == ["a"]
    assert "fold_conv_bn" not in build_pipeline(disable=["fold_conv_bn"])


def test_plugin_listed_and_run_from_the_command_line(tmp_path):
    site = make_plugin(tmp_path / "site")
    env = dict(os.environ, PYTHONPATH=str(site) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    listed = subprocess.run([sys.executable, "-m", "accelc.cli", "passes"], capture_output=True, text=True, env=env, timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert "break_relu" in listed.stdout and "accelc-test-plugin" in listed.stdout
