"""Copies and persistence as PyTorch users make them: copy.copy / copy.deepcopy / pickle of
Tensors, Parameters, optimizers, compiled functions and train steps (PyTorch as the oracle),
checkpoints resumed bit for bit, snapshots that later steps leave alone, and compiled
functions and Parameters sent to worker processes."""

from __future__ import annotations

import copy
import io
import multiprocessing
import pickle
import warnings

import numpy as np
import pytest
import torch

from compiler import compile_grad
from compiler.training import train_step
from runtime import Parameter, Tensor, no_grad, optim, utils
from runtime.optim import lr_scheduler


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

    def plain(self, w, x):
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
    # compile_grad(model.plain): a Python bound method compiled, deep-copied with its model
    compiled = compile_grad(model.plain, backend="interpreter")
    copied_model, copied_compiled = copy.deepcopy((model, compiled))
    copied_model.scale = 5.0
    assert copied_compiled(w, X) == 5.0 * base and compiled(w, X) == 2.0 * base


# --- train steps -------------------------------------------------------------------------------

@compile_grad
def regression(p, x, y):
    return np.mean((np.tanh(x @ p["W"] + p["b"]) - y) ** 2)


Y = RNG.normal(size=(5, 2))


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_train_step_updates_the_copied_parameters_only(how):
    """deepcopy((params, opt, step)) / pickle: a step over the copies (it was a bare 'cannot
    pickle module' / 'not the same object as ...loss'), which goes on as the original does."""
    params = fresh_params()
    opt = optim.AdamW(params, lr=0.05)
    step = train_step(regression, params, opt, max_norm=0.5)
    for _ in range(3):
        step(X, Y)
    if how == "deepcopy":
        params2, opt2, step2 = copy.deepcopy((params, opt, step))
    else:
        params2, opt2, step2 = pickle.loads(pickle.dumps((params, opt, step)))
    assert step2.params is params2 and step2.optimizer is opt2 and step2.max_norm == 0.5
    before = params["W"].data.copy()
    copied = [float(step2(X, Y)) for _ in range(3)]
    np.testing.assert_array_equal(params["W"].data, before)
    assert [float(step(X, Y)) for _ in range(3)] == copied
    np.testing.assert_array_equal(params2["W"].data, params["W"].data)


# --- checkpoints and snapshots -------------------------------------------------------------

def test_a_checkpoint_loaded_into_new_objects_resumes_bit_for_bit(tmp_path):
    """Mid-training save of Parameters, AdamW (float32) and a StepLR's pickled state dict; a
    new run made from scratch loads them and ends where the uninterrupted run ends, for the
    PyTorch-style loop and for a train step."""
    path = tmp_path / "checkpoint.npz"

    def make():
        params = {k: Parameter(p.data.astype(np.float32)) for k, p in fresh_params().items()}
        opt = optim.AdamW(params, lr=0.05, amsgrad=True)
        return params, opt, lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    def loop(params, opt, scheduler, rounds):
        for i in rounds:
            opt.zero_grad()
            regression(params, X[i % 5:], Y[i % 5:]).backward()
            opt.step()
            scheduler.step()

    whole = make()
    loop(*whole, range(7))
    params, opt, scheduler = make()
    loop(params, opt, scheduler, range(3))
    utils.save(path, params, opt)
    saved_schedule = pickle.dumps(scheduler.state_dict())
    params, opt, scheduler = make()
    utils.load(path, params, opt)
    scheduler.load_state_dict(pickle.loads(saved_schedule))
    loop(params, opt, scheduler, range(3, 7))
    for k in params:
        np.testing.assert_array_equal(params[k].data, whole[0][k].data)

    params, opt, _ = make()
    step = train_step(regression, params, opt)
    whole_losses = [float(step(X[i:], Y[i:])) for i in range(5)]
    params, opt, _ = make()
    step = train_step(regression, params, opt)
    losses = [float(step(X[i:], Y[i:])) for i in range(2)]
    utils.save(path, params, opt)
    params, opt, _ = make()
    utils.load(path, params, opt)
    step = train_step(regression, params, opt)
    assert losses + [float(step(X[i:], Y[i:])) for i in range(2, 5)] == whole_losses


