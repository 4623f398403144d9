"""Which input sizes may vary, and the signature an accelerated module serves.

    example inputs ─candidate_dims─► torch.export with Dim.AUTO on each candidate
       captured graph ─Signature.from_graph─► per input: dtype, rank, static sizes, named symbols
       Signature ─probe_sets─► inputs at other points of every dynamic range (for verification)
       each call ─Signature.mismatch─► None, or one line naming the input, what was expected, what came

Candidates (the *default* dynamic axes, inferred from the example):
- ``batch``: dim 0 of every tensor input;
- ``seq``: dim 1 of integer or boolean rank-2 inputs (token ids, attention masks);
- ``height``/``width``: dims 2 and 3 of floating-point rank-4 inputs (images).
torch.export confirms each one: a dim the model pins (a Linear after a flatten pins H and W) comes
back as a plain int and stays static. Sizes the graph ties together (the batch of ``input_ids``
and of ``attention_mask``) come back as one symbol, so the guard checks they agree.

torch.export specialises sizes 0 and 1, so a candidate of size 1 in the example is grown to 2 (the
tensor repeated along it) for the capture; size 1 is then verified like any other point.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from .errors import UserInputError

AXES = ("batch", "seq", "height", "width")
UNBOUNDED = None  # an upper bound torch.export leaves open (int_oo)


def axis_of(x: torch.Tensor, dim: int) -> str | None:
    """The default dynamic axis ``dim`` of input ``x`` is, or None when it stays static by default."""
    if dim == 0:
        return "batch"
    if x.dim() == 2 and dim == 1 and (x.dtype == torch.bool or not (x.is_floating_point() or x.is_complex())):
        return "seq"
    if x.dim() == 4 and x.is_floating_point() and dim in (2, 3):
        return "height" if dim == 2 else "width"
    return None


# ── the user's choice: dynamic=None (infer), False (static), or {"seq": (1, 512), "height": False} ──

@dataclass(frozen=True)
class DynamicChoice:
    """What the user asked for: which axes may vary (None: infer) and their ranges."""

    static: bool = False
    ranges: dict = field(default_factory=dict)  # axis -> (lo, hi | None) or False (keep static)

    def wants(self, axis: str | None) -> bool:
        return not self.static and axis is not None and self.ranges.get(axis, True) is not False

    def as_dict(self) -> dict:
        if self.static:
            return {"static": True}
        return {axis: (list(value) if value else value) for axis, value in self.ranges.items()}


_RANGE = re.compile(r"^\s*(\d+)?\s*\.\.\s*(\d+)?\s*$")


def parse_dynamic(dynamic) -> DynamicChoice:
    """``dynamic`` as given to :func:`accelc.accelerate` or ``--dynamic``; bad values are the user's error.

    Accepted: None or True (infer), False (every shape static), a dict such as
    ``{"batch": (1, 64), "seq": "1..512", "height": False}``, or the CLI's string form
    ``"batch=1..64,seq=..512,height=static"``.
    """
    if dynamic is None or dynamic is True:
        return DynamicChoice()
    if dynamic is False:
        return DynamicChoice(static=True)
    if isinstance(dynamic, str):
        items = {}
        for part in filter(None, (p.strip() for p in dynamic.split(","))):
            axis, sep, value = part.partition("=")
            if not sep:
                raise UserInputError(f"--dynamic {part!r}: write AXIS=LO..HI or AXIS=static, e.g. seq=1..512")
            items[axis.strip()] = value.strip()
        dynamic = items
    if not isinstance(dynamic, dict):
        raise UserInputError(f"dynamic= takes None, True, False or a dict such as {{'seq': (1, 512)}}, got {type(dynamic).__name__}")
    ranges = {}
    for axis, value in dynamic.items():
        if axis not in AXES:
            raise UserInputError(f"unknown dynamic axis {axis!r}; choose from {', '.join(AXES)}")
        ranges[axis] = _parse_range(axis, value)
    return DynamicChoice(ranges=ranges)


def _parse_range(axis: str, value):
    if value is False or value in ("static", "false", "no"):
        return False
    if value is True or value in ("dynamic", "true", "yes", "auto"):
        return (1, UNBOUNDED)
    if isinstance(value, str):
        match = _RANGE.match(value)
        if not match:
            raise UserInputError(f"dynamic {axis}={value!r}: write LO..HI (either side may be left out) or static")
        value = (int(match.group(1) or 1), int(match.group(2)) if match.group(2) else UNBOUNDED)
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise UserInputError(f"dynamic {axis}={value!r}: give a (lo, hi) pair, a string 'lo..hi', True or False")
    lo, hi = value
    if not isinstance(lo, int) or lo < 1 or (hi is not None and (not isinstance(hi, int) or hi < lo)):
        raise UserInputError(f"dynamic {axis}={value!r}: need 1 <= lo <= hi (hi may be None for no upper bound)")
    return (lo, hi)


def capture_dims(inputs: tuple, choice: DynamicChoice) -> list[dict[int, str]]:
    """Per input, the candidate dims to capture as dynamic: {dim: axis}."""
    out = []
    for x in inputs:
        dims = {}
        if isinstance(x, torch.Tensor):
            for d in range(x.dim()):
                axis = axis_of(x, d)
                if choice.wants(axis):
                    dims[d] = axis
        out.append(dims)
    return out


def auto_dynamic_shapes(dims: list[dict[int, str]]):
    """torch.export's ``dynamic_shapes`` for :func:`capture_dims`'s choice: ``Dim.AUTO`` on each one,
    so the graph decides what really varies and which sizes are tied."""
    auto = torch.export.Dim.AUTO
    return tuple({d: auto for d in per} or None for per in dims)


def grow(inputs: tuple, dims: list[dict[int, str]]) -> tuple:
    """Each candidate dim of size 1 repeated to size 2 (torch.export would specialise it)."""
    out = []
    for x, per in zip(inputs, dims):
        for d in per:
            if x.shape[d] == 1:
                x = torch.cat([x, x], dim=d)
        out.append(x)
    return tuple(out)


# ── the signature: what a captured graph serves, and the check each call goes through ──

class Mismatch(str):
    """What :meth:`Signature.mismatch` found, in one line; ``out_of_range`` names the symbol when
    the call's only fault is a size outside its range."""

    out_of_range: str | None = None
    bad_values: bool = False  # an index input's values past its table
    untied: bool = False  # two sizes verified only equal differ


