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
