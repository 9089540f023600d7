"""The PyTorch-style loop at compiled speed: call sites recorded once, backward() storing into
.grad (backward_into), and runtime steps taking turns with train_step on one net. Each gives
what the usual path gives, with PyTorch's semantics: accumulation, handed-out gradients, hooks,
versions and retain_graph. (The optimizer's compiled steps: test_compiled_optimizer_steps.py.)"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from compiler import compile_grad
from compiler import update_kernels as kernels
from compiler.fastpath import REFUSED
from compiler.training import train_step
from runtime import Parameter, Tensor, autograd, optim
from runtime.optim.optimizer import set_compiled_update


def mlp_loss(params, x, y):
    return np.mean((np.tanh(x @ params["W"] + params["b"]) @ params["v"] - y) ** 2)


mlp = compile_grad(mlp_loss)
RNG = np.random.default_rng(0)
X, Y = RNG.normal(size=(8, 3)), RNG.normal(size=8)


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return {"W": Parameter(rng.normal(size=(3, 4))), "b": Parameter(rng.normal(size=4)),
            "v": Parameter(rng.normal(size=4))}


def expected_grads(params, x=X, y=Y):
    return mlp.value_and_grad({k: p.data for k, p in params.items()}, x, y)[1]


def assert_grads(params, grads, factor=1.0):
    for key, p in params.items():
        np.testing.assert_allclose(p._grad, factor * grads[key], rtol=1e-12, atol=1e-14)


@pytest.fixture
def usual_path(monkeypatch):
    """backward() without backward_into, as before it existed."""
    monkeypatch.setattr(autograd, "_stored_into_leaves", lambda node, cotangents: False)


# -- backward into .grad ------------------------------------------------------------------


def test_backward_stores_the_gradients_into_arrays_that_stay_from_step_to_step():
    params = make_params()
    opt = optim.SGD(params, lr=0.0)  # the values stay: every step has the same gradients
    arrays = None
    for _ in range(3):
        opt.zero_grad()
        mlp(params, X, Y).backward()
        assert_grads(params, expected_grads(params))
        assert all(p._grad is p._own_grad for p in params.values())  # never handed out
        if arrays is not None:  # zero_grad() set them aside and backward filled them again
            assert all(p._grad is arrays[k] for k, p in params.items())
        arrays = {k: p._grad for k, p in params.items()}
        opt.step()


def test_gradients_accumulate_and_one_handed_out_is_added_to_in_place():
    params = make_params()
    mlp(params, X, Y).backward()
    mlp(params, X, Y).backward()  # added inside the kernel: nobody has seen the array
    grads = expected_grads(params)
    assert_grads(params, grads, 2.0)
    held = params["W"].grad  # handed out: from now on the usual path adds to it, in place
    mlp(params, X, Y).backward()
    assert params["W"].grad is held
    np.testing.assert_allclose(held, 3 * grads["W"], rtol=1e-12)


def test_a_gradient_handed_out_keeps_its_values_after_zero_grad():
    params = make_params()
    opt = optim.SGD(params, lr=0.0)
    mlp(params, X, Y).backward()
    held = params["b"].grad.copy(), params["b"].grad
    opt.zero_grad()
    mlp(params, X[:4], Y[:4]).backward()
    assert params["b"].grad is not held[1]  # a fresh array, as PyTorch allocates one
    np.testing.assert_array_equal(held[1], held[0])
    assert_grads(params, expected_grads(params, X[:4], Y[:4]))


def test_the_same_gradients_as_the_usual_path(usual_path):
    params = make_params()
    for _ in range(2):
        mlp(params, X, Y).backward()
    assert_grads(params, expected_grads(params), 2.0)


def test_hooks_and_a_parameter_passed_twice_take_the_usual_path():
    params = make_params()
    params["v"].register_hook(lambda g: 2 * g)
    mlp(params, X, Y).backward()
    grads = expected_grads(params)
    np.testing.assert_allclose(params["v"].grad, 2 * grads["v"], rtol=1e-12)
    np.testing.assert_allclose(params["W"].grad, grads["W"], rtol=1e-12)

    twice = compile_grad(lambda a, b: np.sum(a * b))
    p = Parameter(np.array([1.0, 2.0]))
    twice(p, p).backward()
    np.testing.assert_array_equal(p.grad, [2.0, 4.0])


def test_versions_and_retain_graph_hold_at_a_reused_call_site():
    params = make_params()
    opt = optim.SGD(params, lr=0.1)
    mlp(params, X, Y).backward()
    loss = mlp(params, X, Y)
    loss.backward(retain_graph=True)
    loss.backward()
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()
    loss = mlp(params, X, Y)
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_a_call_site_keeps_no_parameter_alive():
    params = make_params()
    probe = weakref.ref(params["W"])
    mlp(params, X, Y).backward()
    del params
    gc.collect()
    assert probe() is None


def test_a_flag_or_a_hook_changed_after_the_leaves_were_checked_is_seen():
    """A settled loop stops looking at its leaves' flags and hooks while no Tensor's flag or
    hook changes (Tensor._leaf_changes); one changed between forward and backward sends
    backward down the usual path, which honours it."""
    params = make_params()
    opt = optim.SGD(params, lr=0.0)
    for _ in range(3):
        opt.zero_grad()
        mlp(params, X, Y).backward()
    grads = expected_grads(params)
    opt.zero_grad()
    loss = mlp(params, X, Y)
    params["b"].requires_grad = False  # after forward: the node still has b's edge
    loss.backward()
    assert params["b"].grad is None  # the usual path does not accumulate into it
    np.testing.assert_allclose(params["W"].grad, grads["W"], rtol=1e-12)
    params["b"].requires_grad = True
    opt.zero_grad()
    mlp(params, X, Y).backward()  # the leaves checked again, and settled
    seen = []
    for _ in range(2):
        opt.zero_grad()
        loss = mlp(params, X, Y)
        if not seen:
            params["v"].register_hook(lambda g: seen.append(g.copy()) or 3 * g)
        loss.backward()
        np.testing.assert_allclose(params["v"].grad, 3 * grads["v"], rtol=1e-12)
        np.testing.assert_allclose(params["b"].grad, grads["b"], rtol=1e-12)
    assert len(seen) == 2
    np.testing.assert_allclose(seen[0], grads["v"], rtol=1e-12)


scaled_norm = compile_grad(lambda w, x: np.sum((x * w) ** 2))


def test_a_new_parameter_in_place_of_a_dead_one_is_a_new_leaf():
    """A call site is recognized by its Tensors' ids only while they all live (weak
    references with callbacks watch them): a Parameter made after the old one died, which
    often reuses its memory and so its id, is a new leaf, whose hooks and gradient are its
    own (the usual path, which a hook sends backward down, reads the site's edges)."""
    x = np.array([1.0, 2.0, 3.0])
    reused = 0
    for seed in range(10):
        w = Parameter(np.full(3, 1.0 + seed))
        for _ in range(2):
            w.grad = None
            scaled_norm(w, x).backward()
        data, old = np.full(3, 2.0 + seed), id(w)
        del w  # and at once a new one, which takes the freed memory more often than not
        w = Parameter(data)
        reused += id(w) == old
        seen: list[np.ndarray] = []
        w.register_hook(seen.append)
        scaled_norm(w, x).backward()
        expected = 2 * x * x * w.data
        np.testing.assert_allclose(w.grad, expected, rtol=1e-12)
        np.testing.assert_allclose(seen[0], expected, rtol=1e-12)
        del w
    if not reused:
        pytest.skip("no Parameter took a dead one's id here: nothing was tested")


def test_a_call_of_a_few_leaves_checks_each_ones_class_and_flag():
    """The written-out fast path of a small call refuses what the general path must see: a
    plain array for a Parameter, a Parameter for the data, a Tensor not requiring grad."""
    f = compile_grad(mlp_loss)
    params = make_params()
    f(params, X, Y).backward()
    run = f._tensor_call.run
    assert run((params, X, Y)) is not REFUSED
    assert run(({**params, "W": params["W"].data}, X, Y)) is REFUSED
    assert run((params, Parameter(X), Y)) is REFUSED
    assert run(({**params, "b": Tensor(params["b"].data)}, X, Y)) is REFUSED
    assert run((params, X)) is REFUSED
    frozen = {**params, "v": Parameter(params["v"].data, requires_grad=False)}
    assert run((frozen, X, Y)) is REFUSED
    loss = f(frozen, X, Y)
    loss.backward()
    assert frozen["v"].grad is None
    np.testing.assert_allclose(loss.item(), mlp.fn({k: p.data for k, p in params.items()},
                                                   X, Y), rtol=1e-12)


@compile_grad
def deep(params, x, y):
    h = x
    for layer in params:
        h = np.tanh(h @ layer["W"] + layer["b"])
    return np.mean((h - y) ** 2)


def deep_params(layers=30, width=4, seed=0):
    rng = np.random.default_rng(seed)
    return [{"W": Parameter(rng.normal(size=(width, width)) / 2),
             "b": Parameter(0.1 * rng.normal(size=width))} for _ in range(layers)]


def test_gradients_of_a_rolled_loop_go_to_rows_of_one_stack():
    params = deep_params()
    x, y = RNG.normal(size=(5, 4)), RNG.normal(size=(5, 4))
    opt = optim.SGD([p for layer in params for p in layer.values()], lr=0.0)
    plain = [{k: p.data for k, p in layer.items()} for layer in params]
    _, grads = deep.value_and_grad(plain, x, y)
    for _ in range(2):
        opt.zero_grad()
        deep(params, x, y).backward()
        for layer, expected in zip(params, grads):
            for key, p in layer.items():
                np.testing.assert_allclose(p._grad, expected[key], rtol=1e-10, atol=1e-14)
    stacks = {id(layer["W"]._grad.base) for layer in params}
    assert len(stacks) == 1 and None not in {layer["W"]._grad.base is None for layer in params}


def test_runtime_steps_and_train_steps_take_turns_on_the_same_parameters():
    """train_step keeps a rolled net's Parameters as rows of its stacks; the compiled
    optimizer step follows them there."""
    x, y = RNG.normal(size=(5, 4)), RNG.normal(size=(5, 4))

    def steps(params, opt, fused):
        step = train_step(deep, params, opt) if fused else None
        for k in range(6):
            if fused and k % 2:
                step(x, y)
                continue
            opt.zero_grad()
            deep(params, x, y).backward()
            opt.step()
        return params

    def fresh():
        params = deep_params()
        return params, optim.SGD([p for layer in params for p in layer.values()], lr=0.05,
                                 momentum=0.9)

    mixed = steps(*fresh(), fused=True)
    set_compiled_update(None)
    try:
        expected = steps(*fresh(), fused=False)
    finally:
        kernels.register_compiled_update()
    for layer, reference in zip(mixed, expected, strict=True):
        for key in layer:
            np.testing.assert_allclose(layer[key].data, reference[key].data, rtol=1e-10)


def test_a_train_step_keeps_the_optimizer_state_of_a_rolled_net_current():
    """The step counts of stacked state are rows of the step's stack too (a row of a 1-D
    stack taken as `stack[m]` was a copy: the state showed the count of the first step)."""
    params = deep_params()
    opt = optim.SGD([p for layer in params for p in layer.values()], lr=0.05, momentum=0.9)
    step = train_step(deep, params, opt)
    x, y = RNG.normal(size=(5, 4)), RNG.normal(size=(5, 4))
    for _ in range(3):
        step(x, y)
    for layer in params:
        for p in layer.values():
            count = opt.state[p]["step"]
            assert isinstance(count, np.ndarray) and count.shape == () and count == 3.0


def test_graphs_alive_at_once_keep_their_own_residuals():
    """Residual arrays are reused only once no graph holds them: two forwards before their
    backwards, and a batch refilled in place in between, give each its own gradients."""
    params = make_params()
    x, y = X.copy(), Y.copy()
    first = mlp(params, x, y)
    expected = expected_grads(params, X, Y)
    x[...], y[...] = X[::-1], Y[::-1]  # the caller refills its batch arrays
    second = mlp(params, x, y)
    second_expected = expected_grads(params, X[::-1], Y[::-1])
    first.backward()
    assert_grads(params, expected)
    for p in params.values():
        p.grad = None
    second.backward()
    assert_grads(params, second_expected)
    for _ in range(3):  # and a loop reuses one set of residual arrays, step after step
        for p in params.values():
            p.grad = None
        mlp(params, X, Y).backward()
        assert_grads(params, expected)


def test_forward_saves_only_what_backward_cannot_recompute():
    """relu's output is recomputed from its input (it reads one saved value, twice), and the
    batch size from backward's own arguments: W1's MLP saves two arrays besides its loss."""
    from runtime import functional as F
    from runtime import init

    mlp_mse = compile_grad(lambda params, X, y: F.mse_loss(init.mlp(params, X), y))
    rng = np.random.default_rng(0)
    params = init.mlp_params([10, 5, 1], rng)
    x, y = rng.normal(size=(20, 10)), rng.normal(size=(20, 1))
    mlp_mse(params, x, y).backward()
    spec = mlp_mse._last
    saved = [str(o.type) for o in spec.graph_of("forward_save").outputs[1:]]
    assert saved == ["f64[N,1]", "f64[N,5]"]  # pred - y, and the pre-activation
    assert ("input", 4) in spec.residual_sources  # X, for W0's gradient
    grads = mlp_mse.value_and_grad({k: p.data for k, p in params.items()}, x, y)[1]
    for key, p in params.items():
        np.testing.assert_allclose(p.grad, grads[key], rtol=1e-12)
