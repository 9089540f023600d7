"""An optimizer's options changed mid-training, side by side with PyTorch: flags that choose the
rule's form (momentum from or to 0, nesterov, maximize, amsgrad) and a setting changed in place
(`group["betas"][0] = 0.5`), in the runtime's loop (its compiled group step settles first) and
in train_step."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_grad
from compiler.training import train_step
from runtime import Parameter, optim

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(4)
W0, V0 = RNG.normal(size=(3, 4)), RNG.normal(size=4)
X, Y = RNG.normal(size=(8, 3)), RNG.normal(size=8)


def mse(params, X, y):
    return np.mean((np.tanh(X @ params["W"]) @ params["v"] - y) ** 2)


loss_fn = compile_grad(mse)
# train_step re-plans in Python, whatever the backend: the interpreter spares the suite a numba
# compile of the step per case and change
interpreted_loss = compile_grad(mse, backend="interpreter")


def torch_loss(params):
    return ((torch.tanh(torch.tensor(X) @ params["W"]) @ params["v"] - torch.tensor(Y)) ** 2
            ).mean()


def set_betas_in_place(group):
    if isinstance(group["betas"], tuple):  # the first time: a list of the user's own
        group["betas"] = list(group["betas"])
        return
    group["betas"][0] = 0.5


def set_option(name, value):
    def change(group):
        group[name] = value
    return change


# Both keep betas as a tuple; a user may set a list of their own and change it in place, which
# in PyTorch is one new tuple (PyTorch reads the group's betas at every step, as gradfuse must).
TORCH_CHANGES = {"adam betas in place": set_option("betas", (0.5, 0.999))}
CHANGES = {
    "sgd momentum 0 -> 0.9": ("SGD", {"lr": 0.1}, set_option("momentum", 0.9)),
    "sgd momentum 0.9 -> 0": ("SGD", {"lr": 0.1, "momentum": 0.9}, set_option("momentum", 0.0)),
    "sgd nesterov on": ("SGD", {"lr": 0.1, "momentum": 0.9}, set_option("nesterov", True)),
    "sgd maximize on": ("SGD", {"lr": 0.01, "momentum": 0.5}, set_option("maximize", True)),
    "adam amsgrad off": ("Adam", {"lr": 0.05, "amsgrad": True}, set_option("amsgrad", False)),
    "adam betas in place": ("Adam", {"lr": 0.05}, set_betas_in_place),
}


def pytorch_run(name, options, change, steps, changed_at):
    params = {"W": torch.tensor(W0, requires_grad=True), "v": torch.tensor(V0, requires_grad=True)}
    opt = getattr(torch.optim, name)(params.values(), **options)
    for step in range(steps):
        if step == changed_at:
            change(opt.param_groups[0])
        opt.zero_grad()
        torch_loss(params).backward()
        opt.step()
    return {k: p.detach().numpy() for k, p in params.items()}


@pytest.mark.parametrize("case", sorted(CHANGES))
def test_the_runtime_loop_follows_the_change(case):
    name, options, change = CHANGES[case]
    expected = pytorch_run(name, options, TORCH_CHANGES.get(case, change), 8, 4)
    params = {"W": Parameter(W0.copy()), "v": Parameter(V0.copy())}
    opt = getattr(optim, name)(params, **options)
    for step in range(8):
        if step == 1 and case in TORCH_CHANGES:
            change(opt.param_groups[0])  # the list, before the compiled step settles
        if step == 4:  # by now the group's compiled step has settled
            change(opt.param_groups[0])
        opt.zero_grad()
        loss_fn(params, X, Y).backward()
        opt.step()
    for key in params:
        np.testing.assert_allclose(params[key].data, expected[key], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", sorted(CHANGES))
def test_train_step_follows_the_change(case):
    name, options, change = CHANGES[case]
    expected = pytorch_run(name, options, TORCH_CHANGES.get(case, change), 6, 3)
    params = {"W": Parameter(W0.copy()), "v": Parameter(V0.copy())}
    opt = getattr(optim, name)(params, **options)
    step = train_step(interpreted_loss, params, opt)
    for k in range(6):
        if k == 1 and case in TORCH_CHANGES:
            change(opt.param_groups[0])
        if k == 3:
            change(opt.param_groups[0])
        step(X, Y)
    for key in params:
        np.testing.assert_allclose(params[key].data, expected[key], rtol=1e-10, atol=1e-12)


def _moved_to_a_group_of_its_own(params_of, opt):
    """v leaves group 0 for a new group with another learning rate."""
    group = opt.param_groups[0]["params"]
    del group[[i for i, p in enumerate(group) if p is params_of["v"]][0]]
    opt.add_param_group({"params": [params_of["v"]], "lr": 0.5})


def test_a_parameter_moved_to_another_group_steps_with_that_groups_settings():
    """train_step kept a moved Parameter's settings from the group it was planned in (v went on
    with lr 0.05 instead of its new group's 0.5), silently."""
    theirs = {"W": torch.tensor(W0, requires_grad=True), "v": torch.tensor(V0, requires_grad=True)}
    topt = torch.optim.SGD(theirs.values(), lr=0.05)
    params = {"W": Parameter(W0.copy()), "v": Parameter(V0.copy())}
    opt = optim.SGD(params.values(), lr=0.05)
    step = train_step(interpreted_loss, params, opt)
    for k in range(4):
        if k == 2:
            _moved_to_a_group_of_its_own(theirs, topt)
            _moved_to_a_group_of_its_own(params, opt)
        topt.zero_grad()
        torch_loss(theirs).backward()
        topt.step()
        step(X, Y)
    for key in params:
        np.testing.assert_allclose(params[key].data, theirs[key].detach().numpy(), rtol=1e-10,
                                   atol=1e-12)


