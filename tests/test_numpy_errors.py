"""Errors and warnings for NumPy as people write it, each naming the user's line: unsupported
functions by their real NumPy path, stores into NumPy arrays, np.random while tracing, a
Parameter read from outside the arguments; and `@compile_grad` on methods."""

from __future__ import annotations

import gc
import os
import warnings

import numpy as np
import pytest
from gradcheck import central_differences
from gradcheck import check_interpreted_gradient as fd_check
from source_lines import marked_line

from compiler import CompiledFunction, TraceError, UnsupportedError, compile_grad
from compiler.numpy_api.dispatch import numpy_name
from runtime import Parameter

HERE = os.path.basename(__file__)
RNG = np.random.default_rng(14)
GLOBAL_RNG = np.random.default_rng(0)


def line_of(marker: str) -> int:
    return marked_line(__file__, marker)


def interpreted(fn, **kw):
    return compile_grad(fn, backend="interpreter", **kw)


# --- unsupported functions by their NumPy path --------------------------------------------------
@pytest.mark.parametrize("function, spelled", [
    (np.linalg.norm, "np.linalg.norm"), (np.fft.fft, "np.fft.fft"), (np.sort, "np.sort"),
    (np.linalg.eigh, "np.linalg.eigh"), (np.ma.masked_where, "np.ma.masked_where"),
    (np.lib.stride_tricks.sliding_window_view, "np.lib.stride_tricks.sliding_window_view"),
    (np.emath.sqrt, "np.lib.scimath.sqrt"), (np.add, "np.add"), (np.arccosh, "np.arccosh"),
])
def test_numpy_functions_are_named_by_their_path(function, spelled):
    assert numpy_name(function) == spelled


def test_an_unsupported_function_is_named_at_the_users_line():
    def spectrum(x):
        return np.sum(np.abs(np.fft.fft(x)))  # FFT

    def factor(a):
        q, r = np.linalg.qr(a)  # QR
        return np.sum(r)

    for f, args, spelled, marker in [(spectrum, (np.ones(4),), "np.fft.fft", "FFT"),
                                     (factor, (np.eye(3),), "np.linalg.qr", "QR")]:
        with pytest.raises(UnsupportedError, match=rf"{spelled} is not supported") as err:
            interpreted(f)(*args)
        assert f"{HERE}:{line_of(marker)}" in str(err.value)
    with pytest.raises(UnsupportedError, match=r"np\.subtract\.reduce is not supported"):
        interpreted(lambda x: np.subtract.reduce(x))(np.ones(3))
    with pytest.raises(UnsupportedError, match=r"np\.multiply\.at is not supported "
                                               r"\(supported: np\.add\.at, np\.subtract\.at\)"):
        interpreted(lambda x: np.multiply.at(x.copy(), [0], 2.0))(np.ones(3))


# --- in-place updates into NumPy arrays: what to write instead ----------------------------------
def test_storing_traced_values_into_a_numpy_array_says_what_to_write():
    def add_column(x):
        y = np.zeros((3, 2))
        y[:, 0] += x[:, 0]  # AUGMENTED
        return np.sum(y)

    def store_rows(x):
        out = np.zeros((3, 2))
        for i in range(3):
            out[i] = np.tanh(x[i])  # ROWS
        return np.sum(out)

    def store_scalar(x):
        out = np.zeros(3)
        out[0] = np.sum(x)  # SCALAR
        return np.sum(out)

    for f, marker in [(add_column, "AUGMENTED"), (store_rows, "ROWS"),
                      (store_scalar, "SCALAR")]:
        with pytest.raises(UnsupportedError, match=r"np\.stack.*np\.concatenate.*np\.where.*"
                                                   r"y = x\.copy\(\)") as err:
            interpreted(f)(np.ones((3, 2)))
        assert f"{HERE}:{line_of(marker)}" in str(err.value), marker


def test_the_suggested_rewrite_works():
    def store_rows(x):
        out = np.zeros_like(x)
        for i in range(3):
            out[i] = np.tanh(x[i]) * (i + 1.0)
        return np.sum(out ** 2)

    x = RNG.normal(size=(3, 2))
    expected = np.sum((np.tanh(x) * np.arange(1.0, 4.0)[:, None]) ** 2)
    np.testing.assert_allclose(interpreted(store_rows)(x), expected, rtol=1e-12)
    fd_check(store_rows, [x])


