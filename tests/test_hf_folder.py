"""`accelc optimize DIR`, `explain DIR`: a Hugging Face model folder (save_pretrained's output) instead of a model.py.

The folders are built here from small random-weight configs (biases and LayerNorm affines
randomised too, so nothing folds away by accident). Every load is offline: sockets refuse to
connect while accelc reads a folder, with and without HF_HUB_OFFLINE."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

import accelc
from accelc.cli import main
from accelc.errors import ModelLoadError
from accelc.hf_folder import example_inputs
from accelc.loader import load_model_file

BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "vocab_size": 100, "max_position_embeddings": 64}


@torch.no_grad()
def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Biases ~ N(0, 0.05) and LayerNorm weights ~ 1 + 0.1 N(0, 1): not the identity default init."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=g))
    return model


def _save(model: torch.nn.Module, folder) -> str:
    torch.manual_seed(0)
    _randomize(model).save_pretrained(str(folder))
    return str(folder)


def _tree_hash(folder) -> str:
    """Names, contents and modification times of everything under ``folder``."""
    digest = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(folder)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, folder).encode())
            digest.update(str(os.stat(path).st_mtime_ns).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


@contextlib.contextmanager
def _offline(hf_hub_offline: bool):
    """No network: every connect or name lookup is recorded and refused."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access in a test")

    with pytest.MonkeyPatch.context() as mp:
        if hf_hub_offline:
            mp.setenv("HF_HUB_OFFLINE", "1")
        else:
            mp.delenv("HF_HUB_OFFLINE", raising=False)
            mp.delenv("TRANSFORMERS_OFFLINE", raising=False)
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        mp.setattr(socket, "getaddrinfo", refuse)
        yield attempts


def _cli(*args) -> tuple[int, str, str]:
    """Run accelc in-process (usable from module-scoped fixtures, where capsys is not)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def _row(summary: str, key: str) -> str:
    """The value of one row of the summary table."""
    return next(line[len(key):].strip() for line in summary.splitlines() if line.split()[:1] == [key])


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    config = transformers.BertConfig(**BERT, architectures=["BertForSequenceClassification"])
    return _save(transformers.BertForSequenceClassification(config), tmp_path_factory.mktemp("bert") / "tiny-bert")


@pytest.fixture(scope="module")
def bert_built(bert_dir, tmp_path_factory):
    """`accelc optimize tiny-bert -o OUT --batch 2 --seq 16`, offline, and the folder's hash around it."""
    out = tmp_path_factory.mktemp("bert_out") / "out"
    before = _tree_hash(bert_dir)
    with _offline(hf_hub_offline=True) as attempts:
        code, stdout, stderr = _cli("optimize", bert_dir, "-o", out, "--backend", "torch", "--no-bench",
                                    "--batch", "2", "--seq", "16")
    return {"code": code, "out": str(out), "stdout": stdout, "stderr": stderr, "attempts": attempts,
            "unchanged": before == _tree_hash(bert_dir)}


def test_optimize_bert_folder(bert_built):
    assert bert_built["code"] == 0, bert_built["stderr"]
    assert os.path.isfile(os.path.join(bert_built["out"], "model.pt2"))
    shapes = _row(bert_built["stdout"], "shapes")
    assert shapes.startswith("input_ids (batch, seq), attention_mask (") and "seq)" in shapes
    assert "dynamic batch 1.." in shapes and "seq 1..64" in shapes  # the position table bounds seq
    assert _row(bert_built["stdout"], "model") == "tiny-bert"
    assert "Traceback" not in bert_built["stderr"] and "Loading weights" not in bert_built["stderr"]
    assert bert_built["attempts"] == []  # HF_HUB_OFFLINE=1 and no socket was even tried
    assert bert_built["unchanged"]  # nothing in the user's folder was written or touched


