"""Indexing as people write it: advanced indices in every combination, one-hot, gathers,
np.array of traced values, and the errors for what cannot be traced (assignment into copies
is tests/test_numpy_assignment.py).

Values are checked against NumPy, gradients against central differences (float64) and
against PyTorch, which shares NumPy's semantics for advanced indices. The op table's cases
(tests/op_cases.py) check the same ops through numba chunk by chunk; the compiled functions
here are module-level and built once.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from gradcheck import check_interpreted_gradient as fd_check
from source_lines import marked_line

from compiler import TraceError, UnsupportedError, compile_grad
from compiler.errors import KernelIndexError
from runtime import functional as F

torch = pytest.importorskip("torch")

HERE = os.path.basename(__file__)
RNG = np.random.default_rng(14)


def line_of(marker: str) -> int:
    return marked_line(__file__, marker)


def interpreted(fn, **kw):
    return compile_grad(fn, backend="interpreter", **kw)


def torch_grad(fn, x, *rest):
    """fn's value and its gradient w.r.t. x, by PyTorch."""
    xt = torch.tensor(x, requires_grad=True)
    value = fn(xt, *[torch.tensor(r) for r in rest])
    value.backward()
    return value.item(), xt.grad.numpy()


# --- reading: advanced indices, against NumPy -------------------------------------------------
X4D = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
I = np.array([[0, 1], [1, 0]])
J = np.array([2, -1])
K = np.array([[3], [0]])
KEYS = {
    "pair": (I, J),
    "int_slice_array": (0, slice(None), J),  # separated by a slice: gathered axes go first
    "slice_then_pair": (slice(None), I, J),
    "array_slice_array": (I, slice(None), J),
    "array_slice_array_int": (I, slice(1, 3), J, 0),
    "ellipsis_array": (Ellipsis, J),
    "newaxes_around": (None, I, None, J),  # a new axis separates them too
    "newaxis_between": (I, None, J),
    "broadcast_three": (I, J, K),
    "int_beside_array": (1, J),
    "array_beside_int": (np.array([1, -2]), 1),
    "array_ellipsis_array": (I, Ellipsis, K),
    "lists": ([1, 0], [2, 0], [3, 1]),
    "reversed_slices": (slice(None, None, -1), J, slice(1, None, 2), K),
    "0d_arrays": (np.array(1), J),
    "mask": (np.array([True, False]),),
    "mask_with_int": (slice(None), np.array([True, False, True]), 1),
    "mask_2d_with_array": (np.ones((2, 3), bool), np.array([1, 2, 0, 3, 3, 0])),
}


def _reader(key, traced_positions):
    def read(x, *indices):
        it = iter(indices)
        return x[tuple(next(it) if p in traced_positions else k for p, k in enumerate(key))]
    return read


@pytest.mark.parametrize("traced", [False, True], ids=["constant", "traced"])
@pytest.mark.parametrize("name", KEYS)
def test_advanced_keys_match_numpy(name, traced):
    key = KEYS[name]
    positions = [p for p, k in enumerate(key) if traced and isinstance(k, (np.ndarray, list))
                 and np.asarray(k).dtype != bool]
    indices = [np.asarray(key[p]) for p in positions]
    got = interpreted(_reader(key, positions))(X4D, *indices)
    expected = X4D[key]
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_advanced_gradients_match_finite_differences():
    x = RNG.normal(size=(3, 4, 5))
    i, j = np.array([[2, 0], [0, 1]]), np.array([4, -1])

    def f(x, i, j):
        return (np.sum(x[i, :, j] ** 2) + np.sum(np.sin(x[1, i, j])) + np.sum(x[:, i[0], j] * 3.0)
                + np.sum(x[i, 2]))

    fd_check(f, [x, i, j])


# --- the cross-entropy idiom and multi-index gathers, compiled, against PyTorch --------------
def cross_entropy(logits, labels):
    n = logits.shape[0]
    logp = F.log_softmax(logits, axis=1)
    return -np.mean(logp[np.arange(n), labels])