# --- a Parameter read from outside the arguments ------------------------------------------------
def test_a_parameter_in_a_closure_is_refused():
    w = Parameter(np.ones(3))

    def f(x):
        return np.sum(x * w)  # CLOSURE

    with pytest.raises(TraceError, match=r"baked into the kernel as a constant.*pass it in as "
                                         r"an argument") as err:
        interpreted(f)(np.ones(3))
    assert f"{HERE}:{line_of('CLOSURE')}" in str(err.value)


# --- np.random while tracing --------------------------------------------------------------------
def test_np_random_inside_a_traced_function_warns_at_its_line():
    def noisy(x):
        noise = np.random.normal(size=3)  # LEGACY
        return np.sum(x * noise)

    with pytest.warns(UserWarning, match=r"np\.random\.normal is called while tracing noisy: "
                      r"its numbers are drawn once.*pass them in as an argument") as record:
        f = interpreted(noisy)
        first = f(np.ones(3))
    (warning,) = [w for w in record if "np.random" in str(w.message)]
    assert os.path.basename(warning.filename) == HERE
    assert warning.lineno == line_of("LEGACY")
    assert f(np.ones(3)) == first  # the same numbers on every call: that is the point

    def generator(x):
        return np.sum(x * GLOBAL_RNG.standard_normal(3))  # GENERATOR

    with pytest.warns(UserWarning, match=r"GLOBAL_RNG\.standard_normal is called") as record:
        interpreted(generator)(np.ones(3))
    assert [w.lineno for w in record] == [line_of("GENERATOR")]


def test_no_warning_without_np_random():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        interpreted(lambda x: np.sum(np.tanh(x)))(np.ones(3))



# --- @compile_grad on methods ------------------------------------------------------------------
class Model:
    """self holds constants (a scale, a mask, a random generator): baked in per instance."""

    def __init__(self, scale: float, rng=None) -> None:
        self.scale = scale
        self.mask = np.array([1.0, 0.0, 1.0])
        self.rng = rng

    @compile_grad
    def loss(self, params, X):
        pred = X @ params["W"] * self.mask
        return np.sum(pred ** 2) * self.scale

    @compile_grad(wrt="X", backend="interpreter")
    def by_name(self, params, X):
        return np.sum(np.tanh(X @ params["W"])) * self.scale

    @compile_grad(backend="interpreter")
    def noisy(self, X):
        return np.sum(X * self.rng.standard_normal(X.shape))  # SELF_RNG


class Slotted:
    __slots__ = ("scale",)

    def __init__(self, scale: float) -> None:
        self.scale = scale

    @compile_grad(backend="interpreter")
    def loss(self, w):
        return np.sum(w * w) * self.scale


def test_a_method_binds_self_and_differentiates_the_arguments_after_it():
    X, W = RNG.normal(size=(5, 4)), RNG.normal(size=(4, 3))
    one, three = Model(1.0), Model(3.0)
    mask = np.array([1.0, 0.0, 1.0])
    for model in (one, three):
        value, grads = model.loss.value_and_grad({"W": W}, X)
        pred = X @ W * mask
        np.testing.assert_allclose(value, np.sum(pred ** 2) * model.scale, rtol=1e-12)
        np.testing.assert_allclose(grads["W"], 2 * model.scale * X.T @ (pred * mask),
                                   rtol=1e-12)
    assert isinstance(Model.loss, CompiledFunction)
    assert one.loss.compiled is one.loss.compiled  # made once per instance
    assert one.loss.compiled is not three.loss.compiled  # each its own traces and kernels
    assert "def loss" in one.loss.source("value_and_grad")


def test_a_method_wrt_by_name_and_the_runtime():
    X, W = RNG.normal(size=(5, 4)), RNG.normal(size=(4, 3))
    model = Model(2.0)
    grad = model.by_name.grad({"W": W}, X)

    def objective(X):
        return np.sum(np.tanh(X @ W)) * 2.0

    np.testing.assert_allclose(grad, central_differences(objective, [X], 0, 1e-6), rtol=1e-6)
    W_param = Parameter(W)
    out = model.by_name({"W": W_param}, X)
    out.backward()
    expected = X.T @ (1 - np.tanh(X @ W) ** 2) * 2.0
    np.testing.assert_allclose(W_param.grad, expected, rtol=1e-12)


