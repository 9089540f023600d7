"""Arguments of every kind NumPy accepts: read-only and big-endian arrays work, dtypes that
kernels cannot compute with are refused with an ArgumentError naming the argument."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_grad
from compiler.errors import AnomalyError, ArgumentError
from compiler.training import fit, train_step
from runtime import Parameter, optim


def tanh_projection(w, X):
    return np.sum(np.tanh(X @ w))


projection = compile_grad(tanh_projection)  # numba: the path where typing refused them
W = np.array([0.5, -1.0, 0.25])
X = np.linspace(-1.0, 1.0, 12).reshape(4, 3)


def expected_value_and_grad(w, X):
    t = np.tanh(X @ w)
    return np.sum(t), X.T @ (1 - t**2)


def read_only(a):
    a = a.copy()
    a.setflags(write=False)
    return a


def memory_mapped(a, path):
    np.save(path, a)
    return np.load(path, mmap_mode="r")


KINDS = {  # kind -> make(array, a file to use)
    "read-only": lambda a, _: read_only(a),
    "memory-mapped": memory_mapped,
    "big-endian": lambda a, _: a.astype(a.dtype.newbyteorder(">")),
    "big-endian read-only": lambda a, _: read_only(a.astype(">f8")),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_arrays_numpy_accepts_work_in_every_call(kind, tmp_path):
    w, x = KINDS[kind](W, tmp_path / "w.npy"), KINDS[kind](X, tmp_path / "x.npy")
    value, grad = expected_value_and_grad(W, X)
    for _ in range(2):  # the general path, then the fast paths
        assert projection(w, x) == pytest.approx(value, rel=1e-12)
        v, g = projection.value_and_grad(w, x)
        assert v == pytest.approx(value, rel=1e-12)
        np.testing.assert_allclose(g, grad, rtol=1e-12)
        p = Parameter(w)
        projection(p, x).backward()
        np.testing.assert_allclose(p.grad, grad, rtol=1e-12)
        assert projection(W, X) == pytest.approx(value, rel=1e-12)  # plain arrays still do


def test_a_read_only_big_endian_array_after_a_read_only_native_one_is_read_right():
    """numba types both alike once it has seen the native one: they must not reach a kernel."""
    value = expected_value_and_grad(W, X)[0]
    for x in (read_only(X), read_only(X.astype(">f8")), read_only(X.astype(">f8"))):
        assert projection(W, x) == pytest.approx(value, rel=1e-12)
        assert projection.value_and_grad(W, x)[0] == pytest.approx(value, rel=1e-12)


def test_read_only_and_big_endian_data_train():
    w = Parameter(W.astype(">f8"))  # a Parameter's own copy is in native byte order
    assert w.dtype == np.float64 and w.dtype.isnative
    losses = []
    step = train_step(projection, w, optim.SGD([w], lr=0.1))
    for data in (read_only(X), X.astype(">f8"), X):
        losses.append(step(data))
    expected = W.copy()
    for _ in range(3):
        expected = expected - 0.1 * expected_value_and_grad(expected, X)[1]
    np.testing.assert_allclose(w.data, expected, rtol=1e-12)
    w2 = Parameter(W.copy())
    fit(projection, w2, optim.SGD([w2], lr=0.1), (read_only(X),), epochs=3, progress=False)
    np.testing.assert_allclose(w2.data, expected, rtol=1e-12)


@pytest.mark.parametrize("dtype, hint", [
    (np.complex128, "real and imaginary parts"),
    (np.complex64, "real and imaginary parts"),
    (np.float16, r"astype\(np.float32\)"),
    (np.longdouble, r"astype\(np.float64\)"),
    (object, "no arithmetic"),
    ("U3", "no arithmetic"),
    ("datetime64[s]", "no arithmetic"),
])
def test_dtypes_kernels_cannot_compute_with_are_refused(dtype, hint):
    values = np.array([1, 2, 3]).astype(dtype)
    calls = [lambda: projection(W, X), lambda: projection(W, np.tile(values, (4, 1))),
             lambda: projection.grad(W, np.tile(values, (4, 1))),
             lambda: projection({"w": W}["w"], [values] * 4)]
    calls[0]()  # a fast path exists: it must refuse, not crash
    for call in calls[1:3]:
        with pytest.raises(ArgumentError, match=rf"argument 'X' holds .*{hint}"):
            call()
    with pytest.raises(ArgumentError, match="argument 'w' holds"):
        projection(values, X)
    with pytest.raises(ArgumentError, match=r"argument 'params\['enc'\]\['W'\]' holds"):
        compile_grad(lambda params: np.sum(params["enc"]["W"]))({"enc": {"W": values}})


def test_a_complex_argument_that_is_not_differentiated_is_refused_not_ignored():
    scaled = compile_grad(lambda w, z: np.sum(w * z), backend="interpreter")
    with pytest.raises(ArgumentError, match="complex128"):
        scaled.grad(np.ones(2), np.array([1 + 2j, 3 - 1j]))
    half = Parameter(np.ones(2, np.float16))  # allowed by the runtime, refused by the compiler
    with pytest.raises(ArgumentError, match="float16"):
        scaled(half, np.ones(2))


SQUARES = compile_grad(lambda x: np.sum(x * x))


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix's own
@pytest.mark.parametrize("make, what", [
    (lambda a: np.ma.masked_array(a, a > 0), "numpy.ma.MaskedArray, whose operations differ"),
    (lambda a: np.matrix(a), "numpy.matrix, whose operations differ"),
])
def test_ndarray_subclasses_that_compute_otherwise_are_refused(make, what):
    # A masked array's sum leaves the masked entries out (NumPy: 5.0 here); computing on its
    # data gave 19.0, and the first call leaked numba's "Unsupported array type".
    a = np.arange(6.0).reshape(2, 3) - 2
    for call in (SQUARES, SQUARES.grad):  # the first call, then after a plain warm-up call
        with pytest.raises(ArgumentError, match=f"argument 'x' is a {what}"):
            call(make(a))
        assert SQUARES(a) == np.sum(a * a)


def test_a_functools_partial_compiles_named_after_its_function():
    # (the ArgumentError for a non-array argument recommends functools.partial)
    import functools

    from gradcheck import central_differences

    def scaled_loss(w, X, training):
        return np.sum((X @ w) ** 2) * (0.5 if training else 1.0)

    loss = compile_grad(functools.partial(scaled_loss, training=True), backend="interpreter")
    assert loss.__name__ == "scaled_loss"
    np.testing.assert_allclose(loss(W, X), scaled_loss(W, X, True), rtol=1e-12)
    np.testing.assert_allclose(
        loss.grad(W, X), central_differences(lambda w: scaled_loss(w, X, True), [W], 0),
        rtol=1e-6)


# --- Python scalars are weak, as in NumPy 2 (NEP 50) -------------------------------------------
def scaled(x, s, n):
    return (x * s, x / n, np.where(x > 0, s * 2.0, x), np.clip(x, -abs(s), s), np.exp(s) * x,
            np.maximum(x, n - 2), np.sum(x * s) * s)


SCALED = compile_grad(scaled, wrt=(0, 1))


@pytest.mark.parametrize("backend", ["interpreter", "numba"])
def test_python_scalars_take_the_arrays_dtype_as_in_numpy(backend):
    # They were float64 and int64 arrays: `x32 * lr` came back float64, not NumPy's float32.
    f = SCALED if backend == "numba" else compile_grad(scaled, wrt=(0, 1), backend=backend)
    x32 = np.linspace(-1.0, 1.0, 7, dtype=np.float32)
    for s, n in [(0.75, 3), (np.float64(0.75), 3), (0.75, np.int64(3)), (0.75, 3), (-2, 3)]:
        for k, (got, want) in enumerate(zip(f(x32, s, n), scaled(x32, s, n))):
            assert np.asarray(got).dtype == np.asarray(want).dtype, (type(s), type(n), k)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"result {k}")


def test_a_python_float_is_differentiated_through_the_float32_it_becomes():
    f = compile_grad(lambda x, s: np.sum(x * s) * s + s ** 2, wrt=(0, 1))
    x32 = np.linspace(-1.0, 2.0, 5, dtype=np.float32)
    value, (gx, gs) = f.value_and_grad(x32, 0.75)
    assert np.asarray(value).dtype == np.float32
    assert gx.dtype == np.float32
    np.testing.assert_allclose(gs, 2 * 0.75 * np.sum(x32, dtype=np.float64) + 1.5, rtol=1e-6)
    np.testing.assert_allclose(gx, np.full(5, 0.75**2), rtol=1e-6)


def test_wrt_assigned_after_calls_answers_the_next_call():
    """`f.wrt = 1` after calls kept the fast path's kernel for wrt=0: grad and value_and_grad
    went on returning the first argument's gradient, silently."""
    f = compile_grad(lambda a, b: np.sum(a * b ** 2))
    a, b = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    for _ in range(2):  # the second call takes the fast path
        np.testing.assert_allclose(f.grad(a, b), b ** 2)
        np.testing.assert_allclose(f.value_and_grad(a, b)[1], b ** 2)
    f.wrt = 1
    np.testing.assert_allclose(f.grad(a, b), 2 * a * b)
    np.testing.assert_allclose(f.value_and_grad(a, b)[1], 2 * a * b)
    f.wrt = (0, 1)
    da, db = f.grad(a, b)
    np.testing.assert_allclose(da, b ** 2)
    np.testing.assert_allclose(db, 2 * a * b)
    with pytest.raises(TypeError):
        f.wrt = [[0]]


def test_has_aux_and_check_finite_assigned_after_calls_answer_the_next_call():
    """Both were plain attributes the traces had read: has_aux set after a call still refused
    the (loss, aux) result, and check_finite set after a call checked nothing."""
    f = compile_grad(lambda a: (np.sum(np.log(a)), a * 2), backend="interpreter")
    a = np.array([1.0, 2.0])
    with pytest.raises(ArgumentError, match="has_aux=True"):
        f.value_and_grad(a)
    f.has_aux = True
    (value, aux), grad = f.value_and_grad(a)
    np.testing.assert_allclose(value, np.log(2.0))
    np.testing.assert_allclose(aux, 2 * a)
    np.testing.assert_allclose(grad, 1 / a)
    assert np.isnan(f.value_and_grad(np.array([-1.0, 2.0]))[0][0])
    f.check_finite = True
    with pytest.raises(AnomalyError, match="log produced nan"):
        f.value_and_grad(np.array([-1.0, 2.0]))
