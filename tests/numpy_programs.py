"""Random NumPy programs as users write them, for tests/test_fuzz_numpy.py.

Where tests/fuzz_programs.py draws programs of the compiler's primitives, these are drawn
from NumPy's own surface: `np.sum(x, axis=(0, 2), keepdims=True)`, `np.einsum`, fancy
indexing, `np.pad`, `np.median`, ... each a composite the tracer lowers in its own way.
NumPy is the only shape rule: `program(seed)` draws the inputs first, then each step (an
entry of ENTRIES with its constants drawn: axes, shapes, indices) is run by NumPy on the
values so far, and a step NumPy refuses, or whose values are not finite, or that lands
near a kink of its function (a tie for max or sort, a zero for abs), is drawn again. So
every program is valid NumPy, and finite differences are meaningful at its inputs.

A program is plain data, printable as the NumPy it runs (`str(program)`), so a failing
seed shows what it computed. Its loss is `np.sum(last * weights)` with fixed weights.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# A candidate step: (text with {0}, {1} for its operands, the function of its operands).
Candidate = tuple[str, Callable[..., np.ndarray]]
KINK_MARGIN = 1e-3  # how far a kinked function's operands stay from its kinks


def _axis(rng, ndim: int):
    """None, one axis (maybe negative) or a tuple of axes of an array of `ndim` axes."""
    if ndim == 0 or rng.random() < 0.25:
        return None
    if ndim > 1 and rng.random() < 0.3:
        k = int(rng.integers(2, ndim + 1))
        return tuple(sorted(int(a) for a in rng.choice(ndim, size=k, replace=False)))
    axis = int(rng.integers(ndim))
    return axis - ndim if rng.random() < 0.3 else axis


def _pick(rng, options: list):
    """One of `options`, uniformly."""
    return options[int(rng.integers(len(options)))]


def _one_axis(rng, ndim: int) -> int:
    axis = int(rng.integers(ndim))
    return axis - ndim if rng.random() < 0.3 else axis


def _apart(x: np.ndarray, axis) -> bool:
    """Whether no two elements of `x` along `axis` (all of them: None) are within the margin:
    max, sort and median have no tie to break."""
    if x.size < 2:
        return True
    lanes = np.sort(x.reshape(-1) if axis is None else np.moveaxis(x, axis, -1), axis=-1)
    return bool(np.all(np.diff(lanes, axis=-1) > KINK_MARGIN))


def _off_zero(*xs: np.ndarray) -> bool:
    return all(np.all(np.abs(x) > KINK_MARGIN) for x in xs)


# -- entries: each draws a candidate step from the operands' example values --------------
def elementwise(rng, x) -> Candidate:
    return _pick(rng, [
        ("np.tanh({0})", np.tanh),
        ("np.sin({0})", np.sin),
        ("np.exp(np.tanh({0}))", lambda a: np.exp(np.tanh(a))),
        ("np.log1p({0} ** 2)", lambda a: np.log1p(a ** 2)),
        ("np.sqrt({0} * {0} + 1.0)", lambda a: np.sqrt(a * a + 1.0)),
        ("np.arctan({0})", np.arctan),
        ("-{0} * 0.5", lambda a: -a * 0.5),
        ("np.square({0})", np.square),
        ("F.sigmoid({0} * 3.0)", lambda a: _functional().sigmoid(a * 3.0)),
        ("F.softplus({0})", lambda a: _functional().softplus(a)),
        ("np.expm1(np.tanh({0}))", lambda a: np.expm1(np.tanh(a))),
        ("np.cbrt({0} ** 2 + 1.0)", lambda a: np.cbrt(a ** 2 + 1.0)),
    ])


def kinked(rng, x) -> Candidate | None:
    choice = int(rng.integers(3))
    if choice == 0:
        return ("np.abs({0})", np.abs) if _off_zero(x) else None
    if choice == 1:
        lo = float(np.round(rng.normal() * 0.5, 2))
        ok = _off_zero(x - lo, x - lo - 0.7)
        return (f"np.clip({{0}}, {lo}, {lo + 0.7})", lambda a: np.clip(a, lo, lo + 0.7)) \
            if ok else None
    return ("np.maximum({0}, 0.1)", lambda a: np.maximum(a, 0.1)) if _off_zero(x - 0.1) else None


def binary(rng, x, y) -> Candidate | None:
    choice = int(rng.integers(6))
    if choice == 5:  # kinked: the operands must not be near a tie
        a, b = np.broadcast_arrays(x, y)  # ValueError if they do not broadcast: drawn again
        return ("np.minimum({0}, {1})", np.minimum) if _off_zero(a - b) else None
    return [
        ("{0} + {1}", np.add),
        ("{0} - 2.0 * {1}", lambda a, b: a - 2.0 * b),
        ("{0} * {1}", np.multiply),
        ("{0} / (1.0 + {1} ** 2)", lambda a, b: a / (1.0 + b ** 2)),
        ("np.hypot({0}, {1})", np.hypot),
    ][choice]


def reduction(rng, x) -> Candidate | None:
    axis, keepdims = _axis(rng, x.ndim), bool(rng.random() < 0.4)
    kw = f"axis={axis!r}, keepdims={keepdims}"
    name = _pick(rng, ["sum", "mean", "max", "min", "prod", "var", "std", "ptp", "median"])
    if name in ("max", "min", "ptp", "median") and not _apart(x, axis if not isinstance(
            axis, tuple) else None):
        return None
    if name in ("var", "std"):
        ddof = int(rng.integers(2))
        return (f"np.{name}({{0}}, {kw}, ddof={ddof})",
                lambda a: getattr(np, name)(a, axis=axis, keepdims=keepdims, ddof=ddof))
    if name == "prod" and x.size > 12:
        return None
    return (f"np.{name}({{0}}, {kw})",
            lambda a: getattr(np, name)(a, axis=axis, keepdims=keepdims))


def scan_like(rng, x) -> Candidate | None:
    if x.ndim == 0:
        return None
    axis = _one_axis(rng, x.ndim)
    name = _pick(rng, ["cumsum", "cumprod", "diff", "sort", "flip"])
    if name == "sort" and not _apart(x, axis):
        return None
    if name == "cumprod" and x.shape[axis] > 5:
        return None
    return (f"np.{name}({{0}}, axis={axis})", lambda a: getattr(np, name)(a, axis=axis))


def layout(rng, x) -> Candidate | None:
    choice = int(rng.integers(8))
    if choice == 0 and x.ndim > 1:
        perm = tuple(int(a) for a in rng.permutation(x.ndim))
        return (f"np.transpose({{0}}, {perm})", lambda a: np.transpose(a, perm))
    if choice == 1:
        shape = _reshape_to(rng, x.shape)
        return (f"{{0}}.reshape({shape})", lambda a: a.reshape(shape))
    if choice == 2:
        axis = int(rng.integers(x.ndim + 1))
        return (f"np.expand_dims({{0}}, {axis})", lambda a: np.expand_dims(a, axis))
    if choice == 3 and x.ndim:
        shift, axis = int(rng.integers(-3, 4)), _one_axis(rng, x.ndim)
        return (f"np.roll({{0}}, {shift}, axis={axis})", lambda a: np.roll(a, shift, axis=axis))
    if choice == 4 and x.ndim:
        pad = tuple((int(rng.integers(2)), int(rng.integers(2))) for _ in range(x.ndim))
        return (f"np.pad({{0}}, {pad})", lambda a: np.pad(a, pad))
    if choice == 5 and x.ndim:
        reps = tuple(int(r) for r in rng.integers(1, 3, size=x.ndim))
        return (f"np.tile({{0}}, {reps})", lambda a: np.tile(a, reps))
    if choice == 6 and x.ndim > 1:
        a1, a2 = (int(a) for a in rng.choice(x.ndim, size=2, replace=False))
        return (f"np.swapaxes({{0}}, {a1}, {a2})", lambda a: np.swapaxes(a, a1, a2))
    if choice == 7 and x.ndim:
        axis = _one_axis(rng, x.ndim)
        return (f"np.repeat({{0}}, 2, axis={axis})", lambda a: np.repeat(a, 2, axis=axis))
    return None


def _reshape_to(rng, shape: tuple) -> tuple:
    """Another shape of the same size (one axis maybe -1)."""
    size = int(np.prod(shape))
    dims = []
    rest = size
    for _ in range(int(rng.integers(0, 4))):
        divisors = [d for d in range(1, rest + 1) if rest % d == 0]
        d = int(rng.choice(divisors))
        dims.append(d)
        rest //= d
    dims.append(rest)
    if len(dims) > 1 and rng.random() < 0.3:
        dims[int(rng.integers(len(dims)))] = -1
    return tuple(dims)


def indexing(rng, x) -> Candidate | None:
    if x.ndim == 0:
        return None
    choice = int(rng.integers(5))
    n = x.shape[0]
    if choice == 0:
        start = int(rng.integers(n))
        return (f"{{0}}[{start}:]", lambda a: a[start:])
    if choice == 1:
        return ("{0}[::-1]", lambda a: a[::-1])
    if choice == 2:
        idx = rng.integers(-n, n, size=int(rng.integers(1, 5)))
        return (f"{{0}}[np.array({idx.tolist()})]", lambda a: a[idx])
    if choice == 3:
        axis = _one_axis(rng, x.ndim)
        idx = rng.integers(0, x.shape[axis], size=3)
        return (f"np.take({{0}}, {idx.tolist()}, axis={axis})",
                lambda a: np.take(a, idx, axis=axis))
    if x.ndim > 1:
        return ("{0}[..., 0]", lambda a: a[..., 0])
    return None


def combine(rng, x, y) -> Candidate | None:
    choice = int(rng.integers(6))
    if choice == 0:
        return ("{0} @ {1}", np.matmul)
    if choice == 1:
        axis = _one_axis(rng, max(x.ndim, 1))
        return (f"np.concatenate([{{0}}, {{1}}], axis={axis})",
                lambda a, b: np.concatenate([a, b], axis=axis))
    if choice == 2:
        axis = int(rng.integers(x.ndim + 1))
        return (f"np.stack([{{0}}, {{1}}], axis={axis})",
                lambda a, b: np.stack([a, b], axis=axis))
    if choice == 3:  # the condition must not flip under a small step
        return ("np.where({0} > 0.2, {0}, {1})", lambda a, b: np.where(a > 0.2, a, b)) \
            if _off_zero(x - 0.2) else None
    if choice == 4:
        return ("np.outer({0}, {1})", np.outer)
    return ("np.tensordot({0}, {1}, axes=1)", lambda a, b: np.tensordot(a, b, axes=1))


def contraction(rng, x, y) -> Candidate | None:
    """einsum: contract the last axis of x with the first of y, or a batch of matrices."""
    letters = "abcd"
    if x.ndim == 0 or y.ndim == 0 or x.ndim + y.ndim > 5:
        return None
    xs = letters[:x.ndim]
    ys = xs[-1] + "pqr"[:y.ndim - 1]
    out = "".join(sorted(set(xs + ys) - {xs[-1]}, key=(xs + ys).index))
    if rng.random() < 0.3:
        out = out[::-1]
    spec = f"{xs},{ys}->{out}"
    return (f"np.einsum('{spec}', {{0}}, {{1}})", lambda a, b: np.einsum(spec, a, b))


def softmax_family(rng, x) -> Candidate | None:
    if x.ndim == 0:
        return None
    axis = _one_axis(rng, x.ndim)
    name = _pick(rng, ["softmax", "log_softmax", "logsumexp"])
    return (f"F.{name}({{0}}, axis={axis})",
            lambda a: getattr(_functional(), name)(a, axis=axis))


def norms(rng, x) -> Candidate | None:
    if x.ndim == 0:
        return None
    choice = int(rng.integers(5))
    if choice == 0:
        axis = _one_axis(rng, x.ndim)
        return (f"np.linalg.norm({{0}}, axis={axis})", lambda a: np.linalg.norm(a, axis=axis))
    if choice == 1 and x.ndim == 2:
        return ("np.linalg.norm({0})", np.linalg.norm)
    if choice == 2:
        order = _pick(rng, [1, 3, 0.5])
        if not _off_zero(x):
            return None
        return (f"np.linalg.norm({{0}}.reshape(-1), {order})",
                lambda a: np.linalg.norm(a.reshape(-1), order))
    if choice == 3:
        return ("np.linalg.vector_norm({0})", np.linalg.vector_norm)
    axis = _one_axis(rng, x.ndim)
    return (f"np.average({{0}}, axis={axis}, weights=np.linspace(0.5, 1.5, {x.shape[axis]}))",
            lambda a: np.average(a, axis=axis, weights=np.linspace(0.5, 1.5, a.shape[axis])))


def matrices(rng, x) -> Candidate | None:
    """Linear algebra of a square matrix made well conditioned from x's leading block."""
    if x.ndim < 2 or x.shape[-1] < 2 or x.shape[-2] < x.shape[-1]:
        return None
    n = x.shape[-1]
    square = f"({{0}}[..., :{n}, :] + {3.0 * n} * np.eye({n}))"
    make = lambda a: a[..., :n, :] + 3.0 * n * np.eye(n)  # noqa: E731 -- diagonally dominant
    choice = int(rng.integers(6))
    if choice == 0:
        return (f"np.linalg.inv{square}", lambda a: np.linalg.inv(make(a)))
    if choice == 1:
        return (f"np.linalg.det{square}", lambda a: np.linalg.det(make(a)))
    if choice == 2:
        return (f"np.linalg.slogdet{square}[1]", lambda a: np.linalg.slogdet(make(a))[1])
    if choice == 3:
        return (f"np.linalg.solve({square}, {{0}}[..., :{n}, :1])",
                lambda a: np.linalg.solve(make(a), a[..., :n, :1]))
    if choice == 4:
        return ("np.trace({0}, axis1=-2, axis2=-1)", lambda a: np.trace(a, axis1=-2, axis2=-1))
    k = int(rng.integers(-1, 2))
    return (f"np.triu({{0}}, {k}) + np.tril({{0}}, {k - 1}) * 0.5",
            lambda a: np.triu(a, k) + np.tril(a, k - 1) * 0.5)