def test_an_attribute_of_self_changed_after_the_trace_is_seen():
    model, X, W = Model(1.0), np.ones((2, 4)), np.ones((4, 3))
    before = model.by_name({"W": W}, X)
    model.scale = 10.0  # baked into the trace made: it is traced again (compiler/captured.py)
    np.testing.assert_allclose(model.by_name({"W": W}, X), 10.0 * before, rtol=1e-12)
    assert Model(10.0).by_name({"W": W}, X) == model.by_name({"W": W}, X)


W_GLOBAL = Parameter(np.array([0.5, -1.0, 2.0]))


def test_a_global_parameter_given_to_f_or_put_first_is_refused():
    """F.relu(W) of a global Parameter W took W's values for constants, silently: no gradient,
    and a later in-place update (an optimizer step) went unseen. W * x was a bare TypeError
    ('unsupported operand type for Tensor arithmetic: Tracer')."""
    from runtime import functional as F

    def through_f(x):
        return np.sum(F.relu(W_GLOBAL) * x)  # THROUGH_F

    def first(x):
        return np.sum(W_GLOBAL * x)  # PUT_FIRST

    for fn, marker in ((through_f, "THROUGH_F"), (first, "PUT_FIRST")):
        with pytest.raises(TraceError, match="baked into the kernel as a constant") as err:
            interpreted(fn)(np.ones(3))
        assert f"{HERE}:{line_of(marker)}" in str(err.value)
    # outside compiled functions, Tensor arithmetic still refuses what it does not take
    with pytest.raises(TypeError, match="unsupported operand"):
        W_GLOBAL * object()


def test_a_parameter_on_self_is_refused():
    class Holder:
        def __init__(self):
            self.W = Parameter(np.ones(3))

        @compile_grad(backend="interpreter")
        def loss(self, x):
            return np.sum(x * self.W)  # ON_SELF

    with pytest.raises(TraceError, match="pass it in as an argument") as err:
        Holder().loss(np.ones(3))
    assert f"{HERE}:{line_of('ON_SELF')}" in str(err.value)


def test_np_random_on_self_warns():
    model = Model(1.0, rng=np.random.default_rng(3))
    with pytest.warns(UserWarning, match=r"self\.rng\.standard_normal is called while tracing "
                                         r"noisy") as record:
        model.noisy(np.ones(3))
    assert [w.lineno for w in record] == [line_of("SELF_RNG")]


def test_instances_without_weak_references_and_instances_that_die():
    assert Slotted(2.0).loss.grad(np.ones(3)).tolist() == [4.0, 4.0, 4.0]
    bound = Model.by_name.__dict__.setdefault("_bound_methods", {})
    model = Model(1.0)
    model.by_name({"W": np.ones((4, 3))}, np.ones((2, 4)))
    assert id(model) in bound
    key = id(model)
    del model
    gc.collect()
    assert key not in bound  # the compiled method does not keep its instance alive


@pytest.mark.parametrize("function, spelled", [(np.exp, "np.exp"), (np.sqrt, "np.sqrt"),
                                               (np.round, "np.round")])
def test_a_float16_result_is_an_error_at_the_users_line(function, spelled):
    # NumPy gives float16 for these of bool (and 8-bit ints), which numba cannot compile:
    # it was an InternalError naming a generated file
    def f(x, b):
        return np.sum(x * function(b))  # FLOAT16

    with pytest.raises(TraceError, match=rf"{spelled} of bool values is float16 .*"
                                         r"x\.astype\(np\.float32\)") as err:
        compile_grad(f)(np.ones(3), np.array([True, False, True]))
    assert f"{HERE}:{line_of('FLOAT16')}" in str(err.value)


def test_item_and_formatting_of_a_traced_value_name_the_line():
    def logs(x):
        s = np.sum(x**2)
        print(f"{s:.3f}")  # formatted
        return s

    def reads(x):
        s = np.sum(x**2)
        return s * s.item()  # item

    def listed(x):
        return sum(x.tolist())  # tolist

    for fn, marker, said in [(logs, "formatted", 'formatting a traced array (f"{x:.3f}")'),
                             (reads, "item", "x.item() needs the array's value"),
                             (listed, "tolist", "x.tolist() needs the array's values")]:
        with pytest.raises(UnsupportedError, match=r"unknown while tracing") as info:
            interpreted(fn)(np.ones(3))
        assert said in str(info.value)
        assert f"{HERE}:{line_of(marker)}" in str(info.value)
