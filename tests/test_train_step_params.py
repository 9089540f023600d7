"""train_step and fit on Parameters as PyTorch's loop treats them: a frozen one (requires_grad
False, also set between steps) is left alone and not counted by clipping, one with a hook is
refused with a clear error, and a tied one (the same Parameter twice in the tree) gets the sum
of its gradients and one update, with Adam's state stepped once."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_grad
from compiler.training import fit, train_step
from runtime import Parameter, optim

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(9)
A0, B0 = RNG.normal(size=(3, 3)), RNG.normal(size=(3, 2))
X, Y = RNG.normal(size=(6, 3)), RNG.normal(size=(6, 2))


@compile_grad
def loss_fn(p, X, y):
    return np.mean((np.tanh(X @ p["a"]) @ p["b"] - y) ** 2)


@compile_grad
def tied_loss(p, X):
    """An autoencoder whose decoder is its encoder, as {"enc": E, "dec": E}."""
    return np.mean((np.tanh(X @ p["enc"]) @ p["dec"].T - X) ** 2)


def torch_params():
    return {"a": torch.tensor(A0, requires_grad=True), "b": torch.tensor(B0, requires_grad=True)}


def torch_steps(params, opt, n, freeze_at=None, max_norm=None):
    for k in range(n):
        if k == freeze_at:
            params["a"].requires_grad_(False)
        opt.zero_grad()
        loss = ((torch.tanh(torch.tensor(X) @ params["a"]) @ params["b"] - torch.tensor(Y)) ** 2
                ).mean()
        loss.backward()
        if max_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for p in params.values() if p.grad is not None],
                                           max_norm)
        opt.step()
    return {k: p.detach().numpy() for k, p in params.items()}


def test_a_parameter_frozen_between_steps_stays_and_clipping_ignores_it():
    theirs = torch_params()
    expected = torch_steps(theirs, torch.optim.SGD(theirs.values(), lr=0.1, momentum=0.9,
                                                   weight_decay=0.01), 6, 3, max_norm=0.05)
    params = {"a": Parameter(A0.copy()), "b": Parameter(B0.copy())}
    opt = optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01)
    step = train_step(loss_fn, params, opt, max_norm=0.05)
    for k in range(6):
        if k == 3:
            params["a"].requires_grad = False
        step(X, Y)
    for key in params:
        np.testing.assert_allclose(params[key].data, expected[key], rtol=1e-10)


def test_fit_leaves_a_frozen_parameter_alone():
    theirs = torch_params()
    theirs["a"].requires_grad_(False)
    expected = torch_steps(theirs, torch.optim.Adam([theirs["b"]], lr=0.01), 4)
    params = {"a": Parameter(A0.copy()), "b": Parameter(B0.copy())}
    params["a"].requires_grad = False
    fit(loss_fn, params, optim.Adam(params, lr=0.01), (X, Y), epochs=4, batch_size=6,
        shuffle=False, progress=False)
    np.testing.assert_array_equal(params["a"].data, A0)
    np.testing.assert_allclose(params["b"].data, expected["b"], rtol=1e-10)
    # PyTorch's habit, an optimizer of the trainable Parameters only: the error says what to do
    with pytest.raises(TypeError, match="'a' is not \\(a frozen Parameter left "
                                        "out of the optimizer.*give it to the optimizer too"):
        fit(loss_fn, params, optim.Adam([params["b"]], lr=0.01), (X, Y), epochs=1)


def test_a_hook_is_refused_with_a_clear_error():
    params = {"a": Parameter(A0.copy()), "b": Parameter(B0.copy())}
    step = train_step(loss_fn, params, optim.SGD(params, lr=0.1))
    step(X, Y)
    params["b"].register_hook(lambda g: 0 * g)
    before = params["b"].data.copy()
    with pytest.raises(RuntimeError, match="cannot run the hooks registered on 'b'"):
        step(X, Y)
    np.testing.assert_array_equal(params["b"].data, before)  # refused before any update


def test_a_tied_parameter_gets_one_update_from_the_sum_of_its_gradients():
    E0 = RNG.normal(size=(3, 2))
    tE = torch.tensor(E0, requires_grad=True)
    topt = torch.optim.Adam([tE], lr=0.05)
    for _ in range(4):
        topt.zero_grad()
        ((torch.tanh(torch.tensor(X) @ tE) @ tE.T - torch.tensor(X)) ** 2).mean().backward()
        topt.step()
    E = Parameter(E0.copy())
    opt = optim.Adam([E], lr=0.05)
    step = train_step(tied_loss, {"enc": E, "dec": E}, opt)
    for _ in range(4):
        step(X)
    np.testing.assert_allclose(E.data, tE.detach().numpy(), rtol=1e-10)
    assert float(opt.state[E]["step"]) == 4.0


def test_a_parameter_the_loss_does_not_use_is_left_alone():
    # PyTorch's graph does not reach it: .grad stays None and AdamW skips it (its decoupled
    # weight decay shrank it every step, from a gradient of zeros)
    theirs = torch_params()
    spare_t = torch.ones(2, dtype=torch.float64, requires_grad=True)
    expected = torch_steps(theirs, torch.optim.AdamW([*theirs.values(), spare_t], lr=0.05), 4,
                           max_norm=0.5)
    assert spare_t.grad is None
    params = {"a": Parameter(A0.copy()), "b": Parameter(B0.copy()), "spare": Parameter(np.ones(2))}
    step = train_step(loss_fn, params, optim.AdamW(params, lr=0.05), max_norm=0.5)
    for _ in range(4):
        step(X, Y)
    np.testing.assert_array_equal(params["spare"].data, np.ones(2))
    for key in ("a", "b"):
        np.testing.assert_allclose(params[key].data, expected[key], rtol=1e-10)


def test_accumulation_and_kept_gradients_leave_an_unused_parameter_alone():
    """accumulate() summed the micro-batches' gradients, which hid that the loss does not reach
    `spare`: AdamW's decay shrank it (to 0.95 after one step); and keep_grads gave it a .grad of
    zeros where PyTorch leaves None."""
    theirs = torch_params()
    spare_t = torch.ones(2, dtype=torch.float64, requires_grad=True)
    topt = torch.optim.AdamW([*theirs.values(), spare_t], lr=0.05, weight_decay=0.5)
    params = {"a": Parameter(A0.copy()), "b": Parameter(B0.copy()), "spare": Parameter(np.ones(2))}
    step = train_step(loss_fn, params, optim.AdamW(params, lr=0.05, weight_decay=0.5),
                      keep_grads=True)
    halves = [(X[:3], Y[:3]), (X[3:], Y[3:])]
    for k in range(3):
        topt.zero_grad()
        for rows in (slice(0, 3), slice(3, 6)) if k < 2 else (slice(0, 6),):
            loss = ((torch.tanh(torch.tensor(X[rows]) @ theirs["a"]) @ theirs["b"]
                     - torch.tensor(Y[rows])) ** 2).mean()
            (loss / (2 if k < 2 else 1)).backward()
        topt.step()
        if k < 2:
            step.accumulate(halves)
        else:
            step(X, Y)
        assert spare_t.grad is None and params["spare"].grad is None
        np.testing.assert_allclose(params["a"].grad, theirs["a"].grad.numpy(), rtol=1e-10)
    np.testing.assert_array_equal(params["spare"].data, np.ones(2))
    for key in ("a", "b"):
        np.testing.assert_allclose(params[key].data, theirs[key].detach().numpy(), rtol=1e-10)


@compile_grad(backend="interpreter")  # the update's plan is traced, whatever the backend
def loss_with_a_zero_term(p, X, y):
    return np.mean((np.tanh(X @ p["a"]) @ p["b"] - y) ** 2) + 0.0 * np.sum(p["spare"])


def test_a_parameter_the_loss_reaches_with_a_zero_gradient_is_stepped():
    """0 * p.sum(): PyTorch's graph reaches p, so AdamW steps it with a zero gradient (its decay
    shrinks it), as the runtime's loop does; train_step took the gradient folded to a zero
    constant for a Parameter the loss does not use and left it alone."""
    theirs = torch_params()
    spare_t = torch.ones(2, dtype=torch.float64, requires_grad=True)
    topt = torch.optim.AdamW([*theirs.values(), spare_t], lr=0.1, weight_decay=0.5)
    params = {"a": Parameter(A0.copy()), "b": Parameter(B0.copy()), "spare": Parameter(np.ones(2))}
    step = train_step(loss_with_a_zero_term, params,
                      optim.AdamW(params, lr=0.1, weight_decay=0.5), keep_grads=True)
    for _ in range(3):
        topt.zero_grad()
        loss = ((torch.tanh(torch.tensor(X) @ theirs["a"]) @ theirs["b"] - torch.tensor(Y)) ** 2
                ).mean() + 0.0 * spare_t.sum()
        loss.backward()
        topt.step()
        step(X, Y)
    np.testing.assert_array_equal(params["spare"].grad, spare_t.grad.numpy())  # zeros
    np.testing.assert_allclose(params["spare"].data, spare_t.detach().numpy(), rtol=1e-12)
    assert params["spare"].data[0] < 1.0
