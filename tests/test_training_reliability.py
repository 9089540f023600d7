"""Compiled training under stress: parameters that share key names, bad fit arguments, Ctrl-C.

References are closed-form: plain SGD (p - lr * grad) on gradients from the interpreter.
"""

from __future__ import annotations

import signal

import numpy as np
import pytest

from compiler import compile_grad
from compiler.errors import ArgumentError
from compiler.training import TrainStep, fit, train_step
from runtime import Parameter, optim

RNG = np.random.default_rng(5)
X, Y, Y3 = RNG.normal(size=(12, 3)), RNG.normal(size=(12, 2)), RNG.normal(size=(12, 3))
LR = 0.1


def encoder_decoder_loss(params, X, y):
    h = np.tanh(X @ params["enc"]["W"] + params["enc"]["b"])
    return np.mean((h @ params["dec"]["W"] + params["dec"]["b"] - y) ** 2)


def layers_loss(layers, X, y):
    h = X
    for layer in layers[:-1]:
        h = np.tanh(h @ layer["W"] + layer["b"])
    return np.mean((h @ layers[-1]["W"] + layers[-1]["b"] - y) ** 2)


def encoder_decoder():
    """Two layers whose parameters have the same names and shapes: mixing them up would
    compute something, just not this loss."""
    rng = np.random.default_rng(0)
    return {name: {"W": Parameter(rng.normal(size=(3, 3))), "b": Parameter(rng.normal(size=3))}
            for name in ("enc", "dec")}


def layers(sizes=(3, 4, 4, 2)):
    rng = np.random.default_rng(1)
    return [{"W": Parameter(rng.normal(size=(a, b))), "b": Parameter(rng.normal(size=b))}
            for a, b in zip(sizes[:-1], sizes[1:])]


def flat(tree):
    if isinstance(tree, dict):
        return [p for v in tree.values() for p in flat(v)]
    if isinstance(tree, list):
        return [p for v in tree for p in flat(v)]
    return [tree]


def sgd_reference(loss, params, batches):
    """(losses, final parameter arrays) of plain SGD, gradients from the interpreter."""
    value_and_grad = compile_grad(loss, backend="interpreter").value_and_grad
    arrays = [p.data.copy() for p in flat(params)]
    template = params
    losses = []
    for Xb, Yb in batches:
        tree = _rebuild(template, iter(arrays))
        value, grads = value_and_grad(tree, Xb, Yb)
        losses.append(float(value))
        arrays = [a - LR * g for a, g in zip(arrays, flat(grads))]
    return np.array(losses), arrays


def _rebuild(tree, it):
    if isinstance(tree, dict):
        return {k: _rebuild(v, it) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_rebuild(v, it) for v in tree]
    return next(it)


def assert_params(params, arrays):
    for p, expected in zip(flat(params), arrays, strict=True):
        np.testing.assert_allclose(p.data, expected, rtol=1e-10, atol=1e-12)


def test_a_train_step_keeps_parameters_apart_that_share_a_key_name():
    params = encoder_decoder()
    expected_losses, expected = sgd_reference(encoder_decoder_loss, params, [(X, Y3)] * 3)
    step = train_step(compile_grad(encoder_decoder_loss, backend="interpreter"), params,
                      optim.SGD(flat(params), lr=LR))
    losses = [step(X, Y3) for _ in range(3)]
    assert all(np.ndim(loss) == 0 for loss in losses), "the step returns the loss, nothing else"
    np.testing.assert_allclose(np.array(losses, float), expected_losses, rtol=1e-10)
    assert_params(params, expected)


def test_fit_keeps_apart_a_list_of_layers_with_the_same_keys():
    params = layers()
    batches = [(X[i:i + 5], Y[i:i + 5]) for i in (0, 5, 10)] * 2
    expected_losses, expected = sgd_reference(layers_loss, params, batches)
    history = fit(compile_grad(layers_loss), params, optim.SGD(flat(params), lr=LR), (X, Y),
                  epochs=2, batch_size=5, shuffle=False, progress=False)
    np.testing.assert_allclose(history.losses, expected_losses, rtol=1e-10)
    assert_params(params, expected)
    assert all(p._version == 1 for p in flat(params)), "both epochs in one compiled call"


@pytest.mark.parametrize("data, options, message", [
    ((X, Y), dict(epochs=1, batch_size=0), "batch_size must be a positive int"),
    ((X, Y), dict(epochs=1, batch_size=-3), "batch_size must be a positive int"),
    ((X, Y), dict(epochs=1, batch_size=2.5), "batch_size must be a positive int"),
    ((X, Y), dict(epochs=-1), "epochs must be an int >= 0"),
    ((X[:0], Y[:0]), dict(epochs=1), "data has no rows"),
    ((), dict(epochs=1), "data is empty"),
    ((X, Y[:5]), dict(epochs=1), "share their first axis"),
    (X, dict(epochs=1), "data must be a tuple of arrays .* got a ndarray"),  # X's rows were data
    ({"X": X, "y": Y}, dict(epochs=1), "data must be a tuple of arrays .* got a dict"),
    ((X, Y), dict(epochs=3, initial_epoch=4), "initial_epoch must be an int from 0 to epochs"),
    ((X, Y), dict(epochs=3, initial_epoch=-1), "initial_epoch must be an int from 0 to epochs"),
])
def test_fit_refuses_arguments_that_would_train_on_nothing(data, options, message):
    params = layers()
    before = [p.data.copy() for p in flat(params)]
    with pytest.raises(ValueError, match=message):
        fit(compile_grad(layers_loss, backend="interpreter"), params,
            optim.SGD(flat(params), lr=LR), data, progress=False, **options)
    assert_params(params, before)


