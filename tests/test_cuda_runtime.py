"""The PyTorch runtime on CUDA (skipped without a GPU)."""

import pytest
import torch

import accelc
from accelc.errors import UserInputError
from accelc.loader import load_model_file
from support import TINY_CNN


@pytest.mark.gpu
def test_accelerate_on_cuda_matches_eager(model_file, tmp_path):
    loaded = load_model_file(str(model_file(TINY_CNN)))
    fast = accelc.accelerate(loaded.module, loaded.inputs, device="cuda")
    assert fast.report["device"].startswith("cuda") and fast.captured
    x = loaded.inputs[0].cuda()
    torch.testing.assert_close(fast(x), loaded.module.cuda()(x), rtol=1e-3, atol=1e-3)
    fast.save(str(tmp_path / "out"))
    again = accelc.load(str(tmp_path / "out"))
    torch.testing.assert_close(again(x), loaded.module(x), rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is absent")
def test_cuda_requested_without_cuda_is_a_clear_error():
    with pytest.raises(UserInputError, match="CUDA is not available on this machine; use --device cpu"):
        accelc.accelerate(torch.nn.Linear(2, 2), (torch.randn(1, 2),), device="cuda")
