"""accelc: a model-acceleration compiler for PyTorch.

    fast = accelc.accelerate(model, inputs)     # capture, optimise, verify
    fast(*inputs)                               # eager's answers, faster
    fast.report                                 # what happened, as data
    fast.save("out/"); accelc.load("out/")
"""

from .errors import AccelcError
from .pass_base import Pass, PassContext, PassResult, Refusal

__version__ = "0.1.0"


def __getattr__(name):
    # The front door imports torch.export machinery; load it on first use so that importing
    # accelc (e.g. by a pass plugin or torch's backend discovery) stays cheap.
    if name in ("accelerate", "explain", "load", "AcceleratedModule"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'accelc' has no attribute {name!r}")


__all__ = ["accelerate", "explain", "load", "AcceleratedModule", "AccelcError", "Pass", "PassContext", "PassResult", "Refusal", "__version__"]
