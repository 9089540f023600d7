"""`compiler.scan` and `fori_loop`: values and gradients against the same program written as a
Python loop, against central differences, through the interpreter and numba; reverse and
nested loops, consts the step closes over, runtime backward, a train step, and errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
from gradcheck import central_differences

from compiler import TraceError, compile_grad, fori_loop, scan
from runtime import Parameter, optim

rng = np.random.default_rng(5)
B, H, I, T = 3, 4, 2, 5
PARAMS = {"Wz": rng.normal(size=(I, H)) * 0.5, "Uz": rng.normal(size=(H, H)) * 0.5,
          "Wn": rng.normal(size=(I, H)) * 0.5, "Un": rng.normal(size=(H, H)) * 0.5,
          "b": rng.normal(size=(H,)) * 0.1}
XS = rng.normal(size=(T, B, I))
H0 = rng.normal(size=(B, H)) * 0.3
TARGET = rng.normal(size=(T, B, H))


def cell(p, h, x):
    z = 1.0 / (1.0 + np.exp(-(x @ p["Wz"] + h @ p["Uz"])))
    n = np.tanh(x @ p["Wn"] + (h @ p["Un"]) * z + p["b"])
    return (1.0 - z) * n + z * h


def gru_scan(p, xs, h0, target):
    def step(h, x):
        h = cell(p, h, x)
        return h, h

    h, hs = scan(step, h0, xs)
    return np.mean((hs - target) ** 2) + 0.1 * np.sum(h)


def gru_unrolled(p, xs, h0, target):
    h, total = h0, 0.0
    for t in range(xs.shape[0]):
        h = cell(p, h, xs[t])
        total = total + np.sum((h - target[t]) ** 2)
    return total / target.size + 0.1 * np.sum(h)


GRU = compile_grad(gru_scan, wrt=(0, 2))
GRU_INTERPRETED = compile_grad(gru_scan, wrt=(0, 2), backend="interpreter")
GRU_UNROLLED = compile_grad(gru_unrolled, wrt=(0, 2), backend="interpreter")


def test_a_scan_computes_what_the_python_loop_computes():
    expected = gru_unrolled(PARAMS, XS, H0, TARGET)
    assert np.isclose(gru_scan(PARAMS, XS, H0, TARGET), expected, rtol=1e-14)  # plain NumPy
    assert np.isclose(GRU_INTERPRETED(PARAMS, XS, H0, TARGET), expected, rtol=1e-14)
    assert np.isclose(GRU(PARAMS, XS, H0, TARGET), expected, rtol=1e-12)


@pytest.mark.parametrize("compiled", [GRU, GRU_INTERPRETED], ids=["numba", "interpreter"])
def test_scan_gradients_match_the_unrolled_loop_and_central_differences(compiled):
    value, (grads, h0_grad) = compiled.value_and_grad(PARAMS, XS, H0, TARGET)
    ref_value, (ref_grads, ref_h0) = GRU_UNROLLED.value_and_grad(PARAMS, XS, H0, TARGET)
    assert np.isclose(value, ref_value, rtol=1e-12)
    for name in PARAMS:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(h0_grad, ref_h0, rtol=1e-10, atol=1e-13)
    numeric = central_differences(lambda h0: gru_unrolled(PARAMS, XS, h0, TARGET), [H0], 0)
    np.testing.assert_allclose(h0_grad, numeric, rtol=1e-6, atol=1e-9)
    numeric_u = central_differences(
        lambda Uz: gru_unrolled({**PARAMS, "Uz": Uz}, XS, H0, TARGET), [PARAMS["Uz"]], 0)
    np.testing.assert_allclose(grads["Uz"], numeric_u, rtol=1e-6, atol=1e-9)


def test_generated_code_keeps_the_loop_a_loop():
    source = GRU.source("value_and_grad")
    assert source.count("for t in range(") == 1 and "for t_2 in range(" in source
    assert "- 1, -1, -1)" in source  # the reverse scan runs last to first
    # each body is written into its loop, reading the step's slice of xs by a name of its own
    assert "_body(" not in source
    assert "    for t in range(N):\n        x = xs[t]\n" in source
    assert re.search(r"for t_2 in range\(N - 1, -1, -1\):\n(        \w+ = \w+\[t_2\]\n)+", source)


# --- a simulation with fori_loop: scalar and vector carries ---------------------------------
K, DT, STEPS = 3.0, 0.05, 40
X0 = np.linspace(-1.0, 1.0, 6)
TARGET_X = np.linspace(0.5, -0.5, 6)


def spring_force(x):
    """Springs between neighbours on a free chain: K times the chain's discrete Laplacian."""
    return K * np.concatenate([x[1:2] - x[:1], x[2:] - 2 * x[1:-1] + x[:-2], x[-2:-1] - x[-1:]])


