"""The code generator's parts and promises: names, literals, fusion decisions, numerics at
NaN/inf and kinks, dtypes of every result, outputs that never alias inputs, and errors."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_grad
from compiler.codegen import generate, prelude
from compiler.codegen.scalars import literal
from compiler.errors import InternalError
from compiler.names import Namer


def source_of(fn, *args, kind="forward", wrt=0) -> str:
    spec = compile_grad(fn, wrt=wrt, backend="interpreter").specialize(*args)
    return generate(spec.graph_of(kind), kind).source


def kernel_body(source: str) -> str:
    return source.split("@numba.njit(cache=True")[1]


# --- names and literals ------------------------------------------------------------------------
def test_names_never_shadow_builtins_keywords_or_numpy():
    namer = Namer()
    assert [namer.fresh(n) for n in ("sum", "np", "lambda", "x", "x", "2d", "a-b", None, "t1")] \
        == ["sum_2", "np_2", "lambda_2", "x", "x_2", "v2d", "a_b", "t1", "t1_"]
    assert namer.fresh(None) == "t2"


def test_literals_keep_their_dtype():
    assert literal(0.1, np.float32) == "np.float32(0.1)"
    assert literal(0.1, np.float64) == "0.1"
    assert literal(-0.5, np.float64) == "(-0.5)"  # an atom: -0.5 ** x would be -(0.5 ** x)
    assert literal(np.inf, np.float32) == "np.float32(np.inf)"
    assert literal(-np.inf, np.float64) == "(-np.inf)"
    assert literal(np.nan, np.float64) == "np.nan"
    assert literal(3, np.int64) == "3" and literal(3, np.int32) == "np.int32(3)"
    assert literal(1, np.bool_) == "True"


def test_user_names_that_collide_are_renamed_and_compile():
    def weird(range, N, i0):
        sum = range * N
        min = np.exp(sum) + i0
        return min.sum()

    args = [np.ones(3), np.ones((5, 3)), np.ones(3)]
    body = kernel_body(source_of(weird, *args, kind="value_and_grad", wrt=(0, 2)))
    assert "def weird_vjp(range_2, N_2, i0_):" in body
    assert "sum_2 = range_2[i1] * N_2[i0, i1]" in body
    f = compile_grad(weird, wrt=(0, 2))
    value, (g_range, g_i0) = f.value_and_grad(*args)
    np.testing.assert_allclose(value, 15 * (np.e + 1))
    np.testing.assert_allclose(g_range, np.full(3, 5 * np.e))
    np.testing.assert_allclose(g_i0, np.full(3, 5.0))


def test_a_kernel_named_like_a_builtin_does_not_hide_it():
    def f(x):
        return np.sum(np.abs(x))  # the template for abs calls the builtin abs()

    f.__name__ = "abs"
    x = np.array([-1.0, 2.0, -3.0])
    assert "def abs_kernel(x):" in source_of(f, x)
    assert compile_grad(f)(x) == 6.0


# --- fusion: what becomes a loop, what becomes an array ------------------------------------------
def test_an_elementwise_chain_and_its_reduction_are_one_loop_without_arrays():
    def f(x, y):
        return np.sum(np.exp(x * 2.0 + y) * 3.0 - x)

    body = kernel_body(source_of(f, np.ones((6, 4)), np.ones(4)))
    assert body.count("for ") == 2 and "np.empty" not in body and "np.zeros" not in body


def test_float32_code_stays_float32():
    def f(x):
        return np.sum(np.tanh(x) * 0.5 + 1.0)

    body = kernel_body(source_of(f, np.ones((6, 4), np.float32)))
    assert "t2 = t1 * np.float32(0.5)" in body and "t1 = _tanh_f32(x[i0, i1])" in body
    assert "f_acc = 0.0" in body and "f = np.float32(f_acc)" in body  # summed in float64
    assert compile_grad(f)(np.ones((6, 4), np.float32)).dtype == np.float32


def test_products_with_a_batch_dimension_call_blas_and_small_static_ones_loop():
    def f(x, w, a):
        return np.sum(x @ w) + np.sum(a @ a)

    body = kernel_body(source_of(f, np.ones((20, 10)), np.ones((10, 5)), np.ones((4, 4)),
                                 wrt=(1, 2)))
    assert "blas.matmul(x, w, t1)" in body and "np.dot" not in body
    assert "for k0 in range(4):" in body


def kept_axis_reductions(x, flags, ids):
    return (np.sum(x * x, axis=0), np.prod(x + 1.0, axis=0, keepdims=True), np.max(x, axis=0),
            np.min(x * 2.0, axis=0), np.sum(flags, axis=0), np.max(ids, axis=0),
            np.sum(x.astype(np.float32), axis=0), np.sum(x[:, :, None] * np.ones(13), axis=0))


def test_small_static_accumulators_live_on_the_stack_and_match_the_interpreter():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 5))
    args = (x, x > 0, rng.integers(-9, 9, (7, 5)))
    body = kernel_body(source_of(kept_axis_reductions, *args))
    # one stack accumulator per reduction of 5 elements; 5 x 13 is too many for the stack
    assert body.count("_stack_zeros((5,), ") == 3 and body.count("_stack_full(") == 4
    assert "np.zeros((5, 13), np.float64)" in body
    f = compile_grad(kept_axis_reductions)
    got = f(*args)
    f(-x, x < 0, args[2] + 5)  # would overwrite results that pointed into the kernel's stack
    expected = compile_grad(kept_axis_reductions, backend="interpreter")(*args)
    for k, (g, e) in enumerate(zip(got, expected)):
        assert g.dtype == e.dtype and g.shape == e.shape, k
        np.testing.assert_allclose(g, e, rtol=1e-12, err_msg=str(k))


def test_stack_accumulators_are_filled_again_at_every_call():
    f = compile_grad(lambda x: np.max(x, axis=0) + np.sum(x, axis=0))
    first, second = np.arange(6.0).reshape(3, 2), -np.ones((2, 2))
    np.testing.assert_array_equal(f(first), [4.0 + 6.0, 5.0 + 9.0])
    np.testing.assert_array_equal(f(second), [-1.0 - 2.0, -1.0 - 2.0])


def transposed_products(x):
    a = np.exp(x)  # read transposed below: an array, small and static
    b = np.tanh(a.T * a)  # a result: it must outlive the call
    return b, np.sum(b.T * a)


def test_small_static_temporaries_live_on_the_stack_and_results_do_not():
    x = np.linspace(-1.0, 1.0, 16).reshape(4, 4)
    body = kernel_body(source_of(transposed_products, x))
    assert "a = _stack_empty((4, 4), np.float64)" in body
    assert "b = np.empty((4, 4), np.float64)" in body
    f = compile_grad(transposed_products)
    first = f(x)
    f(-2.0 * x)  # a result in the kernel's frame would now hold the second call's values
    expected = compile_grad(transposed_products, backend="interpreter")(x)
    np.testing.assert_allclose(first[0], expected[0], rtol=1e-12)
    np.testing.assert_allclose(first[1], expected[1], rtol=1e-12)


def test_views_are_index_arithmetic_not_copies():
    def f(x):
        return np.sum(x.T[::2] * x[:, 1])

    body = kernel_body(source_of(f, np.ones((5, 4))))
    assert "x[i1, 2 * i0] * x[i1, 1]" in body and "np.empty" not in body


def test_backward_statements_name_the_op_and_the_users_line():
    def f(x):
        h = np.maximum(x, 0.0)
        return np.sum(h * h)

    body = kernel_body(source_of(f, np.ones((3, 2)), kind="backward"))
    line = f.__code__.co_firstlineno + 1
    assert f"# d np.maximum (test_codegen_units.py:{line})" in body


# --- numerics: NaN, inf, kinks, integer and boolean results ------------------------------------
def special_values(x, y, ids, flags):
    return (np.maximum(x, y), np.minimum(y, x), np.max(x, axis=1), np.min(y),
            np.tanh(x * 1e3), np.tanh(x * 1e-9), np.where(x > 0, np.sqrt(x), 0.0),
            ids * 3 - 1, np.sum(flags), np.sum(flags, axis=0), np.max(ids), np.prod(ids + 1),
            x > y, flags & (x > 0), np.where(flags, ids, -ids), x.astype(np.float32),
            (ids * 2.5).astype(np.int64), np.exp(x), np.log(np.abs(x)), np.sin(x), np.log1p(x),
            np.sign(x), np.abs(y) ** x, x / y)


def special_args():
    x = np.array([[0.0, np.nan, -1.0, 2.0], [np.inf, -np.inf, 0.5, -0.0], [1e-3, 4.0, -3.0, 0.25]])
    y = np.array([[1.0, 0.0, np.nan, 2.0], [0.0, 1.0, 0.5, 0.0], [np.nan, 5.0, -4.0, 0.25]])
    ids = np.array([[3, -2, 0, 7], [1, 1, 2, -5], [0, 9, 4, 4]])
    return x, y, ids, x > 0.3


def test_nan_inf_ints_and_bools_match_the_interpreter():
    args = special_args()
    got = compile_grad(special_values)(*args)
    expected = compile_grad(special_values, backend="interpreter")(*args)
    assert len(got) == len(expected)
    for k, (g, e) in enumerate(zip(got, expected)):
        g, e = np.asarray(g), np.asarray(e)
        assert g.dtype == e.dtype and g.shape == e.shape, k
        # Exact but for a few ulp of vectorized exp/log/sin (glibc's libmvec: <= 4 ulp).
        np.testing.assert_allclose(g, e, rtol=1e-15 * 4, atol=0, equal_nan=True, err_msg=str(k))


def size_one_outputs(x, v):
    """Size-1 values squeezed to 0-d outputs and 0-d values expanded to size 1."""
    return (np.squeeze(v * 2.0), np.sum(np.sin(x[None])), np.reshape(np.exp(v)[None], ()),
            np.squeeze(np.tanh(x[None, None]), axis=(0, 1)) + np.sum(v))


def test_size_one_values_squeezed_or_expanded_into_outputs_compile_and_match():
    """Once found by fuzzing: a 0-d output viewing a size-1 value that lived only in a loop
    local was read as an array (`t1[0]` of a scalar), which numba refused."""
    x, v = np.array(0.5), np.array([0.25])
    got = compile_grad(size_one_outputs)(x, v)
    assert [np.shape(g) for g in got] == [(), (), (), ()]
    np.testing.assert_allclose(got, [0.5, np.sin(0.5), np.exp(0.25), np.tanh(0.5) + 0.25],
                               rtol=1e-15)
    loss = compile_grad(lambda x, v: sum(size_one_outputs(x, v)), wrt=(0, 1))
    gx, gv = loss.grad(x, v)
    assert np.shape(gx) == () and np.shape(gv) == (1,)
    np.testing.assert_allclose(gx, np.cos(0.5) + 1 - np.tanh(0.5) ** 2, rtol=1e-15)
    np.testing.assert_allclose(gv, [2.0 + np.exp(0.25) + 1.0], rtol=1e-15)


def test_kinks_give_exact_zero_gradients():
    def f(x):
        return np.sum(np.where(x > 0, np.sqrt(x), 0.0) + np.abs(x) + np.maximum(x, 0.0))

    x = np.array([0.0, 4.0, -1.0])
    grad = compile_grad(f).grad(x)
    np.testing.assert_array_equal(grad, [0.5, 0.25 + 1.0 + 1.0, -1.0])


def test_tanh_is_accurate_near_zero_and_saturates_far_away():
    x = np.concatenate([np.logspace(-12, 1.5, 400), -np.logspace(-12, 1.5, 400),
                        [0.0, 30.0, -1e300, np.inf, np.nan]])
    got = compile_grad(np.tanh)(x)
    expected = np.tanh(x)
    np.testing.assert_allclose(got, expected, rtol=6 * np.finfo(np.float64).eps, equal_nan=True)


def test_math_functions_vectorize_through_libmvec(tmp_path, monkeypatch):
    from compiler import jit

    if jit.vector_library() != "libmvec":
        pytest.skip("glibc's libmvec is not available (or GRADFUSE_LIBMVEC=0)")
    monkeypatch.setenv("GRADFUSE_CACHE_DIR", str(tmp_path))  # compiled here, so inspectable

    def f(x):
        return np.sum(np.log1p(np.exp(x)))

    x = np.linspace(-5.0, 5.0, 1001)
    f = compile_grad(f)
    np.testing.assert_allclose(f(x), np.sum(np.log1p(np.exp(x))), rtol=1e-13)
    kernel = f.specialize(x).kernel("forward")
    assembly = kernel.dispatcher.inspect_asm(kernel.dispatcher.signatures[0])
    assert "_ZGVdN4v_exp" in assembly or "_ZGVbN2v_exp" in assembly


def constant_math_argument(x):
    s = np.sum(x * x)  # var and std of a 0-d value are 0: LLVM sees expm1(tanh(0)), exp(0)
    return s * np.expm1(np.tanh(np.var(s))) + np.exp(np.std(s)) * s


def test_a_math_function_of_a_constant_compiles():
    """Once found by fuzzing: LLVM propagated the constant into the vector math wrapper and
    dropped its argument, and the wrapper's vector variants no longer matched it ("invalid
    name for a VFABI variant", an InternalError). The wrappers are kept whole now."""
    value, grad = compile_grad(constant_math_argument).value_and_grad(np.array([1.0, 2.0]))
    assert value == 5.0
    np.testing.assert_allclose(grad, [2.0, 4.0], rtol=1e-15)


