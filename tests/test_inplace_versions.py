"""Version counters: backward refuses inputs that were updated in place after forward, as PyTorch.

Backward kernels read their inputs straight from the caller's arrays, so an optimizer
step between forward and backward would otherwise silently change the gradient.
"""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_grad
from runtime import Parameter, optim, record, utils

MODIFIED = r"modified by an inplace operation"


def square_sum(w):
    return np.sum(w**2)


# One numba-compiled function (the path users take) and the interpreter for the rest.
square_sum_numba = compile_grad(square_sum)
square_sum_interp = compile_grad(square_sum, backend="interpreter")


@compile_grad(backend="interpreter")
def weighted(w, v, x):
    return np.sum(np.tanh(x @ w) * v)


@pytest.mark.parametrize("f", [square_sum_numba, square_sum_interp], ids=["numba", "interpreter"])
def test_backward_after_optimizer_step_raises_instead_of_using_new_values(f):
    w = Parameter(np.array([1.0, 2.0]))
    opt = optim.SGD([w], lr=0.1)
    loss = f(w)
    loss.backward(retain_graph=True)
    np.testing.assert_array_equal(w.grad, [2.0, 4.0])
    assert w._version == 0
    opt.step()
    assert w._version == 1
    np.testing.assert_allclose(w.data, [0.8, 1.6])
    opt.zero_grad()
    with pytest.raises(RuntimeError, match=MODIFIED) as info:
        loss.backward()  # used to give [1.6, 3.2] silently
    message = str(info.value)
    assert "is at version 1; expected version 0 instead" in message
    assert "float64" in message and "(2,)" in message
    assert w.grad is None  # nothing accumulated
    # A new forward records the new version: backward works and uses the new values.
    f(w).backward()
    np.testing.assert_allclose(w.grad, [1.6, 3.2])


def test_only_the_modified_input_is_named_and_the_check_runs_before_any_node():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3))
    w, v = Parameter(rng.normal(size=(3, 2))), Parameter(rng.normal(size=2))
    loss = weighted(w, v, x)
    seen = []
    loss.register_hook(lambda g: seen.append(g))
    v._version += 1  # what the compiled train step does after writing v in place
    with pytest.raises(RuntimeError, match=MODIFIED) as info:
        loss.backward()
    assert "input 1 of" in str(info.value) and "(2,)" in str(info.value)
    assert seen == [] and w.grad is None and v.grad is None
    # The failed pass freed nothing: once the counter matches again backward runs.
    v._version -= 1
    loss.backward()
    t = np.tanh(x @ w.data)
    np.testing.assert_allclose(v.grad, t.sum(axis=0))
    np.testing.assert_allclose(w.grad, x.T @ ((1 - t**2) * v.data))


def test_a_chain_checks_the_inputs_of_every_node():
    w = Parameter(np.array([1.0, -2.0]))
    [h] = record([w.data * 3.0], [w], lambda cts: [3.0 * cts[0]], "scale")
    hv = h._version
    [out] = record([np.sum(h.data)], [h], lambda cts: [np.ones(2) * cts[0]], "sum")
    w._version += 1
    with pytest.raises(RuntimeError, match="input 0 of scale, is at version 1; expected version 0"):
        out.backward()
    w._version -= 1
    h._version = hv + 2  # a non-leaf input is checked too
    with pytest.raises(RuntimeError, match="input 0 of sum, is at version 2; expected version 0"):
        out.backward()


OPTIMIZERS = [
    (optim.SGD, dict(lr=0.1, momentum=0.9)),
    (optim.Adam, dict(lr=0.1)),
    (optim.AdamW, dict(lr=0.1)),
    (optim.RMSprop, dict(lr=0.1)),
    (optim.Adagrad, dict(lr=0.1)),
]


@pytest.mark.parametrize("cls, options", OPTIMIZERS, ids=[c.__name__ for c, _ in OPTIMIZERS])
def test_every_optimizer_step_bumps_each_updated_parameter_once(cls, options):
    a, b, frozen = Parameter(np.ones(3)), Parameter(np.ones(2)), Parameter(np.ones(2))
    opt = cls([a, b, frozen], **options)
    a.grad, b.grad = np.full(3, 0.5), np.full(2, -0.5)  # frozen has no grad: not updated
    opt.step()
    opt.step()
    assert (a._version, b._version, frozen._version) == (2, 2, 0)
    assert not np.allclose(a.data, 1.0) and np.array_equal(frozen.data, np.ones(2))