def test_bert_artifact_matches_eager_at_other_sizes(bert_built, bert_dir):
    assert bert_built["code"] == 0, bert_built["stderr"]
    fast = accelc.load(bert_built["out"])
    assert [tuple(t.shape) for t in fast.example_inputs] == [(2, 16), (2, 16)]  # --batch 2 --seq 16
    assert [t.dtype for t in fast.example_inputs] == [torch.int64, torch.int64]
    eager = transformers.BertForSequenceClassification.from_pretrained(bert_dir, local_files_only=True).eval()
    g = torch.Generator().manual_seed(3)
    for batch, seq in ((2, 16), (3, 40), (1, 64)):
        ids = torch.randint(0, BERT["vocab_size"], (batch, seq), generator=g)
        mask = torch.ones(batch, seq, dtype=torch.int64)
        mask[:, seq - 3:] = 0  # padding: the mask input is live, not folded
        got = fast(ids, mask)
        with torch.no_grad():
            want = eager(ids, mask)
        assert type(got).__name__ == "SequenceClassifierOutput"
        torch.testing.assert_close(got.logits, want.logits, rtol=1e-4, atol=1e-5)


def test_run_the_bert_artifact(bert_built, capsys):
    assert bert_built["code"] == 0, bert_built["stderr"]
    assert main(["run", bert_built["out"], "--seconds", "0.2"]) == 0
    assert "outputs [(2, 2)]" in capsys.readouterr().out


def test_default_example_inputs_from_the_config(bert_dir):
    with _offline(hf_hub_offline=False) as attempts:  # HF_HUB_OFFLINE unset: still no lookup
        loaded = load_model_file(bert_dir)
    assert attempts == []
    ids, mask = loaded.inputs
    assert ids.shape == mask.shape == (1, 64)  # seq 128 by default, capped at max_position_embeddings
    assert ids.dtype == torch.int64 and 0 <= ids.min() and ids.max() < BERT["vocab_size"]
    assert torch.equal(mask, torch.ones_like(mask))
    assert torch.equal(ids, load_model_file(bert_dir).inputs[0])  # seeded
    assert not loaded.module.training and type(loaded.module).__name__ == "BertForSequenceClassification"
    assert loaded.path == os.path.abspath(bert_dir)


def test_optimize_vit_folder(tmp_path):
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64)
    folder = _save(transformers.ViTModel(config), tmp_path / "vit")
    before = _tree_hash(folder)
    with _offline(hf_hub_offline=True) as attempts:
        code, stdout, stderr = _cli("optimize", folder, "-o", tmp_path / "out", "--backend", "torch", "--no-bench")
    assert code == 0, stderr
    assert attempts == [] and _tree_hash(folder) == before
    assert _row(stdout, "shapes") == "pixel_values (batch, 3, 32, 32); dynamic batch 1.."
    fast = accelc.load(str(tmp_path / "out"))
    assert [tuple(t.shape) for t in fast.example_inputs] == [(1, 3, 32, 32)]
    eager = transformers.ViTModel.from_pretrained(folder, local_files_only=True).eval()
    for batch in (1, 3):
        x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        got = fast(x)
        with torch.no_grad():
            want = eager(x)
        torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got.pooler_output, want.pooler_output, rtol=1e-4, atol=1e-5)


def test_explain_gpt2_folder(tmp_path):
    """GPT-2's forward takes (input_ids, cache, attention_mask, ...): only input_ids is positional
    before a non-tensor, and its key/value cache is switched off so the outputs are tensors."""
    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64,
                                     bos_token_id=0, eos_token_id=0)
    folder = _save(transformers.GPT2LMHeadModel(config), tmp_path / "gpt2")
    before = _tree_hash(folder)
    with _offline(hf_hub_offline=False) as attempts:
        code, stdout, stderr = _cli("explain", folder, "--backend", "torch", "--batch", "2", "--seq", "16")
    assert code == 0, stderr
    assert attempts == [] and _tree_hash(folder) == before
    assert "shapes: input_ids (batch, seq); dynamic batch 1.." in stdout
    assert "graph stage:" in stdout and "Traceback" not in stderr


def _one_line_error(code, stderr, expected_code, message):
    assert code == expected_code, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("accelc: error:")]
    assert len(lines) == 1 and message in lines[0], stderr
    assert "Traceback" not in stderr


