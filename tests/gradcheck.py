"""Central finite differences, the reference that gradient tests compare against (float64)."""

from __future__ import annotations

import numpy as np


def central_differences(fn, args, position: int, h: float = 1e-6) -> np.ndarray:
    """d fn / d args[position] by central differences, element by element; `fn` returns a
    scalar, and the other arguments are passed as they are."""
    x = np.array(args[position], dtype=np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        values = []
        for step in (h, -h):
            moved = list(args)
            moved[position] = x.copy()
            moved[position][i] += step
            values.append(float(fn(*moved)))
        grad[i] = (values[0] - values[1]) / (2 * h)
    return grad


def check_interpreted_gradient(fn, args, wrt: int = 0) -> np.ndarray:
    """The gradient of scalar `fn` w.r.t. args[wrt], compiled by the interpreter backend, checked
    against central differences; returned."""
    from compiler import compile_grad

    grad = compile_grad(fn, backend="interpreter", wrt=wrt).grad(*args)
    np.testing.assert_allclose(grad, central_differences(fn, list(args), wrt, 1e-6),
                               rtol=1e-6, atol=1e-8)
    return grad
