"""The table of gradients at kinks and singular points (README, "Gradients at kinks"), checked
against closed forms and, where it has one, PyTorch's convention."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_grad
from runtime import functional as F


def grad(fn, x):
    return compile_grad(lambda x: np.sum(fn(x)), backend="interpreter").grad(np.asarray(x))


@pytest.mark.parametrize(
    "name, fn, x, expected",
    [
        ("abs'(0) = 0", np.abs, [-1.0, 0.0, 2.0], [-1.0, 0.0, 1.0]),
        ("relu'(0) = 0", F.relu, [-1.0, 0.0, 2.0], [0.0, 0.0, 1.0]),
        ("sign' = 0", np.sign, [-1.0, 0.0, 2.0], [0.0, 0.0, 0.0]),
        ("maximum tie splits evenly", lambda x: np.maximum(x, 0.0), [-1.0, 0.0, 2.0],
         [0.0, 0.5, 1.0]),
        ("minimum tie splits evenly", lambda x: np.minimum(x, 0.0), [-1.0, 0.0, 2.0],
         [1.0, 0.5, 0.0]),
        ("max over ties shares the gradient", lambda x: np.max(x), [1.0, 3.0, 3.0],
         [0.0, 0.5, 0.5]),
        ("clip passes the gradient at its bounds (PyTorch clamp)",
         lambda x: np.clip(x, -1.0, 1.0), [-2.0, -1.0, 0.0, 1.0, 2.0], [0, 1, 1, 1, 0]),
        ("sqrt'(0) = inf", np.sqrt, [0.0, 4.0], [np.inf, 0.25]),
        ("cbrt'(0) = inf, as JAX", np.cbrt, [0.0, 8.0], [np.inf, 1 / 12]),
        ("where(x != 0, cbrt(x), 0) at 0", lambda x: np.where(x != 0, np.cbrt(x), 0.0),
         [0.0, -8.0], [0.0, 1 / 12]),
        ("max over a lane holding NaN: 0, not 0/0", lambda x: np.max(x),
         [1.0, np.nan, 3.0, np.nan], [0.0, 0.0, 0.0, 0.0]),
        ("a zero cotangent through a NaN max stays 0",
         lambda x: np.where(np.isnan(np.min(x)), 0.0, np.min(x)), [1.0, np.nan], [0.0, 0.0]),
        ("max with initial= tied: half to the entry", lambda x: np.max(x, initial=3.0),
         [1.0, 3.0], [0.0, 0.5]),
        ("median of an even lane: half to each middle entry", np.median,
         [4.0, 1.0, 3.0, 2.0], [0.0, 0.0, 0.5, 0.5]),
        ("quantile: 1 - t and t to the order statistics around it",
         lambda x: np.quantile(x, 0.3), [4.0, 1.0, 3.0, 2.0, 5.0], [0.0, 0.0, 0.2, 0.8, 0.0]),
        ("nan-reductions: 0 at the NaNs", lambda x: np.nanmean(x) + np.nanmax(x),
         [1.0, np.nan, 3.0], [0.5, 0.0, 1.5]),
        ("where(x > 0, sqrt(x), 0) has gradient 0 at 0, not NaN",
         lambda x: np.where(x > 0, np.sqrt(x), 0.0), [0.0, 4.0], [0.0, 0.25]),
        ("where(x > 0, log(x), 0) at 0", lambda x: np.where(x > 0, np.log(x), 0.0),
         [0.0, 2.0], [0.0, 0.5]),
        ("where(x != 0, 1 / x, 0) at 0", lambda x: np.where(x != 0, 1.0 / x, 0.0),
         [0.0, 2.0], [0.0, -0.25]),
        ("where(x > 0, x ** 0.5, 0) at 0", lambda x: np.where(x > 0, x**0.5, 0.0),
         [0.0, 4.0], [0.0, 0.25]),
        ("x ** 0 has gradient 0 at x = 0 too (polynomial features: 1 + 2x at 0, as JAX)",
         lambda x: x[:, None] ** np.arange(3.0), [0.0, 2.0], [1.0, 5.0]),
        ("a p < 1 norm at an entry 0: 0 there (was NaN)", lambda x: np.linalg.norm(x, 0.5),
         [0.0, 1.0, 4.0], [0.0, 3.0, 1.5]),
        ("prod with one zero", lambda x: np.prod(x), [0.0, 2.0, 3.0], [6.0, 0.0, 0.0]),
        ("prod with two zeros", lambda x: np.prod(x), [0.0, 0.0, 3.0], [0.0, 0.0, 0.0]),
        ("softplus'(0) = 1/2", F.softplus, [0.0], [0.5]),
        ("sigmoid saturates without NaN", F.sigmoid, [-1000.0, 1000.0], [0.0, 0.0]),
        ("sigmoid'(0) = 1/4: no kink where its two forms meet", F.sigmoid, [0.0], [0.25]),
        ("std of a constant lane: 0, as PyTorch", lambda x: np.sum(np.std(x, axis=1)),
         [[2.0, 2.0], [1.0, 3.0]], [[0.0, 0.0], [-0.5, 0.5]]),
        ("nanstd of a constant lane: 0", lambda x: np.nanstd(x), [2.0, np.nan, 2.0],
         [0.0, 0.0, 0.0]),
        ("floor, ceil, trunc, round, rint: 0, at the jumps too",
         lambda x: np.floor(x) + np.ceil(x) + np.trunc(x) + np.round(x) + np.rint(x),
         [-1.5, 0.0, 1.0, 2.5], [0.0, 0.0, 0.0, 0.0]),
        ("heaviside' = 0", lambda x: np.heaviside(x, 0.5), [-1.0, 0.0, 2.0], [0.0, 0.0, 0.0]),
        ("sort: the cotangent goes back through the stable permutation",
         lambda x: np.sort(x) * np.array([1.0, 2.0, 3.0, 4.0]), [2.0, 1.0, 2.0, 1.0],
         [3.0, 1.0, 4.0, 2.0]),
        ("cumprod with zeros: the products of the others, no 0/0", np.cumprod,
         [2.0, 0.0, 3.0, 0.0, 5.0], [1.0, 8.0, 0.0, 0.0, 0.0]),
        ("hypot at the origin: 0", lambda x: np.hypot(x, 0.0), [0.0, -2.0], [0.0, -1.0]),
        ("arctan2 at the origin: 0", lambda y: np.arctan2(y, np.array([0.0, 1.0])), [0.0, 1.0],
         [0.0, 0.5]),
        ("arcsin'(1) = inf", np.arcsin, [1.0, 0.0], [np.inf, 1.0]),
        ("arctanh'(1) = arccosh'(1) = inf", lambda x: np.arctanh(x) + np.arccosh(x + 1.0),
         [1.0, 0.0], [np.inf, np.inf]),
        ("where(x < 1, arctanh(x), 0) at 1", lambda x: np.where(x < 1, np.arctanh(x), 0.0),
         [1.0, 0.5], [0.0, 4 / 3]),
        ("sinc'(0) = 0, near 0 too (no NaN from an overflowing 1 / x)", np.sinc,
         [0.0, 0.5, 1e-170, -1e-310], [0.0, -4 / np.pi, 0.0, 0.0]),
        ("x ** y w.r.t. y where x <= 0: 0, as JAX", lambda y: np.array([-2.0, 0.0, 2.0]) ** y,
         [2.0, 2.0, 2.0], [0.0, 0.0, 4 * np.log(2.0)]),
        ("heaviside(x, h) w.r.t. h: 1 where x == 0",
         lambda h: np.heaviside(np.array([-1.0, 0.0, 2.0]), h), [0.3, 0.3, 0.3], [0, 1, 0]),
        ("arccos'(+-1) = -inf", np.arccos, [1.0, -1.0, 0.0], [-np.inf, -np.inf, -1.0]),
        ("max with initial= and where=: half to a tied entry",
         lambda x: np.max(x, initial=2.0, where=np.array([True, True, False])),
         [1.0, 2.0, 5.0], [0.0, 0.5, 0.0]),
        ("nan-reductions over a lane of NaNs only: 0",
         lambda x: np.nanmean(x, axis=1) + np.nanmax(x, axis=1) + np.nanstd(x, axis=1),
         [[np.nan, np.nan], [1.0, 2.0]], [[0.0, 0.0], [0.0, 2.0]]),
        ("vector norms at 0: 0 for every ord",
         lambda x: sum(np.linalg.norm(x, o) for o in (2, 1, 3, 0.5, -1, np.inf, -np.inf)),
         [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
        ("matrix norms 'fro', 1, -1, inf, -inf at 0: 0",
         lambda x: sum(np.linalg.norm(x, o) for o in ("fro", 1, -1, np.inf, -np.inf)),
         [[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]),
        ("norm inf with ties: shared evenly", lambda x: np.linalg.norm(x, np.inf),
         [3.0, -3.0, 1.0], [0.5, -0.5, 0.0]),
        ("singular values that repeat: U diag(g) V^T of one SVD", np.linalg.svdvals,
         [[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]),
        ("norms 'nuc' and 2 at 0: U diag(g) V^T, as PyTorch",
         lambda x: np.linalg.norm(x, "nuc") + np.linalg.norm(x, 2),
         [[0.0, 0.0], [0.0, 0.0]], [[1.5, 0.0], [0.0, 1.5]]),
    ],
)
def test_kink_table(name, fn, x, expected):
    np.testing.assert_allclose(grad(fn, x), np.asarray(expected, dtype=float), err_msg=name)


def test_kinks_match_pytorch():
    torch = pytest.importorskip("torch")
    x = np.array([-1.0, 0.0, 2.0])
    cases = [
        (np.abs, torch.abs),
        (F.relu, torch.relu),
        (lambda v: np.maximum(v, 0.0), lambda t: torch.maximum(t, torch.zeros_like(t))),
        (lambda v: np.clip(v, -1.0, 0.0), lambda t: torch.clamp(t, -1.0, 0.0)),
        (lambda v: np.floor(v) + np.round(v), lambda t: torch.floor(t) + torch.round(t)),
        (lambda v: np.cumprod(v * v), lambda t: torch.cumprod(t * t, 0)),
        (np.sinc, torch.sinc),
        (lambda v: np.linalg.norm(v, 0.5) + np.linalg.norm(v, -1.5),
         lambda t: torch.linalg.vector_norm(t, 0.5) + torch.linalg.vector_norm(t, -1.5)),
        (lambda v: v**0.0 + v ** np.array([0.0, 1.0, 2.0]), lambda t: t**0.0 + t ** torch.tensor(
            [0.0, 1.0, 2.0], dtype=torch.float64)),
    ]
    for ours, theirs in cases:
        t = torch.tensor(x, requires_grad=True)
        theirs(t).sum().backward()
        np.testing.assert_allclose(grad(ours, x), t.grad.numpy())


def test_the_gradient_of_det_and_slogdet_of_a_singular_matrix_is_a_linalg_error():
    singular = np.array([[1.0, 2.0], [2.0, 4.0]])
    for fn in (np.linalg.det, lambda a: np.linalg.slogdet(a)[1]):
        with pytest.raises(np.linalg.LinAlgError, match="Singular matrix"):
            grad(fn, singular)


def test_cholesky_gradient_is_symmetric():
    a = np.array([[4.0, 2.0], [1.0, 3.0]])  # NumPy reads the lower triangle only
    g = grad(lambda a: np.linalg.cholesky(a) * np.array([[1.0, 0.0], [2.0, 3.0]]), a)
    np.testing.assert_allclose(g, g.T)
    torch = pytest.importorskip("torch")
    t = torch.tensor(np.tril(a) + np.tril(a, -1).T, requires_grad=True)
    (torch.linalg.cholesky(t) * torch.tensor([[1.0, 0.0], [2.0, 3.0]], dtype=torch.float64)
     ).sum().backward()
    np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12)