def test_snapshots_taken_inside_a_training_loop_stay_as_taken():
    """best = copy.deepcopy(params) in the loop, an EMA of deep copies updated in place, a
    train step going on: no snapshot moves; restoring the best with copy_ is what the next
    step reads."""
    params = fresh_params()
    opt = optim.Adam(params, lr=0.05)
    step = train_step(regression, params, opt)
    ema = copy.deepcopy(params)
    ema_ref = {k: p.data.copy() for k, p in params.items()}
    snapshots, best, best_loss = [], None, np.inf
    for _ in range(6):
        value = float(step(X, Y))
        snapshots.append((copy.deepcopy(params), {k: p.data.copy() for k, p in params.items()}))
        if value < best_loss:
            best, best_loss = copy.deepcopy(params), value
        with no_grad():
            for k, p in params.items():
                ema[k].mul_(0.9).add_(p, alpha=0.1)
        ema_ref = {k: 0.9 * ema_ref[k] + 0.1 * params[k].data for k in params}
    for snapshot, values in snapshots:
        for k in values:
            np.testing.assert_array_equal(snapshot[k].data, values[k])
    for k in params:
        np.testing.assert_allclose(ema[k].data, ema_ref[k], rtol=1e-15, atol=0)
    with no_grad():
        for k, p in params.items():
            p.copy_(best[k])
    np.testing.assert_array_equal(params["W"].data, best["W"].data)
    assert float(regression(params, X, Y)) == float(regression(
        {k: v.data for k, v in best.items()}, X, Y))


def test_utils_load_of_a_torch_save_file_says_what_it_is(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"W": torch.tensor(W0)}, path)
    with pytest.raises(ValueError, match="not a checkpoint written by runtime.utils.save.*"
                                         "torch.load"):
        utils.load(path, {"W": Parameter(W0)})


def test_optimizer_state_dicts_cross_to_pytorch_and_back():
    """torch.optim's state_dict loads into ours (README), and ours into torch.optim with its
    arrays made tensors (the README's recipe); each run then goes on as the other's."""
    def gradient(i):
        return np.random.default_rng(100 + i).normal(size=W0.shape)

    w = Parameter(W0)
    opt = optim.Adam([w], lr=0.1, amsgrad=True)
    tw = torch.nn.Parameter(torch.tensor(W0))
    topt = torch.optim.Adam([tw], lr=0.1, amsgrad=True)
    for i in range(3):
        w.grad, tw.grad = gradient(i), torch.tensor(gradient(i))
        opt.step()
        topt.step()
    ours = opt.state_dict()
    from_ours = torch.optim.Adam([tw2 := torch.nn.Parameter(torch.tensor(w.data))], lr=0.1,
                                 amsgrad=True)
    from_ours.load_state_dict({
        "state": {i: {k: torch.from_numpy(v) for k, v in s.items()}
                  for i, s in ours["state"].items()},
        "param_groups": ours["param_groups"]})
    w2 = Parameter(tw.detach().numpy())
    from_torch = optim.Adam([w2], lr=0.1, amsgrad=True)
    from_torch.load_state_dict(topt.state_dict())
    for i in range(3, 6):
        w.grad, w2.grad = gradient(i), gradient(i)
        tw.grad, tw2.grad = torch.tensor(gradient(i)), torch.tensor(gradient(i))
        for o in (opt, from_torch, topt, from_ours):
            o.step()
    for result in (w2.data, tw.detach().numpy(), tw2.detach().numpy()):
        np.testing.assert_allclose(result, w.data, rtol=0, atol=1e-15)


# --- arrays ----------------------------------------------------------------------------------

def test_np_asarray_is_the_array_and_np_array_a_copy_as_numpy_2_asks():
    p = Parameter(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert np.asarray(p) is p.data and np.array(p, copy=False) is p.data
    assert not np.shares_memory(np.array(p), p.data)
    assert np.asarray(p, dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError, match="Unable to avoid copy"):  # it gave a copy
        np.array(p, dtype=np.float64, copy=False)
    np.asarray(p)[0, 0] = 10.0  # as through PyTorch's .numpy(): the user's, not counted
    assert p.data[0, 0] == 10.0 and p._version == 0
    buffer = io.BytesIO()
    np.save(buffer, p)
    buffer.seek(0)
    loaded = np.load(buffer)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, p.data)


# --- worker processes ----------------------------------------------------------------------

@compile_grad(backend="interpreter")
def worker_loss(p, x):
    return np.sum(np.tanh(x @ p["W"] + p["b"]) ** 2)


def train_in_worker(loss_fn, params, opt, rounds):
    for _ in range(rounds):
        opt.zero_grad()
        loss_fn(params, X).backward()
        opt.step()
    return params


# Not "fork": this test's process has imported PyTorch (and maybe JAX, through the file run
# before it on this pytest worker), whose threads a forked child can deadlock on; forkserver
# forks from a fresh server process instead.
@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_a_compiled_function_and_parameters_train_in_a_worker_process(method):
    params = fresh_params()
    opt = optim.SGD(params, lr=0.05, momentum=0.9)
    train_in_worker(worker_loss, params, opt, 2)
    expected = train_in_worker(worker_loss, *copy.deepcopy((params, opt)), 3)
    before = params["W"].data.copy()
    with multiprocessing.get_context(method).Pool(1) as pool:
        trained = pool.apply_async(train_in_worker, (worker_loss, params, opt, 3)).get(
            timeout=120)  # a stuck worker fails the test instead of hanging the suite
    np.testing.assert_array_equal(params["W"].data, before)  # the worker's are copies
    for k in params:
        np.testing.assert_array_equal(trained[k].data, expected[k].data)
