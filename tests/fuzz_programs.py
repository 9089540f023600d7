"""Random programs built from the op table, for the fuzzing test (tests/test_fuzz_programs.py).

`program(seed, dtype)` draws one program from a seeded NumPy generator: one or two
inputs of mutually broadcastable shapes (size-0 and size-1 axes included), then a
few steps, each one primitive of `compiler.ops` applied with `bind` to earlier
values. Which primitives exist comes from the registry itself: every elementwise op
with a derivative (its arity read off its code template), every reduction, the
layout ops, matmul and where; a new op joins the fuzzing without new test code.
Shapes are worked out with each op's own shape rule, so only valid programs are
made. Operands that an op needs positive (log, sqrt, a divisor, a power's base) or
small (tan) are squashed into range first, with more primitives.

A program is plain data, printable as the steps it runs (`str(program)`), so a
failing seed shows what it computed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from compiler import ops
from compiler.ir import TensorType
from compiler.ops import bind

# Operand domains: op -> {operand position: "pos" (> 0) | "small" (|x| < 1)}.
DOMAINS = {"log": {0: "pos"}, "log1p": {0: "pos"}, "sqrt": {0: "pos"}, "div": {1: "pos"},
           "pow": {0: "pos"}, "tan": {0: "small"}, "arctanh": {0: "small"},
           "arcsin": {0: "small"}, "arccos": {0: "small"}}
# Elementwise ops whose values blow up fast: their operand goes through tanh first.
GROWING = {"exp", "expm1", "sinh", "cosh", "pow"}


def _arity(code: str) -> int:
    return max(int(k) for k in re.findall(r"\{(\d+)\}", code)) + 1


def _elementwise(arity: int) -> list[str]:
    return sorted(name for name, op in ops.REGISTRY.items()
                  if op.kind == "elementwise" and op.vjp is not None
                  and name not in ("where", "cast") and _arity(op.code) == arity)


UNARY, BINARY = _elementwise(1), _elementwise(2)
REDUCTIONS = sorted(name for name, op in ops.REGISTRY.items() if op.kind == "reduce")
COMPARISONS = ["lt", "gt"]
KINDS = ["unary", "unary", "binary", "binary", "reduce", "layout", "matmul", "where"]


@dataclass
class Step:
    op: str
    operands: tuple  # value indices (ints) or Python floats
    attrs: dict = field(default_factory=dict)

    def __str__(self) -> str:
        args = [f"v{x}" if isinstance(x, int) else repr(x) for x in self.operands]
        args += [f"{k}={v!r}" for k, v in self.attrs.items()]
        return f"{self.op}({', '.join(args)})"


@dataclass
class Program:
    seed: int
    dtype: np.dtype
    input_shapes: list[tuple]
    steps: list[Step] = field(default_factory=list)
    types: list[TensorType] = field(default_factory=list)  # of every value, inputs first

    def __str__(self) -> str:
        lines = [f"v{i}: {t}" for i, t in enumerate(self.types[:len(self.input_shapes)])]
        lines += [f"v{len(self.input_shapes) + k} = {s}" for k, s in enumerate(self.steps)]
        return "\n".join(lines)

    def inputs(self) -> list[np.ndarray]:
        rng = np.random.default_rng(self.seed + 1)
        return [rng.uniform(0.3, 1.2, shape).astype(self.dtype)
                * rng.choice(np.array([-1, 1], self.dtype), shape) for shape in self.input_shapes]

    def results(self) -> list[int]:
        """The float values no step uses: the loss is made of them all, so nothing is dead."""
        used = {x for step in self.steps for x in step.operands if isinstance(x, int)}
        first = len(self.input_shapes)
        return [i for i in range(first, len(self.types))
                if i not in used and self.types[i].dtype == self.dtype] or [len(self.types) - 1]

    def weights(self) -> list[np.ndarray]:
        """The loss is the sum of each result times weights: a plain sum would hide permuted
        elements."""
        rng = np.random.default_rng(self.seed + 2)
        return [rng.normal(size=self.types[i].shape).astype(self.dtype) for i in self.results()]

    def function(self):
        """The program as a NumPy function of its inputs (traceable: it binds primitives)."""
        weights, results = self.weights(), self.results()

        def run(*inputs):
            values = list(inputs)
            for step in self.steps:
                operands = [values[x] if isinstance(x, int) else x for x in step.operands]
                values.append(bind(step.op, *operands, **step.attrs))
            return sum(np.sum(values[i] * w) for i, w in zip(results, weights))

        run.__name__ = f"fuzz_{self.seed}"
        return run


class _Builder:
    def __init__(self, seed: int, dtype) -> None:
        self.rng = np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)
        self.program = Program(seed, self.dtype, self._input_shapes())
        self.program.types = [TensorType(self.dtype, s) for s in self.program.input_shapes]

    def _input_shapes(self) -> list[tuple]:
        """One or two shapes that broadcast together, with size-0 and size-1 axes now and then."""
        rng = self.rng
        ndim = int(rng.integers(0, 4))
        base = [int(rng.choice([0, 1, 2, 3], p=[0.06, 0.24, 0.4, 0.3])) for _ in range(ndim)]
        shapes = [tuple(base)]
        if rng.random() < 0.6:
            other = [1 if rng.random() < 0.3 else d for d in base]
            shapes.append(tuple(other[int(rng.integers(0, ndim + 1)):]))
        return shapes

    # --- building values ------------------------------------------------------------------
    def add(self, op: str, operands: tuple, **attrs) -> int | None:
        """Append `op(*operands)` if its shape rule accepts it; the new value's index."""
        if any(x is None for x in operands):  # an operand that could not be built
            return None
        types = [self.program.types[x] if isinstance(x, int) else TensorType(self.dtype, ())
                 for x in operands]
        try:
            result = ops.get(op).infer(*types, **attrs)
        except (ops.ShapeError, ValueError, TypeError, IndexError):
            return None
        if result.dtype != self.dtype and result.dtype != np.bool_:
            return None
        self.program.steps.append(Step(op, operands, attrs))
        self.program.types.append(result)
        return len(self.program.types) - 1

    def squashed(self, x: int | None, domain: str) -> int | None:
        """`x` brought into `domain`: x * x + 0.5 (> 0), or tanh(x) * 0.9 (|.| < 1)."""
        if domain == "pos":
            return self.add("add", (self.add("mul", (x, x)), 0.5))
        return self.add("mul", (self.add("tanh", (x,)), 0.9))

    def pick(self) -> int:
        """A float value, the recent ones more often."""
        floats = [i for i, t in enumerate(self.program.types) if t.dtype == self.dtype]
        return floats[min(len(floats) - 1, int(self.rng.geometric(0.5)) - 1)] \
            if self.rng.random() < 0.7 else int(self.rng.choice(floats))

    def elementwise(self, op: str, operands: list) -> int | None:
        """`op` on operands brought into its domain (Python floats already are: 0.5 to 1.5)."""
        if op in GROWING and isinstance(operands[0], int):
            operands[0] = self.add("tanh", (operands[0],))
        for position, domain in DOMAINS.get(op, {}).items():
            if position < len(operands) and isinstance(operands[position], int):
                operands[position] = self.squashed(operands[position], domain)
        return self.add(op, tuple(operands))

    def step(self) -> None:
        rng = self.rng
        kind = str(rng.choice(KINDS))
        x = self.pick()
        shape = self.program.types[x].shape
        if kind == "unary":
            self.elementwise(str(rng.choice(UNARY)), [x])
        elif kind == "binary":
            other = float(rng.uniform(0.5, 1.5)) if rng.random() < 0.2 else self.pick()
            operands = [x, other] if rng.random() < 0.5 else [other, x]  # a weak scalar, too
            self.elementwise(str(rng.choice(BINARY)), operands)
        elif kind == "reduce":
            axes = tuple(a for a in range(len(shape)) if rng.random() < 0.5)
            op = str(rng.choice(REDUCTIONS))
            if op in ("max", "min") and any(shape[a] == 0 for a in axes):
                return  # NumPy refuses an empty max, and so would a user's program
            if op == "prod":
                x = self.squashed(x, "small")  # products of many values underflow to 0
            self.add(op, (x,), axes=axes, keepdims=bool(rng.random() < 0.5))
        elif kind == "layout":
            self.layout(x, shape)
        elif kind == "matmul":
            self.add("matmul", (x, self.pick()))
        else:
            condition = self.add(str(rng.choice(COMPARISONS)), (x, self.pick()))
            if condition is not None:
                self.add("where", (condition, self.pick(), self.pick()))

    def layout(self, x: int, shape: tuple) -> None:
        rng = self.rng
        choice = int(rng.integers(0, 5))
        if choice == 0 and shape:
            self.add("transpose", (x,), perm=tuple(int(p) for p in rng.permutation(len(shape))))
        elif choice == 1:  # squeeze a size-1 axis, or add one
            ones = [a for a, d in enumerate(shape) if d == 1]
            if ones and rng.random() < 0.5:
                a = int(rng.choice(ones))
                new = shape[:a] + shape[a + 1:]
            else:
                a = int(rng.integers(0, len(shape) + 1))
                new = shape[:a] + (1,) + shape[a:]
            self.add("reshape", (x,), shape=new)
        elif choice == 2:
            self.add("reshape", (x,), shape=(int(np.prod(shape)),))
        elif choice == 3:  # broadcast: stretch size-1 axes, maybe add a leading one
            lead = (int(rng.choice([0, 1, 2])),) if rng.random() < 0.5 else ()
            new = lead + tuple(int(rng.choice([1, 2])) if d == 1 else d for d in shape)
            self.add("broadcast_to", (x,), shape=new)
        elif shape:
            index = []
            for d in shape:  # mostly a non-empty range, forwards or backwards
                start = int(rng.integers(0, d)) if d else 0
                stop = int(rng.integers(start + 1, d + 1)) if d > start else start
                step = int(rng.choice([1, 1, 2, -1]))
                if step < 0:
                    index.append(slice(stop - 1, start - 1 if start else None, -1).indices(d))
                else:
                    index.append(slice(start, stop, step).indices(d))
            self.add("slice", (x,), index=tuple(index))


def program(seed: int, dtype=np.float64, max_steps: int = 6) -> Program:
    """The program of `seed`: 1 to `max_steps` steps ending in a float value."""
    builder = _Builder(seed, dtype)
    for _ in range(int(builder.rng.integers(1, max_steps + 1))):
        builder.step()
    types = builder.program.types
    if types[-1].dtype != builder.dtype:  # ended on a comparison: use it
        builder.add("where", (len(types) - 1, builder.pick(), 0.0))
    return builder.program
