"""Loops as users write them, found wrong or slow to compile by a bug hunt: custom_vjp
functions in loops (a scan's step, a Python loop over layers), a train step of the parameters
alone, what a rolled body holds, a loop right after another, arrays filled row by row in a
loop; values and gradients against the unrolled program and central differences."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import central_differences

from compiler import compile_grad, custom_vjp, scan
from compiler.training import train_step
from runtime import Parameter, optim

rng = np.random.default_rng(14)
D = 4
W = rng.normal(size=(D, D)) / 2
XS = rng.normal(size=(6, D))


@custom_vjp
def softclip(x):
    return np.tanh(x) * 2.0


@softclip.defvjp
def softclip_vjp(g, out, x):
    return (g * 2.0 * (1.0 - np.tanh(x) ** 2),)


@custom_vjp
def softclip_halved(x):  # softclip's forward, and a rule that is not its derivative
    return np.tanh(x) * 2.0


@softclip_halved.defvjp
def softclip_halved_vjp(g, out, x):
    return (g * (1.0 - np.tanh(x) ** 2),)


# --- custom_vjp inside loops ------------------------------------------------------------------
def softclip_rnn(w):
    def step(h, x):
        h = softclip(h @ w + x) * 0.5
        return h, h

    _, hs = scan(step, np.ones(D), XS)
    return np.sum(hs ** 2)


SOFTCLIP_RNN = compile_grad(softclip_rnn)


def test_a_custom_vjp_function_in_a_scan_step_compiles_with_numba():
    # the step's custom call reached code generation ('custom_call reached code generation;
    # it should be inlined', an AssertionError): only the top level's calls were inlined
    value, grad = SOFTCLIP_RNN.value_and_grad(W)
    assert np.isclose(value, softclip_rnn(W), rtol=1e-12)
    np.testing.assert_allclose(grad, central_differences(softclip_rnn, [W], 0),
                               rtol=1e-6, atol=1e-8)
    p = Parameter(W.copy())  # the runtime's backward: forward_save and backward kernels
    SOFTCLIP_RNN(p).backward()
    np.testing.assert_allclose(p.grad, grad, rtol=1e-12)


LAYERS = 30


def custom_net(ws, halved_at=-1):
    h = np.ones((2, D))
    for k in range(LAYERS):
        act = softclip_halved if k == halved_at else softclip
        h = act(h @ ws[k] * 0.5) + 0.1 * h
    return np.sum(h ** 2)


def test_a_python_loop_calling_a_custom_vjp_function_rolls(unrolled):
    # each call was its own attribute, so no two layers matched: 40 such layers compiled in
    # 42 s unrolled (1.8 s rolled)
    ws = rng.normal(size=(LAYERS, D, D)) / 2
    f = compile_grad(custom_net, backend="interpreter")
    value, grads = f.value_and_grad(ws)
    assert f.ir("forward").count("= scan(") == 1
    ref_value, ref_grads = unrolled(custom_net)(ws)
    assert np.isclose(value, ref_value, rtol=1e-14)
    np.testing.assert_allclose(grads, ref_grads, rtol=1e-12, atol=1e-15)

    def with_layer_7(w7):
        return custom_net(np.concatenate([ws[:7], w7[None], ws[8:]]))

    np.testing.assert_allclose(grads[7], central_differences(with_layer_7, [ws[7]], 0),
                               rtol=1e-6, atol=1e-9)


def test_layers_calling_another_custom_vjp_function_are_not_merged(unrolled):
    # layer 15's function computes what softclip does, with its own rule: the rolled runs stop
    # there, and its rule (half the derivative) is the one its gradient follows
    ws = rng.normal(size=(LAYERS, D, D)) / 2
    f = compile_grad(custom_net, backend="interpreter")
    value, grads = f.value_and_grad(ws, 15)
    assert f.ir("forward").count("= scan(") == 2
    ref_value, ref_grads = unrolled(custom_net)(ws, 15)
    assert np.isclose(value, ref_value, rtol=1e-14)
    np.testing.assert_allclose(grads, ref_grads, rtol=1e-12, atol=1e-15)
    assert not np.allclose(grads[15], compile_grad(custom_net, backend="interpreter")
                           .grad(ws)[15], rtol=0.1)


# --- a train step of the parameters alone --------------------------------------------------------
def rosenbrock(p):
    x = p["x"]
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def test_a_train_step_of_a_loss_that_takes_no_data_steps():
    # a loss of the parameters alone built a minibatch loop over no data arrays: a bare
    # IndexError from code generation ('list index out of range')
    x0 = np.array([-1.2, 1.0, 0.5])
    params = {"x": Parameter(x0.copy())}
    step = train_step(rosenbrock, params, optim.SGD(list(params.values()), lr=1e-4))
    x = x0.copy()
    for _ in range(3):
        loss = step()
        assert np.isclose(loss, rosenbrock({"x": x}), rtol=1e-12)
        x = x - 1e-4 * central_differences(lambda v: rosenbrock({"x": v}), [x], 0)
    np.testing.assert_allclose(params["x"].data, x, rtol=1e-8)


# --- what a rolled loop's body holds ---------------------------------------------------------
def squares_net(ws):
    h = np.ones((2, D))
    for k in range(12):
        z = h @ ws[k]
        h = np.tanh(z) + 0.1 * z ** 2 + z / 4.0
    return np.sum(h ** 2)


def test_a_rolled_body_holds_the_programs_constants(unrolled):
    # 2, 0.1 and 4.0 were inputs of the loop, the same every step: z ** 2 was pow(z, t1) in
    # the kernel's loops, forward and backward (a 100-layer net's gradient took ~1.8x as long)
    ws = rng.normal(size=(12, D, D)) / 2
    f = compile_grad(squares_net, backend="interpreter")
    value, grad = f.value_and_grad(ws)
    ir = f.ir("value_and_grad")
    (loop,) = [line for line in ir.splitlines() if "= scan(" in line and "reverse" not in line]
    assert "scan(t1, ws_2, loop=" in loop  # the first carry and the weights: no constants
    assert "mul(z, z)" in ir and "pow(" not in ir
    ref_value, ref_grad = unrolled(squares_net)(ws)
    assert np.isclose(value, ref_value, rtol=1e-14)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-15)


def total_norm(weights, biases):
    """clip_grad_norm_'s total, as train_step's clipping computes it: one sum over both lists."""
    return sum(np.sum(np.abs(g) ** 2.0) for g in weights + biases) ** 0.5


def test_a_loop_right_after_another_rolls_too():
    # the biases' run matched one node early (the weights' last add is an add like theirs),
    # overlapped the weights' run and was dropped: its 20 iterations stayed unrolled, and a
    # train step with clipping grew by ~10 lines a layer
    weights = [rng.normal(size=(D, D)) for _ in range(20)]
    biases = [rng.normal(size=D) for _ in range(20)]
    f = compile_grad(total_norm, wrt=(0, 1), backend="interpreter")
    value, (w_grads, b_grads) = f.value_and_grad(weights, biases)
    loops = [line for line in f.ir("forward").splitlines() if "= scan(" in line]
    assert len(loops) == 2 and "20 steps" in loops[0] and "19 steps" in loops[1]
    assert np.isclose(value, total_norm(weights, biases), rtol=1e-14)
    for g, x in zip(w_grads + b_grads, weights + biases):
        np.testing.assert_allclose(g, x / value, rtol=1e-13)


# --- an array filled row by row in a loop --------------------------------------------------
def rows_filled(wh, xs):
    h = np.zeros_like(xs[0])
    out = np.zeros_like(xs)
    for t in range(xs.shape[0]):
        h = np.tanh(xs[t] + h @ wh)
        out[t] = h
    return np.sum(out ** 2) + np.sum(out[0] * out[-1])


def test_a_hundred_rows_assigned_in_a_loop_simplify():
    # reading a row back walked down the chain of assignments one rewrite at a time: past 100
    # rows, 'AssertionError: rewrites of <Node add ...> did not reach a fixed point'
    wh = rng.normal(size=(D, D)) / 2
    xs = rng.normal(size=(120, 2, D))
    value, grad = compile_grad(rows_filled, backend="interpreter").value_and_grad(wh, xs)
    assert np.isclose(value, rows_filled(wh, xs), rtol=1e-13)
    np.testing.assert_allclose(grad, central_differences(rows_filled, [wh, xs], 0),
                               rtol=1e-6, atol=1e-8)


def filled_forward(wh, xs):
    h, out = np.zeros_like(xs[0]), np.zeros_like(xs)
    for t in range(xs.shape[0]):
        h = np.tanh(xs[t] + h @ wh)
        out[t] = h
    return np.sum(out ** 2 * np.arange(xs.shape[0])[:, None, None])


def filled_backward_every_other_row(wh, xs):
    h, out = np.zeros_like(xs[0]), (xs * 2.0).copy()  # the rows not written keep xs * 2
    for t in range(xs.shape[0] - 2, 0, -2):
        h = np.tanh(xs[t] + h @ wh)
        out[t] = h
    return np.sum(out ** 3)


def filled_columns_of_two_arrays(wh, xs):
    n = xs.shape[0]
    h, cols, sums = np.zeros_like(xs[0]), np.zeros_like(xs, shape=(2, D, n)), \
        np.zeros_like(xs, shape=(2, n))
    for t in range(n):
        h = np.tanh(xs[t] + h @ wh)
        cols[:, :, t] = h
        sums[:, t] = h.sum(axis=1)
    return np.sum(cols ** 2 * np.arange(n)) + np.sum(sums ** 3) + np.sum(cols[1, 2] * sums[0])


def filled_reading_the_last_row(wh, xs):  # the array is read inside the loop: stays unrolled
    h, out = np.zeros_like(xs[0]), np.zeros_like(xs)
    for t in range(xs.shape[0]):
        h = np.tanh(xs[t] + h @ wh + 0.1 * out[t - 1])
        out[t] = h
    return np.sum(out ** 2)


@pytest.mark.parametrize("fn, loops", [(filled_forward, 1),
                                       (filled_backward_every_other_row, 1),
                                       (filled_columns_of_two_arrays, 1),
                                       (filled_reading_the_last_row, 0)])
def test_an_array_filled_row_by_row_in_a_loop_rolls(fn, loops, unrolled):
    # each step's out[t] = h wrote another region, so no two steps matched: 100 steps of an
    # RNN filling its outputs so compiled for 315 s (3.6 s rolled); the loop now stacks the
    # rows and one where writes them all after it
    wh = rng.normal(size=(D, D)) / 2
    xs = rng.normal(size=(24, 2, D))
    f = compile_grad(fn, backend="interpreter")
    value, grad = f.value_and_grad(wh, xs)
    assert f.ir("forward").count("= scan(") == loops
    ref_value, ref_grad = unrolled(fn)(wh, xs)
    assert np.isclose(value, fn(wh, xs), rtol=1e-13) and np.isclose(value, ref_value, rtol=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(grad, central_differences(fn, [wh, xs], 0), rtol=1e-6, atol=1e-8)


FILLED_COLUMNS = compile_grad(filled_columns_of_two_arrays)


def test_arrays_filled_column_by_column_compile_with_numba():
    wh = rng.normal(size=(D, D)) / 2
    xs = rng.normal(size=(12, 2, D))
    value, grad = FILLED_COLUMNS.value_and_grad(wh, xs)
    ref_value, ref_grad = compile_grad(filled_columns_of_two_arrays,
                                       backend="interpreter").value_and_grad(wh, xs)
    assert np.isclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-13)
    assert "for t in range(12):" in FILLED_COLUMNS.source("value_and_grad")
