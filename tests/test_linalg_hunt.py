"""Linear algebra defects found by hunting: argument checks NumPy makes and gradfuse skipped
(so a wrong program computed something), and NumPy 2 spellings of products that were refused.
Interpreter backend: these are trace-time behaviours (the products' kernels are covered by
test_numpy_linalg.py and test_codegen_blas.py)."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import central_differences

from compiler import compile_grad
from compiler.errors import TraceError

RNG = np.random.default_rng(5)


@pytest.mark.parametrize("a_shape, b_shape, axes, message", [
    # axis 2 of a matrix wrapped to axis 0 and summed over it: NumPy's IndexError
    ((3, 3), (3, 3), ([2], [0]), "axis 2 is out of bounds for the first operand"),
    ((3, 3), (3, 3), ([0], [-3]), "axis -3 is out of bounds for the second operand"),
    ((2, 2), (2, 2), ([0, 0], [0, 1]), "duplicate axes are not allowed"),
    ((2, 3), (2, 3), 3, "axes=3 sums more axes than the operands"),
    ((2, 3), (3, 2), ([0], [0]), "axis 0 of .* has length 2, axis 0 of .* has length 3"),
])
def test_tensordot_refuses_axes_numpy_refuses(a_shape, b_shape, axes, message):
    f = compile_grad(lambda a, b: np.tensordot(a, b, axes=axes), backend="interpreter")
    with pytest.raises(TraceError, match=message) as caught:
        f(np.ones(a_shape), np.ones(b_shape))
    assert "test_linalg_hunt.py" in str(caught.value)
    with pytest.raises((IndexError, ValueError)):
        np.tensordot(np.ones(a_shape), np.ones(b_shape), axes=axes)


def test_dot_and_inner_mismatches_name_the_function_called():
    for name, fn, shapes in [("np.dot", np.dot, [(2, 3, 4), (3, 2)]),
                             ("np.inner", np.inner, [(3,), (4,)])]:
        with pytest.raises(TraceError, match=f"{name}: shape-mismatch for sum"):
            compile_grad(fn, backend="interpreter")(*(np.ones(s) for s in shapes))


@pytest.mark.parametrize("shape, n, message", [
    ((3,), 2, "1-dimensional array given"),  # was silently a @ a, a number
    ((2, 3), 2, "must be square, got \\(2, 3\\)"),
    ((2, 3), 0, "must be square"),
    ((4, 2, 3), 1, "must be square"),
])
def test_matrix_power_refuses_what_numpy_refuses(shape, n, message):
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.matrix_power(np.ones(shape), n)
    f = compile_grad(lambda a: np.linalg.matrix_power(a, n), backend="interpreter")
    with pytest.raises(TraceError, match=message):
        f(np.ones(shape))


def test_matrix_power_of_a_batch_of_square_matrices_still_works():
    a = RNG.normal(size=(5, 3, 3))  # a leading batch length beside square matrices
    f = compile_grad(lambda a: np.linalg.matrix_power(a, 3), backend="interpreter")
    np.testing.assert_allclose(f(a), np.linalg.matrix_power(a, 3), rtol=1e-12)
    np.testing.assert_allclose(f(a[:4]), np.linalg.matrix_power(a[:4], 3), rtol=1e-12)


PRODUCTS = [
    ("np.linalg.tensordot", lambda a, b: np.linalg.tensordot(a, b, axes=([0], [1])),
     (3, 2), (4, 3)),
    ("np.matvec", np.matvec, (2, 3, 4), (5, 1, 4)),
    ("np.vecmat", np.vecmat, (2, 1, 3), (5, 3, 4)),
]


@pytest.mark.parametrize("name, fn, a_shape, b_shape", PRODUCTS, ids=[p[0] for p in PRODUCTS])
def test_numpy2_product_spellings_values_and_gradients(name, fn, a_shape, b_shape):
    a, b = RNG.normal(size=a_shape), RNG.normal(size=b_shape)
    expected = fn(a, b)
    np.testing.assert_allclose(compile_grad(fn, backend="interpreter")(a, b), expected,
                               rtol=1e-12)
    weights = RNG.normal(size=expected.shape)

    def objective(a, b):
        return np.sum(fn(a, b) * weights)

    grads = compile_grad(objective, wrt=(0, 1), backend="interpreter").grad(a, b)
    for i, g in enumerate(grads):
        np.testing.assert_allclose(g, central_differences(objective, [a, b], i), rtol=1e-6,
                                   atol=1e-8)