def spring_chain(v0, x0, target):
    def step(i, state):
        x, v, energy = state
        v = v + DT * spring_force(x)
        x = x + DT * v
        return x, v, energy + 0.5 * np.sum(v * v) * DT

    x, v, energy = fori_loop(0, STEPS, step, (x0, v0, 0.0))
    return np.sum((x - target) ** 2) + 0.01 * energy


def spring_chain_python(v0, x0, target):
    x, v, energy = x0, v0, 0.0
    for _ in range(STEPS):
        v = v + DT * spring_force(x)
        x = x + DT * v
        energy = energy + 0.5 * np.sum(v * v) * DT
    return np.sum((x - target) ** 2) + 0.01 * energy


SPRINGS = compile_grad(spring_chain)


def test_fori_loop_simulation_gradient():
    v0 = rng.normal(size=6)
    value, grad = SPRINGS.value_and_grad(v0, X0, TARGET_X)
    assert np.isclose(value, spring_chain_python(v0, X0, TARGET_X), rtol=1e-12)
    numeric = central_differences(spring_chain_python, [v0, X0, TARGET_X], 0)
    np.testing.assert_allclose(grad, numeric, rtol=1e-7, atol=1e-10)
    assert np.isclose(fori_loop(0, STEPS, lambda i, s: s + 1.0, 0.0), STEPS)  # plain Python


# --- reverse, nested, consts, float32 ----------------------------------------------------
def nested(w, xs):
    """A reverse scan whose step runs an inner scan; the step closes over a NumPy array."""
    scale = np.array([1.0, -2.0, 0.5])

    def outer(c, row):
        def inner(a, x):
            a = np.sin(a * w + x * scale)
            return a, a * c

        a, trace = scan(inner, c * np.ones(3), row)
        return c + np.sum(a), np.sum(trace, axis=0)

    c, ys = scan(outer, np.float64(0.3), xs, reverse=True)
    return c + np.sum(ys * np.arange(1.0, xs.shape[0] + 1.0)[:, None])


def nested_python(w, xs):
    scale = np.array([1.0, -2.0, 0.5])
    c, ys = 0.3, [None] * xs.shape[0]
    for t in reversed(range(xs.shape[0])):
        a, trace = c * np.ones(3), np.zeros(3)
        for x in xs[t]:
            a = np.sin(a * w + x * scale)
            trace = trace + a * c
        c, ys[t] = c + np.sum(a), trace
    return c + np.sum(np.stack(ys) * np.arange(1.0, xs.shape[0] + 1.0)[:, None])


NESTED = compile_grad(nested)


def test_reverse_and_nested_scans_with_a_closed_over_array():
    w, xs = rng.normal(size=3), rng.normal(size=(4, 2, 3))
    value, grad = NESTED.value_and_grad(w, xs)
    assert np.isclose(value, nested_python(w, xs), rtol=1e-12)
    np.testing.assert_allclose(grad, central_differences(nested_python, [w, xs], 0),
                               rtol=1e-7, atol=1e-10)
    interpreted = compile_grad(nested, backend="interpreter").value_and_grad(w, xs)
    np.testing.assert_allclose(interpreted[1], grad, rtol=1e-12)