def _without_v_in_place(params_of, opt):
    del opt.param_groups[0]["params"][1]


def _without_v_by_a_new_list(params_of, opt):
    opt.param_groups[0]["params"] = [params_of["W"]]


@pytest.mark.parametrize("change", [_without_v_in_place, _without_v_by_a_new_list])
def test_train_step_refuses_a_parameter_taken_out_of_the_optimizer(change):
    """A Parameter removed from the optimizer's group after train_step was made went on being
    updated by the step (PyTorch's step leaves it alone, and so does the runtime's): the step
    now sees the change and refuses it, as it refuses such a Parameter from the start."""
    params = {"W": Parameter(W0.copy()), "v": Parameter(V0.copy())}
    opt = optim.SGD(params.values(), lr=0.05)
    step = train_step(interpreted_loss, params, opt)
    step(X, Y)
    change(params, opt)
    v = params["v"].data.copy()
    with pytest.raises(TypeError, match="'v' is not"):
        step(X, Y)
    np.testing.assert_array_equal(params["v"].data, v)


def test_train_step_follows_a_users_own_list_changed_in_place():
    """A list bound by the user (group["params"] = mine) counts no changes: the step compares
    its Parameters at every step instead."""
    params = {"W": Parameter(W0.copy()), "v": Parameter(V0.copy())}
    opt = optim.SGD(params.values(), lr=0.05)
    step = train_step(interpreted_loss, params, opt)
    mine = list(opt.param_groups[0]["params"])
    opt.param_groups[0]["params"] = mine
    step(X, Y)  # the same Parameters: the step goes on
    mine.pop()
    with pytest.raises(TypeError, match="'v' is not"):
        step(X, Y)


def test_a_groups_parameter_list_counts_changes_and_compares_by_identity():
    a, b = Parameter(np.ones(1)), Parameter(np.ones(1))
    opt = optim.SGD([a], lr=0.1)
    params = opt.param_groups[0]["params"]
    assert isinstance(params, list) and params == [a] and params != [b]  # b == a elementwise
    before = optim.Optimizer.group_changes
    params.append(b)
    params[1] = b
    params.sort(key=id)
    assert optim.Optimizer.group_changes == before + 3