def gathers(x, i, j):
    # x[i, j] with index arrays, a slice between (gathered axes first), ints beside them
    return (np.sum(x[i, j] ** 2) + np.sum(x[i, :, j] * np.arange(4.0)) + np.sum(x[0, j])
            + np.sum(np.tanh(x[i[::-1], 1:3, j])))


def torch_gathers(x, i, j):
    return ((x[i, j] ** 2).sum() + (x[i, :, j] * torch.arange(4.0, dtype=x.dtype)).sum()
            + x[0, j].sum() + torch.tanh(x[i.flip(0), 1:3, j]).sum())


COMPILED_CROSS_ENTROPY = compile_grad(cross_entropy)
COMPILED_GATHERS = compile_grad(gathers)


def test_cross_entropy_idiom_matches_pytorch_compiled():
    logits, labels = RNG.normal(size=(6, 5)), RNG.integers(0, 5, 6)
    value, grad = COMPILED_CROSS_ENTROPY.value_and_grad(logits, labels)
    expected, expected_grad = torch_grad(
        lambda z, y: torch.nn.functional.cross_entropy(z, y), logits, labels)
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(value, F.cross_entropy(logits, labels), rtol=1e-12)


def test_multi_index_gathers_match_pytorch_compiled():
    x = RNG.normal(size=(3, 4, 5))
    i, j = np.array([2, 0, 2, 1]), np.array([3, -1, 0, -4])  # j indexes axes of 4 and 5
    value, grad = COMPILED_GATHERS.value_and_grad(x, i, j)
    expected, expected_grad = torch_grad(torch_gathers, x, i, j)
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-14)
    fd_check(gathers, [x, i, j])


def test_traced_indices_out_of_range_stop_the_kernel():
    x = RNG.normal(size=(3, 4, 5))
    with pytest.raises(IndexError):  # (the kernel of the test above)
        COMPILED_GATHERS.value_and_grad(x, np.array([0, 1, 3, 1]), np.array([0, 1, 2, 3]))
    with pytest.raises(IndexError):  # -6 < -5
        COMPILED_GATHERS.value_and_grad(x, np.array([0, 1, 2, 1]), np.array([0, 1, -6, 3]))


def shifted_rows(x, i, rows):
    """Positions the kernel computes: a scalar (i + 1, before the row's loop) and an array."""
    return np.sum(x[i + 1] * x[0]) + np.sum(x[rows * 2 - 1])


COMPILED_SHIFTED = compile_grad(shifted_rows)


def test_positions_the_kernel_computes_are_checked_too():
    # x[i + 1] read past x's end, silently (numba does not check bounds); now as x[i] does
    x = RNG.normal(size=(4, 3))
    value, grad = COMPILED_SHIFTED.value_and_grad(x, np.int64(1), np.array([1, 2, 0]))
    assert np.isclose(value, shifted_rows(x, 1, np.array([1, 2, 0])), rtol=1e-12)
    fd_check(shifted_rows, [x, np.int64(1), np.array([1, 2, 0])])
    np.testing.assert_allclose(grad, interpreted(shifted_rows).grad(x, np.int64(1),
                                                                    np.array([1, 2, 0])))
    # The error is NumPy's, at the user's line, with the statement (KernelIndexError)
    line = shifted_rows.__code__.co_firstlineno + 2
    with pytest.raises(KernelIndexError, match=rf"test_numpy_indexing.py:{line}: index 4 is "
                       r"out of bounds for axis 0 with size 4\n    return np.sum\(x\[i \+ 1\]"):
        COMPILED_SHIFTED(x, np.int64(3), np.array([1, 2, 0]))  # row 4 of 4
    with pytest.raises(IndexError, match=rf"{line}: index 5 is out of bounds for axis 0 with "
                                         "size 4"):
        COMPILED_SHIFTED(x, np.int64(0), np.array([1, 3, 0]))  # row 5 of 4
    with pytest.raises(IndexError, match=rf"{line}: index -5 is out of bounds"):  # row -5 of 4
        COMPILED_SHIFTED(x, np.int64(-6), np.array([1, 2, 0]))
    # The interpreter backend says the same (it raised NumPy's IndexError, with no line)
    with pytest.raises(KernelIndexError, match=rf"test_numpy_indexing.py:{line}: index 4 is "
                       r"out of bounds for axis 0 with size 4\n    return np.sum\(x\[i \+ 1\]"):
        interpreted(shifted_rows)(x, np.int64(3), np.array([1, 2, 0]))