def elman(U, W, xs, target):
    h, _ = scan(lambda h, x: (np.tanh(h @ U + x @ W), None), np.zeros((16, 32)), xs)
    return np.mean((h - target) ** 2)


def test_a_weight_gradient_accumulates_through_blas_in_the_reverse_loop():
    U, W = rng.normal(size=(32, 32)) * 0.2, rng.normal(size=(8, 32)) * 0.3
    xs, target = rng.normal(size=(5, 16, 8)), rng.normal(size=(16, 32))
    compiled = compile_grad(elman, wrt=(0, 1))
    value, (U_grad, W_grad) = compiled.value_and_grad(U, W, xs, target)
    # U's gradient, a 32x32 product per step, is added into its carry by gemm (beta = 1)
    assert "blas.matmul_add(" in compiled.source("value_and_grad")
    expected = compile_grad(elman, wrt=(0, 1), backend="interpreter").value_and_grad(
        U, W, xs, target)
    assert np.isclose(value, expected[0], rtol=1e-12)
    np.testing.assert_allclose(U_grad, expected[1][0], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(W_grad, expected[1][1], rtol=1e-10, atol=1e-14)


def wide_decay(w, xs):
    """A step over 2**15 values: its loop nest runs in parallel (numba.prange)."""
    h, sums = scan(lambda h, x: (np.sin(h * w + x), np.sum(h)), np.zeros(xs.shape[1]), xs)
    return np.sum(h) + np.sum(sums)


def wide_decay_python(w, xs):
    h, total = np.zeros(xs.shape[1]), 0.0
    for x in xs:
        total += np.sum(h)
        h = np.sin(h * w + x)
    return np.sum(h) + total


def test_a_body_with_a_parallel_loop_is_a_function_of_its_own_and_matches():
    w, xs = rng.normal(size=1 << 15), rng.normal(size=(3, 1 << 15))
    compiled = compile_grad(wide_decay)
    value, grad = compiled.value_and_grad(w, xs)
    # a prange inside the caller's loop would make the whole kernel parallel: called instead
    source = compiled.source("value_and_grad")
    assert "def step_body(" in source and "numba.prange(" in source
    assert np.isclose(value, wide_decay_python(w, xs), rtol=1e-12)
    some = rng.choice(w.size, 5, replace=False)
    for i in some:
        e = np.zeros_like(w)
        e[i] = 1e-6
        numeric = (wide_decay_python(w + e, xs) - wide_decay_python(w - e, xs)) / 2e-6
        assert np.isclose(grad[i], numeric, rtol=1e-6, atol=1e-9)


def running_sum(x):
    def step(total, v):
        return total + v * v, total

    total, partial = scan(step, 0.0, x)  # a Python float carry takes the step's float32
    return total + np.sum(partial)


def test_a_python_scalar_carry_takes_the_type_the_step_makes():
    x = np.arange(1.0, 5.0, dtype=np.float32)
    f = compile_grad(running_sum, backend="interpreter")
    value, grad = f.value_and_grad(x)
    assert value.dtype == np.float32 and grad.dtype == np.float32
    # total = sum x^2; partial sums of x^2 before each step: 0, 1, 5, 14
    assert value == 30.0 + 20.0
    np.testing.assert_allclose(grad, 2 * x * (1 + np.array([3.0, 2.0, 1.0, 0.0])))



def counted_lookup(w, xs):
    table = np.sin(xs) * w

    def step(carry, x):
        i, h, total, seen = carry  # started from Python 0, 0 and False
        h = h * 0.5 + table[i] * x  # i indexes: it must stay an int
        return (i + 1, h, total + np.sum(h), seen | (np.sum(x) > 0)), i

    (n, h, total, seen), steps = scan(step, (0, np.zeros(3), 0, False), xs)
    return np.sum(h ** 2) + total * n + seen + np.sum(steps)


@pytest.mark.parametrize("backend", ["interpreter", "numba"])
def test_a_python_int_or_bool_carry_stays_one_unless_the_step_makes_it_a_float(backend):
    """A counter started from 0 became a float64 carry (every float peer pulled it along), so
    `table[i]` failed with "arrays used as indices must be of integer type"."""
    w, xs = rng.normal(size=3), rng.normal(size=(4, 3))
    value, grad = compile_grad(counted_lookup, wrt=(0, 1), backend=backend).value_and_grad(w, xs)
    assert np.isclose(value, counted_lookup(w, xs), rtol=1e-13)  # the plain NumPy run
    for k in (0, 1):
        np.testing.assert_allclose(grad[k], central_differences(counted_lookup, [w, xs], k),
                                   rtol=1e-6, atol=1e-8)
    ints = compile_grad(lambda x: scan(lambda c, v: (c + 1, c), 0, x), backend=backend)
    n, counts = ints(np.ones(4, np.float32))
    assert n == 4 and n.dtype == np.int64 and counts.dtype == np.int64
    np.testing.assert_array_equal(counts, np.arange(4))


def carry_elements(a, xs):
    """Each step hands out elements of the carry it was given, as it stores the new carry."""
    c, ys = scan(lambda c, x: (c * a + x, c[0] * c[2]), np.zeros(3), xs)
    (d, s), (zs, us) = scan(lambda ds, x: ((ds[0] * a + x, ds[1] + ds[0][1]), (ds[1], ds[0][2])),
                            (c, 0.5), xs, reverse=True)
    return np.sum(c) + np.sum(ys ** 2) + np.sum(d) + s + np.sum(zs * us)


def carry_elements_python(a, xs):
    c, ys = np.zeros(3), []
    for x in xs:
        ys.append(c[0] * c[2])
        c = c * a + x
    d, s, zs, us = c, 0.5, [], []
    for x in xs[::-1]:
        zs.append(s)
        us.append(d[2])
        d, s = d * a + x, s + d[1]
    return np.sum(c) + np.sum(np.square(ys)) + np.sum(d) + s + np.dot(zs, us)


CARRY_ELEMENTS = compile_grad(carry_elements, wrt=(0, 1))


def test_an_element_of_the_old_carry_handed_out_is_read_before_the_new_carry_is_stored():
    # the kernel read `ys[t] = c[0] * c[2]` after storing the new carry into c (silently wrong)
    a, xs = np.array([0.5, -1.0, 1.5]), rng.normal(size=(5, 3))
    value, (a_grad, xs_grad) = CARRY_ELEMENTS.value_and_grad(a, xs)
    assert np.isclose(value, carry_elements_python(a, xs), rtol=1e-12)
    assert np.isclose(carry_elements(a, xs), value, rtol=1e-12)  # scan outside a trace
    np.testing.assert_allclose(a_grad, central_differences(carry_elements_python, [a, xs], 0),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(xs_grad, central_differences(carry_elements_python, [a, xs], 1),
                               rtol=1e-6, atol=1e-8)


# --- steps that index arrays with the loop index ----------------------------------------------
ROWS = 6


def indexed(a, xs):
    """fori_loop's i indexes xs as it is, computed, negative, through np.take and with a column;
    then a reverse scan computes its index from the step's x."""
    def step(i, c):
        return (c * a + xs[i] + 0.5 * xs[i + 1] - 0.25 * np.take(xs, -i - 1, axis=0)
                + xs[i, 1] * xs[-1 - i, 2])

    c = fori_loop(0, ROWS - 1, step, np.zeros(3))
    d, ys = scan(lambda d, t: (d * a + xs[ROWS - 1 - t], d[1] * xs[t, 0]), c, np.arange(ROWS),
                 reverse=True)
    return np.sum(d ** 2) + np.sum(ys)


def indexed_python(a, xs):
    c = np.zeros(3)
    for i in range(ROWS - 1):
        c = c * a + xs[i] + 0.5 * xs[i + 1] - 0.25 * xs[-i - 1] + xs[i, 1] * xs[-1 - i, 2]
    ys = np.zeros(ROWS)
    for t in reversed(range(ROWS)):
        ys[t] = c[1] * xs[t, 0]
        c = c * a + xs[ROWS - 1 - t]
    return np.sum(c ** 2) + np.sum(ys)


def first_rows(a, xs):
    return np.sum(fori_loop(0, 4, lambda i, c: c * a + xs[i], np.zeros(3)))


INDEXED = compile_grad(indexed, wrt=(0, 1))  # xs has a static leading axis
INDEXED_SYMBOLIC = compile_grad(indexed)  # xs is not differentiated: its rows are symbolic
FIRST_ROWS = compile_grad(first_rows)


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_a_step_indexes_arrays_with_the_loop_index(backend):
    a, xs = np.array([0.5, -0.8, 0.3]), rng.normal(size=(ROWS, 3))
    compiled = INDEXED if backend == "numba" else compile_grad(indexed, wrt=(0, 1),
                                                                 backend=backend)
    value, (a_grad, xs_grad) = compiled.value_and_grad(a, xs)
    assert np.isclose(value, indexed_python(a, xs), rtol=1e-12)
    assert np.isclose(indexed(a, xs), value, rtol=1e-12)  # fori_loop and scan outside a trace
    np.testing.assert_allclose(a_grad, central_differences(indexed_python, [a, xs], 0),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(xs_grad, central_differences(indexed_python, [a, xs], 1),
                               rtol=1e-6, atol=1e-8)
    symbolic = INDEXED_SYMBOLIC if backend == "numba" else compile_grad(indexed, backend=backend)
    value_s, a_grad_s = symbolic.value_and_grad(a, xs)
    assert np.isclose(value_s, value, rtol=1e-12)
    np.testing.assert_allclose(a_grad_s, a_grad, rtol=1e-12)
    first = FIRST_ROWS if backend == "numba" else compile_grad(first_rows, backend=backend)
    assert np.isclose(first(a, xs), first_rows(a, xs), rtol=1e-12)


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_a_loop_index_out_of_range_stops_the_kernel(backend):
    a = np.array([0.5, -0.8, 0.3])
    symbolic = INDEXED_SYMBOLIC if backend == "numba" else compile_grad(indexed, backend=backend)
    first = FIRST_ROWS if backend == "numba" else compile_grad(first_rows, backend=backend)
    with pytest.raises(IndexError, match="out of bounds"):  # xs[i + 1] reaches row 5 of 5
        symbolic.value_and_grad(a, rng.normal(size=(ROWS - 1, 3)))
    with pytest.raises(IndexError, match="out of bounds") as error:  # xs[i]: row 3 of 3
        first(a, np.ones((3, 3)))
    # the step's line, once (the interpreter named the scan's line before it)
    line = first_rows.__code__.co_firstlineno + 1
    assert str(error.value).startswith(f"test_scan.py:{line}: index 3 is out of bounds")
    if backend == "numba":  # the step checks its index once, before its loop over the row
        assert "_check_scalar_index(x, N, 0)" in FIRST_ROWS.source("forward")


# --- runtime backward and training ----------------------------------------------------------
def test_runtime_backward_through_a_scan_accumulates_like_the_functional_gradient():
    params = {k: Parameter(v.copy()) for k, v in PARAMS.items()}
    h0 = Parameter(H0.copy())
    loss = GRU(params, XS, h0, TARGET)
    loss.backward()
    _, (grads, h0_grad) = GRU.value_and_grad(PARAMS, XS, H0, TARGET)
    for name in PARAMS:
        np.testing.assert_allclose(params[name].grad, grads[name], rtol=1e-12)
    np.testing.assert_allclose(h0.grad, h0_grad, rtol=1e-12)


def gru_loss(p, xs, target):
    return gru_scan(p, xs, np.zeros((xs.shape[1], H)), target)


def test_a_scan_inside_a_train_step_matches_runtime_sgd():
    from compiler.training import train_step

    params = {k: Parameter(v.copy()) for k, v in PARAMS.items()}
    reference = {k: Parameter(v.copy()) for k, v in PARAMS.items()}
    step = train_step(gru_loss, params, optim.SGD(params, lr=0.1, momentum=0.9))
    opt = optim.SGD(reference, lr=0.1, momentum=0.9)
    compiled = compile_grad(gru_loss)
    for _ in range(3):
        loss = step(XS, TARGET)
        opt.zero_grad()
        expected = compiled(reference, XS, TARGET)
        expected.backward()
        opt.step()
        assert np.isclose(loss, expected.item(), rtol=1e-12)
    for name in PARAMS:
        np.testing.assert_allclose(params[name].data, reference[name].data, rtol=1e-12)
    assert "for t in range(" in step.source("step")


# --- errors -------------------------------------------------------------------------------
def test_a_carry_that_changes_type_is_an_error_naming_both_types():
    def f(x):
        return scan(lambda c, v: (c[None] * v, v), x[0], x)[0].sum()

    with pytest.raises(TraceError, match=r"came in as f64\[\] and went out as f64\[1\]"):
        compile_grad(f).grad(np.ones(3))



def test_a_fori_loop_body_that_changes_its_carry_is_named_in_the_error():
    """fori_loop wraps the body in a scan step: the errors named that wrapper ('step')."""
    def widened(x):
        return fori_loop(0, 3, lambda i, h: h * np.ones(3, np.float32), x)

    def body(i, h):
        return h, h

    with pytest.raises(TraceError, match=r"^\S+: fori_loop's body must return each carry .* "
                                         r"came in as f32\[\] and went out as f32\[3\]"):
        compile_grad(widened, backend="interpreter")(np.float32(1.0))
    with pytest.raises(TraceError, match=r"^\S+: body must return its carry in the structure"):
        compile_grad(lambda x: fori_loop(0, 3, body, x), backend="interpreter")(np.ones(3))

def test_a_step_that_does_not_return_a_pair_is_an_error():
    def f(x):
        return scan(lambda c, v: c + v, 0.0, x)[0]

    with pytest.raises(TraceError, match=r"must return a pair \(new carry, output\)"):
        compile_grad(f).grad(np.ones(3))


def test_xs_of_different_lengths_are_an_error():
    def f(x, y):
        return scan(lambda c, v: (c + v[0] * v[1], None), 0.0, (x, y))[0]

    with pytest.raises(TraceError, match="share their leading axis"):
        compile_grad(f).grad(np.ones(3), np.ones(4))


@pytest.mark.parametrize("length, words", [(2.5, "must be an int"),
                                           (-1, "must be a non-negative int"),
                                           (True, "must be a non-negative int")])
def test_a_length_that_is_no_count_of_steps_is_an_error_at_the_users_line(length, words):
    def f(w):
        return scan(lambda h, _: (h * w, h), np.ones(2), None, length=length)[0].sum()

    # 2.5 ran 2 steps (int() of it), -1 failed with NumPy's bare 'all elements of broadcast
    # shape must be non-negative'
    with pytest.raises(TraceError, match=rf"test_scan.py:\d+: scan's length= {words}"):
        compile_grad(f, backend="interpreter").grad(np.ones(2))
    with pytest.raises(TraceError, match=words):  # the plain Python loop says the same
        f(np.ones(2))


def test_a_length_that_does_not_match_xs_of_a_batch_size_is_an_error():
    def f(w, xs):  # xs is not differentiated: its rows are a symbolic size
        h, ys = scan(lambda h, x: (h * w + x, h), np.ones(2), xs, length=5)
        return np.sum(h) + np.sum(ys)

    compiled = compile_grad(f, backend="interpreter")
    # it ran over all 7 rows, as if length= were not given (the plain loop raises)
    with pytest.raises(TraceError, match="length=5 does not match its xs' leading axis of 7"):
        compiled.value_and_grad(np.ones(2), np.ones((7, 2)))
    xs = rng.normal(size=(5, 2))
    value, grad = compiled.value_and_grad(np.full(2, 0.5), xs)
    assert np.isclose(value, f(np.full(2, 0.5), xs), rtol=1e-14)
    np.testing.assert_allclose(grad, central_differences(lambda w: f(w, xs), [np.full(2, 0.5)],
                                                         0), rtol=1e-7)
