"""The model.py contract and its errors."""

import pytest
import torch

from accelc.errors import ModelLoadError
from accelc.loader import load_model_file
from support import TINY_CNN


def test_get_model_and_get_inputs(model_file):
    loaded = load_model_file(str(model_file(TINY_CNN)))
    assert isinstance(loaded.module, torch.nn.Module) and not loaded.module.training
    assert loaded.inputs[0].shape == (2, 3, 8, 8)


def test_module_level_model_and_inputs(model_file):
    path = model_file("""
        import torch
        model = torch.nn.Linear(3, 2)
        inputs = torch.randn(1, 3)
    """)
    loaded = load_model_file(str(path))
    assert isinstance(loaded.module, torch.nn.Linear) and len(loaded.inputs) == 1


def test_sibling_imports_work_like_python_model_py(model_file):
    model_file("import torch\nWIDTH = 5\n", name="helper_mod_for_test.py")
    path = model_file("""
        import torch
        from helper_mod_for_test import WIDTH
        def get_model(): return torch.nn.Linear(WIDTH, 2)
        def get_inputs(): return (torch.randn(1, WIDTH),)
    """)
    assert load_model_file(str(path)).inputs[0].shape == (1, 5)


def test_main_block_does_not_run(model_file):
    path = model_file("""
        import torch
        def get_model(): return torch.nn.Linear(3, 2)
        def get_inputs(): return (torch.randn(1, 3),)
        if __name__ == "__main__":
            raise SystemExit("must not run")
    """)
    load_model_file(str(path))


@pytest.mark.parametrize(
    "source, message",
    [
        ("import torch\nx = 1\ndef f(:\n", "model.py:3: syntax error"),
        ("import torch\nfoo = 1\ndef bar(): pass\n", "defines neither get_model() nor `model` (it defines: bar, foo"),
        ("import torch\ndef get_model(): return 42\ndef get_inputs(): return (torch.ones(1),)\n", "gave a int, not a torch.nn.Module"),
        ("import torch\ndef get_model(): return torch.nn.Linear(1, 1)\ndef get_inputs(): return (torch.ones(1), 'x')\n", "example input 1 is a str, not a tensor"),
        ("import torch\ndef get_model(): return torch.nn.Linear(1, 1)\n", "defines neither get_inputs() nor `inputs`"),
        ("import torch\ndef get_model():\n    raise ValueError('boom')\ndef get_inputs(): return ()\n", "model.py:3: get_model() raised ValueError: boom"),
        ("import torch\nimport not_a_real_module_xyz\n", "model.py:2: importing the model file raised ModuleNotFoundError"),
    ],
)
def test_bad_model_files(model_file, source, message):
    with pytest.raises(ModelLoadError) as info:
        load_model_file(str(model_file(source)))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    from accelc.errors import UserInputError

    with pytest.raises(UserInputError, match="no such file") as info:  # a usage error (exit 2), not a bad model
        load_model_file(str(tmp_path / "nope.py"))
    assert not isinstance(info.value, ModelLoadError)
    with pytest.raises(UserInputError, match="no such file"):
        load_model_file(str(tmp_path / "nope.py"))
