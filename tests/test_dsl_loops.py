"""DSL loops: `for i in range(n)` as compiler.fori_loop and `for row in xs` as compiler.scan.

Values against the same program written as Python loops (eagerly and compiled), gradients
against central differences, the IR against the Python twin written with fori_loop, carries
and loop-locals, nesting, symbolic bounds, names and lines in the IR and generated code,
the runtime's backward, and one numba compilation of a loop example.
"""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import central_differences
from test_dsl_cases import EXAMPLES, random_inputs, spring_chain_loss, without_names

from compiler import compile_grad, dsl, fori_loop
from runtime import Parameter

SIMULATE = """\
def simulate(v0: f64[8], x0: f64[8], k: f64, dt: f64):
    x = x0
    v = v0
    for step in range(100):
        a = -k * x - 0.1 * v
        v = v + dt * a
        x = x + dt * v
    return sum(x * x)
"""


def simulate_python(v0, x0, k, dt):
    x, v = x0, v0
    for _ in range(100):
        a = -k * x - 0.1 * v
        v = v + dt * a
        x = x + dt * v
    return np.sum(x * x)


def simulate_fori(v0, x0, k, dt):
    def step(i, state):
        v, x = state  # the DSL carries v and x in the order the body assigns them
        a = -k * x - 0.1 * v
        v = v + dt * a
        x = x + dt * v
        return v, x

    v, x = fori_loop(0, 100, step, (v0, x0))
    return np.sum(x * x)


rng = np.random.default_rng(11)
V0, X0 = rng.standard_normal(8), np.linspace(-1.0, 1.0, 8)
SIM_ARGS = (V0, X0, 2.0, 0.01)
SIMULATION = compile_grad(SIMULATE, wrt=("v0", "k"), backend="interpreter")


def test_a_counted_loop_computes_what_the_python_loop_computes():
    expected = simulate_python(*SIM_ARGS)
    assert np.isclose(dsl.load(SIMULATE)(*SIM_ARGS), expected, rtol=1e-14)  # eagerly
    value, (v0_grad, k_grad) = SIMULATION.value_and_grad(*SIM_ARGS)
    assert np.isclose(value, expected, rtol=1e-13)
    numeric = central_differences(simulate_python, list(SIM_ARGS), 0)
    np.testing.assert_allclose(v0_grad, numeric, rtol=1e-6, atol=1e-9)
    assert np.isclose(k_grad, central_differences(simulate_python, list(SIM_ARGS), 2),
                      rtol=1e-6)


def test_a_counted_loop_is_the_ir_of_fori_loop_with_the_users_names_and_lines():
    twin = compile_grad(simulate_fori, wrt=(0, 2), backend="interpreter")
    twin.specialize(*SIM_ARGS)
    SIMULATION.specialize(*SIM_ARGS)
    for kind in ("forward", "value_and_grad", "backward"):
        assert without_names(SIMULATION.ir(kind)) == without_names(twin.ir(kind)), kind
    forward = SIMULATION.ir("forward").splitlines()
    scan_line = next(line for line in forward if "= scan(" in line)
    assert "loop=<step: 100 steps>" in scan_line and scan_line.endswith("<dsl>:4")
    assert forward[forward.index(scan_line) + 1].strip().startswith(
        "def step(k: f64[], dt: f64[], v: f64[8], x: f64[8], step: i64[])")
    assert any(line.strip().startswith("a: f64[8] = sub(") and line.endswith(", <dsl>:5")
               for line in forward)
    assert any(line.strip().startswith("x: f64[8] = tuple_get(") for line in forward)
    assert "grad of scan, <dsl>:4" in SIMULATION.ir("value_and_grad")


# --- rows, nesting, the loop variable, locals ----------------------------------------------
NESTED = """\
def f(w: f64[3], xs: f64[N, 3]):
    total = 0.0
    h = w
    for t in range(1, 4):
        for row in xs:
            h = tanh(h * row + t * 0.1)
        scale = t * 0.5
        total = total + scale * sum(h * h)
    return total + sum(h)
"""


def nested_python(w, xs):
    total, h = 0.0, w
    for t in range(1, 4):
        for row in xs:
            h = np.tanh(h * row + t * 0.1)
        scale = t * 0.5
        total = total + scale * np.sum(h * h)
    return total + np.sum(h)