def test_two_ellipses_are_refused_as_numpy_refuses_them():
    # were accepted, the second read as nothing
    assert np.asarray(np.ones((2, 3)))[..., 1].shape == (2,)
    with pytest.raises(IndexError):
        np.ones((2, 3))[..., ...]
    with pytest.raises(TraceError, match=r"test_numpy_indexing.py:\d+: an index can only have "
                                         r"a single ellipsis \('...'\)"):
        compile_grad(lambda x: np.sum(x[..., ...]), backend="interpreter")(np.ones((2, 3)))


def test_a_slice_with_traced_bounds_is_refused_saying_what_to_write_instead():
    def window(x, i):
        return np.sum(x[i:i + 2])

    with pytest.raises(UnsupportedError, match=r"test_numpy_indexing.py:\d+: a slice whose "
                       r"bounds are traced values .* np.take\(x, i \+ np.arange\(2\), axis=0\)"):
        compile_grad(window)(np.arange(5.0), np.array(1))  # a 0-d array: traced
    # a number is static (tests/test_program_structure.py): the slice is NumPy's
    assert compile_grad(window, backend="interpreter")(np.arange(5.0), np.int64(1)) == 3.0


# --- one-hot and identity matrices --------------------------------------------------------------
def test_one_hot_by_comparison_and_by_an_eye_passed_in():
    def loss(logits, labels, eye):
        one_hot = (labels[:, None] == np.arange(5)).astype(logits.dtype)
        taken = eye[labels]  # a traced eye takes traced labels
        return -np.mean(np.sum((one_hot + taken) * F.log_softmax(logits, axis=1), axis=1))

    logits, labels = RNG.normal(size=(4, 5)), np.array([0, 3, 3, 4])
    value = interpreted(loss)(logits, labels, np.eye(5))
    np.testing.assert_allclose(value, 2 * F.cross_entropy(logits, labels), rtol=1e-12)
    fd_check(loss, [logits, labels, np.eye(5)])


def test_eye_and_identity_are_constants():
    def f(a, w):
        ridge = a.T @ a + 1e-3 * np.eye(3) + np.identity(3, dtype=a.dtype) * w[0]
        picked = np.eye(4)[[1, 3]] @ a  # a constant index of a constant
        return np.sum(ridge @ w) + np.sum(picked * picked) + np.trace(np.eye(2)) * w[1]

    a, w = RNG.normal(size=(4, 3)), RNG.normal(size=3)
    ridge = a.T @ a + 1e-3 * np.eye(3) + np.identity(3) * w[0]
    expected = np.sum(ridge @ w) + np.sum((a[[1, 3]]) ** 2) + 2 * w[1]
    np.testing.assert_allclose(interpreted(f)(a, w), expected, rtol=1e-12)
    fd_check(f, [a, w])
    fd_check(f, [a, w], wrt=1)


def test_indexing_a_numpy_array_by_a_traced_index_says_what_to_write():
    # NumPy indexes its own array without asking the index (ndarray.__getitem__, np.take's
    # dispatch looks at `a` only): the index must give numbers now, which a traced one cannot.
    def one_hot(labels, w):
        return np.sum(np.eye(3)[labels] * w)  # EYE

    def take(labels, w):
        return np.sum(np.take(np.eye(3), labels, axis=0) * w)  # TAKE

    for f, marker in [(one_hot, "EYE"), (take, "TAKE")]:
        with pytest.raises(UnsupportedError, match=r"pass the array in as an argument.*"
                           r"\(labels\[:, None\] == np\.arange\(C\)\)\.astype\(float\)") as err:
            interpreted(f, wrt=1)(np.array([0, 2]), np.ones(3))
        assert f"{HERE}:{line_of(marker)}" in str(err.value)


