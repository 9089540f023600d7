"""Tracing: symbolic batch dims, specialization, argument structures, names, dtypes."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import central_differences

from compiler import compile_grad
from compiler.ir import Sym


def mse(params, X, y):
    h = np.maximum(X @ params["W"] + params["b"], 0.0)
    pred = h.sum(axis=1, keepdims=True)
    return np.mean((pred - y) ** 2)


def reference_mse(params, X, y):
    return mse(params, X, y)  # plain NumPy: the function itself is the reference


def data(n, rng):
    return rng.normal(size=(n, 3)), rng.normal(size=(n, 1))


PARAMS = {"W": np.linspace(-1, 1, 6).reshape(3, 2), "b": np.array([0.1, -0.2])}


def test_new_batch_size_reuses_the_trace():
    f = compile_grad(mse, backend="interpreter")
    rng = np.random.default_rng(0)
    for n in (4, 9, 17):
        X, y = data(n, rng)
        np.testing.assert_allclose(f(PARAMS, X, y), reference_mse(PARAMS, X, y))
    assert len(f._specs) == 1
    spec = f.specialize(PARAMS, *data(5, rng))
    x_type, y_type = spec.signature.types[2:]
    assert x_type.shape == (Sym("N"), 3) and y_type.shape == (Sym("N"), 1)
    assert spec.signature.types[0].shape == (3, 2), "parameters keep static shapes"


def test_shape_used_as_a_value_stays_symbolic():
    f = compile_grad(lambda w, x: np.sum(x * w) / x.shape[0], backend="interpreter")
    w = np.array([1.0, 2.0])
    for n in (3, 6):
        x = np.ones((n, 2))
        np.testing.assert_allclose(f(w, x), 3.0)
    assert len(f._specs) == 1


def test_shape_used_as_an_int_specializes_the_size():
    def f(w, x):
        total = 0.0
        for i in range(x.shape[0]):  # Python control flow on a shape unrolls
            total = total + np.sum(x[i] * w) * (i + 1)
        return total

    compiled = compile_grad(f, backend="interpreter")
    w = np.array([1.0, 2.0])
    for n in (2, 3):
        x = np.arange(2.0 * n).reshape(n, 2)
        np.testing.assert_allclose(compiled(w, x), f(w, x))
    assert len(compiled._specs) == 2
    assert all(t.shape[0] != Sym("N") for s in compiled._specs.values()
               for t in s.signature.types[1:])


def test_batch_dims_of_different_sizes_get_different_symbols():
    f = compile_grad(lambda w, a, b: np.sum(a * w) + np.sum(b * w), backend="interpreter")
    spec = f.specialize(np.ones(2), np.ones((3, 2)), np.ones((5, 2)))
    assert spec.signature.types[1].shape[0] == Sym("N")
    assert spec.signature.types[2].shape[0] == Sym("M")


def test_size_one_batch_is_static():
    f = compile_grad(mse, backend="interpreter")
    rng = np.random.default_rng(1)
    X, y = data(1, rng)
    np.testing.assert_allclose(f(PARAMS, X, y), reference_mse(PARAMS, X, y))
    assert f.specialize(PARAMS, X, y).signature.types[2].shape == (1, 3)


def test_gradient_keeps_the_structure_of_the_argument():
    f = compile_grad(mse, backend="interpreter")
    X, y = data(6, np.random.default_rng(2))
    g = f.grad(PARAMS, X, y)
    assert list(g) == ["W", "b"] and g["W"].shape == (3, 2) and g["b"].shape == (2,)

    by_name = compile_grad(mse, wrt=("params", "X"), backend="interpreter").grad(PARAMS, X, y)
    assert isinstance(by_name, tuple) and list(by_name[0]) == ["W", "b"]
    assert by_name[1].shape == X.shape

    listed = compile_grad(lambda ps, x: np.sum(ps[0] * x + ps[1][0]), backend="interpreter")
    g = listed.grad([np.ones(2), (np.zeros(2),)], np.array([3.0, 4.0]))
    assert isinstance(g, list) and isinstance(g[1], tuple)
    np.testing.assert_allclose(g[0], [3.0, 4.0])
    np.testing.assert_allclose(g[1][0], [1.0, 1.0])


def test_scalars_and_keyword_arguments():
    f = compile_grad(lambda x, y=2.0: x**2 * y, backend="interpreter")
    assert f(3.0) == 18.0
    assert f(3.0, y=1.0) == 9.0
    np.testing.assert_allclose(f.grad(3.0, y=np.float64(0.5)), 3.0)
    value, grad = f.value_and_grad(np.float32(1.5))
    assert isinstance(value, np.float32) and isinstance(grad, np.float32)


def test_tuple_and_dict_results():
    f = compile_grad(lambda x: {"sum": x.sum(), "parts": (x * 2, x.max())}, backend="interpreter")
    out = f(np.array([1.0, 3.0]))
    assert out["sum"] == 4.0 and out["parts"][1] == 3.0
    np.testing.assert_allclose(out["parts"][0], [2.0, 6.0])


def test_float32_stays_float32_and_reductions_accumulate_in_float64():
    f = compile_grad(lambda x: np.sum(x), backend="interpreter")
    x = np.array([1e8, 1.0, -1e8], dtype=np.float32)
    result = f(x)
    assert result.dtype == np.float32
    assert result == 1.0, "float32 accumulation would lose the 1.0"
    g = compile_grad(lambda x: np.sum(np.exp(x) * 2.0), backend="interpreter").grad(x[:2] * 0)
    assert g.dtype == np.float32


def test_names_come_from_the_users_code():
    f = compile_grad(mse, backend="interpreter")
    X, y = data(4, np.random.default_rng(3))
    f(PARAMS, X, y)
    forward = f.ir("forward")
    assert "def mse(W: f64[3,2], b: f64[2], X: f64[N,3], y: f64[N,1])" in forward
    for name in ("h:", "pred:", "mse:"):
        assert name in forward
    f.grad(PARAMS, X, y)
    joint = f.ir("value_and_grad")
    for name in ("W_grad", "b_grad", "pred_grad", "h_grad"):
        assert name in joint


def affine(x, W):
    z = x @ W
    return z


def two_layers(x, W):
    hidden = np.tanh(affine(x, W))  # `hidden` (outer) wins over `z` (the helper's)
    scaled = hidden * 2.0
    last = scaled + 1.0
    return last, np.sum(scaled)  # `last` is bound after the last op it feeds


def test_names_come_from_helpers_and_from_values_bound_last():
    f = compile_grad(two_layers, backend="interpreter")
    f(np.ones((2, 3)), np.ones((3, 3)))
    forward = f.ir("forward")
    for name in ("hidden:", "scaled:", "last:"):
        assert name in forward
    assert "z:" in forward, "a value bound only in the helper keeps the helper's name"


def test_tracing_leaves_the_users_profiler_and_debugger_alone():
    """Names used to be collected with sys.setprofile, which replaced a running cProfile (and
    broke it: `'Profile' object is not callable`) and any other profile hook."""
    import cProfile
    import pstats
    import sys

    profiler = cProfile.Profile()
    f = compile_grad(two_layers, backend="interpreter")
    profiler.runcall(f, np.ones((2, 3)), np.ones((3, 3)))  # traces under the profiler
    calls = {func[2]: n for func, (n, *_) in pstats.Stats(profiler).stats.items()}
    assert calls.get("affine", 0) >= 1 and calls.get("two_layers", 0) >= 1

    seen = {"profile": [], "trace": []}

    def profile_hook(frame, event, arg):
        seen["profile"].append((frame.f_code.co_name, event))

    def trace_hook(frame, event, arg):  # what pdb and IDE debuggers install
        seen["trace"].append((frame.f_code.co_name, event))
        return trace_hook

    g = compile_grad(two_layers, backend="interpreter")
    sys.setprofile(profile_hook)
    sys.settrace(trace_hook)
    try:
        g(np.ones((2, 3)), np.ones((3, 3)))
    finally:
        sys.settrace(None)
        sys.setprofile(None)
    assert ("affine", "call") in seen["profile"] and ("affine", "return") in seen["profile"]
    assert ("affine", "line") in seen["trace"]


def test_second_derivative_through_an_inlined_gradient():
    f = compile_grad(lambda x: np.sum(x**3), backend="interpreter")
    df = compile_grad(lambda x: np.sum(f.grad(x) * np.array([1.0, 2.0])), backend="interpreter")
    x = np.array([2.0, 3.0])
    np.testing.assert_allclose(df(x), np.sum(3 * x**2 * [1, 2]))
    np.testing.assert_allclose(df.grad(x), 6 * x * np.array([1.0, 2.0]))


def test_compiled_function_called_inside_another_is_inlined():
    inner = compile_grad(lambda x: np.tanh(x) * 2.0, backend="interpreter")
    outer = compile_grad(lambda x: np.sum(inner(x) ** 2), backend="interpreter")
    x = np.array([0.3, -0.7])
    np.testing.assert_allclose(outer.grad(x), 8 * np.tanh(x) * (1 - np.tanh(x) ** 2))


def test_symbolic_size_is_a_weak_scalar():
    f = compile_grad(lambda w, x: np.sum(x * w) / x.shape[0], backend="interpreter")
    x = np.ones((4, 2), np.float32)
    assert f(np.ones(2, np.float32), x).dtype == np.float32
    assert f.specialize(np.ones(2, np.float32), x).signature.types[1].shape[0] == Sym("N")


def test_symbolic_size_on_either_side_of_an_operator():
    f = compile_grad(lambda w, x: np.sum(x.shape[0] * (x * w)) - x.shape[0] / np.sum(w),
                     backend="interpreter")
    w, x = np.array([1.0, 2.0], np.float32), np.ones((3, 2), np.float32)
    result = f(w, x)
    assert result.dtype == np.float32
    assert result == np.float32(3 * 9 - 3 / 3)


@pytest.mark.parametrize("fn", [
    lambda w, X: np.sum(X[: X.shape[0] // 2] @ w),
    lambda w, X: np.sum(X @ w) * (X.shape[0] % 3),
    lambda w, X: np.sum(X @ w) if X.shape[0] > 4 else np.sum(w),
    lambda w, X: np.sum(X @ w) / max(X.shape[0], 1),
    lambda w, X: np.sum(X @ w) * -X.shape[0] + abs(X.shape[0]),
    lambda w, X: np.sum(X @ w) / np.sqrt(X.shape[0]) + float(X.shape[0]),
])
def test_a_batch_size_used_as_a_number_works_at_every_size(fn):
    # //, %, comparisons, -n, abs, float and NumPy's ufuncs on x.shape[0] raised a bare
    # TypeError; they make the dim static (or stay traced), as the README says
    f = compile_grad(fn, backend="interpreter")
    w = np.array([0.5, -1.0, 2.0])
    for n in (5, 3, 4):
        X = np.arange(3.0 * n).reshape(n, 3)
        np.testing.assert_allclose(f(w, X), fn(w, X), rtol=1e-12)
        np.testing.assert_allclose(f.grad(w, X), central_differences(fn, [w, X], 0),
                                   rtol=1e-6, atol=1e-8)


def batch_arithmetic(w, X):
    n = X.shape[0]
    return (np.sum(X[: n // 2] @ w) * (n % 3) / max(n, 1) - n + abs(n) + np.sqrt(n)
            + float(n > 4))


BATCH_ARITHMETIC = compile_grad(batch_arithmetic)


def test_a_batch_size_used_as_a_number_works_compiled():
    w = np.array([0.5, -1.0, 2.0])
    for n in (5, 4):
        X = np.arange(3.0 * n).reshape(n, 3)
        np.testing.assert_allclose(BATCH_ARITHMETIC(w, X), batch_arithmetic(w, X), rtol=1e-12)
