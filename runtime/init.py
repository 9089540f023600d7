"""Weight initializers with PyTorch's distributions, and an MLP built from them.

Weights use this project's layout, W of shape (in_features, out_features), so
`x @ W` needs no transpose; fan_in is therefore shape[0] (PyTorch's nn.Linear
stores the transpose, where fan_in is shape[1]). Every initializer takes an
explicit `rng`: a `np.random.Generator` or an integer seed, never global state.
Samples are drawn in float64 and then cast, so the values do not depend on dtype
beyond rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from .functional import linear, relu
from .tensor import Parameter

Rng = np.random.Generator | int


def as_rng(rng: Rng) -> np.random.Generator:
    """A Generator as given, or a new one seeded with the integer."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, int | np.integer) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}"
    )


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of shape (in_features, out_features)."""
    if len(shape) != 2:
        raise ValueError(
            f"fan in and fan out need a 2-D weight of shape (in_features, out_features), "
            f"got shape {tuple(shape)}"
        )
    return int(shape[0]), int(shape[1])


def _checked_dtype(dtype: Any) -> np.dtype:
    """A float dtype: an integer weight would truncate the samples to mostly zeros."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"initializers draw floats; dtype {dtype} is not a float dtype")
    return dtype


_LINEAR = ("linear", "identity", "sigmoid", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
           "conv_transpose2d", "conv_transpose3d")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """PyTorch's recommended gain for a nonlinearity (nn.init.calculate_gain)."""
    if nonlinearity in _LINEAR:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is not None and (isinstance(param, bool)
                                  or not isinstance(param, int | float | np.number)):
            raise ValueError(f"negative_slope {param!r} not a valid number")
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def _kaiming_std(shape: Sequence[int], a: float, mode: str, nonlinearity: str) -> float:
    fan_in, fan_out = fans(shape)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode {mode!r} not supported, use 'fan_in' or 'fan_out'")
    fan = fan_in if mode == "fan_in" else fan_out
    # A fan of 0 is an empty weight (PyTorch's init leaves it alone): nothing to scale.
    return calculate_gain(nonlinearity, a) / math.sqrt(fan) if fan else 0.0


def kaiming_uniform(
    shape: Sequence[int],
    rng: Rng,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    dtype: Any = np.float32,
) -> np.ndarray:
    """U(-bound, bound) with bound = gain * sqrt(3 / fan) (He et al., 2015)."""
    dtype = _checked_dtype(dtype)
    bound = math.sqrt(3.0) * _kaiming_std(shape, a, mode, nonlinearity)
    return as_rng(rng).uniform(-bound, bound, size=tuple(shape)).astype(dtype)


def kaiming_normal(
    shape: Sequence[int],
    rng: Rng,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    dtype: Any = np.float32,
) -> np.ndarray:
    """N(0, std**2) with std = gain / sqrt(fan) (He et al., 2015)."""
    dtype = _checked_dtype(dtype)
    std = _kaiming_std(shape, a, mode, nonlinearity)
    return as_rng(rng).normal(0.0, std, size=tuple(shape)).astype(dtype)