# --- out-of-range constant indices: at trace time, at the user's line -------------------------
@pytest.mark.parametrize("read", [
    lambda x: x[np.array([0, 3])],
    lambda x: x[:, [1, -5]],
    lambda x: x[np.array([0, 1]), np.array([2, 4])],
    lambda x: np.take(x, [7], axis=1),
    lambda x: np.take_along_axis(x, np.array([[0], [4], [1]]), axis=1),
    lambda x: x[3],
], ids=["rows", "negative", "pair", "take", "take_along_axis", "int"])
def test_constant_indices_out_of_range_are_reported_at_trace_time(read):
    def f(x):
        return np.sum(read(x))

    for backend in ("interpreter", "numba"):  # numba compiles nothing: tracing fails first
        with pytest.raises(TraceError, match=r"index -?\d+ is out of bounds for axis \d with "
                                             r"size \d") as err:
            compile_grad(f, backend=backend)(np.ones((3, 4)))
        assert err.value.loc.filename.endswith(HERE)  # the lambda's line, in this file


def test_constant_indices_into_a_batch_axis_are_checked_by_the_kernel():
    f = compile_grad(lambda w, x: np.sum(x[np.array([0, 2])] * w))  # x's rows: symbolic N
    np.testing.assert_allclose(f(np.ones(2), np.ones((3, 2))), 4.0)
    with pytest.raises(IndexError):
        f(np.ones(2), np.ones((2, 2)))


# --- np.array / np.asarray / np.stack of traced values --------------------------------------
def arrays_of_scalars(x):
    a, b = x[0], np.sum(x)
    v = np.array([a, b, 1.0])  # traced scalars and a number
    m = np.array([[a, 2.0], [b, a * b]])
    s = np.stack([a, b * 2.0, 3.0])
    rows = np.array([x[:2], x[1:3] * 2.0])  # small traced arrays: (2, 2)
    pair_sum = np.sum([x[:2], x[2:]], axis=0)  # NumPy takes the list as an array
    return (np.sum(v * x[:3]) + np.sum(m @ v[:2]) + np.sum(np.exp(np.asarray(a)))
            + np.sum(s * s) + np.sum(rows @ x[:2]) + np.sum(x * [a, 1.0, b, 0.5])
            + np.sum(pair_sum * x[1:3]) + np.mean(np.stack([a, b])))


def test_np_array_of_traced_scalars_and_numbers():
    x = RNG.normal(size=4)
    np.testing.assert_allclose(interpreted(arrays_of_scalars)(x), arrays_of_scalars(x),
                               rtol=1e-12)
    np.testing.assert_allclose(compile_grad(arrays_of_scalars)(x), arrays_of_scalars(x),
                               rtol=1e-12)
    fd_check(arrays_of_scalars, [x])


def test_np_array_result_dtype_and_return():
    def f(x):
        return np.array([x[0], 2, x[1] * 3.0])

    x = np.array([1.5, 2.5], dtype=np.float32)
    got = interpreted(f)(x)
    expected = np.array([np.float32(1.5), 2, np.float32(7.5)])  # NumPy: float64
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_np_array_with_dtype_or_of_a_large_array_explains():
    for f in (lambda x: np.sum(np.array([x[0], x[1]], dtype=np.float32)),
              lambda x: np.mean([x[0], x[1]]) * 1.0):  # NumPy's mean casts the sum itself
        with pytest.raises(UnsupportedError, match=r"make one traced array first, "
                                                   r"np\.stack\(\[\.\.\.\]\)"):
            interpreted(f)(np.ones(2, dtype=np.float32))
    with pytest.raises(UnsupportedError, match=r"it is an array already \(drop np\.asarray\)"):
        interpreted(lambda x: np.sum(np.asarray(x)))(np.ones((20, 20)))
