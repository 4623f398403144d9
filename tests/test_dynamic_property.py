"""Property: at any batch size, sequence length or image size, every call of an accelerated module
(and of its saved artifact, loaded again) gives eager's answer or raises accelc's error; never a
wrong answer.

Sizes are drawn inside and outside what each model was verified for (sequences longer than the
position table, images too small for the network). Where eager raises, accelc must raise its own
:class:`InputMismatchError`; where eager answers, the module answers the same (through its graph,
or through the eager model with a warning); a loaded artifact, which has no eager model, may
refuse a call outside its signature but never answer it wrongly.

Set ``ACCELC_PROPERTY_TALLY=path.json`` to write the counts (calls, shapes, answers, refusals,
wrong) per sample and backend.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import warnings
from collections import Counter, defaultdict

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import accelc
from accelc.errors import InputMismatchError
from accelc.verify import compare_outputs
from support import SAMPLES as SAMPLES_DIR

SAMPLES = ["bert", "gpt2", "vit", "cnn", "mlp", "multibranch_cnn"]
BACKENDS = {  # how each runtime is asked for, and the backend the report must then name
    "torch": ({"backend": "torch"}, "torch"),
    "onnxruntime": ({"backend": "onnxruntime"}, "onnxruntime"),
    "openvino": ({"backend": "openvino"}, "openvino"),
    "branches": ({"backend": "torch", "branches": 2}, "torch"),
    "stages": ({"backend": "torch", "stages": 2, "microbatches": 1}, "torch"),
}
CASES = [(name, backend) for name in SAMPLES for backend in ("torch", "onnxruntime", "openvino")] + \
    [("multibranch_cnn", "branches"), ("cnn", "stages")]
TALLY: dict = defaultdict(Counter)
SHAPES: dict = defaultdict(set)


def small_sample(name: str):
    """``samples/<name>.py``'s small variant: (model in eval mode, example inputs)."""
    if str(SAMPLES_DIR) not in sys.path:
        sys.path.insert(0, str(SAMPLES_DIR))
    module = importlib.import_module(name)
    return module.get_model(small=True).eval(), tuple(module.get_inputs(small=True))


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    cache = {}

    def get(name: str, backend: str):
        if (name, backend) not in cache:
            if backend == "openvino":
                pytest.importorskip("openvino")  # an optional extra (in the test extra, so CI runs it)
            torch.manual_seed(0)
            model, inputs = small_sample(name)
            options, runs_on = BACKENDS[backend]
            fast = accelc.accelerate(model, inputs, **options)
            assert fast.captured, fast.report.get("fallback")
            assert fast.report["backend"] == runs_on and not fast.report.get("backend_fallback"), fast.report.get("backend_fallback")
            folder = tmp_path_factory.mktemp(f"{name}-{backend}") / "artifact"
            fast.save(str(folder))
            cache[name, backend] = (model, inputs, fast, accelc.load(str(folder)))
        return cache[name, backend]

    yield get
    path = os.environ.get("ACCELC_PROPERTY_TALLY")
    if path:
        summary = {key: dict(TALLY[key]) | {"distinct_shapes": len(SHAPES[key])} for key in sorted(TALLY)}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)


def inputs_of(example: tuple, batch: int, seq: int, side: int, seed: int, other_batch: int | None = None) -> tuple:
    """Inputs laid out like ``example`` with batch, sequence (token inputs) and image side changed;
    ``other_batch``: the batch of the second input alone (BERT's attention mask, which the graph
    would broadcast: eager answers some such calls and raises on others)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, x in enumerate(example):
        shape = list(x.shape)
        shape[0] = other_batch if other_batch is not None and i == 1 else batch
        if x.dim() == 2 and not x.is_floating_point():
            shape[1] = seq
        if x.dim() == 4:
            shape[2] = shape[3] = side
        if x.is_floating_point():
            out.append(torch.randn(shape, generator=gen))
        else:
            out.append(torch.randint(0, int(x.max()) + 1, shape, generator=gen, dtype=x.dtype))
    return tuple(out)


def outcome(module, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the one-time fallback warning is tested in test_shapes.py
        try:
            with torch.inference_mode():
                return "answer", module(*x)
        except InputMismatchError as exc:
            return "refused", exc
        except Exception as exc:  # anything else escaping accelc is a bug, like a wrong answer
            return "crashed", exc


def check(name: str, backend: str, model, fast, loaded, x):
    key = f"{name}/{backend}"
    SHAPES[key].add(tuple(tuple(t.shape) for t in x))
    expected_kind, expected = outcome(model, x)
    for label, module, has_eager in (("accelerated", fast, True), ("loaded", loaded, False)):
        TALLY[key]["calls"] += 1
        kind, got = outcome(module, x)
        TALLY[key][kind] += 1
        shapes = [tuple(t.shape) for t in x]
        if expected_kind != "answer":  # eager raised: accelc must refuse, with its own error
            assert kind == "refused", f"{label} {key} at {shapes}: eager raised, accelc gave {kind}: {got}"
            continue
        if kind == "refused" and not has_eager:
            continue  # an artifact may refuse what it was not verified for
        assert kind == "answer", f"{label} {key} at {shapes}: eager answered, accelc {kind}: {got}"
        comparison = compare_outputs(got, expected)
        if not comparison.ok:
            TALLY[key]["wrong"] += 1
        assert comparison.ok, f"WRONG ANSWER from {label} {key} at {shapes}: {comparison.message}"


@pytest.mark.parametrize("name,backend", CASES)
def test_every_call_is_eager_or_an_accelc_error(builds, name, backend):
    model, example, fast, loaded = builds(name, backend)
    seq_example = example[0].shape[1] if example[0].dim() == 2 else 1
    side_example = example[0].shape[-1] if example[0].dim() == 4 else 1

    @settings(max_examples=20, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(batch=st.integers(1, 9), seq=st.integers(1, 4 * seq_example + 8),
           # the example's side half the time: a model with a fixed image size (ViT) then still
           # gets calls at other batch sizes, not only the refusals of other sides
           side=st.one_of(st.just(side_example),
                          st.sampled_from(sorted({4, side_example // 2, side_example + 8, 2 * side_example}))),
           seed=st.integers(0, 2**16),
           other_batch=st.one_of(st.none(), st.integers(1, 9)))
    def prop(batch, seq, side, seed, other_batch):
        check(name, backend, model, fast, loaded, inputs_of(example, batch, seq, side, seed, other_batch))

    prop()
    # The example's own shapes at batch 3 always go through the optimised graph, not the fallback.
    x = inputs_of(example, 3, seq_example, side_example, seed=1)
    assert fast.signature.mismatch(x) is None, fast.signature.mismatch(x)
    check(name, backend, model, fast, loaded, x)
