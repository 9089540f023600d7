"""The DSL front end: the same IR, values and gradients as the equivalent traced Python code."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest
from test_dsl_cases import (
    EQUIVALENTS,
    EXAMPLES,
    mlp_loss,
    random_inputs,
    without_locations,
    without_names,
)

from compiler import compile_grad, dsl
from compiler.dsl import DslError
from runtime import Parameter

ISSUE_EXAMPLE = """\
# two-layer MLP with mean squared error
def loss(W1: f32[10, 5], b1: f32[5], W2: f32[5, 1], b2: f32[1], X: f32[N, 10], y: f32[N, 1]):
    h = relu(X @ W1 + b1)
    pred = h @ W2 + b2
    return mean((pred - y) ** 2)
"""


DIM_NAMES = {"rnn.gf": {"T": "N"}}  # an example's dimension names that are not N, M, ...


def compile_both(path, backend="interpreter"):
    python_fn, wrt = EQUIVALENTS[path.name]
    return (compile_grad(path, wrt=wrt, backend=backend),
            compile_grad(python_fn, wrt=wrt, backend=backend))


@pytest.mark.parametrize("name", sorted(EQUIVALENTS))
def test_example_gives_the_values_gradients_and_ir_of_its_python_equivalent(name):
    path = EXAMPLES / name
    from_dsl, from_python = compile_both(path)
    inputs = random_inputs(from_dsl.dsl_params, n=7)
    value, grads = from_dsl.value_and_grad(**inputs)
    expected_value, expected_grads = from_python.value_and_grad(**inputs)
    np.testing.assert_array_equal(value, expected_value)
    for got, expected in zip(grads, expected_grads, strict=True):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    for kind in ("forward", "value_and_grad", "backward"):
        dsl_ir = without_names(from_dsl.ir(kind))
        # The DSL's IR calls a dimension what the annotations call it (rnn.gf's sequence
        # axis is T); the Python function's has the specializer's names (N, M, ...).
        for dsl_dim, python_dim in DIM_NAMES.get(name, {}).items():
            assert re.search(rf"\b{dsl_dim}\b", dsl_ir), (kind, dsl_dim)
            dsl_ir = re.sub(rf"\b{dsl_dim}\b", python_dim, dsl_ir)
        assert dsl_ir == without_names(from_python.ir(kind)), kind
    # Evaluated eagerly on arrays, the DSL function is plain NumPy.
    eager = dsl.load(path)(**inputs)
    np.testing.assert_allclose(eager, EQUIVALENTS[name][0](**inputs), rtol=1e-6)


def test_the_issue_example_compiles_from_text_with_the_users_names():
    loss = compile_grad(ISSUE_EXAMPLE, wrt=("W1", "b1", "W2", "b2"), backend="interpreter")
    inputs = random_inputs(loss.dsl_params, n=20, seed=1)
    value, (gW1, gb1, gW2, gb2) = loss.value_and_grad(**inputs)
    reference = compile_grad(mlp_loss, wrt=(0, 1, 2, 3), backend="interpreter")
    expected_value, expected_grads = reference.value_and_grad(**inputs)
    np.testing.assert_array_equal(value, expected_value)
    np.testing.assert_array_equal(gW1, expected_grads[0])
    assert value.dtype == np.float32 and gb2.shape == (1,)
    # The same text as the traced Python function, names included, up to the function's name.
    assert without_locations(loss.ir()) == without_locations(reference.ir()).replace(
        "mlp_loss", "loss")
    forward = loss.ir("forward")
    assert "h: f32[N,5] = where" in forward and "pred: f32[N,1] = add" in forward
    assert "h_grad" in loss.ir("backward") and "pred_grad" in loss.ir("backward")


def test_nodes_point_at_the_dsl_file_and_line():
    loss = compile_grad(EXAMPLES / "mlp.gf", wrt=("W1",), backend="interpreter")
    loss.grad(**random_inputs(loss.dsl_params, n=4))
    forward = loss.ir("forward").splitlines()
    assert [line for line in forward if "matmul(X, W1)" in line][0].endswith(", mlp.gf:3")
    assert [line for line in forward if "sub(pred, y)" in line][0].endswith(", mlp.gf:5")
    assert "# grad of @, mlp.gf:3" in loss.ir("backward")


def test_mean_absolute_error_example_has_the_documented_value_and_gradient():
    mae = compile_grad(EXAMPLES / "mean_absolute_error.gf", backend="interpreter")
    loss, grad = mae.value_and_grad(np.array([0.5, 0.5]), np.array([[1.0, 2.0], [3.0, 4.0]]),
                                    np.array([5.0, 6.0]))
    assert loss == 3.0
    np.testing.assert_array_equal(grad, [-2.0, -3.0])


def test_loaded_function_has_a_signature_a_name_and_its_annotations():
    fn = dsl.load(EXAMPLES / "classifier.gf")
    assert fn.__name__ == "loss"
    assert list(inspect.signature(fn).parameters) == ["W1", "b1", "W2", "b2", "X", "labels"]
    assert str(inspect.signature(fn).parameters["X"].annotation) == "f32[N, 4]"
    assert fn.dsl_params["labels"] == (np.dtype(np.int64), ("N",))
    assert fn.dsl_params["W1"] == (np.dtype(np.float32), (4, 8))
    helper = dsl.load(str(EXAMPLES / "classifier.gf"), "dense")
    assert helper.__name__ == "dense" and helper.dsl_params["x"] == (None, None)
    assert compile_grad(EXAMPLES / "classifier.gf").dsl_params == fn.dsl_params


def test_float_dtype_reads_float_annotations_as_another_dtype():
    fn = dsl.load(EXAMPLES / "classifier.gf", float_dtype=np.float64)
    assert fn.dsl_params["W1"][0] == np.float64 and fn.dsl_params["labels"][0] == np.int64
    inputs = random_inputs(fn.dsl_params, n=5)
    assert fn(**inputs).dtype == np.float64


def test_a_new_batch_size_reuses_the_trace():
    loss = compile_grad(ISSUE_EXAMPLE, wrt=("W1",), backend="interpreter")
    for n in (3, 8, 13):
        inputs = random_inputs(loss.dsl_params, n=n)
        np.testing.assert_allclose(loss(**inputs), mlp_loss(**inputs), rtol=1e-6)
    assert len(loss._specs) == 1


def test_a_static_annotation_keeps_its_dimension_static():
    fixed = compile_grad("def f(w: f64[3], x: f64[4, 3]):\n    return sum(x @ w)\n",
                         backend="interpreter")
    fixed(np.ones(3), np.ones((4, 3)))
    assert "x: f64[4,3]" in fixed.ir()  # not x: f64[N,3], which would serve any size
    with pytest.raises(DslError, match=r"argument 'x' of f\(\) has shape \(6, 3\), but its "
                                       r"annotation says f64\[4, 3\] \(axis 0 should be 4\)"):
        fixed(np.ones(3), np.ones((6, 3)))


def test_dimension_names_are_values_in_the_body():
    program = "def f(x: f64[N, K]):\n    return sum(x) / (N * K)\n"
    x = np.arange(12.0).reshape(4, 3)
    assert dsl.load(program)(x) == x.mean()
    compiled = compile_grad(program, backend="interpreter")
    assert compiled(x) == x.mean()
    np.testing.assert_allclose(compiled.grad(x), np.full((4, 3), 1 / 12))


def test_python_scalars_fit_annotations_of_their_kind():
    fn = dsl.load("def f(x: f32[], n: i64[]):\n    return x * n\n")
    assert fn(1.5, 2) == 3.0
    assert fn(np.float32(1.5), 2).dtype == np.float32  # a Python int stays weak, as in NumPy
    with pytest.raises(DslError, match=r"argument 'n' of f\(\) is a Python float, but its "
                                       r"annotation says i64\[\]"):
        fn(1.5, 2.0)


def test_grammar_coverage_matches_python():
    program = """