def more_elementwise(rng, x, y) -> Candidate | None:
    choice = int(rng.integers(8))
    if choice == 6:  # kinked at x = 0, a step in y's sign
        ok = _off_zero(x) and _off_zero(y)
        return ("np.copysign({0}, {1})", np.copysign) if ok else None
    if choice == 7:  # jumps where x / 0.7 crosses an integer
        return ("np.fmod({0}, 0.7)", lambda a, b: np.fmod(a, 0.7)) \
            if _off_zero(np.abs(x) / 0.7 - np.round(np.abs(x) / 0.7)) else None
    if choice == 0:
        return ("np.logaddexp({0}, {1})", np.logaddexp)
    if choice == 1:
        return ("np.arctan2({0}, {1} ** 2 + 0.5)", lambda a, b: np.arctan2(a, b ** 2 + 0.5))
    if choice == 2:
        return ("np.power({0} ** 2 + 0.5, np.tanh({1}))",
                lambda a, b: np.power(a ** 2 + 0.5, np.tanh(b)))
    if choice == 3:
        return ("{0} ** 3 - 1.0 / ({1} ** 2 + 1.0)", lambda a, b: a ** 3 - 1.0 / (b ** 2 + 1.0))
    if choice == 4:
        return ("np.inner({0}, {1})", np.inner)
    return ("np.dot({0}, {1})", np.dot)


