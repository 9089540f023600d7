"""What a compiled function is specialized on, and which kernel answers a call: arrays of any
layout, alignment and byte order give NumPy's values, a batch of 1 gets NumPy's shapes (a
kernel traced for other batch sizes never answers it), and nothing passed in is modified."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gradcheck import central_differences

from compiler import compile_grad
from compiler.training import fit, train_step
from runtime import Parameter, optim

rng = np.random.default_rng(7)


# --- a batch of 1: `x.squeeze()` drops the axis in NumPy ------------------------------------
def squeezed(w, x):
    """(x @ w).squeeze() normalized over what is left of axis 0: at a batch of 1, NumPy has
    dropped the batch axis, so the sum runs over the features."""
    z = (x * w).squeeze()
    return np.sum(z / z.sum(axis=0) * np.arange(1.0, 4.0)), z


squeezed_c = compile_grad(squeezed, has_aux=True)


@pytest.mark.parametrize("rows", [[5, 1, 5, 1], [1, 5, 1]], ids=["batch-first", "one-first"])
def test_a_batch_of_one_is_not_answered_by_the_kernel_of_other_sizes(rows):
    """The fast path ran the kernel traced for a symbolic batch at a batch of 1: z came back
    (1, 3) where NumPy gives (3,), and the sum over axis 0 normalized over the batch
    (value 6.0 where NumPy's is about 2.2)."""
    w = rng.uniform(0.5, 1.5, 3)
    for n in rows:
        x = rng.uniform(0.5, 1.5, (n, 1, 3))
        for call in (squeezed_c, squeezed_c.value_and_grad):
            got = call(w, x)
            value, aux = got[0] if call is not squeezed_c else got
            expected, expected_aux = squeezed(w, x)
            assert np.shape(aux) == expected_aux.shape
            np.testing.assert_allclose(value, expected, rtol=1e-12)
            np.testing.assert_allclose(aux, expected_aux, rtol=1e-12)
        _, grad = squeezed_c.value_and_grad(w, x)
        np.testing.assert_allclose(grad, central_differences(
            lambda w_, x=x: squeezed(w_, x)[0], [w], 0), rtol=1e-6, atol=1e-8)


def predict(params, x):
    return (x @ params["w"]).squeeze()


predict_c = compile_grad(predict)


def regression(params, x, y):
    p = (x @ params["w"]).squeeze()
    return np.mean((p - y) ** 2), p


regression_c = compile_grad(regression, has_aux=True)


def test_runtime_calls_with_a_batch_of_one_keep_numpys_shapes():
    """The recorded (TensorCall) path: a Parameter's prediction for one row is 0-d, as NumPy's,
    and backward gives the closed-form gradient at every batch size."""
    params = {"w": Parameter(rng.standard_normal((3, 1)))}
    x, y = rng.standard_normal((5, 3)), rng.standard_normal(5)
    for n in (5, 1, 5, 1):
        out = predict_c(params, x[:n])
        assert out.data.shape == predict({"w": params["w"].data}, x[:n]).shape
        params["w"].zero_grad()
        loss, _ = regression_c(params, x[:n], y[:n])
        loss.backward()
        w = params["w"].data
        expected = 2 * x[:n].T @ ((x[:n] @ w)[:, 0] - y[:n])[:, None] / n
        np.testing.assert_allclose(params["w"].grad, expected, rtol=1e-12)


def test_train_step_and_fit_give_a_batch_of_one_its_own_kernels():
    """train_step's kernels for a symbolic batch refused one row (KernelShapeError from the
    user's step(...)) or, before they did, returned the aux value with the batch axis kept;
    fit with a last batch of one row runs step by step, each batch as train_step runs it."""
    w0 = rng.standard_normal((3, 1))
    x, y = rng.standard_normal((5, 3)), rng.standard_normal(5)
    params = {"w": Parameter(w0.copy())}
    step = train_step(regression_c, params, optim.SGD(params, lr=0.1))
    w = w0.copy()
    for n in (5, 1, 5, 1):
        loss, aux = step(x[:n], y[:n])
        expected_loss, expected_aux = regression({"w": w}, x[:n], y[:n])
        assert np.shape(aux) == expected_aux.shape
        np.testing.assert_allclose(loss, expected_loss, rtol=1e-12)
        w = w - 0.1 * 2 * x[:n].T @ ((x[:n] @ w)[:, 0] - y[:n])[:, None] / n
        np.testing.assert_allclose(params["w"].data, w, rtol=1e-12)

    def weighted(params, x):  # the last batch's value differs at one row (see `squeezed`)
        return squeezed(params["w"], x)[0]

    x3 = rng.uniform(0.5, 1.5, (5, 1, 3))
    params = {"w": Parameter(np.ones(3))}
    history = fit(compile_grad(weighted), params, optim.SGD(params, lr=0.01), (x3,), epochs=1,
                  batch_size=2, shuffle=False, progress=False)
    w = np.ones(3)
    for start in (0, 2, 4):
        batch = x3[start:start + 2]
        np.testing.assert_allclose(history.losses[start // 2], weighted({"w": w}, batch))
        w = w - 0.01 * central_differences(lambda w_, b=batch: weighted({"w": w_}, b), [w], 0)
    np.testing.assert_allclose(params["w"].data, w, rtol=1e-7)


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


# --- sizes 0 and short lanes: NumPy's values ------------------------------------------------
batch_variance = compile_grad(lambda w, x: np.var(x * w, axis=0, ddof=2))
batch_inf_norm = compile_grad(lambda w, x: np.linalg.norm(x @ w, np.inf))


@pytest.mark.filterwarnings("ignore:Degrees of freedom")
@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_more_ddof_than_entries_and_norms_of_nothing_are_numpys(backend):
    """np.var divides by max(count - ddof, 0): var([1, 2, 3], ddof=4) is inf, where gradfuse
    gave -2.0 (a negative variance; std NaN), and a batch shorter than ddof when the kernel
    runs gave -0.0 where NumPy gives NaN. np.linalg.norm(x, inf) of no entries (and the
    matrix norms 1 and inf of an empty matrix) are 0.0 in NumPy; they raised 'zero-size array
    to reduction operation maximum'. (The composites are the backends' own: the interpreter
    sweeps the cases, numba compiles a few.)"""
    x = np.array([1.0, 2.0, 3.0])
    ddofs, orders = ((4,), (np.inf,)) if backend == "numba" else ((0, 2, 3, 4, 5), (1, np.inf))
    with np.errstate(divide="ignore", invalid="ignore"):
        for ddof in ddofs:
            for fn in (np.var, np.std):
                got = compile_grad(lambda x, f=fn, d=ddof: f(x, ddof=d), backend=backend)(x)
                np.testing.assert_equal(got, fn(x, ddof=ddof))
        w = np.array([1.0, -2.0, 0.5])
        variance = batch_variance if backend == "numba" else \
            compile_grad(batch_variance.fn, backend=backend)
        for n in (5, 0, 2, 0, 5):
            rows = rng.standard_normal((n, 3))
            np.testing.assert_allclose(variance(w, rows), np.var(rows * w, axis=0, ddof=2))
    inf_norm = batch_inf_norm if backend == "numba" else \
        compile_grad(batch_inf_norm.fn, backend=backend)
    for n in (4, 0, 3):
        rows = rng.standard_normal((n, 3))
        np.testing.assert_allclose(inf_norm(w, rows), np.linalg.norm(rows @ w, np.inf))
    for order in orders:
        norm = compile_grad(lambda m, o=order: np.linalg.norm(m, o), backend=backend)
        for shape in ((0, 3), (3, 0), (0, 0)):
            np.testing.assert_equal(norm(np.zeros(shape)), 0.0)
            assert norm.grad(np.zeros(shape)).shape == shape


# --- the kernel cache on disk across processes ----------------------------------------------
CACHE_SCRIPT = '''
import json
import numpy as np
from compiler import compile_grad
import helper, other

def loss(w, x):
    return np.sum(helper.act(x @ w) * helper.SCALE) + np.sum(helper.TABLE * w) + helper.K

w, x = np.array([0.5, -0.3, 0.2]), np.arange(12.0).reshape(4, 3) / 10
checks = []
def check(compiled, plain, *args):
    value, grad = compile_grad(compiled).value_and_grad(*args)
    h = 1e-6
    steps = [np.eye(len(args[0]))[i] * h for i in range(len(args[0]))]
    expected = [(plain(args[0] + s, *args[1:]) - plain(args[0] - s, *args[1:])) / (2 * h)
                for s in steps]
    checks.append([float(value), float(plain(*args)), np.abs(grad - expected).max()])

check(loss, loss, w, x)
check(helper.loss, helper.loss, w, x)   # the same qualname in two modules
check(other.loss, other.loss, w, x)
namespace = {"np": np}                   # a notebook cell defining `cell` again
exec(f"def cell(w, x):\\n    return np.sum((x @ w) * {helper.SCALE})", namespace)
check(namespace["cell"], namespace["cell"], w, x)
print(json.dumps(checks))
'''

HELPER = '''
import numpy as np
SCALE = {scale}
TABLE = np.array({table})
K = {k}
def act(z):
    return {act}
def loss(w, x):
    return np.sum(act(x @ w) ** 2) * SCALE
'''


def test_a_kernel_cached_on_disk_never_answers_for_edited_code(tmp_path):
    """Two processes sharing a cache, the helper module edited between them (a constant, a
    constant array of the same shape, the body of a function the loss calls): the second
    process computes with the new code, as do two functions named `loss` in two modules and a
    function redefined by exec under the same name."""
    from test_jit_cache import run_in_new_process

    script = tmp_path / "main.py"
    script.write_text(CACHE_SCRIPT)
    (tmp_path / "other.py").write_text(
        "import numpy as np\ndef loss(w, x):\n    return np.sum(np.cos(x @ w))\n")
    runs = []
    for scale, table, k, act in ((2.0, [1.0, 2.0, 3.0], 1, "np.tanh(z)"),
                                 (3.0, [1.0, 2.0, 4.0], 2, "np.sin(z)")):
        (tmp_path / "helper.py").write_text(HELPER.format(scale=scale, table=table, k=k,
                                                          act=act))
        runs.append(run_in_new_process(script, tmp_path / "cache"))
    for run in runs:
        for value, expected, grad_error in run:
            assert math.isclose(value, expected, rel_tol=1e-12)
            assert grad_error < 1e-6
    assert all(a[0] != b[0] for a, b in zip(runs[0][:2], runs[1][:2]))  # the edits show


def test_batches_of_different_sizes_combined_are_an_error_at_the_users_line_only():
    """The TraceError came with the shape rule's DimConflict chained to it ('During handling
    of the above exception, another exception occurred'), a page of gradfuse's internals
    above the user's message."""
    import traceback

    from compiler.errors import TraceError

    added = compile_grad(lambda w, x, y: np.sum((x + y) * w))
    with pytest.raises(TraceError, match=r"shapes \(5, 3\) and \(4, 3\) cannot be broadcast") \
            as caught:
        added(np.ones(3), np.ones((5, 3)), np.ones((4, 3)))
    assert "DimConflict" not in "".join(traceback.format_exception(caught.value))


def test_a_python_int_out_of_int64s_range_is_refused_by_name():
    """2**63 became a uint64 scalar (a strong dtype: x32 * 2**63 gave float64 where NumPy's weak
    int keeps float32) and 2**64 an object array ('holds object values'), also when a call
    follows one with a small int (the fast path)."""
    from compiler.errors import ArgumentError

    scaled = compile_grad(lambda x, n: x * n)
    x = np.ones(3, np.float32)
    assert scaled(x, 2**63 - 1).dtype == np.float32
    for n in (2**63, 2**64, -2**63 - 1):
        with pytest.raises(ArgumentError, match=rf"'n' is the Python int {n}, out of int64"):
            scaled(x, n)


@pytest.mark.parametrize("make", [_read_only, lambda a: a.astype(">f8"), _misaligned],
                         ids=["read-only", "big-endian", "misaligned"])
def test_train_step_names_a_parameter_array_it_cannot_update_in_place(make):
    """p.data bound to an array the step cannot write into was a bare numba error (read-only:
    an InternalError calling it a bug in gradfuse; big-endian: NumbaValueError 'Unsupported
    array dtype: >f8'; misaligned: TypeError 'No matching definition'), also after steps
    had run on a good array; the runtime's optimizer updates the same array (or says
    NumPy's 'read-only')."""
    from compiler.errors import ArgumentError

    params = {"w": Parameter(np.ones((3, 1)))}
    step = train_step(regression_c, params, optim.SGD(params, lr=0.1))
    x, y = rng.standard_normal((4, 3)), rng.standard_normal(4)
    step(x, y)
    good = params["w"].data.copy()
    params["w"].data = make(good)
    with pytest.raises(ArgumentError, match="Parameter 'w'.* in place"):
        step(x, y)
    np.testing.assert_array_equal(params["w"].data, good)


def test_np_size_of_a_batch():
    """np.size was an UnsupportedError; np.size(x, 0) is x.shape[0], symbolic in arithmetic
    with traced values (one trace for every batch size), np.size(x) is x.size."""
    def averaged(w, x):
        return np.sum(x @ w) / np.size(x, 0) + np.size(x, -1) * np.sum(w ** 2)

    def per_entry(w, x):
        return np.sum(x @ w) / np.size(x)

    per_row = compile_grad(averaged)
    w = np.array([0.5, -1.0, 2.0])
    for n in (4, 6, 9):
        x = rng.standard_normal((n, 3))
        value, grad = per_row.value_and_grad(w, x)
        np.testing.assert_allclose(value, averaged(w, x), rtol=1e-12)
        np.testing.assert_allclose(grad, x.sum(0) / n + 6 * w, rtol=1e-12)
        value, grad = compile_grad(per_entry, backend="interpreter").value_and_grad(w, x)
        np.testing.assert_allclose(value, per_entry(w, x), rtol=1e-12)
        np.testing.assert_allclose(grad, x.sum(0) / (3 * n), rtol=1e-12)
    assert len(per_row._specs) == 1  # one trace served the three batch sizes


# --- code edited in place (IPython's autoreload) --------------------------------------------
def _act(z, k=1.0):
    return np.tanh(z) * k


def _edited_act(z, k=1.0):
    return np.sin(z) * k


def _act_loss(w, x):
    return np.sum(_act(x @ w))


def _edited_act_loss(w, x):
    return np.sum(_act(x @ w) ** 2)


def test_code_edited_in_place_is_traced_again():
    """IPython's autoreload edits a module's functions in place (their __code__ and
    __defaults__), the function objects staying the same: the compiled function kept the
    kernels traced from the old code, for the function itself and for a helper it calls,
    in plain calls and train steps."""
    saved = [(f, f.__code__, f.__defaults__) for f in (_act, _act_loss)]
    try:
        compiled = compile_grad(_act_loss)
        params = {"w": Parameter(np.array([0.5, -0.2, 0.1]))}
        step = train_step(lambda p, x: _act_loss(p["w"], x), params, optim.SGD(params, lr=0.0))
        w, x = params["w"].data.copy(), rng.standard_normal((4, 3))
        for edit in (lambda: None,
                     lambda: setattr(_act, "__code__", _edited_act.__code__),
                     lambda: setattr(_act, "__defaults__", (3.0,)),
                     lambda: setattr(_act_loss, "__code__", _edited_act_loss.__code__)):
            edit()
            np.testing.assert_allclose(compiled(w, x), _act_loss(w, x), rtol=1e-12)
            np.testing.assert_allclose(compiled.grad(w, x), central_differences(
                lambda w_: _act_loss(w_, x), [w], 0), rtol=1e-6, atol=1e-8)
            np.testing.assert_allclose(step(x), _act_loss(w, x), rtol=1e-12)
    finally:
        for f, code, defaults in saved:
            f.__code__, f.__defaults__ = code, defaults


# --- narrow integers: NumPy wraps products and sums in their dtype --------------------------
def narrow_products(w, v, m):
    return (v @ v, m @ m.T, np.einsum("ij,kj->ik", m, m), np.tensordot(m, m.T, 1),
            np.dot(v[:1], v[:1]), (v @ v) * w, np.add.reduce(v, dtype=v.dtype) * w)


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32])
def test_products_of_narrow_integers_wrap_as_numpys(backend, dtype):
    """int8 [100, 100, 100] @ itself is 48 in NumPy (30000 wrapped in int8): the numba kernel
    summed in a variable numba typed int64, so a fused use read 30000, and a 0-d result
    failed to compile (InternalError 'Cannot unify array(int8, 0d) and array(int64, 0d)');
    np.add.reduce(x, dtype=np.int8) summed in int64 on both backends (300, not 44)."""
    big = np.iinfo(dtype).max // 2 + 7
    v = np.full(3, big, dtype)
    m = np.array([[big, 3, big], [1, big, 2]], dtype)
    w = np.array([1.0, 0.5, 0.25])
    got = compile_grad(narrow_products, backend=backend)(w, v, m)
    for g, expected in zip(got, narrow_products(w, v, m)):
        assert np.asarray(g).dtype == np.asarray(expected).dtype
        np.testing.assert_array_equal(g, expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint64])
def test_the_sign_of_unsigned_integers(dtype):
    """numba's np.sign gives -1 for an unsigned int with its top bit set: np.sign of uint8
    [200, 3, 255, 0] came back [255, 1, 255, 0] where NumPy's is [1, 1, 1, 0]."""
    top = np.iinfo(dtype).max
    u = np.array([top - 55, 3, top, 0], dtype)

    def signs(u):
        return np.sign(u), np.sign(u) * 3.0

    for got, expected in zip(compile_grad(signs)(u), signs(u)):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def test_a_python_complex_is_refused_as_complex():
    """A Python complex was refused as 'holds a complex; compiled functions take arrays,
    scalars, ...', which it is; now as complex128 arrays are, saying what to pass."""
    from compiler.errors import ArgumentError

    with pytest.raises(ArgumentError, match="'s' holds complex128 values.*real and imaginary"):
        compile_grad(lambda x, s: np.sum(x * s))(np.ones(3), 1 + 2j)