def test_nested_loops_over_rows_and_a_range_match_python_loops():
    w, xs = rng.standard_normal(3), rng.standard_normal((5, 3))
    expected = nested_python(w, xs)
    assert np.isclose(dsl.load(NESTED)(w, xs), expected, rtol=1e-14)
    compiled = compile_grad(NESTED, wrt=("w", "xs"), backend="interpreter")
    value, (w_grad, xs_grad) = compiled.value_and_grad(w, xs)
    assert np.isclose(value, expected, rtol=1e-13)
    np.testing.assert_allclose(w_grad, central_differences(nested_python, [w, xs], 0),
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(xs_grad, central_differences(nested_python, [w, xs], 1),
                               rtol=1e-6, atol=1e-9)
    forward = compiled.ir("forward")
    assert forward.count("= scan(") == 2  # the loop over rows runs inside the counted loop
    assert "loop=<step: 3 steps>" in forward and "loop=<step: 5 steps>" in forward


def test_a_loop_over_rows_serves_every_length_with_one_trace():
    compiled = compile_grad(NESTED, wrt=("w",), backend="interpreter")
    w = rng.standard_normal(3)
    for n in (2, 5, 9):
        xs = rng.standard_normal((n, 3))
        assert np.isclose(compiled(w, xs), nested_python(w, xs), rtol=1e-13)
    assert len(compiled._specs) == 1
    assert "loop=<step: N steps>" in compiled.ir()


def test_names_first_bound_in_a_loop_are_local_and_read_only_names_are_shared():
    program = """\
def f(x: f64[3], scale: f64):
    y = x
    for i in range(3):
        z = y * scale
        y = z + x
    z = 2.0
    return sum(y) * z
"""
    x = np.array([1.0, 2.0, 3.0])
    y = x
    for _ in range(3):
        y = y * 0.5 + x
    assert dsl.load(program)(x, 0.5) == np.sum(y) * 2.0
    compiled = compile_grad(program, wrt=("x", "scale"), backend="interpreter")
    assert compiled(x, 0.5) == np.sum(y) * 2.0
    body = compiled.ir().split("def step(")[1]
    assert body.startswith("scale: f64[], x: f64[3], y: f64[3], i: i64[])")  # x is shared


def test_loop_variables_of_ranges_are_int64_step_numbers():
    program = """\
def f(x: f64[4]):
    y = x
    for i in range(2, 6):
        y = y + i * x[i - 2]
    return sum(y)
"""
    x = np.array([1.0, -2.0, 0.5, 3.0])
    expected = np.sum(x) + 4 * (2 * x[0] + 3 * x[1] + 4 * x[2] + 5 * x[3])
    assert np.isclose(dsl.load(program)(x), expected, rtol=1e-14)
    compiled = compile_grad(program, backend="interpreter")
    value, grad = compiled.value_and_grad(x)
    assert np.isclose(value, expected, rtol=1e-14)
    np.testing.assert_allclose(grad, 1 + 4 * np.array([2.0, 3.0, 4.0, 5.0]))


def test_a_loop_body_can_call_the_programs_functions():
    program = """\
def cell(h, x, W):
    return tanh(h @ W + x)

def f(W: f64[2, 2], xs: f64[T, 2]):
    h = xs[0] * 0.0
    for x in xs:
        h = cell(h, x, W)
    return sum(h)
"""

    def python(W, xs):
        h = np.zeros(2)
        for x in xs:
            h = np.tanh(h @ W + x)
        return np.sum(h)

    W, xs = rng.standard_normal((2, 2)), rng.standard_normal((4, 2))
    compiled = compile_grad(program, backend="interpreter")
    value, grad = compiled.value_and_grad(W, xs)
    assert np.isclose(value, python(W, xs), rtol=1e-14)
    np.testing.assert_allclose(grad, central_differences(python, [W, xs], 0), rtol=1e-6,
                               atol=1e-9)
    assert "<dsl>:2" in compiled.ir()  # the helper's operations inside the loop body


# --- bounds, dtypes, empty loops -------------------------------------------------------------
RANGE_OF_N = """\
def f(x: f64[N, 2]):
    total = 0.0
    for i in range(1, N // 2 + 1):
        total = total + sum(x[i] * x[i - 1])
    return total
"""


def range_of_n_python(x):
    return sum(np.sum(x[i] * x[i - 1]) for i in range(1, x.shape[0] // 2 + 1))


def test_a_symbolic_size_as_a_bound_specializes_the_function_to_it():
    compiled = compile_grad(RANGE_OF_N, backend="interpreter")
    for n in (4, 7, 4):
        x = rng.standard_normal((n, 2))
        assert np.isclose(dsl.load(RANGE_OF_N)(x), range_of_n_python(x), rtol=1e-14)
        value, grad = compiled.value_and_grad(x)
        assert np.isclose(value, range_of_n_python(x), rtol=1e-14)
        np.testing.assert_allclose(grad, central_differences(range_of_n_python, [x], 0),
                                   rtol=1e-6, atol=1e-9)
    assert len(compiled._specs) == 2  # one trace per size, as range(x.shape[0]) in Python
    assert "x: f64[4,2]" in compiled.ir("forward")  # the last call's size, made static


def test_fori_loop_takes_a_symbolic_size_as_python_code_does():
    def python(x):
        return fori_loop(0, x.shape[0], lambda i, total: total + x[i] * x[i], 0.0)

    compiled = compile_grad(python, backend="interpreter")
    x = np.array([1.0, 2.0, 3.0])
    value, grad = compiled.value_and_grad(x)
    assert value == 14.0
    np.testing.assert_array_equal(grad, 2 * x)
    assert "x: f64[3]" in compiled.ir()  # made static: the loop needs its length
    with pytest.raises(TypeError, match="fori_loop's bounds must be Python or NumPy ints"):
        fori_loop(0, 2.5, lambda i, total: total, 0.0)


def test_a_python_number_carry_takes_the_dtype_the_loop_makes():
    program = """\
def f(x: f32[N, 3]):
    total = 0.0
    for row in x:
        total = total + sum(row * row)
    return total
"""
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    eager = dsl.load(program)(x)
    value, grad = compile_grad(program, backend="interpreter").value_and_grad(x)
    assert eager.dtype == value.dtype == grad.dtype == np.float32
    assert eager == value == np.sum(x * x)
    np.testing.assert_array_equal(grad, 2 * x)


def test_loops_of_no_steps_leave_their_carries_unchanged():
    rows = "def f(x: f64[N, 2]):\n    s = 1.0\n    for row in x:\n        s = s + sum(row)\n" \
           "    return s\n"
    assert dsl.load(rows)(np.ones((0, 2))) == 1.0
    counted = "def f(x: f64[3]):\n    y = x\n    for i in range(5, 2):\n        y = y * 2.0\n" \
              "    return sum(y)\n"
    assert dsl.load(counted)(np.ones(3)) == 3.0
    compiled = compile_grad(counted, backend="interpreter")
    value, grad = compiled.value_and_grad(np.ones(3))
    assert value == 3.0
    np.testing.assert_array_equal(grad, np.ones(3))


# --- the examples: gradients, runtime semantics and numba ---------------------------------
def test_the_rnn_examples_gradients_match_central_differences_in_float64():
    path = EXAMPLES / "rnn.gf"
    fn = dsl.load(path, float_dtype=np.float64)
    inputs = random_inputs(fn.dsl_params, n=5, seed=3)
    names = list(inputs)
    compiled = compile_grad(fn, wrt=("W", "U", "h0"), backend="interpreter")
    _, grads = compiled.value_and_grad(**inputs)
    for name, grad in zip(("W", "U", "h0"), grads, strict=True):
        numeric = central_differences(fn, [inputs[n] for n in names], names.index(name))
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_a_loop_example_has_the_runtime_semantics():
    loss = compile_grad(EXAMPLES / "rnn.gf", backend="interpreter")
    inputs = random_inputs(loss.dsl_params, n=6, seed=2)
    params = {name: Parameter(inputs.pop(name)) for name in ("W", "U", "b", "h0", "V")}
    loss(**params, **inputs).backward()
    functional = compile_grad(EXAMPLES / "rnn.gf", wrt=tuple(params), backend="interpreter")
    _, grads = functional.value_and_grad(**{k: p.data for k, p in params.items()}, **inputs)
    for parameter, grad in zip(params.values(), grads, strict=True):
        np.testing.assert_allclose(parameter.grad, grad, rtol=1e-6)


def test_the_spring_chain_compiles_to_a_loop_in_numba_with_its_gradient():
    path = EXAMPLES / "spring_chain.gf"
    inputs = random_inputs(dsl.load(path).dsl_params, n=1, seed=4)
    args = [inputs[name] for name in ("v0", "x0", "target")]
    compiled = compile_grad(path)  # the numba backend: one compilation, value_and_grad
    value, grad = compiled.value_and_grad(*args)
    assert np.isclose(value, spring_chain_loss(*args), rtol=1e-12)
    numeric = central_differences(spring_chain_loss, args, 0)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
    source = compiled.source("value_and_grad")
    assert "for t in range(100):" in source and "for t_2 in range(100 - 1, -1, -1):" in source
    assert "_body(" not in source  # the steps are written into their loops
    assert "(spring_chain.gf:17)" in source  # the body's lines, as the user wrote them