def gathers(rng, x) -> Candidate | None:
    if x.ndim == 0:
        return None
    choice = int(rng.integers(5))
    axis = _one_axis(rng, x.ndim)
    if choice == 0:
        if not _apart(x, axis):
            return None
        return (f"np.take_along_axis({{0}}, np.argsort({{0}}, axis={axis}), axis={axis})",
                lambda a: np.take_along_axis(a, np.argsort(a, axis=axis), axis=axis))
    if choice == 1:
        return ("{0}[None, ..., None]", lambda a: a[None, ..., None])
    if choice == 2:
        q = float(np.round(rng.uniform(0.1, 0.9), 2))
        if not _apart(x, axis):
            return None
        return (f"np.quantile({{0}}, {q}, axis={axis})", lambda a: np.quantile(a, q, axis=axis))
    if choice == 3:
        return (f"np.cumsum({{0}}[::-1], axis={axis})[::2]",
                lambda a: np.cumsum(a[::-1], axis=axis)[::2])
    return ("np.squeeze({0})", np.squeeze)


ENTRIES: list[tuple[int, Callable]] = [  # (arity, draw)
    (1, softmax_family), (1, norms), (1, matrices), (2, more_elementwise), (1, gathers),
    (1, elementwise), (1, elementwise), (1, kinked), (2, binary), (2, binary),
    (1, reduction), (1, reduction), (1, scan_like), (1, layout), (1, layout), (1, indexing),
    (2, combine), (2, contraction),
]