# every construct of the grammar, once
def halves(x: f64[N, 4]):
    return x[:, 0], x[:, 1:]        # two results

def model(w: f64[4], s: f64[], x: f64[N, 4], idx: i64[K]):
    first, rest = halves(x)
    picked = x[idx]
    strided = x[..., ::2]
    column = x[:, None, 2]
    z = -x @ w / 2 + s ** 2 * 3 - 1.5e-1 + +s
    gate = where((z > 0) & ~(z > 2) | (z <= -1) ^ (z == 0.5), z, 0.5 * z)
    both = concatenate([first, rest[:, 0]], axis=0)
    squashed = clip(z, -1, a_max=1)
    scores = logsumexp(rest, axis=1)[1] + sum(softmax(rest, axis=-1)[:, 1])
    reduced = sum(x, axis=None, keepdims=False) + mean(x, axis=(0, 1))
    losses = mse_loss(first, z, reduction="sum") + huber_loss(first, z, delta=pi / 4)
    total = sum(gate) + mean(both ** 2) + sum(picked) + sum(column) + sum(strided) + scores
    return total + sum(squashed) + reduced + losses + sum(z) / N + sum(x != inf)
"""

    def halves(x):
        return x[:, 0], x[:, 1:]

    def model(w, s, x, idx):
        from runtime import functional as F

        first, rest = halves(x)
        picked = x[idx]
        strided = x[..., ::2]
        column = x[:, None, 2]
        z = -x @ w / 2 + s**2 * 3 - 1.5e-1 + +s
        gate = np.where((z > 0) & ~(z > 2) | (z <= -1) ^ (z == 0.5), z, 0.5 * z)
        both = np.concatenate([first, rest[:, 0]], axis=0)
        squashed = np.clip(z, -1, a_max=1)
        scores = F.logsumexp(rest, axis=1)[1] + np.sum(F.softmax(rest, axis=-1)[:, 1])
        reduced = np.sum(x, axis=None, keepdims=False) + np.mean(x, axis=(0, 1))
        losses = F.mse_loss(first, z, reduction="sum") + F.huber_loss(first, z, delta=np.pi / 4)
        total = (np.sum(gate) + np.mean(both**2) + np.sum(picked) + np.sum(column)
                 + np.sum(strided) + scores)
        return (total + np.sum(squashed) + reduced + losses + np.sum(z) / x.shape[0]
                + np.sum(x != np.inf))

    rng = np.random.default_rng(3)
    args = (rng.standard_normal(4), np.float64(0.7), rng.standard_normal((6, 4)),
            np.array([4, 1]))
    np.testing.assert_allclose(dsl.load(program)(*args), model(*args), rtol=1e-12)
    from_dsl = compile_grad(program, wrt=("w", "s", "x"), backend="interpreter")
    from_python = compile_grad(model, wrt=("w", "s", "x"), backend="interpreter")
    value, grads = from_dsl.value_and_grad(*args)
    expected_value, expected_grads = from_python.value_and_grad(*args)
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    for got, expected in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    # idx's axis is K in the DSL's IR, as annotated; the Python function's is N
    dsl_ir = without_names(from_dsl.ir("value_and_grad"))
    assert "i64[K]" in dsl_ir
    assert re.sub(r"\bK\b", "N", dsl_ir) == without_names(from_python.ir("value_and_grad"))


def test_a_dsl_function_inside_a_traced_python_function_is_inlined():
    square_error = dsl.load("def square_error(a, b):\n    d = a - b\n    return d * d\n")

    @compile_grad(backend="interpreter")
    def total(w, x):
        return np.sum(square_error(x @ w, 1.0))

    w, x = np.array([1.0, 2.0]), np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert total(w, x) == 0.0 + 1.0 + 4.0
    np.testing.assert_allclose(total.grad(w, x), 2 * (x @ w - 1.0) @ x)
    assert "d: f64[N] = sub" in total.ir() and "<dsl>:2" in total.ir()


def test_compiled_dsl_function_has_the_runtime_semantics():
    loss = compile_grad(EXAMPLES / "logistic_regression.gf", backend="interpreter")
    inputs = random_inputs(loss.dsl_params, n=9)
    w, b = Parameter(inputs.pop("w")), Parameter(inputs.pop("b"))
    result = loss(w, b, **inputs)
    result.backward()
    expected = compile_grad(EQUIVALENTS["logistic_regression.gf"][0], wrt=(0, 1),
                            backend="interpreter").grad(w.data, b.data, **inputs)
    np.testing.assert_allclose(w.grad, expected[0], rtol=1e-12)
    np.testing.assert_allclose(b.grad, expected[1], rtol=1e-12)


def test_the_ir_names_dimensions_as_the_annotations_do():
    program = """
def f(w: f64[3], zs, xs: f64[T, 3], ys: f64[N, 3]):
    return sum(xs @ w) + sum(ys @ w) + sum(zs)
"""
    f = compile_grad(program, wrt="w", backend="interpreter")
    w, zs, xs, ys = np.ones(3), np.ones(7), np.ones((4, 3)), np.ones((5, 3))
    value, grad = f.value_and_grad(w, zs, xs, ys)
    assert value == 7 + 12 + 15
    np.testing.assert_array_equal(grad, [9.0, 9.0, 9.0])
    signature = f.ir("forward").splitlines()[0]
    # T and N as written; the unannotated zs gets the first free name, not the user's N
    assert "zs: f64[M], xs: f64[T,3], ys: f64[N,3]" in signature