@dataclass
class InputSpec:
    name: str
    dtype: torch.dtype | None  # None: a non-tensor input, compared by value
    shape: tuple  # per dim: an int (static) or a symbol name (dynamic)
    value: object = None  # the value of a non-tensor input
    values_below: int | None = None  # an index tensor's values must lie in 0..values_below-1 (accelc.index_bounds)

    def describe(self, signature: "Signature") -> str:
        if self.dtype is None:
            return f"the value {self.value!r}"
        dims = ", ".join(str(d) for d in self.shape)
        ranges = [signature.describe_symbol(d) for d in dict.fromkeys(d for d in self.shape if isinstance(d, str))]
        if self.values_below is not None:
            ranges.append(f"values in 0..{self.values_below - 1}")
        where = f" with {', '.join(ranges)}" if ranges else ""
        return f"{str(self.dtype).replace('torch.', '')} of shape ({dims}){where}"


@dataclass
class Signature:
    """The calls an accelerated module answers: input count, dtypes, ranks, static sizes, and a
    named symbol with a range for each dynamic size (a symbol shared by two dims ties them).

    ``ties``: groups of symbols the graph leaves independent but that were equal at every size
    verified, such as the batch of ``input_ids`` and the batch of an ``attention_mask`` the model
    would broadcast (:func:`verified_ties`). A call where they differ was never checked: it is
    outside the signature.
    """

    inputs: list[InputSpec]
    ranges: dict[str, tuple]  # symbol -> (lo, hi | None)
    ties: tuple = ()  # tuples of symbols

    def __post_init__(self):
        self._compile()

    # The check sits on every call: precompute per input what to compare, in the cheapest form.
    def _compile(self):
        self._count = len(self.inputs)
        checks = []
        for spec in self.inputs:
            static = tuple((d, s) for d, s in enumerate(spec.shape) if isinstance(s, int))
            # (dim, symbol, lo, hi): the range goes with the first dim of its symbol that is seen
            dynamic = tuple((d, s, *self.ranges.get(s, (1, None))) for d, s in enumerate(spec.shape) if isinstance(s, str))
            full = tuple(spec.shape) if not dynamic else None
            checks.append((spec.dtype, len(spec.shape), full, static, dynamic))
        self._checks = checks
        self._value_checks = tuple((i, spec.values_below) for i, spec in enumerate(self.inputs)
                                   if spec.values_below is not None)
        self.ties = tuple(tuple(group) for group in self.ties)

    @property
    def is_static(self) -> bool:
        return not self.ranges

    def mismatch(self, args: tuple) -> str | None:
        """None when ``args`` is a call this signature serves; else what is wrong, in one line."""
        if len(args) != self._count:
            return f"{len(args)} inputs given where the model was captured with {self._count}"
        seen: dict[str, int] = {}
        for index, (x, (dtype, rank, full, static, dynamic)) in enumerate(zip(args, self._checks)):
            if dtype is None:
                if isinstance(x, torch.Tensor) or x != self.inputs[index].value:
                    return self._wrong(index, x)
                continue
            if not isinstance(x, torch.Tensor) or x.dtype != dtype:
                return self._wrong(index, x)
            shape = x.shape
            if full is not None:
                if shape != full:
                    return self._wrong(index, x)
                continue
            if len(shape) != rank:
                return self._wrong(index, x)
            for d, s in static:  # plain loops: a generator here costs as much as the rest of the check
                if shape[d] != s:
                    return self._wrong(index, x)
            for d, symbol, lo, hi in dynamic:
                size = shape[d]
                earlier = seen.get(symbol)
                if earlier is None:
                    if size < lo or (hi is not None and size > hi):
                        return self._wrong(index, x, f"{symbol} {size} is outside {self.describe_symbol(symbol)}",
                                           out_of_range=symbol)
                    seen[symbol] = size
                elif earlier != size:
                    return self._wrong(index, x, f"its {symbol} is {size} where an earlier input's is {earlier}")
        for group in self.ties:
            if len({seen[symbol] for symbol in group}) > 1:
                return self._untied(args, group, seen)
        for index, below in self._value_checks:
            x = args[index]
            if x.numel():
                least, most = (int(v) for v in torch.aminmax(x))
                if least < 0 or most >= below:
                    message = self._wrong(index, x, f"its values are in {least}..{most}, past the "
                                                    f"{below} rows of the table they index")
                    message.bad_values = True
                    return message
        return None

    def _wrong(self, index: int, x, detail: str = "", out_of_range: str | None = None) -> "Mismatch":
        spec = self.inputs[index]
        got = (f"{str(x.dtype).replace('torch.', '')} of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor)
               else f"{type(x).__name__} {x!r}")
        message = Mismatch(f"input {index} ({spec.name}): expected {spec.describe(self)}, got {got}" +
                           (f"; {detail}" if detail else ""))
        message.out_of_range = out_of_range
        return message

    def _untied(self, args: tuple, group: tuple, seen: dict) -> "Mismatch":
        first, *rest = group
        other = next(s for s in rest if seen[s] != seen[first])
        index = next(i for i, spec in enumerate(self.inputs) if other in spec.shape)
        message = self._wrong(index, args[index], f"its {other} is {seen[other]} where {first} is {seen[first]}: "
                                                  f"accelc verified these sizes only equal")
        message.untied = True
        return message

    def sizes_of(self, inputs: tuple) -> dict[str, int]:
        """{symbol: size} of inputs laid out as this signature says (the first dim of each symbol)."""
        sizes = {}
        for spec, x in zip(self.inputs, inputs):
            for d, s in enumerate(spec.shape):
                if isinstance(s, str):
                    sizes.setdefault(s, int(x.shape[d]))
        return sizes

    def describe_symbol(self, symbol: str) -> str:
        lo, hi = self.ranges[symbol]
        return f"{symbol} in {lo}..{hi if hi is not None else ''}"

    # ── derived forms ──

    def dynamic_shapes(self, named: bool = True):
        """torch.export's ``dynamic_shapes`` for exports of the optimised graph (model.pt2, ONNX), or
        None when every size is static.

        ``named``: one ``Dim`` per symbol, with its range. torch.export checks a named range
        strictly: a guard the capture took for granted (a pooled size that is not 1 for the
        smallest images) fails it, although verification covered those sizes; ``named=False``
        gives ``Dim.AUTO`` on the same dims, which takes such guards as the capture did.
        """
        if self.is_static:
            return None
        dims = {}
        for symbol, (lo, hi) in self.ranges.items():
            if not named:
                dims[symbol] = torch.export.Dim.AUTO
            else:
                dims[symbol] = torch.export.Dim(symbol, min=lo) if hi is None else torch.export.Dim(symbol, min=lo, max=hi)
        return tuple({d: dims[s] for d, s in enumerate(spec.shape) if isinstance(s, str)} or None for spec in self.inputs)

    def pinned_by(self, placeholders: list[torch.fx.Node]) -> list[str]:
        """The dynamic sizes of this signature that a graph's input ``placeholders`` hold as plain ints."""
        pinned = []
        for spec, node in zip(self.inputs, placeholders):
            val = node.meta.get("val")
            for d, s in enumerate(spec.shape):
                if isinstance(s, str) and val is not None and not isinstance(val.shape[d], torch.SymInt):
                    pinned.append(f"{spec.name}.{s}")
        return pinned

    def export_inputs(self, example: tuple) -> tuple:
        """``example`` with every dynamic size 1 grown to 2, for torch.export (which pins sizes 0/1)."""
        return grow(example, [{d: s for d, s in enumerate(spec.shape) if isinstance(s, str)} for spec in self.inputs])

    def as_dict(self) -> dict:
        return {
            "inputs": [{"name": s.name, "dtype": str(s.dtype).replace("torch.", "") if s.dtype else None,
                        "shape": list(s.shape), **({"value": s.value} if s.dtype is None else {}),
                        **({"values_below": s.values_below} if s.values_below is not None else {})} for s in self.inputs],
            "dynamic": {symbol: [lo, hi] for symbol, (lo, hi) in self.ranges.items()},
            **({"ties": [list(group) for group in self.ties]} if self.ties else {}),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Signature":
        inputs = [InputSpec(item["name"], getattr(torch, item["dtype"]) if item["dtype"] else None,
                            tuple(item["shape"]), item.get("value"), item.get("values_below")) for item in data["inputs"]]
        return cls(inputs, {symbol: (lo, hi) for symbol, (lo, hi) in data.get("dynamic", {}).items()},
                   tuple(tuple(group) for group in data.get("ties", ())))

    def with_range(self, symbol: str, lo: int, hi) -> "Signature":
        """The same signature with ``symbol`` in lo..hi; a range of one size becomes a static size."""
        ranges = dict(self.ranges)
        if lo != hi:
            ranges[symbol] = (lo, hi)
            return Signature(self.inputs, ranges, self.ties)
        del ranges[symbol]
        inputs = [InputSpec(s.name, s.dtype, tuple(lo if d == symbol else d for d in s.shape), s.value, s.values_below)
                  for s in self.inputs]
        ties = tuple(g for g in (tuple(x for x in group if x != symbol) for group in self.ties) if len(g) > 1)
        return Signature(inputs, ranges, ties)


def verified_ties(signature: Signature, points: list[dict[str, int]]) -> Signature:
    """``signature`` with :attr:`Signature.ties`: symbols of one axis in different inputs (``batch``
    and ``batch_1``) that had the same size at every verified point. Symbols of different axes
    (height and width) are sizes of different things, not a pair a call may break by mistake."""
    groups: dict[str, list[str]] = {}
    for symbol in signature.ranges:
        groups.setdefault(re.sub(r"_\d+$", "", symbol), []).append(symbol)
    ties = []
    for symbols in groups.values():
        together = [s for s in symbols[1:] if points and all(p.get(s) == p.get(symbols[0]) for p in points)]
        if together:
            ties.append((symbols[0], *together))
    return Signature(signature.inputs, signature.ranges, tuple(ties)) if ties else signature


def static_signature(names: list[str], inputs: tuple) -> Signature:
    """Every size as in the example (``dynamic=False``, or a graph captured static)."""
    specs = [InputSpec(name, x.dtype, tuple(x.shape)) if isinstance(x, torch.Tensor) else InputSpec(name, None, (), x)
             for name, x in zip(names, inputs)]
    return Signature(specs, {})


def placeholder_names(gm: torch.fx.GraphModule) -> list[str]:
    return [n.name for n in gm.graph.nodes if n.op == "placeholder"]


def signature_from_graph(gm: torch.fx.GraphModule, example: tuple, dims: list[dict[int, str]],
                         choice: DynamicChoice) -> Signature:
    """Read which candidate dims stayed symbolic in a captured graph; name them by axis and bound
    them by what torch.export derived, narrowed by the user's ranges.

    A dim whose size is an expression of symbols (``2*s0``) rather than one symbol is kept static,
    and so are the symbols inside it: the guard then never lets those sizes move.
    """
    import sympy

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    ranges = gm.meta.get("accelc_ranges", {})
    pinned: set = set()
    raw = []  # per input: per dim int | sympy.Symbol
    for node, x in zip(placeholders, example):
        val = node.meta.get("val")
        if not isinstance(x, torch.Tensor) or not isinstance(val, torch.Tensor):
            raw.append(None)
            continue
        dims_here = []
        for d, size in enumerate(val.shape):
            expr = size.node.expr if isinstance(size, torch.SymInt) else int(size)
            if isinstance(expr, sympy.Expr) and not isinstance(expr, sympy.Symbol):
                pinned |= expr.free_symbols if not expr.is_number else set()
                expr = int(x.shape[d]) if not expr.is_number else int(expr)
            dims_here.append(expr)
        raw.append(dims_here)
    names: dict = {}  # sympy symbol -> readable name
    specs, out_ranges = [], {}
    for index, (node, x, per) in enumerate(zip(placeholders, example, raw)):
        if per is None:
            specs.append(InputSpec(node.name, None, (), x) if not isinstance(x, torch.Tensor)
                         else InputSpec(node.name, x.dtype, tuple(x.shape)))
            continue
        shape = []
        for d, expr in enumerate(per):
            if isinstance(expr, int) or expr in pinned:
                shape.append(int(x.shape[d]))
                continue
            if expr not in names:
                axis = dims[index].get(d) or "dim"
                taken = set(names.values())
                names[expr] = axis if axis not in taken else next(f"{axis}_{k}" for k in range(1, 99) if f"{axis}_{k}" not in taken)
                lo, hi = ranges.get(str(expr), (2, UNBOUNDED))
                lo = 1 if lo <= 2 else lo  # torch.export's 0/1 rule; size 1 is verified like any other point
                wanted = choice.ranges.get(axis)
                if isinstance(wanted, tuple):
                    lo, hi = max(lo, wanted[0]), (wanted[1] if hi is None else hi if wanted[1] is None else min(hi, wanted[1]))
                out_ranges[names[expr]] = (lo, hi)
            shape.append(names[expr])
        specs.append(InputSpec(node.name, x.dtype, tuple(shape)))
    return Signature(specs, out_ranges)


# ── verification points ──

def probe_points(signature: Signature, example: tuple, final: bool) -> list[dict[str, int]]:
    """Sizes to verify at, as {symbol: size} points (the example's own point is checked anyway).

    The final check covers every range: all symbols at their smallest; batch 3 with the others in
    the middle; batch 8 with the others as in the example; batch 1 with the others at their
    largest (or twice the example where the range is open). The per-pass check, paid after every
    pass, takes the two cheap ones: all at the smallest, and batch 3 with the others no larger
    than the example.
    """
    if signature.is_static:
        return []
    at_example = signature.sizes_of(example)
    lo = {s: r[0] for s, r in signature.ranges.items()}
    hi = {s: (r[1] if r[1] is not None else max(2 * at_example[s], 8 if s.startswith("batch") else r[0]))
          for s, r in signature.ranges.items()}

    def point(batch: int | None, other) -> dict:
        out = {}
        for s in signature.ranges:
            value = batch if s.startswith("batch") and batch is not None else other(s)
            out[s] = min(max(value, lo[s]), hi[s])
        return out

    mid = {s: (lo[s] + hi[s]) // 2 for s in signature.ranges}
    points = [point(None, lambda s: lo[s])]
    if final:
        points += [point(3, lambda s: mid[s]), point(8, lambda s: at_example[s]), point(1, lambda s: hi[s])]
    else:
        points.append(point(3, lambda s: min(mid[s], at_example[s])))
    unique = []
    for p in points:
        if p not in unique and p != at_example:
            unique.append(p)
    return unique




def inputs_at(signature: Signature, example: tuple, sizes: dict[str, int], seed: int) -> tuple:
    """Seeded inputs like ``example`` with every symbol at ``sizes``: floats drawn around the
    example's mean and spread, integers within its range, booleans tiled from the example."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for spec, x in zip(signature.inputs, example):
        if not isinstance(x, torch.Tensor):
            out.append(x)
            continue
        shape = [sizes[s] if isinstance(s, str) else s for s in spec.shape]
        if x.dtype == torch.bool or x.numel() == 0:
            out.append(_tile(x, shape))
        elif x.is_floating_point():
            base = x.detach().float()
            std = float(base.std()) if base.numel() > 1 else 1.0
            std = std if std == std and 0 < std < float("inf") else 1.0
            out.append((torch.randn(shape, generator=gen) * std + float(base.mean())).to(x.dtype).to(x.device))
        else:
            low, high = int(x.min()), int(x.max())
            out.append(torch.randint(low, high + 1, shape, generator=gen, dtype=torch.int64).to(x.dtype).to(x.device))
    return tuple(out)


def _tile(x: torch.Tensor, shape: list[int]) -> torch.Tensor:
    if x.numel() == 0:
        return torch.zeros(shape, dtype=x.dtype, device=x.device)
    reps = [-(-want // have) for want, have in zip(shape, x.shape)]
    tiled = x.repeat(*reps)
    return tiled[tuple(slice(0, n) for n in shape)].contiguous()


__all__ = ["Signature", "InputSpec", "DynamicChoice", "parse_dynamic", "capture_dims", "auto_dynamic_shapes", "grow",
           "signature_from_graph", "static_signature", "probe_points", "inputs_at", "axis_of", "AXES"]