def test_empty_folder_is_a_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, stderr = _cli("optimize", tmp_path / "empty", "-o", tmp_path / "out")
    _one_line_error(code, stderr, 2, "is a folder without config.json; give a model.py file, or a Hugging Face model folder")


def test_folder_without_weights(tmp_path):
    transformers.BertConfig(**BERT).save_pretrained(str(tmp_path / "bert"))
    before = _tree_hash(tmp_path / "bert")
    code, _, stderr = _cli("optimize", tmp_path / "bert", "-o", tmp_path / "out")
    _one_line_error(code, stderr, 4, "has config.json but no weights (model.safetensors or pytorch_model.bin)")
    assert _tree_hash(tmp_path / "bert") == before and not (tmp_path / "out").exists()


def test_unknown_architecture(tmp_path):
    transformers.BertConfig(**BERT, architectures=["BertForTimeTravel"]).save_pretrained(str(tmp_path / "bert"))
    (tmp_path / "bert" / "model.safetensors").write_bytes(b"")
    code, _, stderr = _cli("explain", tmp_path / "bert")
    _one_line_error(code, stderr, 4, "names the architecture BertForTimeTravel, which transformers")


def test_unknown_model_type(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "not_a_model_type", "architectures": ["X"]}))
    (tmp_path / "m" / "model.safetensors").write_bytes(b"")
    code, _, stderr = _cli("explain", tmp_path / "m")
    _one_line_error(code, stderr, 4, "is not a config transformers")


@pytest.mark.parametrize("option", [["--batch", "8"], ["--seq", "32"]])
def test_batch_and_seq_with_a_model_py_are_usage_errors(tmp_path, option):
    (tmp_path / "model.py").write_text("import torch\nmodel = torch.nn.Linear(3, 2)\ninputs = torch.randn(1, 3)\n")
    code, _, stderr = _cli("optimize", tmp_path / "model.py", "-o", tmp_path / "out", *option)
    _one_line_error(code, stderr, 2, f"only a Hugging Face model folder takes {option[0]} (accelc builds its example inputs); model.py makes its own")


def test_seq_longer_than_the_position_table(bert_dir, tmp_path):
    code, _, stderr = _cli("explain", bert_dir, "--seq", "65")
    _one_line_error(code, stderr, 2, "--seq 65 is longer than the model's max_position_embeddings (64)")


def test_batch_must_be_positive(tmp_path, capsys):
    code = main(["optimize", str(tmp_path), "-o", str(tmp_path / "out"), "--batch", "0"])
    assert code == 2 and "'0' is not a whole number of at least 1" in capsys.readouterr().err


def test_an_input_accelc_cannot_build():
    class Speech(torch.nn.Module):
        main_input_name = "input_values"

        def forward(self, input_values, attention_mask=None):
            return input_values

    with pytest.raises(ModelLoadError, match="cannot build the example input input_values of Speech") as info:
        example_inputs(Speech(), transformers.PretrainedConfig(), "speech")
    assert "\n" not in str(info.value)


def test_main_input_not_first_in_forward():
    class Odd(torch.nn.Module):
        main_input_name = "input_ids"

        def forward(self, pixel_values, input_ids):
            return input_ids

    with pytest.raises(ModelLoadError, match="its main input input_ids is not the first parameter of forward"):
        example_inputs(Odd(), transformers.PretrainedConfig(vocab_size=10), "odd")


def test_without_transformers(bert_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # importing it now fails
    with pytest.raises(ModelLoadError, match="needs transformers, which is not installed") as info:
        load_model_file(bert_dir)
    assert "pip install transformers" in str(info.value) and "\n" not in str(info.value)


def test_a_config_without_architectures_loads_as_automodel(tmp_path):
    folder = _save(transformers.BertModel(transformers.BertConfig(**BERT)), tmp_path / "bert")
    config = json.loads((tmp_path / "bert" / "config.json").read_text())
    del config["architectures"]
    (tmp_path / "bert" / "config.json").write_text(json.dumps(config))
    loaded = load_model_file(folder, batch=3, seq=8)
    assert type(loaded.module).__name__ == "BertModel"
    assert [tuple(t.shape) for t in loaded.inputs] == [(3, 8), (3, 8)]
