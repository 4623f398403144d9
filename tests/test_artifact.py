"""Artifact folders: round trip, atomic writes, refusal to overwrite, safe and clear loading."""

import json
import os
import zipfile

import pytest
import torch

import accelc
from accelc import artifact
from accelc.errors import ArtifactError, NotCapturedError
from accelc.loader import load_model_file
from support import TINY_CNN


@pytest.fixture
def fast(model_file):
    loaded = load_model_file(str(model_file(TINY_CNN)))
    return loaded, accelc.accelerate(loaded.module, loaded.inputs, source_file=loaded.path, measure=True)


def test_round_trip(fast, tmp_path):
    loaded, module = fast
    out = tmp_path / "out"
    module.save(str(out))
    files = set(os.listdir(out))
    assert {"fingerprint.json", "model.pt2", "report.html", "report.json"} <= files
    report = json.loads((out / "report.json").read_text())
    assert report["backend"] in ("torch", "onnxruntime")
    assert ("model.onnx" in files) == (report["backend"] == "onnxruntime")
    assert report["fingerprint"]["torch"] == torch.__version__
    assert "<svg" in (out / "report.html").read_text()
    again = accelc.load(str(out))
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(again(x), loaded.module(x), rtol=1e-3, atol=1e-4)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".out")]  # no staging left behind


def test_the_folder_gets_the_usual_permissions(fast, tmp_path):
    import stat

    path = fast[1].save(str(tmp_path / "out"))
    plain = tmp_path / "plain"
    plain.mkdir()
    assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)  # not mkdtemp's 0700


def test_existing_folder_is_refused_without_force(fast, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(ArtifactError, match="already exists and is not empty; .*--force"):
        fast[1].save(str(out))
    assert (out / "keep.txt").read_text() == "precious"
    fast[1].save(str(out), force=True)
    assert not (out / "keep.txt").exists() and (out / "model.pt2").exists()


def test_crash_while_saving_leaves_nothing_half_written(fast, tmp_path, monkeypatch):
    out = tmp_path / "artifacts" / "out"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("old artifact")

    def crash(report):
        raise KeyboardInterrupt

    monkeypatch.setattr("accelc.report.render_html", crash)
    with pytest.raises(KeyboardInterrupt):
        fast[1].save(str(out), force=True)
    assert os.listdir(out.parent) == ["out"] and os.listdir(out) == ["keep.txt"]


def test_missing_and_corrupt_files_are_one_line_errors(fast, tmp_path):
    with pytest.raises(ArtifactError, match="no such artifact folder"):
        accelc.load(str(tmp_path / "nowhere"))
    out = tmp_path / "out"
    fast[1].save(str(out))
    (out / "report.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="report.json is unreadable or corrupt"):
        accelc.load(str(out))
    fast[1].save(str(out), force=True)
    (out / "model.pt2").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="model.pt2 is corrupt"):
        accelc.load(str(out))
    os.remove(out / "model.pt2")
    with pytest.raises(ArtifactError, match=r"not a complete accelc artifact \(model.pt2 missing\)"):
        accelc.load(str(out))


def test_pickled_objects_are_refused(fast, tmp_path):
    out = tmp_path / "out"
    fast[1].save(str(out))
    with zipfile.ZipFile(out / "model.pt2", "a") as archive:
        archive.writestr("model/data/constants/custom_obj_0", b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(ArtifactError, match="pickled Python objects"):
        accelc.load(str(out))


def test_weights_only_is_forced_during_load(monkeypatch):
    seen = []
    real_load = torch.export.load

    def spy(path):
        seen.append(os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD"))
        raise RuntimeError("stop here")

    monkeypatch.setattr(torch.export, "load", spy)
    with artifact._weights_only_loads():
        with pytest.raises(RuntimeError):
            torch.export.load("x")
    assert seen == ["1"] and real_load is not spy


def test_uncaptured_model_cannot_be_saved(tmp_path):
    class Branchy(torch.nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    fast = accelc.accelerate(Branchy(), (torch.ones(2),))
    with pytest.raises(NotCapturedError, match="nothing optimised to save: could not capture"):
        fast.save(str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