def xavier_uniform(
    shape: Sequence[int], rng: Rng, gain: float = 1.0, dtype: Any = np.float32
) -> np.ndarray:
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio, 2010)."""
    dtype = _checked_dtype(dtype)
    fan_in, fan_out = fans(shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out)) if fan_in + fan_out else 0.0
    return as_rng(rng).uniform(-bound, bound, size=tuple(shape)).astype(dtype)


def xavier_normal(
    shape: Sequence[int], rng: Rng, gain: float = 1.0, dtype: Any = np.float32
) -> np.ndarray:
    """N(0, std**2) with std = gain * sqrt(2 / (fan_in + fan_out)) (Glorot & Bengio, 2010)."""
    dtype = _checked_dtype(dtype)
    fan_in, fan_out = fans(shape)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out)) if fan_in + fan_out else 0.0
    return as_rng(rng).normal(0.0, std, size=tuple(shape)).astype(dtype)


def trunc_normal(
    shape: Sequence[int], rng: Rng, mean: float = 0.0, std: float = 1.0, a: float = -2.0,
    b: float = 2.0, dtype: Any = np.float32,
) -> np.ndarray:
    """N(mean, std**2) truncated to [a, b] (absolute bounds, as PyTorch's trunc_normal_)."""
    dtype = _checked_dtype(dtype)
    if not (std > 0 and a < b):
        raise ValueError(f"trunc_normal needs std > 0 and a < b, got std={std}, a={a}, b={b}")
    rng, size = as_rng(rng), tuple(shape)
    cdf = lambda x: 0.5 * (1 + math.erf((x - mean) / (std * math.sqrt(2))))  # noqa: E731
    if cdf(b) - cdf(a) > 0.25:  # normal draws, redrawn outside [a, b]
        draw, accept = (lambda n: rng.normal(mean, std, n)), (lambda x: (x >= a) & (x <= b))
    else:  # a narrow or far interval: uniform draws on it, kept with the density's ratio
        mode = max(a, min(mean, b))
        draw = lambda n: rng.uniform(a, b, n)  # noqa: E731
        accept = lambda x: rng.uniform(size=x.shape) <= np.exp(  # noqa: E731
            0.5 * ((mode - mean) / std) ** 2 - 0.5 * ((x - mean) / std) ** 2)
    out = np.empty(math.prod(size))
    pending = np.arange(out.size)
    while pending.size:
        x = draw(pending.size)
        kept = accept(x)
        out[pending[kept]] = x[kept]
        pending = pending[~kept]
    return out.reshape(size).astype(dtype)


def orthogonal(
    shape: Sequence[int], rng: Rng, gain: float = 1.0, dtype: Any = np.float32
) -> np.ndarray:
    """A (semi-)orthogonal weight times gain: orthonormal columns if in_features >= out_features,
    else orthonormal rows; Q of a Gaussian matrix's QR with R's diagonal made positive, as
    PyTorch's orthogonal_ (Haar-distributed)."""
    dtype = _checked_dtype(dtype)
    rows, cols = fans(shape)
    if rows * cols == 0:
        return np.zeros((rows, cols), dtype)
    flat = as_rng(rng).normal(size=(rows, cols) if rows >= cols else (cols, rows))
    q, r = np.linalg.qr(flat)
    q *= np.sign(np.diag(r))
    return (gain * (q if rows >= cols else q.T)).astype(dtype)


def linear_params(
    in_features: int, out_features: int, rng: Rng, dtype: Any = np.float32
) -> tuple[Parameter, Parameter]:
    """W (in, out) and b (out,) distributed like PyTorch's nn.Linear default init.

    nn.Linear uses kaiming_uniform with a = sqrt(5), which works out to
    U(-1/sqrt(in), 1/sqrt(in)); the bias uses the same bound.
    """
    rng = as_rng(rng)
    W = kaiming_uniform((in_features, out_features), rng, a=math.sqrt(5), dtype=dtype)
    bound = 1 / math.sqrt(in_features) if in_features > 0 else 0.0
    b = rng.uniform(-bound, bound, size=(out_features,)).astype(dtype)
    return Parameter(W), Parameter(b)


def mlp_params(sizes: Sequence[int], rng: Rng, dtype: Any = np.float32) -> dict[str, Parameter]:
    """{"W0", "b0", "W1", "b1", ...}: an nn.Linear-initialized layer per pair of adjacent sizes."""
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least an input and an output size, got {list(sizes)}")
    rng = as_rng(rng)
    params: dict[str, Parameter] = {}
    for i, (n_in, n_out) in enumerate(pairwise(sizes)):
        params[f"W{i}"], params[f"b{i}"] = linear_params(n_in, n_out, rng, dtype)
    return params


def mlp(params: dict[str, Any], x: Any) -> Any:
    """Apply linear layers W0/b0, W1/b1, ... with relu between them (none after the last).

    Traceable: called on arrays it computes eagerly, inside a compiled function
    it builds the graph.
    """
    n_layers = sum(1 for name in params if name.startswith("W"))
    h = x
    for i in range(n_layers):
        h = linear(h, params[f"W{i}"], params.get(f"b{i}"))
        if i < n_layers - 1:
            h = relu(h)
    return h