def test_clipping_and_zero_grad_do_not_bump_versions():
    p = Parameter(np.array([3.0, 4.0]))
    p.grad = np.array([30.0, 40.0])
    utils.clip_grad_norm_([p], max_norm=1.0)
    utils.clip_grad_value_([p], 0.1)
    optim.SGD([p], lr=0.1).zero_grad(set_to_none=False)
    p.zero_grad()
    assert p._version == 0


def test_load_bumps_versions_and_backward_through_an_older_forward_raises(tmp_path):
    params = {"w": Parameter(np.array([1.0, 2.0]))}
    utils.save(tmp_path / "ckpt.npz", params)
    loss = square_sum_interp(params["w"])
    utils.load(tmp_path / "ckpt.npz", params)
    assert params["w"]._version == 1
    with pytest.raises(RuntimeError, match="is at version 1; expected version 0"):
        loss.backward()


def test_writes_through_data_are_not_tracked_like_pytorch():
    w = Parameter(np.array([1.0, 2.0]))
    loss = square_sum_interp(w)
    w.data[...] = [10.0, 20.0]  # untracked, as `w.data.mul_()` in PyTorch
    loss.backward()
    np.testing.assert_allclose(w.grad, [20.0, 40.0])  # backward reads the new values


def test_same_behaviour_as_pytorch():
    torch = pytest.importorskip("torch")
    # PyTorch: an optimizer step between forward and backward is an error ...
    tw = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    topt = torch.optim.SGD([tw], lr=0.1)
    tloss = (tw**2).sum()
    tloss.backward(retain_graph=True)
    topt.step()
    topt.zero_grad()
    with pytest.raises(RuntimeError, match=MODIFIED) as torch_info:
        tloss.backward()
    assert "is at version 1; expected version 0 instead" in str(torch_info.value)
    assert tw.grad is None
    # ... and so it is in gradfuse, with the same key words.
    w = Parameter(np.array([1.0, 2.0]))
    opt = optim.SGD([w], lr=0.1)
    loss = square_sum_interp(w)
    loss.backward(retain_graph=True)
    opt.step()
    opt.zero_grad()
    with pytest.raises(RuntimeError, match=MODIFIED) as info:
        loss.backward()
    assert "is at version 1; expected version 0 instead" in str(info.value)
    assert w._version == tw._version == 1
    # Writes through .data are untracked in both, and both then see the new values.
    tloss = (tw**2).sum()
    tw.data.mul_(10.0)
    tloss.backward()
    loss = square_sum_interp(w)
    w.data[...] *= 10.0
    loss.backward()
    assert w._version == tw._version == 1
    np.testing.assert_allclose(w.grad, tw.grad.numpy(), rtol=1e-12)


def test_an_input_that_needs_no_gradient_but_is_read_by_backward_is_watched_too():
    w = Parameter(np.array([1.0, 2.0]))
    frozen = Parameter(np.array([3.0, 4.0]), requires_grad=False)
    product = compile_grad(lambda w, v: np.sum(w * v), backend="interpreter")
    loss = product(w, frozen)
    frozen._version += 1  # what an in-place update by the library does (e.g. utils.load)
    with pytest.raises(RuntimeError, match="an input saved for backward"):
        loss.backward()
    assert w.grad is None


def projected_square(w, X):
    return np.sum((X @ w) ** 2)


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_a_batch_buffer_refilled_before_backward_does_not_change_the_gradient(backend):
    """A plain array has no version counter: backward keeps its own copy of what it reads."""
    f = compile_grad(projected_square, backend=backend)
    w = Parameter(np.array([1.0, -1.0, 0.5]))
    buffer = np.empty((2, 3))
    for batch in (np.arange(6.0).reshape(2, 3), np.ones((2, 3))):  # general path, then fast
        buffer[...] = batch
        w.grad = None
        loss = f(w, buffer)
        buffer[...] = 0.0  # the next batch goes into the same buffer
        loss.backward()
        np.testing.assert_allclose(w.grad, 2 * batch.T @ (batch @ w.data))