def test_fit_with_no_epochs_trains_nothing():
    params = layers()
    history = fit(compile_grad(layers_loss, backend="interpreter"), params,
                  optim.SGD(flat(params), lr=LR), (X, Y), epochs=0, progress=False)
    assert history.losses.shape == (0,) and all(p._version == 0 for p in flat(params))


def test_a_ctrl_c_from_a_callback_leaves_a_consistent_state_to_continue_from():
    params = layers()
    opt = optim.SGD(flat(params), lr=LR)
    step = TrainStep(compile_grad(layers_loss), params, opt)

    def interrupt(epoch, history):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(None, params, opt, (X, Y), epochs=3, batch_size=6, shuffle=False,
            progress=False, chunk_steps=1, callback=interrupt, step=step)
    _, expected = sgd_reference(layers_loss, layers(), [(X[:6], Y[:6]), (X[6:], Y[6:])])
    assert_params(params, expected)  # exactly the first epoch's two steps
    assert all(p._version == 1 for p in flat(params))
    history = fit(None, params, opt, (X, Y), epochs=1, batch_size=6, shuffle=False,
                  progress=False, step=step)  # the same kernels carry on
    assert np.all(np.isfinite(history.losses)) and all(p._version == 2 for p in flat(params))


def test_a_ctrl_c_as_the_fit_kernel_returns_still_counts_its_updates():
    """A signal arriving during compiled code is raised when it returns: after the writes."""
    params = layers()
    opt = optim.SGD(flat(params), lr=LR)
    step = TrainStep(compile_grad(layers_loss), params, opt)
    assert step.runs_epochs((X, Y))
    kernels = step._fit_kernels((X, Y))
    compiled = kernels.fit

    def interrupted_on_return(*args):
        compiled(*args)
        raise KeyboardInterrupt

    kernels.fit = interrupted_on_return
    loss = compile_grad(layers_loss)(params, X, Y)  # recorded before the update
    with pytest.raises(KeyboardInterrupt):
        fit(None, params, opt, (X, Y), epochs=1, batch_size=6, shuffle=False, progress=False,
            step=step)
    assert all(p._version == 1 for p in flat(params))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_a_ctrl_c_while_a_python_step_writes_back_waits_for_the_whole_step():
    params = encoder_decoder()
    _, expected = sgd_reference(encoder_decoder_loss, params, [(X, Y3)])
    step = train_step(compile_grad(encoder_decoder_loss, backend="interpreter"), params,
                      optim.SGD(flat(params), lr=LR))
    state, calls = step._state, []

    def state_then_ctrl_c(slot):
        calls.append(slot)
        if len(calls) == len(flat(params)) + 1:  # after the kernel: the first write-back
            signal.raise_signal(signal.SIGINT)
        return state(slot)

    step._state = state_then_ctrl_c
    # Python's own Ctrl-C handler, as in a terminal: a process started in the background by a
    # non-interactive shell (as CI may be) inherits SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            step(X, Y3)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert_params(params, expected)
    assert all(p._version == 1 for p in flat(params))


def test_leaf_names_are_unique_and_readable():
    from compiler import pytree

    _, tree = pytree.flatten({"enc": {"W": 0, "b": 0}, "dec": {"W": 0, "b": 0}, "scale": 0})
    assert pytree.paths(tree, "p") == ["enc_W", "enc_b", "dec_W", "dec_b", "scale"]
    assert pytree.key_paths(tree)[2] == ("dec", "W")
    _, tree = pytree.flatten([{"W": 0}, {"W": 0}])
    assert pytree.paths(tree, "layers") == ["layers_0_W", "layers_1_W"]
    _, tree = pytree.flatten({"a": {"b_c": 0, "x": 0}, "a_b": {"c": 0, "x": 0}})
    names = pytree.paths(tree, "p")  # full paths that read alike are numbered
    assert len(set(names)) == 4 and names[:2] == ["b_c", "a_x"]


def scaled_loss(W, X, y, scale):
    return scale * np.mean((X @ W - y) ** 2)


def test_a_step_takes_numbers_as_data_and_refuses_containers_by_name():
    # a number among the data failed with a bare IndexError (its shape[0]); a dict of arrays
    # was "data[0] holds object values"
    loss_fn = compile_grad(scaled_loss)
    W = Parameter(RNG.normal(size=(3, 2)))
    step = train_step(loss_fn, W, optim.SGD([W], lr=LR))
    for scale in (2.0, 3):
        before = W.data.copy()
        value, grad = compile_grad(scaled_loss, backend="interpreter").value_and_grad(
            before, X, Y, float(scale))
        assert step(X, Y, scale) == pytest.approx(value, rel=1e-12)
        np.testing.assert_allclose(W.data, before - LR * grad, rtol=1e-12)
    before = W.data.copy()
    for data, name in [(({"X": X}, Y, 1.0), "data\\[0\\] is a dict"),
                       ((X, (Y, Y), 1.0), "data\\[1\\] is a tuple")]:
        with pytest.raises(ArgumentError, match=name):
            step(*data)
    with pytest.raises(ArgumentError, match="micro_batches\\[1\\]\\[0\\] is a dict"):
        step.accumulate([(X, Y, 1.0), ({"X": X}, Y, 1.0)])
    np.testing.assert_array_equal(W.data, before)
