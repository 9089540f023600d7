"""The table of NumPy-level cases that drives the op tests: each op on several shapes.

A case is a plain NumPy function and the inputs to call it with. Inputs are
drawn from a domain that keeps finite differences away from kinks and
singularities (the kinks themselves are tested in test_kinks.py). Tests build
graphs from these cases and check that every primitive in the op table is
exercised, forward and backward.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from compiler import scan
from runtime import functional as F


@dataclass(frozen=True)
class Arg:
    shape: tuple[int, ...]
    domain: str = "any"  # any | pos | unit | away (|x| >= 0.2) | int:K (indices below K)

    def sample(self, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
        kind = self.domain
        if kind.startswith("int:"):
            return rng.integers(0, int(kind[4:]), size=self.shape).astype(np.int64)
        if kind == "pos":
            x = rng.uniform(0.5, 2.0, self.shape)
        elif kind == "unit":
            x = rng.uniform(-0.9, 0.9, self.shape)
        elif kind == "away":
            x = rng.uniform(0.2, 1.5, self.shape) * rng.choice([-1.0, 1.0], self.shape)
        else:
            x = rng.uniform(-1.5, 1.5, self.shape)
        return np.asarray(x, dtype=dtype)


@dataclass(frozen=True)
class Case:
    name: str
    fn: Callable
    args: tuple[Arg, ...]
    # Cases whose inputs come as a spread-out grid (max/min/sort-like) so that no
    # two entries tie within a finite-difference step.
    distinct: bool = False
    # False where float32 rounding inside the case defeats finite differences; such
    # cases get a closed-form gradient test instead.
    finite_differences: bool = True

    def sample(self, seed: int, dtype=np.float64) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        values = [a.sample(rng, dtype) for a in self.args]
        if self.distinct:
            for i, a in enumerate(self.args):
                if not a.domain.startswith("int:"):
                    n = int(np.prod(a.shape))
                    grid = (rng.permutation(n) - n / 2) * 0.3 + 0.05
                    values[i] = grid.reshape(a.shape).astype(dtype)
        return values


A = Arg
X34, X3, X4, X234 = A((3, 4)), A((3,)), A((4,)), A((2, 3, 4))

CASES: list[Case] = []


def case(name, fn, *args, distinct=False, finite_differences=True):
    CASES.append(Case(name, fn, tuple(args), distinct, finite_differences))


# --- elementwise math ----------------------------------------------------------------------
case("negative", lambda x: -x, X34)
case("positive_abs", lambda x: np.abs(x), A((3, 4), "away"))
case("abs_builtin", lambda x: abs(x) * 2.0, A((5,), "away"))
case("sign", lambda x: np.sign(x) * x, A((3, 4), "away"))
for _name in ("exp", "expm1", "sin", "cos", "tanh", "arctan", "sinh", "cosh"):
    case(_name, getattr(np, _name), X34)
    case(_name + "_scalar", getattr(np, _name), A(()))
for _name in ("log", "log1p", "sqrt"):
    case(_name, getattr(np, _name), A((3, 4), "pos"))
case("tan", np.tan, A((3, 4), "unit"))
case("cbrt", lambda x: np.cbrt(x) * x, A((3, 4), "away"))
case("square", np.square, X34)
case("reciprocal", np.reciprocal, A((3, 4), "pos"))
case("log2_log10_exp2", lambda x: np.log2(x) + np.log10(x) + np.exp2(x), A((4,), "pos"))
case("logaddexp", np.logaddexp, X34, X4)

# --- arithmetic with broadcasting ---------------------------------------------------------
for _op, _fn in [("add", np.add), ("sub", np.subtract), ("mul", np.multiply)]:
    case(f"{_op}_same", _fn, X34, X34)
    case(f"{_op}_row", _fn, X34, X4)
    case(f"{_op}_outer", _fn, A((3, 1)), A((1, 4)))
    case(f"{_op}_scalar", _fn, A(()), X3)
case("div_same", np.divide, X34, A((3, 4), "pos"))
case("div_broadcast", lambda x, y: x / y, A((3, 1)), A((4,), "away"))
case("rdiv_const", lambda x: 2.0 / x, A((3,), "pos"))
case("pow_int", lambda x: x**3, X34)
case("pow_square", lambda x: x**2, X34)
case("pow_frac", lambda x: x**2.5, A((3, 4), "pos"))
case("pow_array", lambda x, y: x**y, A((3, 4), "pos"), A((4,)))
case("rpow", lambda y: 2.0**y, X34)
case("maximum", np.maximum, X34, X34, distinct=True)
case("minimum", np.minimum, X34, A((4,)), distinct=True)
case("clip", lambda x: np.clip(x, -0.5, 0.5), A((3, 4)), distinct=True)
case("clip_method", lambda x: x.clip(-0.5), A((6,)), distinct=True)
case("where", lambda c, a, b: np.where(c > 0, a, b), X34, X34, X4)
case("where_scalar", lambda x: np.where(x > 0, x * x, 0.0), A((3, 4), "away"))
case("comparisons", lambda x, y: (x < y) * 1.0 + (x <= y) * 2.0 + (x > y) * 3.0
     + (x >= y) * 4.0 + (x == y) * 5.0 + (x != y) * 6.0 + x * y, X34, X34)
case("logical", lambda x, y: np.where(((x > 0) & (y > 0)) | ~(x > y) ^ (y > 0.5), x, y),
     X34, X34)
case("logical_funcs", lambda x: np.where(np.logical_and(x > 0, np.logical_not(x > 1))
                                         | np.logical_xor(x > 0.5, x < -0.5), x, 2 * x),
     A((3, 4), "away"))
case("astype", lambda x: x.astype(np.float32).astype(np.float64) * x, X34,
     finite_differences=False)
case("int_to_float", lambda x, i: x * i, X34, A((4,), "int:5"))

# --- reductions -----------------------------------------------------------------------------
for _name, _fn in [("sum", np.sum), ("mean", np.mean), ("prod", np.prod), ("var", np.var),
                   ("std", np.std)]:
    case(f"{_name}_all", _fn, X234)
    case(f"{_name}_axis1", lambda x, f=_fn: f(x, axis=1), X234)
    case(f"{_name}_axes_keep", lambda x, f=_fn: f(x, axis=(0, 2), keepdims=True), X234)
    case(f"{_name}_last", lambda x, f=_fn: f(x, axis=-1), X34)
for _name, _fn in [("max", np.max), ("min", np.min)]:
    case(f"{_name}_all", _fn, X234, distinct=True)
    case(f"{_name}_axis0", lambda x, f=_fn: f(x, axis=0), X34, distinct=True)
    case(f"{_name}_keep", lambda x, f=_fn: f(x, axis=(1, 2), keepdims=True), X234,
         distinct=True)
case("sum_method", lambda x: x.sum(axis=0) + x.mean(axis=1).sum(), X34)
case("max_method", lambda x: x.max(axis=1) + x.min(), X34, distinct=True)
case("prod_method", lambda x: x.prod(axis=0), X34)
case("var_ddof", lambda x: np.var(x, axis=0, ddof=1) + x.std(axis=1, ddof=1).sum(), X34)
case("prod_with_zero", lambda x: np.prod(x * np.array([0.0, 1.0, 1.0, 1.0]), axis=1), X34)

# --- matrix products ----------------------------------------------------------------------
case("matmul_2d", lambda a, b: a @ b, X34, A((4, 2)))
case("matmul_vec_mat", lambda a, b: a @ b, X4, A((4, 2)))
case("matmul_mat_vec", lambda a, b: a @ b, X34, X4)
case("matmul_vec_vec", np.matmul, X4, X4)
case("matmul_batched", lambda a, b: a @ b, X234, A((2, 4, 5)))
case("matmul_batched_bcast", lambda a, b: a @ b, X234, A((4, 5)))
# each operand broadcast along a batch axis of the other, and b with fewer batch axes
case("matmul_batched_bcast_both", lambda a, b: a @ b, A((2, 1, 3, 4)), A((5, 4, 2)))
case("dot", np.dot, X34, A((4, 2)))
case("dot_method", lambda a, b: a.dot(b), X4, X4)

# --- linear algebra: einsum's products, norms, LAPACK -------------------------------------------
_EYE3 = 3 * np.eye(3)  # added to keep matrices well away from singular
case("einsum_matmul", lambda a, b: np.einsum("ij,jk->ik", a, b), X34, A((4, 2)))
case("einsum_batched", lambda a, b: np.einsum("bij,bkj->bik", a, b), X234, A((2, 5, 4)))
case("einsum_trace_diag", lambda x, y: np.einsum("ii,ij->j", x, y).sum() + np.einsum("ii->i", x),
     A((3, 3)), X34)
case("einsum_ellipsis_implicit", lambda a, b: np.einsum("...j,jk", a, b), X234, A((4, 2)))
case("einsum_conv_taps", lambda x, w: np.einsum("nchw,oc->nohw", x, w), A((2, 3, 2, 2)),
     A((4, 3)))
case("einsum_three", lambda a, b, c: np.einsum("i,ij,jk->k", a, b, c), X3, X34, A((4, 2)))
case("tensordot_inner_outer", lambda a, b: np.tensordot(a, b, axes=([0, 2], [2, 0]))
     + np.inner(a[0], b[:, 0].T).sum() + np.outer(a[0, 0], b[0, 0]).sum(), X234, A((4, 5, 2)))
case("vdot_dot3d", lambda a, b: np.vdot(a, a) + np.dot(a, b), X234, A((3, 4, 2)))
case("norm_vector", lambda x: np.linalg.norm(x) + np.linalg.norm(x, 1, axis=0)
     + np.linalg.norm(x, np.inf, axis=1)[:, None] + np.linalg.norm(x, 3, axis=-1, keepdims=True),
     A((3, 4), "away"), distinct=True)
case("norm_matrix", lambda x: np.linalg.norm(x, "fro", axis=(1, 2)) + np.linalg.norm(
     x, 1, axis=(2, 1)) + np.linalg.norm(x, -np.inf, axis=(0, 2), keepdims=True).ravel()[:2],
     A((2, 3, 4), "away"), distinct=True)
case("solve", lambda a, b: np.linalg.solve(a + _EYE3, b), A((3, 3)), A((3, 2)))
case("solve_batched_vector", lambda a, b: np.linalg.solve(a + _EYE3, b), A((2, 3, 3)), X3)
case("inv", lambda a: np.linalg.inv(a + _EYE3), A((2, 3, 3)))
case("det", lambda a: np.linalg.det(a + _EYE3), A((2, 3, 3)))
case("slogdet", lambda a: np.linalg.slogdet(a - _EYE3).logabsdet * np.linalg.slogdet(a).sign,
     A((3, 3), "unit"))
case("cholesky", lambda x: np.linalg.cholesky(x @ x.T + _EYE3), A((3, 3)))
case("svdvals_norms", lambda x: np.linalg.svdvals(x).sum(axis=0) + np.linalg.norm(x[0], 2)
     + np.linalg.norm(x, "nuc", axis=(2, 1)).sum() + np.linalg.matrix_norm(x, ord=-2).sum(),
     A((2, 4, 3)))

# --- layout ---------------------------------------------------------------------------------
case("transpose", lambda x: x.T * np.arange(3.0), X34)
case("transpose_axes", lambda x: np.transpose(x, (2, 0, 1)), X234)
case("transpose_method", lambda x: x.transpose(1, 0, 2), X234)
case("swapaxes", lambda x: np.swapaxes(x, 0, 2), X234)
case("moveaxis", lambda x: np.moveaxis(x, 0, -1), X234)
case("reshape", lambda x: x.reshape(4, 3) * np.arange(3.0), X34)
case("reshape_infer", lambda x: np.reshape(x, (-1, 2)), X234)
case("ravel", lambda x: x.ravel() * np.arange(12.0), X34)
case("broadcast_to", lambda x: np.broadcast_to(x, (3, 4)) * np.arange(12.0).reshape(3, 4), X4)
case("expand_dims", lambda x: np.expand_dims(x, 1) * np.ones((3, 2, 4)), X34)
case("squeeze", lambda x: np.squeeze(x, axis=1), A((3, 1, 4)))
case("concatenate", lambda a, b: np.concatenate([a, b, a], axis=1), X34, A((3, 2)))
case("concatenate_axis0", lambda a, b: np.concatenate((a, b)), X34, A((2, 4)))
case("stack", lambda a, b: np.stack([a, b], axis=-1), X34, X34)
case("slice_basic", lambda x: x[1:, ::2], X34)
case("slice_negative", lambda x: x[::-1, -3:-1], X34)
case("slice_int", lambda x: x[..., 1] + x[0, :, 0] + x[1, 2, 3], X234)
case("slice_newaxis", lambda x: x[None, :, None] * np.ones((2, 3, 5, 4)), X34)
case("gather_rows", lambda x: x[np.array([2, 0, 2, 1])], X34)
case("gather_cols", lambda x: x[:, np.array([[3, 1], [1, 1]])], X34)
case("gather_traced_index", lambda x, i: x[i], X34, A((5,), "int:3"))
case("take", lambda x: np.take(x, np.array([1, 1, 0]), axis=1), X34)
case("take_along_axis", lambda x, i: np.take_along_axis(x, i, axis=1), X34, A((3, 2), "int:4"))
case("zeros_ones_like", lambda x: x * np.ones_like(x) + np.zeros_like(x) + np.full_like(x, 2.0),
     X34)


# --- advanced indexing and assignment (compiler/numpy_api/indexing.py, assignment.py) -----------
def _assign_regions(x, v):
    y = x.copy()
    y[1:, ::2] = v[:2, :2] * 2.0  # a region: the old values there get no gradient
    y[0] += v[2]
    y[:, -1] = 0.5
    return y


def _assign_at(x, i):  # traced indices that repeat: the last write wins (last_write)
    y = x.copy()
    y[i] = x[0] * 2.0 + 1.0
    return y * x


def _assign_pairs(x, v):  # constant pairs, one repeated: the later value wins
    y = np.zeros_like(x)
    y[np.array([0, 2, 0]), np.array([1, 3, 1])] = v[0, :3]
    y[x > 0.5] = -1.0
    return y + x * y


def _add_at(x, v, i):  # np.add.at: repeats add up
    y = x.copy()
    np.add.at(y, (i, np.array([0, 3, 3, 1, 0])), v[0, :])
    np.subtract.at(y, np.array([1, 1]), v[1, :4])
    return y


case("gather_computed_index", lambda x, i: x.ravel()[11 - i] * x.ravel()[i], X34,
     A((5,), "int:12"))  # the scatter-add's indices are computed in its own loop
case("gather_pairs_const", lambda x: x[np.array([0, 2, 2]), np.array([1, 3, -4])], X34)
case("gather_pairs_traced", lambda x, i: x[i, i[::-1]] + x[np.arange(5) % 3, i], X34,
     A((5,), "int:3"))
case("gather_separated", lambda x, i: x[i[:2], :, np.array([3, 0])] + x[0, :, i[2:4]],
     X234, A((4,), "int:2"))
case("gather_with_newaxis_and_mask",
     lambda x: x[None, np.array([1, 0]), 1:] + x[np.array([True, False, True])][:, None, :3],
     X34)
case("take_along_axis_broadcast", lambda x, i: np.take_along_axis(x, i, axis=1), A((1, 4)),
     A((3, 2), "int:4"))
case("assign_regions", _assign_regions, X34, X34)
case("assign_traced_index", _assign_at, X34, A((5,), "int:3"))
case("assign_pairs_and_mask", _assign_pairs, X34, X34)
case("add_at", _add_at, X34, A((2, 5)), A((5,), "int:3"))

# --- running sums ------------------------------------------------------------------------------
case("cumsum_axis1", lambda x: np.cumsum(x, axis=1), X34)
case("cumsum_flat_method", lambda x: x.cumsum() * np.arange(1.0, 25.0), X234)

# --- issue 14: elementwise ---------------------------------------------------------------------
case("arcsin_arccos", lambda x: np.arcsin(x) * np.arccos(x * 0.5), A((3, 4), "unit"))
case("inverse_hyperbolic", lambda x: np.arcsinh(x * 3) * np.arctanh(x) + np.arccosh(x * x + 1.5),
     A((3, 4), "unit"))
case("arctan2", np.arctan2, X34, A((3, 4), "away"))
case("arctan2_broadcast", lambda y, x: np.arctan2(y, x), A((3, 1), "away"), X4)
case("hypot", np.hypot, X34, A((4,), "away"))
# piecewise: differences across a jump would be wrong; tests/test_numpy_elementwise.py checks
# the gradients against the closed form and central differences away from the jumps
case("floor_divide_remainder", lambda x, y: (x // y) * x + x % y + np.remainder(x, 0.7) * y
     + np.mod(1.1, y) + np.floor_divide(x, 0.3), X34, A((3, 4), "away"),
     finite_differences=False)
case("fmod", lambda x, y: np.fmod(x, y) * y + np.fmod(x, 0.7) + np.fmod(-1.1, y) * x,
     X34, A((3, 4), "away"), finite_differences=False)
case("copysign_signbit", lambda x, y: np.copysign(x, y) * x + np.copysign(2.0, y) * x
     + np.signbit(y) * x + np.copysign(x, -0.0), A((3, 4), "away"), X4)
_erf = np.frompyfunc(math.erf, 1, 1)  # NumPy's own erf ufunc (objects); traced: the erf op
case("erf_gelu", lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2.0)).astype(x.dtype)), X34)
case("sinc", lambda x: np.sinc(x) * x, X34)
case("rounding", lambda x: (np.floor(x * 3) + np.ceil(x * 3) + np.trunc(x * 3) + np.rint(x * 3)
                            + np.round(x * 3) + np.around(x, 1) + np.round(x * 30, -1)
                            + np.fix(x * 3) + math.floor(x[0, 0] * 3) + round(x[1, 1] * 3)) * x,
     X34, finite_differences=False)
case("heaviside", lambda x, y: np.heaviside(x, y) * y + np.heaviside(x, 0.5) * x,
     A((3, 4), "away"), X4)
case("isnan_isinf_isfinite", lambda x: np.where(np.isnan(x) | np.isinf(1 / x), 0.0, x)
     * np.isfinite(x), X34)

# --- issue 14: reductions and scans ------------------------------------------------------------
case("cumprod_axis1", lambda x: np.cumprod(x, axis=1), X34)
case("cumprod_zeros", lambda x: np.cumprod(x * np.array([1.0, 0.0, 1.0, 0.0]), axis=1)
     + np.cumprod(x * np.array([[1.0], [0.0], [1.0]]), axis=0), X34)
case("cumprod_flat_method", lambda x: x.cumprod() * np.arange(1.0, 13.0), X34)
case("sort", lambda x: np.sort(x, axis=0) * np.arange(1.0, 5.0), X34, distinct=True)
case("sort_flat", lambda x: np.sort(x, axis=None) * np.arange(1.0, 25.0), X234, distinct=True)
case("argsort", lambda x: np.argsort(x, axis=1) * x + x.argsort(axis=0), X34, distinct=True)
case("argmax_argmin", lambda x: np.argmax(x, axis=1) * x[:, 0] + np.argmin(x, axis=0).sum()
     + np.argmax(x) + (x.argmin(axis=-1, keepdims=True) * x).sum(axis=1), X34, distinct=True)
case("any_all", lambda x: np.any(x > 1, axis=0) * x + np.all(x > -1, axis=1, keepdims=True) * x
     + np.any(x) + x.all(), X34)
case("sum_where", lambda x: np.sum(x, axis=1, where=x > 0) + np.prod(x, where=x < 1)
     + np.sum(x, initial=2.0), A((3, 4), "away"))
case("mean_where", lambda x: np.mean(x, axis=0, where=np.array([True, False, True])[:, None]),
     X34)
case("ufunc_reduce", lambda x: np.logaddexp.reduce(x, axis=1) + np.add.reduce(x, axis=1)
     + np.multiply.reduce(x, axis=1) + np.maximum.reduce(x, axis=1)
     + np.minimum.reduce(x, axis=1, keepdims=True).ravel()
     + np.logaddexp.reduce(x, axis=None) + np.add.reduce(x * x).sum(), X34, distinct=True)
case("ufunc_accumulate", lambda x: np.add.accumulate(x) * np.multiply.accumulate(x, axis=1), X34)
case("diff", lambda x: np.diff(x) + np.diff(x, n=2, axis=0, prepend=1.0, append=x[:1]).sum(), X34)

# --- issue 14: layout --------------------------------------------------------------------------
case("tril_triu", lambda x: np.tril(x) + np.triu(x, 1) * 2.0 + np.tril(x, -1) * 3.0, X34)
case("tril_batched_vector", lambda x, v: np.triu(x, -1) + np.tril(v)[:3], X234, X4)
case("diag", lambda x, v: np.diag(x, 1) + np.diag(v)[1][:3] + np.diag(v, -1)[:3, :3].sum(axis=0),
     X34, X4)
case("diagonal_trace", lambda x: np.diagonal(x, 1, 0, 2) * np.trace(x, -1, 1, 2), X234)
case("pad_constant", lambda x: np.pad(x, 1) + np.pad(x, ((1, 1), (2, 1)), constant_values=5.0)[
     :, 1:] + np.pad(x, ((0, 2), (0, 3)), constant_values=((1, 2), (3, 4)))[:, :6]
     + np.pad(x, 1, constant_values=x[0, 0]), X34)
case("pad_modes", lambda x: np.pad(x, 2, mode="edge")[:, :5]
     * np.pad(x, (2, 3), mode="reflect")[:7, :5]
     + np.pad(x, ((2, 2), (1, 0)), mode="symmetric")[:, :5]
     + np.pad(x, ((2, 2), (1, 0)), mode="wrap"), X34)
case("roll", lambda x: np.roll(x, 1) * np.roll(x, (1, -2), axis=(0, 1)) + np.roll(x, 5, axis=1),
     X34)
case("tile_repeat", lambda x: np.tile(x, 2).sum(axis=1) + np.tile(x, (2, 1, 2)).sum(axis=(0, 2))
     + np.repeat(x, 2)[:3] + np.repeat(x, [1, 2, 0, 1], axis=1).sum(axis=1), X34)
case("stacks", lambda x, y: np.vstack([x, y]).sum(axis=0) + np.hstack([x, y])[1, :4]
     + np.column_stack([x[0], y[:, 0][:3].sum() * x[1]]).sum(axis=1)
     + np.dstack([x, y])[:, 0, :].sum() + np.atleast_2d(y[0])[0] * np.hstack((x[0], y[:, 1]))[:4],
     X34, A((3, 4)))
case("split", lambda x: sum(p.sum(axis=1) * (k + 1.0) for k, p in enumerate(np.split(x, 2, axis=1)))
     + sum(p.sum(axis=0)[:1] for p in np.array_split(x, 3, axis=1))
     + np.array_split(x, [1, 2])[2][0] .sum() + np.hsplit(x, [3])[1][:, 0], X34)
case("sliding_window_1d", lambda x, k: np.sum(sliding_window_view(x, 3, axis=1) * k, axis=-1),
     A((3, 6)), X3)
case("sliding_window_2d", lambda x, k: np.sum(sliding_window_view(x, (2, 3), axis=(1, 2)) * k,
                                              axis=(-2, -1)), A((2, 4, 5)), A((2, 3)))
case("sliding_window_all_axes", lambda x: sliding_window_view(x, (2, 2)).sum(axis=-1), X34)

# --- loops -------------------------------------------------------------------------------------
case("scan", lambda w, xs: scan(lambda h, x: (np.tanh(h * w + x), h * x), xs[0] * 0.5, xs)[1],
     X4, X34)
case("scan_reverse_scalar",
     lambda xs: scan(lambda c, x: (c * 0.9 + np.sum(x * x), c), 0.0, xs, reverse=True)[1], X34)

# --- composites -------------------------------------------------------------------------------
case("sigmoid", F.sigmoid, X34)
case("softplus", F.softplus, A((3, 4), "away"))
case("relu", F.relu, A((3, 4), "away"))
case("logsumexp", lambda x: F.logsumexp(x, axis=1), X34)
case("logsumexp_all", F.logsumexp, X234)
case("softmax", F.softmax, X34)
case("log_softmax", lambda x: F.log_softmax(x, axis=0), X34)

CASE_IDS = [c.name for c in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS), "case names must be unique"