# --- outputs ---------------------------------------------------------------------------------
def many_outputs(x, y):
    t = x.T
    return t, x, x.reshape(-1), y * 2.0, y * 2.0, np.sum(y), x[0, 1], x[:, 0]


def test_outputs_are_fresh_arrays_of_the_right_dtype_and_shape():
    x, y = np.arange(6.0).reshape(2, 3), np.arange(4, dtype=np.float32)
    got = compile_grad(many_outputs)(x, y)
    expected = compile_grad(many_outputs, backend="interpreter")(x, y)
    for g, e in zip(got, expected):
        assert np.asarray(g).dtype == np.asarray(e).dtype
        np.testing.assert_array_equal(g, e)
    for g in got:
        if isinstance(g, np.ndarray):
            assert not np.shares_memory(g, x) and not np.shares_memory(g, y)
    assert not np.shares_memory(got[3], got[4])


def test_out_of_range_gather_indices_raise_index_error():
    def gather(table, ids):
        return np.sum(table[ids])

    def pick(logits, labels):
        return np.sum(np.take_along_axis(logits, labels[:, None], axis=1))

    gather, pick = compile_grad(gather), compile_grad(pick)
    table = np.ones((4, 2))
    assert gather(table, np.array([0, 3, -4])) == 6.0
    assert gather(table, np.int64(-1)) == 2.0  # a scalar index
    assert pick(table, np.array([1, 0, -2, 1])) == 4.0
    for bad, message in [
            (lambda: gather(table, np.array([0, 4, 1])), r"index 4 is out of bounds for axis 0 "
             r"with size 4\n    return np.sum\(table\[ids\]\)"),
            (lambda: gather(table, np.int64(-5)), "index -5 is out of bounds for axis 0"),
            (lambda: pick(table, np.array([0, 2, 0, 0])), "index 2 is out of bounds for axis 1 "
             r"with size 2\n    return np.sum\(np.take_along_axis")]:
        with pytest.raises(IndexError, match=r"test_codegen_units.py:\d+: " + message):
            bad()


