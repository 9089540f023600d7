"""np.cross and np.kron (compiler/numpy_api/linalg.py): values against NumPy on both backends,
gradients against central differences."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import check_interpreted_gradient

from compiler import TraceError, compile_grad

# NumPy's own np.cross of 2-vectors (the reference) warns that they are deprecated
pytestmark = pytest.mark.filterwarnings(
    "ignore:Arrays of 2-dimensional vectors are deprecated:DeprecationWarning")
RNG = np.random.default_rng(11)


def products(u, v, p, q, a, b):
    """u, v: (4, 3) stacks of 3-vectors; p, q: 2-vectors; a: (2, 3); b: (3, 2)."""
    return (np.cross(u, v), np.cross(u[:, :2], v), np.cross(p, q), np.cross(u.T, v.T, axis=0),
            np.linalg.cross(u, v), np.kron(a, b), np.kron(p, a), np.kron(a[0], b[:, 0]))


def total(u, v, p, q, a, b):
    return sum(np.sum(np.sin(r)) for r in products(u, v, p, q, a, b))


COMPILED = compile_grad(products)


def arguments():
    return (RNG.normal(size=(4, 3)), RNG.normal(size=(4, 3)), RNG.normal(size=2),
            RNG.normal(size=2), RNG.normal(size=(2, 3)), RNG.normal(size=(3, 2)))


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_cross_and_kron_give_numpys_values(backend):
    args = arguments()
    compiled = COMPILED if backend == "numba" else compile_grad(products, backend=backend)
    for got, expected in zip(compiled(*args), products(*args), strict=True):
        assert np.shape(got) == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-14)


def test_cross_and_kron_differentiate_as_central_differences():
    args = list(arguments())
    for position in range(6):
        check_interpreted_gradient(total, args, wrt=position)


def test_cross_of_other_lengths_is_refused_at_the_line():
    with pytest.raises(TraceError, match=r"test_numpy_cross_kron.py:\d+: incompatible "
                                         "dimensions for cross product"):
        compile_grad(lambda x: np.sum(np.cross(x, x)), backend="interpreter")(np.ones(4))
    with pytest.raises(TraceError, match="np.linalg.cross takes 3-vectors only"):
        compile_grad(lambda x: np.sum(np.linalg.cross(x, x)), backend="interpreter")(np.ones(2))
