"""Optimizers, clipping and compiled steps against PyTorch in the corners a defect hunt found
wrong: each test names the input that showed the defect."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_grad
from compiler.training import train_step
from runtime import Parameter, optim

torch = pytest.importorskip("torch")


@compile_grad
def scaled_loss(p, X):
    """A matrix and a 0-d Parameter (a learned scale), as a float32 model has them."""
    return np.mean(np.tanh(X @ p["W"]) ** 2) * p["s"] ** 2 + p["s"] * np.mean(X)


def test_keep_grads_of_a_float32_0d_parameter_keeps_its_dtype():
    """train_step(..., keep_grads=True) of float32 Parameters with a 0-d one failed 'assigned
    grad has dtype float64': the step kernel returns a 0-d gradient as a Python float. The
    .grad kept is now float32, and equals PyTorch's (clipped) gradient."""
    rng = np.random.default_rng(0)
    W0, X = rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
    params = {"W": Parameter(W0), "s": Parameter(np.float32(0.5))}
    step = train_step(scaled_loss, params, optim.SGD(params, lr=0.1, momentum=0.9),
                      max_norm=0.1, keep_grads=True)
    theirs = {"W": torch.tensor(W0, requires_grad=True),
              "s": torch.tensor(np.float32(0.5), requires_grad=True)}
    topt = torch.optim.SGD(theirs.values(), lr=0.1, momentum=0.9)
    for _ in range(3):
        step(X)
        topt.zero_grad()
        tX = torch.tensor(X)
        loss = (torch.tanh(tX @ theirs["W"]) ** 2).mean() * theirs["s"] ** 2 \
            + theirs["s"] * tX.mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.values(), 0.1)
        topt.step()
        for name, p in params.items():
            assert p.grad.dtype == np.float32 and p.data.dtype == np.float32
            np.testing.assert_allclose(p.grad, theirs[name].grad.numpy(), rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(p.data, theirs[name].detach().numpy(), rtol=1e-5,
                                       atol=1e-7)


@pytest.mark.parametrize("name, settings, off", [
    ("SGD", dict(lr=0.1, momentum=0.9), {"momentum": 0.0}),
    ("Adam", dict(lr=0.1, amsgrad=True), {"amsgrad": False}),
    ("RMSprop", dict(lr=0.05, centered=True, momentum=0.5), {"momentum": 0.0, "centered": False}),
])
def test_a_state_saved_after_an_option_was_turned_off_loads(name, settings, off):
    """SGD(momentum=0.9) trained, momentum set to 0, state_dict() loaded into a fresh SGD was
    refused: 'has entries ['momentum_buffer', 'step'], but this optimizer keeps []' (Adam's
    max_exp_avg_sq after amsgrad=False, RMSprop's buffers likewise), though the optimizer keeps
    those entries itself and PyTorch loads them. Now they load, and training goes on as in
    PyTorch, the option turned back on included (its old entries are read again)."""
    def run(module, make):
        p = make(np.linspace(-1.0, 1.0, 4))
        opt = getattr(module, name)([p], **settings)
        for k in range(8):
            if k == 3:
                opt.param_groups[0].update(off)
            if k == 5:  # a fresh optimizer on a fresh parameter, from the state_dict
                saved = opt.state_dict()
                p = make(p.detach().numpy() if module is torch.optim else p.data)
                opt = getattr(module, name)([p], **settings)
                opt.load_state_dict(saved)
            if k == 6:
                opt.param_groups[0].update(settings)
            grad = np.cos(np.arange(4.0) + k) + 0.1 * k
            p.grad = torch.tensor(grad) if module is torch.optim else grad
            opt.step()
        return p

    ours = run(optim, Parameter)
    theirs = run(torch.optim, lambda v: torch.tensor(v, requires_grad=True))
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-13, atol=1e-15)