# --- errors ------------------------------------------------------------------------------------
def test_code_numba_rejects_is_an_internal_error_naming_the_file(monkeypatch, tmp_path):
    from compiler import jit
    from compiler.codegen import GeneratedModule

    def broken(graph, kind):
        source = ('"""broken on purpose."""\n\nimport numba\n\n\n@numba.njit(cache=True)\n'
                  f'def {graph.name}(x):\n    return x.no_such_attribute\n')
        return GeneratedModule(source, graph.name, ())

    monkeypatch.setenv("GRADFUSE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(jit, "generate", broken)
    f = compile_grad(lambda x: x * 2.0)
    with pytest.raises(InternalError) as info:
        f(np.ones(3))
    message = str(info.value)
    assert str(tmp_path) in message and "no_such_attribute" in message
    assert "bug in gradfuse" in message


def test_helpers_are_emitted_once_each_and_sorted():
    helpers = prelude.HelperSet()
    names = [helpers.use("_tanh", np.float32), helpers.use("_maximum", np.float64),
             helpers.use("_tanh", np.float32), helpers.use("_tanh", np.float64)]
    assert names == ["_tanh_f32", "_maximum", "_tanh_f32", "_tanh_f64"]
    source = helpers.source()
    assert source.count("def ") == 3
    assert source.index("_maximum") < source.index("_tanh_f32") < source.index("_tanh_f64")
