"""What a compiled function is specialized on, and which kernel answers a call: arrays of any
layout, alignment and byte order give NumPy's values, a batch of 1 gets NumPy's shapes (a
kernel traced for other batch sizes never answers it), and nothing passed in is modified."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import central_differences

from compiler import compile_grad

rng = np.random.default_rng(7)


# --- layouts, alignment, byte order ---------------------------------------------------------
def model(w, x, y):
    p = np.tanh(x @ w[:, 0]) * w[0, 1]
    return np.mean((p - y) ** 2) + np.sum(x[:, 1:] * 0.1)


model_c = compile_grad(model)
W0, XS, YS = rng.standard_normal((3, 2)), rng.standard_normal((8, 3)), rng.standard_normal(8)


def _misaligned(a: np.ndarray) -> np.ndarray:
    out = np.ndarray(a.shape, a.dtype, buffer=bytearray(a.nbytes + 1), offset=1)
    out[...] = a
    return out


def _packed_field(a: np.ndarray) -> np.ndarray:
    record = np.zeros(len(a), np.dtype([("tag", "u1"), ("x", "f8", a.shape[1:])]))
    record["x"] = a
    return record["x"]


def _read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


LAYOUTS = {
    "fortran": np.asfortranarray,
    "strided": lambda a: np.repeat(a, 2, axis=-1)[..., ::2],
    "reversed": lambda a: a[::-1].copy()[::-1],
    "transposed": lambda a: np.ascontiguousarray(a.T).T,
    "read-only": _read_only,
    "big-endian": lambda a: a.astype(">f8"),
    "misaligned": _misaligned,
    "packed-record-field": _packed_field,
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_arrays_of_any_layout_give_numpys_values_and_stay_unmodified(layout):
    """Each layout alternates with plain arrays (the fast path must refuse it, the general path
    convert it). A misaligned array (a buffer read at an odd offset) was a bare numba
    TypeError 'No matching definition for argument type(s)' from the general path."""
    make = LAYOUTS[layout]
    x, y = make(XS), make(YS)
    before = (x.copy(), y.copy())
    expected = model(W0, XS, YS)
    expected_grad = central_differences(lambda w: model(w, XS, YS), [W0], 0)
    for args in ((W0, XS, YS), (W0, x, y), (W0, XS, YS), (make(W0), x, y)):
        np.testing.assert_allclose(model_c(*args), expected, rtol=1e-12)
        value, grad = model_c.value_and_grad(*args)
        np.testing.assert_allclose(value, expected, rtol=1e-12)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(y, before[1])
