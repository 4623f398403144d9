"""Numeric comparison of a candidate graph against a reference, with dtype-aware tolerances.

Tolerances follow the dtype of the *reference* output. The absolute part scales with the
reference's magnitude (``atol * max(1, max|ref|)``) because deep random-weight networks produce
activations far from unit scale, and a fixed atol would either pass everything or nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils._pytree import tree_leaves

# (rtol, atol) per dtype: fp32 leaves room for re-associated sums (folding, fused GEMMs);
# half types for one rounding per op over a few dozen ops.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-7, 1e-7),
    torch.float32: (1e-3, 1e-4),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (4e-2, 4e-2),
}


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    return TOLERANCES.get(dtype, (0.0, 0.0))


# int8 dynamic quantisation (weights per channel, activations per call): one rounding of every
# GEMM input to 256 levels. Measured on BERT-base (random weights): up to 4% of the output's scale.
INT8_TOLERANCE = (5e-2, 1e-1)


def tolerance_for_precision(precision: str):
    """The tolerance function for a compilation at ``precision``: lowering to fp16/bf16 (or
    quantising to int8) on purpose is judged by that precision's tolerance even where the
    outputs stay fp32."""
    if precision == "fp32":
        return tolerance
    if precision == "int8":
        return lambda dtype: INT8_TOLERANCE if dtype.is_floating_point else tolerance(dtype)
    lowered = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    return lambda dtype: tolerance(lowered) if dtype.is_floating_point else tolerance(dtype)


@dataclass
class Comparison:
    ok: bool
    max_abs_error: float
    max_rel_error: float  # max abs error / max(1, max |reference|)
    message: str = ""
    # max abs error / max |reference|, the worst output's: the error of a lowered precision as
    # inference engineers quote it (and what precision="auto"'s tolerance bounds)
    relative_error: float = 0.0

    def as_dict(self) -> dict:
        return {"ok": self.ok, "max_abs_error": self.max_abs_error, "max_rel_error": self.max_rel_error,
                "relative_error": self.relative_error, "message": self.message}


def worst_of(a: Comparison, b: Comparison) -> Comparison:
    """Two passing comparisons as one: each error measure at its worst."""
    return Comparison(True, max(a.max_abs_error, b.max_abs_error), max(a.max_rel_error, b.max_rel_error),
                      relative_error=max(a.relative_error, b.relative_error))


def flat_outputs(outputs) -> list:
    return [x for x in tree_leaves(outputs)]


def compare_outputs(actual, expected, tolerance_of=tolerance) -> Comparison:
    """Compare two (nested) outputs leaf by leaf; ``ok`` is False on the first leaf out of tolerance."""
    got, want = flat_outputs(actual), flat_outputs(expected)
    if len(got) != len(want):
        return Comparison(False, math.inf, math.inf, f"{len(got)} outputs where {len(want)} were expected")
    worst_abs = worst_rel = worst_relative = 0.0
    for i, (a, b) in enumerate(zip(got, want)):
        if not isinstance(b, torch.Tensor):
            if a != b:
                return Comparison(False, math.inf, math.inf, f"output {i}: {a!r} != {b!r}")
            continue
        if not isinstance(a, torch.Tensor) or a.shape != b.shape:
            shape = getattr(a, "shape", type(a).__name__)
            return Comparison(False, math.inf, math.inf, f"output {i}: shape {tuple(shape)} != {tuple(b.shape)}")
        a = a.detach().to("cpu")
        b = b.detach().to("cpu")
        if not b.is_floating_point():
            if not torch.equal(a.to(b.dtype), b):
                return Comparison(False, math.inf, math.inf, f"output {i}: integer values differ")
            continue
        rtol, atol = tolerance_of(b.dtype)
        # In fp32 (fp64 stays fp64): a difference of two fp32 values is off by 2^-24 of itself at
        # most, far inside any tolerance here, and GPT-2's logits (25M values at the large probe)
        # compare in a fraction of the time fp64 copies took.
        dtype = b.dtype
        work = torch.float64 if dtype == torch.float64 else torch.float32
        a, b = a.to(work), b.to(work)
        diff = (a - b).abs_()
        ref = b.abs()
        nan_b = torch.isnan(b)
        if not torch.equal(torch.isnan(a), nan_b):
            return Comparison(False, math.inf, math.inf, f"output {i}: NaN where the reference has none (or the reverse)")
        if bool(nan_b.any()):
            diff, ref = diff[~nan_b], ref[~nan_b]
        if diff.numel() == 0:
            continue
        peak = float(ref.max())
        scale = max(1.0, peak)
        abs_err = float(diff.max())
        # Relative to the output's magnitude, not per element: near-zero elements make
        # element-wise ratios meaningless.
        worst_abs, worst_rel = max(worst_abs, abs_err), max(worst_rel, abs_err / scale)
        worst_relative = max(worst_relative, abs_err / peak if peak > 0 else (0.0 if abs_err == 0 else math.inf))
        # |a - b| <= atol·scale + rtol·|b| everywhere, as one reduction over diff - rtol·|b|
        over = float(diff.sub_(ref, alpha=rtol).max()) if rtol else abs_err
        if not over <= atol * scale or not math.isfinite(abs_err):
            return Comparison(
                False, worst_abs, worst_rel,
                f"output {i} ({dtype}): max abs error {abs_err:.3g} exceeds tolerance (rtol {rtol:g}, atol {atol:g} x {scale:.3g})",
                worst_relative,
            )
    return Comparison(True, worst_abs, worst_rel, relative_error=worst_relative)


def random_inputs_like(example: tuple, seed: int) -> tuple:
    """Seeded random inputs with the example's shapes and dtypes.

    Floats are drawn around the example's own mean and spread; integers uniformly within the
    example's range (token ids stay valid); booleans are kept as given, since a random boolean
    mask can mask a whole row and turn softmax into NaN in eager and graph alike.
    """
    gen = torch.Generator().manual_seed(seed)
    out = []
    for x in example:
        if not isinstance(x, torch.Tensor) or x.numel() == 0:
            out.append(x)
        elif x.is_floating_point():
            base = x.detach().float()
            std = float(base.std()) if base.numel() > 1 else 1.0
            std = std if math.isfinite(std) and std > 0 else 1.0
            y = torch.randn(x.shape, generator=gen) * std + float(base.mean())
            out.append(y.to(dtype=x.dtype, device=x.device))
        elif x.dtype == torch.bool:
            out.append(x.clone())
        else:
            lo, hi = int(x.min()), int(x.max())
            y = torch.randint(lo, hi + 1, x.shape, generator=gen, dtype=torch.int64)
            out.append(y.to(dtype=x.dtype, device=x.device))
    return tuple(out)


def verification_inputs(example: tuple, count: int = 2, seed: int = 0, signature=None, final: bool = False) -> list[tuple]:
    """The example itself plus ``count`` seeded random variants of it, plus, for a ``signature``
    with dynamic sizes, seeded inputs at other points of every range (``accelc.shapes.probe_points``:
    the per-pass set, or with ``final`` the full one)."""
    sets = [tuple(example)] + [random_inputs_like(example, seed + i) for i in range(count)]
    if signature is not None and not signature.is_static:
        from .shapes import inputs_at, probe_points

        sets += [inputs_at(signature, example, point, seed + 100 + i)
                 for i, point in enumerate(probe_points(signature, example, final))]
    return sets


class Verifier:
    """Holds fixed inputs and the reference outputs on them; checks candidates against those."""

    def __init__(self, inputs: list[tuple], reference_outputs: list, fixed: bool = False):
        self.inputs = inputs
        self.reference_outputs = reference_outputs
        self.tolerance_of = tolerance  # replaced when lowering precision on purpose
        # fixed: the references stay (eager's answers) when a candidate is accepted, so that the
        # errors of successive stages cannot add up unseen
        self.fixed = fixed

    @classmethod
    def for_module(cls, module, example: tuple, count: int = 2, seed: int = 0, signature=None,
                   final: bool = False) -> "Verifier":
        inputs = verification_inputs(example, count, seed, signature, final)
        return cls(inputs, [run_detached(module, x) for x in inputs])

    def take(self, indices: list[int], reference_outputs: list | None = None) -> "Verifier":
        """A verifier on some of these input sets, with their references (or ``reference_outputs``)."""
        refs = reference_outputs if reference_outputs is not None else self.reference_outputs
        verifier = Verifier([self.inputs[i] for i in indices], [refs[i] for i in indices], self.fixed)
        verifier.tolerance_of = self.tolerance_of
        return verifier

    def with_tolerance(self, tolerance_of, fixed: bool | None = None) -> "Verifier":
        verifier = Verifier(self.inputs, self.reference_outputs, self.fixed if fixed is None else fixed)
        verifier.tolerance_of = tolerance_of
        return verifier

    def check(self, module) -> tuple[Comparison, list]:
        """Run ``module`` on the fixed inputs; return the worst comparison and its outputs. A
        failure's message names the input shapes it happened at; the sets after it are not run."""
        outputs, worst = [], Comparison(True, 0.0, 0.0)
        for x, ref in zip(self.inputs, self.reference_outputs):
            outputs.append(run_detached(module, x))
            comparison = self._compare_one(x, outputs[-1], ref)
            if not comparison.ok:
                return comparison, outputs
            worst = worst_of(worst, comparison)
        return worst, outputs

    def compare(self, outputs: list) -> Comparison:
        """The worst comparison of ``outputs``, answers on these input sets however they were
        computed, with the references; the first failure, as :meth:`check` gives it."""
        worst = Comparison(True, 0.0, 0.0)
        for x, got, ref in zip(self.inputs, outputs, self.reference_outputs, strict=True):
            comparison = self._compare_one(x, got, ref)
            if not comparison.ok:
                return comparison
            worst = worst_of(worst, comparison)
        return worst

    def _compare_one(self, inputs: tuple, got, ref) -> Comparison:
        comparison = compare_outputs(got, ref, self.tolerance_of)
        if not comparison.ok:
            comparison.message = f"at input shapes {shapes_of(inputs)}: {comparison.message}"
        return comparison

    def accept(self, outputs: list) -> None:
        """Make ``outputs`` the new reference (the graph they came from was accepted), unless the
        references are :attr:`fixed`."""
        if not self.fixed:
            self.reference_outputs = outputs


def per_pass_indices(reference: "Verifier") -> list[int]:
    """The sets each pass is checked on: the example, one random variant, and up to two probes of
    other shapes no larger than three times the example (the final check covers the rest)."""
    size = lambda x: sum(t.numel() for t in x)  # noqa: E731
    budget = max(size(reference.inputs[0]), 16) * 3
    probes = [i for i in range(4, len(reference.inputs)) if size(reference.inputs[i]) <= budget]
    return [0, 1][: len(reference.inputs)] + probes[:2]


def shapes_of(inputs: tuple) -> str:
    """``(1, 64), (1, 64)``: the shapes of an input set, for messages."""
    return ", ".join(str(tuple(x.shape)) if isinstance(x, torch.Tensor) else repr(x) for x in inputs)


def run_detached(module, inputs: tuple):
    with torch.inference_mode():
        return module(*inputs)
