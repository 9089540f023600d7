"""Derivatives of derivatives as JAX users write them, found wrong by a bug hunt: `f.grad`
inside another compiled function through scans, fori_loops and ops whose gradient guards a
zero cotangent; against central differences of the first derivative (float64) and closed
forms."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_grad, custom_vjp, fori_loop, scan

rng = np.random.default_rng(7)
X = np.array([0.7, -1.3, 0.4, 1.9])
V = rng.normal(size=4)


def jacobian_by_differences(fn, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """d fn(x)[j] / d x[i] as J[i, j], by central differences of a vector-valued `fn`."""
    rows = []
    for i in range(x.size):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        rows.append((np.asarray(fn(up)) - np.asarray(fn(down))) / (2 * h))
    return np.array(rows)


def _scan_program(x):
    def step(c, xi):
        c = np.sin(c * xi) + c
        return c, c ** 2

    c, ys = scan(step, x[0] * 0 + 1.0, x)
    return c + np.sum(ys)


def _fori_program(x):
    return np.sum(fori_loop(0, 3, lambda i, c: np.tanh(c * x + 0.1 * i), x))


@pytest.mark.parametrize("program", [_scan_program, _fori_program], ids=["scan", "fori_loop"])
def test_hessian_vector_product_through_a_loop(program):
    # The inner gradient's forward scan stacks residuals that its reverse scan reads; the
    # outer gradient flows into those stacks too (it was dropped: a wrong Hessian, silently).
    f = compile_grad(program, backend="interpreter")
    hvp = compile_grad(lambda x, v: np.dot(f.grad(x), v), backend="interpreter")
    hessian = jacobian_by_differences(f.grad, X)
    np.testing.assert_allclose(hvp.grad(X, V), hessian @ V, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(hvp(X, V), f.grad(X) @ V, rtol=1e-12)


# f(x, y) = sum(y * g(x)); d/dy of grad_x f is g'(x), at y = 0 too. The gradients of log, sqrt,
# division, pow and arcsin guard a zero cotangent (0 * inf is 0); the guard was where(g == 0,
# 0, ...), whose derivative with respect to g is 0 at g = 0: a mixed partial (a Hessian's
# entry at a zero coordinate) came out 0, silently.
@pytest.mark.parametrize("inner, derivative", [
    (np.log, lambda x: 1 / x),
    (np.sqrt, lambda x: 0.5 / np.sqrt(x)),
    (lambda x: 1 / x, lambda x: -1 / x ** 2),
    (lambda x: x ** 2.5, lambda x: 2.5 * x ** 1.5),
    (lambda x: np.arcsin(x / 4), lambda x: 1 / np.sqrt(16 - x ** 2)),
], ids=["log", "sqrt", "div", "pow", "arcsin"])
def test_mixed_partial_at_a_zero_cotangent(inner, derivative):
    f = compile_grad(lambda x, y: np.sum(y * inner(x)), backend="interpreter")
    mixed = compile_grad(lambda x, y: np.sum(f.grad(x, y)), wrt=1, backend="interpreter")
    x, y = np.array([0.5, 2.0, 3.0]), np.array([0.0, 1.0, 0.0])
    np.testing.assert_allclose(mixed.grad(x, y), derivative(x), rtol=1e-12)
    np.testing.assert_allclose(
        mixed.grad(x, y), np.diag(jacobian_by_differences(lambda z: f.grad(x, z), y)),
        rtol=1e-6)


def test_hessian_row_at_a_zero_coordinate_and_the_guard_kept():
    h = compile_grad(lambda x: x[1] * np.log(x[0]), backend="interpreter")
    row = compile_grad(lambda x: h.grad(x)[0], backend="interpreter")
    np.testing.assert_allclose(row.grad(np.array([2.0, 0.0])), [0.0, 0.5])
    # the guard itself: a zero cotangent through sqrt's infinite slope at 0 is still 0
    s = compile_grad(lambda x: np.sum(np.where(x > 0, np.sqrt(np.abs(x)), 0)),
                     backend="interpreter")
    np.testing.assert_array_equal(s.grad(np.array([0.0, 4.0])), [0.0, 0.25])


@custom_vjp
def _straight_through_round(x):
    return np.round(x)


_straight_through_round.defvjp(lambda g, out, x: (g,))


def test_second_derivative_through_a_custom_rule_at_a_zero_output():
    # sum(r(x) * x^2) with r' = 1 by the rule: the gradient is x^2 + 2x r(x), and its
    # derivative 2x + 2 r(x) + 2x r'(x) (the rule again, as PyTorch's double backward) must
    # not depend on r(x) being 0 (x = 0.4 lost its 2x term)
    f = compile_grad(lambda x: np.sum(_straight_through_round(x) * x ** 2), backend="interpreter")
    second = compile_grad(lambda x: np.sum(f.grad(x) * V), backend="interpreter")
    np.testing.assert_allclose(second.grad(X), V * (4 * X + 2 * np.round(X)), rtol=1e-12)


# prod's and cumprod's gradients are exact at zeros without dividing by them; the zeros they
# put in other entries' partials were constants, so the Hessian at a point holding a zero
# lost every entry through it (H[0, j] of prod at x[0] = 0 came out 0), silently.
@pytest.mark.parametrize("program", [
    lambda x: np.prod(x) * 1.5,
    lambda x: np.sum(np.prod(x.reshape(2, 3), axis=1) ** 2),
    lambda x: np.sum(np.cumprod(x) * np.arange(1.0, 7.0)),
    lambda x: np.sum(np.cumprod(x.reshape(2, 3), axis=1) ** 2),
], ids=["prod", "prod axis", "cumprod", "cumprod axis"])
@pytest.mark.parametrize("point", [
    [0.7, -1.3, 0.4, 1.9, 0.6, -0.8],
    [0.0, -1.3, 0.4, 1.9, 0.6, -0.8],
    [0.7, -1.3, 0.0, 1.9, 0.0, -0.8],
    [0.0, -1.3, 0.0, 0.0, 0.6, -0.8],
    [0.0, 0.0, 0.4, 0.0, 0.0, -0.8],
], ids=["no zero", "one zero", "two zeros", "three zeros", "zeros in both rows"])
def test_hessian_of_products_at_zeros(program, point):
    f = compile_grad(program, backend="interpreter")
    x = np.array(point)
    hessian = jacobian_by_differences(f.grad, x)
    for i in range(x.size):
        row = compile_grad(lambda x, i=i: f.grad(x)[i], backend="interpreter")
        np.testing.assert_allclose(row.grad(x), hessian[i], rtol=1e-6, atol=1e-8)


def test_hessian_vector_product_through_a_scan_compiled_by_numba():
    reference = compile_grad(_scan_program, backend="interpreter")
    f = compile_grad(_scan_program, backend="numba")
    hvp = compile_grad(lambda x, v: np.dot(f.grad(x), v), backend="numba")
    hessian = jacobian_by_differences(reference.grad, X)
    np.testing.assert_allclose(hvp.grad(X, V), hessian @ V, rtol=1e-6, atol=1e-7)