def _functional():
    from runtime import functional

    return functional


@dataclass
class Step:
    text: str
    operands: tuple[int, ...]
    fn: Callable[..., np.ndarray]

    def __str__(self) -> str:
        return self.text.format(*(f"v{k}" for k in self.operands))


@dataclass
class Program:
    seed: int
    inputs: list[np.ndarray]
    steps: list[Step] = field(default_factory=list)
    weights: np.ndarray | None = None

    def __str__(self) -> str:
        lines = [f"v{k}: f64{list(x.shape)}" for k, x in enumerate(self.inputs)]
        first = len(self.inputs)
        lines += [f"v{first + k} = {step}" for k, step in enumerate(self.steps)]
        lines.append(f"loss = np.sum(v{first + len(self.steps) - 1} * weights)")
        return "\n".join(lines)

    def function(self) -> Callable[..., np.ndarray]:
        steps, weights = self.steps, self.weights

        def loss(*inputs):
            values = list(inputs)
            for step in steps:
                values.append(step.fn(*(values[k] for k in step.operands)))
            return np.sum(values[-1] * weights)

        return loss


def _input_shape(rng) -> tuple[int, ...]:
    return tuple(int(d) for d in rng.integers(1, 5, size=int(rng.integers(0, 4))))


def _usable(value) -> bool:
    value = np.asarray(value)
    return value.dtype == np.float64 and 0 < value.size <= 240 \
        and bool(np.all(np.isfinite(value))) and bool(np.all(np.abs(value) < 1e4))


def program(seed: int, steps: int = 4) -> Program:
    """A random valid NumPy program of `steps` steps on one or two float64 inputs."""
    rng = np.random.default_rng(seed)
    inputs = [rng.normal(size=_input_shape(rng)) for _ in range(int(rng.integers(1, 3)))]
    prog = Program(seed, inputs)
    values = list(inputs)
    attempts = 0
    while len(prog.steps) < steps and attempts < 200:
        attempts += 1
        arity, draw = _pick(rng, ENTRIES)
        # the newest value usually, so that steps build on each other
        operands = tuple(len(values) - 1 if rng.random() < 0.6 else int(rng.integers(len(values)))
                         for _ in range(arity))
        try:
            candidate = draw(rng, *(values[k] for k in operands))
            if candidate is None:
                continue
            text, fn = candidate
            with np.errstate(all="raise"), warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)  # a var of too few entries
                value = fn(*(values[k] for k in operands))
        except (ValueError, IndexError, TypeError, FloatingPointError, RuntimeWarning):
            continue
        if value is None or not _usable(value):
            continue
        prog.steps.append(Step(text, operands, fn))
        values.append(np.asarray(value))
    prog.weights = np.round(rng.normal(size=values[-1].shape), 3)
    return prog
