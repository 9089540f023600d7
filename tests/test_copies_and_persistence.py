"""Copies and persistence as PyTorch users make them: copy.copy / copy.deepcopy / pickle of
Tensors, Parameters, optimizers, compiled functions and train steps (PyTorch as the oracle),
checkpoints resumed bit for bit, snapshots that later steps leave alone, and compiled
functions and Parameters sent to worker processes."""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch

from compiler import compile_grad
from runtime import Parameter, Tensor, no_grad, optim


# Compiled with numba: a training loop with it settles into the compiled backward and
# optimizer step (what copies of optimizers went wrong with); the interpreter where compiled
# code is not the point.
@compile_grad
def loss(p, x):
    return np.sum(np.tanh(x @ p["W"] + p["b"]) ** 2)


class Scaled:
    """A model whose compiled method reads `self.scale` (bound per instance)."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    @compile_grad(backend="interpreter")
    def loss(self, w, x):
        return self.scale * np.sum((x @ w) ** 2)


RNG = np.random.default_rng(0)
X = RNG.normal(size=(5, 3))
W0 = RNG.normal(size=(3, 2))


def fresh_params(leaf: str = "Parameter") -> dict[str, Tensor]:
    """Parameters, or Tensors requiring grad (torch.randn(..., requires_grad=True))."""
    if leaf == "Tensor":
        return {"W": Tensor(W0.copy(), requires_grad=True),
                "b": Tensor(np.full(2, 0.1), requires_grad=True)}
    return {"W": Parameter(W0), "b": Parameter(np.full(2, 0.1))}


def steps(params, opt, n: int) -> list[float]:
    losses = []
    for _ in range(n):
        opt.zero_grad()
        value = loss(params, X)
        value.backward()
        opt.step()
        losses.append(float(value))
    return losses


OPTIMIZERS = [("SGD", {"lr": 0.05, "momentum": 0.9}), ("Adam", {"lr": 0.05}),
              ("AdamW", {"lr": 0.05}), ("RMSprop", {"lr": 0.01}), ("Adagrad", {"lr": 0.1})]


# --- optimizers ------------------------------------------------------------------------------

@pytest.mark.parametrize("leaf", ["Tensor", "Parameter"])
@pytest.mark.parametrize("name, settings", OPTIMIZERS)
def test_a_deep_copied_optimizer_steps_its_own_parameters(name, settings, leaf):
    """params2, opt2 = deepcopy((params, opt)) after settled steps: stepping the copy left the
    original alone and the copy went on exactly as the original (the copy kept the compiled
    step's tables, which found the copied leaves and gradients as they were and wrote into
    the original's arrays: the original moved, the copy not)."""
    params = fresh_params(leaf)
    opt = getattr(optim, name)(params, **settings)
    steps(params, opt, 6)  # the group's compiled step settles, then is written out
    params2, opt2 = copy.deepcopy((params, opt))
    before = {k: p.data.copy() for k, p in params.items()}
    copied_losses = steps(params2, opt2, 3)
    for k, p in params.items():
        np.testing.assert_array_equal(p.data, before[k])
    assert steps(params, opt, 3) == copied_losses
    for k in params:
        np.testing.assert_array_equal(params2[k].data, params[k].data)
        for entry, value in opt.state[params[k]].items():
            assert not np.shares_memory(value, opt2.state[params2[k]][entry])


def test_a_pickled_optimizer_resumes_as_the_original_goes_on():
    params = fresh_params()
    opt = optim.Adam(params, lr=0.05)
    steps(params, opt, 4)
    params2, opt2 = pickle.loads(pickle.dumps((params, opt)))
    assert steps(params2, opt2, 3) == steps(params, opt, 3)
    np.testing.assert_array_equal(params2["W"].data, params["W"].data)


# --- Tensors and Parameters vs PyTorch -------------------------------------------------------

def test_deepcopy_of_a_parameter_and_a_tensor_as_pytorch():
    w = Parameter(W0)
    t = Tensor(np.arange(3.0), requires_grad=True)
    w.grad, t.grad = np.ones_like(W0), np.ones(3)
    tw = torch.nn.Parameter(torch.tensor(W0))
    tt = torch.arange(3.0, dtype=torch.float64, requires_grad=True)
    tw.grad, tt.grad = torch.ones_like(tw), torch.ones(3, dtype=torch.float64)
    w2, t2, (tw2, tt2) = copy.deepcopy(w), copy.deepcopy(t), copy.deepcopy((tw, tt))
    assert type(w2) is Parameter and type(t2) is Tensor
    assert w2.requires_grad and t2.requires_grad and w2.is_leaf
    assert (w2.grad is None) == (tw2.grad is None)  # a Parameter's is left behind
    np.testing.assert_array_equal(t2.grad, tt2.grad.numpy())
    assert not np.shares_memory(t2.grad, t.grad) and not np.shares_memory(w2.data, w.data)
    np.testing.assert_array_equal(w2.data, W0)


def test_deepcopy_keeps_tensors_shared_inside_what_it_copies():
    w = Parameter(W0)
    tied = {"enc": w, "dec": w, "all": [w]}
    copied = copy.deepcopy(tied)
    assert copied["enc"] is copied["dec"] is copied["all"][0] and copied["enc"] is not w


def test_deepcopy_of_a_result_is_refused_as_in_pytorch():
    result = loss(fresh_params(), X)
    with pytest.raises(RuntimeError, match="graph leaves.*detach"):
        copy.deepcopy(result)
    with pytest.raises(RuntimeError, match="graph leaves"):
        copy.deepcopy((torch.ones(2, requires_grad=True) * 2).sum())
    values = copy.deepcopy(result.detach())
    assert values.is_leaf and float(values) == float(result)


def test_copy_and_pickle_give_a_leaf_without_grad_hooks_or_graph_as_pytorch():
    w = Parameter(W0)
    calls = []
    w.register_hook(lambda g: calls.append(1))  # a lambda: no pickle holds it
    loss({"W": w, "b": Parameter(np.zeros(2))}, X).backward()
    tw = torch.nn.Parameter(torch.tensor(W0))
    tw.register_hook(lambda g: None)
    (tw ** 2).sum().backward()
    shallow, t_shallow = copy.copy(w), copy.copy(tw)
    assert np.shares_memory(shallow.data, w.data)  # as PyTorch's copy.copy shares storage
    assert t_shallow.data_ptr() == tw.data_ptr()
    assert shallow.grad is None and t_shallow.grad is None
    with warnings.catch_warnings():  # PyTorch drops the hook, saying so
        warnings.simplefilter("ignore")
        t_loaded = pickle.loads(pickle.dumps(tw))
    loaded = pickle.loads(pickle.dumps(w))
    assert type(loaded) is Parameter and loaded.requires_grad and loaded.grad is None
    assert t_loaded.grad is None
    np.testing.assert_array_equal(loaded.data, W0)
    # a copy's gradient is its own: the original's hook does not run, its .grad stays
    calls.clear()
    grad_before = w.grad.copy()
    loss({"W": shallow, "b": Parameter(np.zeros(2))}, X).backward()
    assert calls == [] and shallow.grad is not None
    np.testing.assert_array_equal(w.grad, grad_before)


def test_a_pickled_result_is_a_leaf_requiring_grad_as_in_pytorch():
    result = loss(fresh_params(), X)
    loaded = pickle.loads(pickle.dumps(result))
    t_loaded = pickle.loads(pickle.dumps((torch.ones(2, requires_grad=True) * 2).sum()))
    assert (loaded.is_leaf, loaded.requires_grad) == (t_loaded.is_leaf, t_loaded.requires_grad)
    assert float(loaded) == float(result)


def test_a_users_attributes_travel_with_copies_and_pickles():
    w = Parameter(W0)
    w.tag = {"layer": 3}
    for copied in (copy.deepcopy(w), pickle.loads(pickle.dumps(w))):
        assert copied.tag == {"layer": 3}
    assert copy.deepcopy(w).tag is not w.tag


def test_a_copy_of_a_detached_tensor_has_its_own_version():
    w = Parameter(W0)
    copied = copy.deepcopy(w.detach())
    assert type(copied) is Tensor and not np.shares_memory(copied.data, w.data)
    with no_grad():
        w.add_(1.0)
    assert copied._version == 0


# --- compiled functions --------------------------------------------------------------------

def test_a_compiled_function_pickles_by_name_and_copies_as_an_independent_one():
    assert pickle.loads(pickle.dumps(loss)) is loss  # found by its module and name
    params = fresh_params()
    for copied in (copy.copy(loss), copy.deepcopy(loss), copy.deepcopy({"f": loss})["f"]):
        assert copied is not loss
        np.testing.assert_array_equal(copied.grad(params, X)["W"], loss.grad(params, X)["W"])
    copied = copy.copy(loss)
    copied.wrt = 1
    assert loss.wrt == 0 and copied.grad(params, X).shape == X.shape


def test_a_compiled_function_not_at_module_level_pickles_with_its_settings():
    plain = loss.fn  # the function under a module-level compile_grad, compiled again here
    compiled = compile_grad(plain, wrt=(0, 1), backend="interpreter")
    loaded = pickle.loads(pickle.dumps(compiled))
    assert loaded.wrt == (0, 1) and loaded.backend.name == "interpreter"
    params = fresh_params()
    (g_params, g_x), (h_params, h_x) = loaded.grad(params, X), compiled.grad(params, X)
    np.testing.assert_array_equal(g_x, h_x)
    np.testing.assert_array_equal(g_params["W"], h_params["W"])


def test_a_local_compiled_function_is_refused_by_pickle_saying_what_to_do():
    def local(w):
        return np.sum(w)

    with pytest.raises(pickle.PicklingError, match="define it at a module's top level"):
        pickle.dumps(compile_grad(local))


def test_a_copied_model_with_a_compiled_method_computes_with_its_own_attributes():
    model = Scaled(2.0)
    w = np.ones(3)
    bound = model.loss
    base = np.sum((X @ w) ** 2)
    assert bound(w, X) == 2.0 * base
    copied = copy.deepcopy({"model": model, "loss": bound})
    copied["model"].scale = 5.0
    assert copied["loss"].instance is copied["model"]
    assert copied["loss"](w, X) == 5.0 * base and bound(w, X) == 2.0 * base
    loaded_model, loaded_loss = pickle.loads(pickle.dumps((model, bound)))
    assert loaded_loss.instance is loaded_model and loaded_loss(w, X) == 2.0 * base