def test_another_optimizers_state_is_still_refused():
    adam = optim.Adam([Parameter(np.ones(3))], amsgrad=True)
    adam.param_groups[0]["params"][0].grad = np.ones(3)
    adam.step()
    sgd = optim.SGD([Parameter(np.ones(3))], momentum=0.9)
    with pytest.raises(ValueError, match=r"entries \['exp_avg', .* keeps \['momentum_buffer'"):
        sgd.load_state_dict(adam.state_dict())
    assert sgd.state == {}


def test_a_set_of_parameters_in_a_group_is_refused_as_in_pytorch():
    """optim.SGD([{"params": {a, b}}]) was accepted: a set's order changes between runs, so a
    state_dict (matched by position) could load into the wrong same-shaped Parameters. PyTorch
    refuses it; so does add_param_group now."""
    a, b = Parameter(np.ones(2)), Parameter(np.zeros(2))
    with pytest.raises(TypeError, match="ordered collections"):
        optim.SGD([{"params": {a, b}}], lr=0.1)
    opt = optim.SGD([a], lr=0.1)
    with pytest.raises(TypeError, match="ordered collections"):
        opt.add_param_group({"params": frozenset([b])})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("name, settings", [
    ("SGD", dict(lr=np.float64(0.1), momentum=np.float64(0.9), weight_decay=np.float64(0.01))),
    ("Adam", dict(lr=np.float64(0.05), betas=(np.float64(0.8), np.float64(0.99)))),
    ("RMSprop", dict(lr=np.float64(0.01), alpha=np.float64(0.9), momentum=np.float64(0.5))),
])
def test_numpy_scalar_settings_step_float32_parameters_in_float32(name, settings):
    """A float32 Parameter stepped with NumPy float64 settings (an lr from a NumPy schedule)
    was updated in float64 arithmetic by the NumPy rules (np.float64 * a float32 array is
    float64 under NEP 50), so ~30-50% of its entries differed by ulps from the same run with
    Python floats, which the compiled kernels and PyTorch compute in float32. Now bit for
    bit the same."""
    def run(options):
        p = Parameter(np.linspace(-1.0, 1.0, 200, dtype=np.float32))
        opt = getattr(optim, name)([p], **options)
        for k in range(5):
            p.grad = np.cos(np.arange(200, dtype=np.float32) * (k + 1))  # fresh: the rules run
            opt.step()
        return p.data

    as_python = {k: tuple(map(float, v)) if isinstance(v, tuple) else float(v)
                 for k, v in settings.items()}
    np.testing.assert_array_equal(run(settings), run(as_python))


@compile_grad
def quadratic_loss(p, X):
    return np.mean((X @ p["W"] - 1.0) ** 2)


@pytest.mark.parametrize("name, settings", [
    ("SGD", dict(lr=0.1, momentum=np.float64(0.9))),
    ("Adam", dict(lr=0.1, amsgrad=np.True_)),
])
@pytest.mark.parametrize("compiled", ["loop", "train_step"])
def test_numpy_typed_settings_in_compiled_steps(name, settings, compiled):
    """SGD(momentum=np.float64(0.9)) (or amsgrad=np.True_) failed in compiled steps, the
    runtime loop's settled step and train_step alike, with 'the truth value of a traced array
    is unknown': `momentum != 0` of an np.float64 is a NumPy bool, which was taken for a
    run-time value, traced, and branched on. Flags are Python bools now; values vs PyTorch."""
    rng = np.random.default_rng(2)
    W0, X = rng.normal(size=(3, 2)), rng.normal(size=(6, 3))
    params = {"W": Parameter(W0)}
    opt = getattr(optim, name)(params, **settings)
    step = train_step(quadratic_loss, params, opt) if compiled == "train_step" else None
    W = torch.tensor(W0, requires_grad=True)
    topt = getattr(torch.optim, name)([W], **settings)
    for _ in range(6):  # the loop's step settles into a kernel from the third
        if step is not None:
            step(X)
        else:
            opt.zero_grad()
            quadratic_loss(params, X).backward()
            opt.step()
        topt.zero_grad()
        ((torch.tensor(X) @ W - 1.0) ** 2).mean().backward()
        topt.step()
    np.testing.assert_allclose(params["W"].data, W.detach().numpy(), rtol=1e-12, atol=1e-14)
