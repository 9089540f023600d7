"""Fused train steps and compiled loops give the same answers as backward() + optimizer.step()."""

from __future__ import annotations

import collections
import re

import numpy as np
import pytest

from compiler import compile_grad
from compiler.errors import TraceError
from compiler.training import epoch_orders, fit, train_step
from runtime import Parameter, init, optim, utils
from runtime import functional as F


@compile_grad
def mlp_loss(params, X, y):
    return F.mse_loss(init.mlp(params, X), y)


RNG = np.random.default_rng(0)
X, Y = RNG.normal(size=(50, 6)), RNG.normal(size=(50, 1))
CONFIGS = [("SGD", dict(lr=0.05, momentum=0.9)), ("Adam", dict(lr=0.01))]


def fresh(name, options):
    params = init.mlp_params([6, 4, 1], np.random.default_rng(1), dtype=np.float64)
    return params, getattr(optim, name)(params, **options)


def reference_steps(name, options, batches, max_norm=None):
    """The step-by-step path: forward, backward(), clip, optimizer.step()."""
    params, opt = fresh(name, options)
    losses = []
    for rows in batches:
        opt.zero_grad()
        loss = mlp_loss(params, X[rows], Y[rows])
        loss.backward()
        if max_norm is not None:
            utils.clip_grad_norm_(params, max_norm)
        opt.step()
        losses.append(loss.item())
    return params, np.array(losses)


def assert_same_params(a, b):
    for key in a:
        np.testing.assert_allclose(a[key].data, b[key].data, rtol=1e-6, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("name, options", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_fit_fused_step_and_backward_agree(name, options):
    orders = epoch_orders(50, 3, shuffle=True, rng=np.random.default_rng(7))
    batches = [order[start:start + 16] for order in orders for start in range(0, 50, 16)]
    assert [len(b) for b in batches[:4]] == [16, 16, 16, 2], "the last batch holds the rest"
    expected_params, expected_losses = reference_steps(name, options, batches)

    params, opt = fresh(name, options)
    history = fit(mlp_loss, params, opt, (X, Y), epochs=3, batch_size=16, seed=7,
                  progress=False)
    assert_same_params(params, expected_params)
    np.testing.assert_allclose(history.losses, expected_losses, rtol=1e-9)
    # each epoch's mean over its 50 rows: the last step's loss (2 rows) weighs 2 / 50, not 1 / 4
    rows = np.array([16, 16, 16, 2])
    np.testing.assert_allclose(history.epoch_losses,
                               (expected_losses.reshape(3, 4) * rows).sum(1) / 50, rtol=1e-12)

    params, opt = fresh(name, options)
    step = train_step(mlp_loss, params, opt)
    with pytest.raises(RuntimeError, match="has not run yet"):
        step.source("step")
    losses = [step(X[rows], Y[rows]) for rows in batches]
    source = step.source("step")
    assert "def mlp_loss_step(" in source and "def mlp_loss_step_fit(" in source
    assert_same_params(params, expected_params)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-9)


def test_clipping_and_kept_gradients_match_clip_grad_norm():
    batches = [np.arange(0, 25), np.arange(25, 50)]
    expected, _ = reference_steps("SGD", dict(lr=0.1), batches, max_norm=0.05)
    params, opt = fresh("SGD", dict(lr=0.1))
    step = train_step(mlp_loss, params, opt, max_norm=0.05, keep_grads=True)
    for rows in batches:
        step(X[rows], Y[rows])
    assert_same_params(params, expected)
    norm = np.sqrt(sum(np.sum(p.grad**2) for p in params.values()))
    assert norm == pytest.approx(0.05, rel=1e-4), "kept gradients are the clipped ones"


def test_gradient_accumulation_equals_the_full_batch_step():
    full, opt_full = fresh("Adam", dict(lr=0.01))
    train_step(mlp_loss, full, opt_full)(X[:48], Y[:48])
    accumulated, opt_acc = fresh("Adam", dict(lr=0.01))
    step = train_step(mlp_loss, accumulated, opt_acc)
    step.accumulate([(X[i:i + 12], Y[i:i + 12]) for i in range(0, 48, 12)])
    assert_same_params(accumulated, full)
    with pytest.raises(ValueError, match="micro_batches is empty"):  # was a ZeroDivisionError
        step.accumulate([])


def test_learning_rate_changes_never_recompile():
    params, opt = fresh("SGD", dict(lr=0.05, momentum=0.9))
    step = train_step(mlp_loss, params, opt)
    scheduler = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    step(X, Y)
    kernels = step._last
    before = {k: p.data.copy() for k, p in params.items()}
    scheduler.step()
    opt.param_groups[0]["momentum"] = 0.5
    step(X[:30], Y[:30])  # a new lr, momentum and batch size: same kernel
    assert step._last is kernels and len(kernels.step.signatures) == 1
    assert len(step._kernel._specs) == 1
    assert any(not np.allclose(before[k], p.data) for k, p in params.items())


def test_fit_stops_early_and_reports_progress():
    params, opt = fresh("SGD", dict(lr=0.05))
    seen = []
    history = fit(mlp_loss, params, opt, (X, Y), epochs=50, batch_size=10, shuffle=False,
                  progress=False, chunk_steps=5, callback=lambda epoch, h: seen.append(epoch),
                  stop=lambda h: len(h.epoch_losses) >= 3)
    assert history.stopped_early and seen == [0, 1, 2]  # 0-based epoch indices, as Keras
    assert history.losses.shape == (15,) and np.all(np.isfinite(history.losses))


def test_a_callback_sees_every_epoch_by_default():
    params, opt = fresh("SGD", dict(lr=0.05))
    seen = []
    history = fit(mlp_loss, params, opt, (X, Y), epochs=6, batch_size=25, progress=False,
                  callback=lambda epoch, h: seen.append((epoch, len(h.epoch_losses))))
    assert seen == [(k, k + 1) for k in range(6)]  # 12 steps: one chunk but for the callback
    assert history.losses.shape == (12,)


def test_a_callback_sees_the_losses_of_the_steps_done_so_far():
    # history.losses was the whole run's buffer, NaN past the epoch done: losses[-1] was NaN
    params, opt = fresh("SGD", dict(lr=0.05))
    seen = []

    def callback(epoch, history):
        seen.append((epoch, history.losses.copy(), history.epoch_losses.copy()))

    history = fit(mlp_loss, params, opt, (X, Y), epochs=3, batch_size=20, progress=False,
                  callback=callback)
    for epoch, losses, epoch_losses in seen:
        assert losses.shape == (3 * (epoch + 1),) and np.all(np.isfinite(losses))
        np.testing.assert_array_equal(losses, history.losses[:losses.size])
        np.testing.assert_array_equal(epoch_losses, history.epoch_losses[:epoch + 1])


def aux_loss(params, X, y):
    pred = init.mlp(params, X)
    return F.mse_loss(pred, y), {"mae": np.mean(np.abs(pred - y)), "W0": params["W0"]}


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_a_loss_with_aux_values_trains_and_returns_them(backend):
    # has_aux=True: the step's outputs were shifted by the aux leaves, so the kernel stored
    # them into the parameters (an InternalError from numba, or a silently wrong update)
    loss_fn = compile_grad(aux_loss, has_aux=True, backend=backend)
    batches = [np.arange(0, 20), np.arange(20, 50)]
    expected, expected_losses = reference_steps("Adam", dict(lr=0.01), batches)
    params, opt = fresh("Adam", dict(lr=0.01))
    step = train_step(loss_fn, params, opt, keep_grads=True)
    for rows, expected_loss in zip(batches, expected_losses):
        before = params["W0"].data.copy()
        (value, aux), grads = compile_grad(aux_loss, has_aux=True, backend="interpreter") \
            .value_and_grad({k: p.data.copy() for k, p in params.items()}, X[rows], Y[rows])
        loss, got = step(X[rows], Y[rows])
        assert loss == pytest.approx(expected_loss, rel=1e-12)
        assert got["mae"] == pytest.approx(aux["mae"], rel=1e-12)
        np.testing.assert_array_equal(got["W0"], before)  # the value before the update
        np.testing.assert_allclose(params["W1"].grad, grads["W1"], rtol=1e-12)
    assert_same_params(params, expected)

    params, opt = fresh("Adam", dict(lr=0.01))
    history = fit(loss_fn, params, opt, (X, Y), epochs=1, batch_size=20, shuffle=False,
                  progress=False)
    np.testing.assert_allclose(history.losses, reference_steps(
        "Adam", dict(lr=0.01), [np.arange(0, 20), np.arange(20, 40), np.arange(40, 50)])[1],
        rtol=1e-12)
    micro = [(X[:10], Y[:10]), (X[10:], Y[10:])]
    reference = compile_grad(aux_loss, has_aux=True, backend="interpreter")
    maes = [reference({k: p.data.copy() for k, p in params.items()}, *b)[1]["mae"] for b in micro]
    loss, auxes = train_step(loss_fn, params, opt).accumulate(micro)
    assert [a["mae"] for a in auxes] == pytest.approx(maes, rel=1e-12)


def test_a_second_fit_reuses_the_compiled_step_and_carries_on():
    expected, opt_expected = fresh("SGD", dict(lr=0.05, momentum=0.9))
    fit(mlp_loss, expected, opt_expected, (X, Y), epochs=3, batch_size=20, shuffle=False,
        progress=False)
    params, opt = fresh("SGD", dict(lr=0.05, momentum=0.9))
    fit(mlp_loss, params, opt, (X, Y), epochs=1, batch_size=20, shuffle=False, progress=False)
    [(key, step)] = opt._compiled.items()
    kernels = step._last or next(iter(step._kernels_by_data.values()))
    fit_kernel = kernels.fit
    history = fit(mlp_loss, params, opt, (X, Y), epochs=2, batch_size=20, shuffle=False,
                  progress=False)
    assert list(opt._compiled.values()) == [step]  # the same step, with the same kernels
    assert step._kernels_by_data[next(iter(step._kernels_by_data))].fit is fit_kernel
    assert history.losses.shape == (6,)
    assert_same_params(params, expected)  # momentum carried over: as one fit of 3 epochs


def test_fit_reuses_a_step_only_for_the_same_loss_parameters_optimizer_and_clipping():
    params, opt = fresh("SGD", dict(lr=0.05))
    run = dict(epochs=1, batch_size=25, progress=False)
    fit(mlp_loss, params, opt, (X, Y), **run)
    fit(mlp_loss, params, opt, (X, Y), max_norm=1.0, **run)  # clipping on: another kernel
    fit(mlp_loss, params, opt, (X, Y), max_norm=0.5, **run)  # another threshold: the same
    assert len(opt._compiled) == 2
    clipped = [s for s in opt._compiled.values() if s.max_norm is not None]
    assert [s.max_norm for s in clipped] == [0.5]
    other = {k: Parameter(p.data) for k, p in params.items()}
    opt.add_param_group({"params": list(other.values())})
    fit(mlp_loss, other, opt, (X, Y), **run)  # other Parameters: another step
    opt.param_groups[0]["maximize"] = True
    fit(mlp_loss, params, opt, (X, Y), **run)  # another structural flag: another step
    assert len(opt._compiled) == 4


def test_fit_clips_by_the_norm_type_it_is_given():
    """fit had no norm_type: its clipping was always by the 2-norm."""
    interpreted = compile_grad(mlp_loss.fn, backend="interpreter")  # no kernel to compile
    expected, opt_expected = fresh("SGD", dict(lr=0.1))
    for _ in range(2):
        opt_expected.zero_grad()
        interpreted(expected, X, Y).backward()
        utils.clip_grad_norm_(expected, 0.05, norm_type=1)
        opt_expected.step()
    params, opt = fresh("SGD", dict(lr=0.1))
    run = dict(shuffle=False, progress=False, max_norm=0.05)
    fit(interpreted, params, opt, (X, Y), epochs=1, norm_type=1, **run)
    fit(interpreted, params, opt, (X, Y), epochs=1, **run)  # by the 2-norm: another step
    assert sorted(s.norm_type for s in opt._compiled.values()) == [1.0, 2.0]
    params, opt = fresh("SGD", dict(lr=0.1))
    fit(interpreted, params, opt, (X, Y), epochs=2, norm_type=1, **run)
    assert_same_params(params, expected)


def test_fit_refuses_a_step_made_for_other_arguments_or_without_clipping():
    """fit(..., step=s) trained s's parameters with s's clipping, silently ignoring fit's
    parameters, optimizer and max_norm when they were others."""
    params, opt = fresh("SGD", dict(lr=0.1))
    step = train_step(mlp_loss, params, opt)
    run = dict(epochs=1, progress=False, step=step)
    with pytest.raises(ValueError, match="max_norm= needs a step= made with clipping"):
        fit(mlp_loss, params, opt, (X, Y), max_norm=1e-3, **run)
    other, other_opt = fresh("SGD", dict(lr=0.1))
    with pytest.raises(ValueError, match="made for other parameters"):
        fit(mlp_loss, other, opt, (X, Y), **run)
    with pytest.raises(ValueError, match="made for another optimizer"):
        fit(mlp_loss, params, other_opt, (X, Y), **run)
    with pytest.raises(ValueError, match="made for another loss"):
        fit(compile_grad(lambda params, X, y: mlp_loss.fn(params, X, y)), params, opt, (X, Y),
            **run)
    clipping = train_step(mlp_loss, params, opt, max_norm=1.0)
    with pytest.raises(ValueError, match="norm_type=1 but the step"):
        fit(None, params, opt, (X, Y), epochs=1, step=clipping, max_norm=0.5, norm_type=1)
    assert clipping.max_norm == 1.0  # nothing changed by a refused call
    for key, p in params.items():  # nothing trained
        np.testing.assert_array_equal(p.data, fresh("SGD", {})[0][key].data)


def test_settings_traced_into_the_step_are_refused_where_they_would_be_ignored():
    """step.norm_type = 1 and step.keep_grads = True were accepted and ignored by a step already
    traced; norm_type=0 was a ZeroDivisionError from the trace."""
    params, opt = fresh("SGD", dict(lr=0.1))
    for norm_type in (0, -1.0, float("-inf"), float("nan")):
        with pytest.raises(ValueError, match="norm_type must be positive or inf"):
            train_step(mlp_loss, params, opt, max_norm=1.0, norm_type=norm_type)
    step = train_step(mlp_loss, params, opt, max_norm=1.0, norm_type="inf")
    assert step.norm_type == float("inf") and step.keep_grads is False
    with pytest.raises(AttributeError, match="norm_type is part of its kernel"):
        step.norm_type = 1.0
    with pytest.raises(AttributeError, match="keep_grads is part of its kernel"):
        step.keep_grads = True


def test_fit_resumed_at_an_epoch_goes_on_as_the_uninterrupted_run():
    """With shuffling, a run resumed from a checkpoint could not take the rows in the orders
    the uninterrupted run took them (fit had no initial_epoch, as Keras has)."""
    params, opt = fresh("Adam", dict(lr=0.01))
    saved = {}

    def checkpoint(epoch, history):
        if epoch == 1:
            saved.update(weights={k: p.data.copy() for k, p in params.items()},
                         state=opt.state_dict())

    run = dict(epochs=4, batch_size=16, seed=5, progress=False)
    history = fit(mlp_loss, params, opt, (X, Y), callback=checkpoint, **run)
    resumed = {k: Parameter(w) for k, w in saved["weights"].items()}
    resumed_opt = optim.Adam(resumed, lr=0.01)
    resumed_opt.load_state_dict(saved["state"])
    seen = []
    rest = fit(mlp_loss, resumed, resumed_opt, (X, Y), initial_epoch=2,
               callback=lambda epoch, h: seen.append(epoch), **run)
    assert seen == [2, 3] and rest.epoch_losses.shape == (2,)
    np.testing.assert_array_equal(rest.losses, history.losses[8:])
    for key, p in params.items():
        np.testing.assert_array_equal(resumed[key].data, p.data, err_msg=key)


@pytest.mark.parametrize("wrt", [1, (0, 1), "X"])
def test_a_loss_compiled_for_other_gradients_is_refused_by_name(wrt):
    """A loss compiled with wrt=1 gave 'zip() argument 2 is shorter than argument 1'."""
    params, opt = fresh("SGD", dict(lr=0.1))
    with pytest.raises(ValueError, match=re.escape(f"mlp_loss was compiled with wrt={wrt!r}: "
                                                   "compile it with wrt=0")):
        train_step(compile_grad(mlp_loss.fn, wrt=wrt), params, opt)


def test_fit_draws_a_loss_curve(tmp_path):
    pytest.importorskip("matplotlib")
    params, opt = fresh("SGD", dict(lr=0.05))
    history = fit(mlp_loss, params, opt, (X, Y), epochs=4, batch_size=25, progress=False)
    path = history.plot(str(tmp_path / "loss.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_step_follows_replaced_arrays_and_loaded_optimizer_state():
    params, opt = fresh("SGD", dict(lr=0.05, momentum=0.9))
    step = train_step(mlp_loss, params, opt)
    step(X, Y)
    weights, state = {k: p.data.copy() for k, p in params.items()}, opt.state_dict()
    step(X, Y)
    expected = {k: p.data.copy() for k, p in params.items()}
    for k, p in params.items():  # back to the weights and momentum after the first step,
        p.data = weights[k].copy()  # as new arrays
    opt.load_state_dict(state)
    step(X, Y)
    for k, p in params.items():
        np.testing.assert_allclose(p.data, expected[k], rtol=1e-12, err_msg=k)


def _reset_first_layer(opt, params):
    del opt.state[params["W0"]]


def _new_moment_array(opt, params):
    opt.state[params["b0"]]["exp_avg_sq"] = np.zeros_like(params["b0"].data)


def _plain_dict(opt, params):
    opt.state = collections.defaultdict(dict)


@pytest.mark.parametrize("reset", [lambda opt, params: opt.state.clear(), _reset_first_layer,
                                   _new_moment_array, _plain_dict],
                         ids=["clear", "del", "entry", "defaultdict"])
def test_the_step_and_fit_follow_an_optimizer_state_reset(reset):
    """Resetting the optimizer's state (its moments) between steps left train_step and fit
    updating the arrays their kernels held, silently: Adam went on with the old moments."""
    batches = [np.arange(0, 25), np.arange(25, 50)] * 2
    expected, opt_expected = fresh("Adam", dict(lr=0.01))
    for k, rows in enumerate(batches):
        if k == 2:
            reset(opt_expected, expected)
        opt_expected.zero_grad()
        mlp_loss(expected, X[rows], Y[rows]).backward()
        opt_expected.step()
    params, opt = fresh("Adam", dict(lr=0.01))
    step = train_step(mlp_loss, params, opt)
    step(X[:25], Y[:25])
    step(X[25:], Y[25:])
    reset(opt, params)
    step(X[:25], Y[:25])
    step(X[25:], Y[25:])
    assert_same_params(params, expected)
    params, opt = fresh("Adam", dict(lr=0.01))
    run = dict(epochs=1, batch_size=25, shuffle=False, progress=False)
    fit(mlp_loss, params, opt, (X, Y), **run)
    reset(opt, params)
    fit(mlp_loss, params, opt, (X, Y), **run)
    assert_same_params(params, expected)
    assert sorted(opt.state_dict()["state"]) == [0, 1, 2, 3]


def test_a_step_bumps_versions_so_an_older_graph_cannot_backpropagate():
    params, opt = fresh("SGD", dict(lr=0.05))
    loss = mlp_loss(params, X, Y)
    train_step(mlp_loss, params, opt)(X, Y)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_a_new_clipping_threshold_applies_without_recompiling():
    params, opt = fresh("SGD", dict(lr=0.1))
    step = train_step(mlp_loss, params, opt, max_norm=1e-3, keep_grads=True)
    step(X, Y)
    step.max_norm = 2e-3
    step(X, Y)
    norm = np.sqrt(sum(np.sum(p.grad**2) for p in params.values()))
    assert norm == pytest.approx(2e-3, rel=1e-4)
    assert len(step._last.step.signatures) == 1
    with pytest.raises(ValueError, match="cannot be turned on or off"):
        step.max_norm = None


def test_data_of_another_shape_gets_the_users_error_and_leaves_params_alone():
    params, opt = fresh("SGD", dict(lr=0.05))
    step = train_step(mlp_loss, params, opt)
    step(X, Y)
    before = {k: p.data.copy() for k, p in params.items()}
    with pytest.raises(TraceError, match=r"\(50, 5\)"):
        step(X[:, :5], Y)
    for k, p in params.items():
        np.testing.assert_array_equal(p.data, before[k])


@compile_grad
def sized_loss(params, X, y):
    """A loss that reads the batch size as a number (an array of that many rows): its kernels
    are specialized to each batch size."""
    offsets = np.zeros((X.shape[0], 1)) + 0.25
    return F.mse_loss(init.mlp(params, X) + offsets, y)


def test_a_loss_that_reads_the_batch_size_trains_on_batches_of_any_size():
    params, opt = fresh("SGD", dict(lr=0.05))
    reference, ref_opt = fresh("SGD", dict(lr=0.05))
    # 50 rows in batches of 16: three of 16, then one of 2, step by step (no minibatch loop)
    history = fit(sized_loss, params, opt, (X, Y), epochs=2, batch_size=16, shuffle=False,
                  progress=False)
    expected = []
    for _ in range(2):
        for start in range(0, 50, 16):
            ref_opt.zero_grad()
            loss = sized_loss(reference, X[start:start + 16], Y[start:start + 16])
            loss.backward()
            ref_opt.step()
            expected.append(loss.item())
    np.testing.assert_allclose(history.losses, expected, rtol=1e-12)
    assert_same_params(params, reference)


def weighted_loss(params, X, y):
    weights = np.linspace(0.5, 1.5, 6)  # a constant array: a trailing kernel argument
    return F.mse_loss(init.mlp(params, X * weights), y)


def test_fit_with_constant_arrays_matches_the_interpreter():
    results = []
    for backend in ("numba", "interpreter"):
        params, opt = fresh("Adam", dict(lr=0.01))
        history = fit(compile_grad(weighted_loss, backend=backend), params, opt, (X, Y),
                      epochs=2, batch_size=16, seed=3, progress=False)
        results.append((params, history.losses))
    (params, losses), (expected, expected_losses) = results
    assert_same_params(params, expected)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-9)


def test_compile_report_of_the_step_and_its_fit_loop():
    params, opt = fresh("SGD", dict(lr=0.05, momentum=0.9))
    step = train_step(mlp_loss, params, opt)
    with pytest.raises(RuntimeError, match="has not run yet"):
        step.compile_report()
    step(X[:16], Y[:16])
    report = step.compile_report()
    assert report.name == "mlp_loss_step" and list(report.kernels) == ["step"]
    assert report.trace.seconds["trace"] > 0  # the loss's reverse mode runs inside it
    kernel = report.kernels["step"]
    assert {"passes", "codegen", "numba"} <= set(kernel.seconds)
    assert kernel.lines == step.source("step").count("\n")
    fit(mlp_loss, params, opt, (X, Y), epochs=1, batch_size=16, shuffle=False, progress=False,
        step=step)
    report = step.compile_report()
    assert list(report.kernels) == ["step", "fit"]
    assert set(report.kernels["fit"].seconds) == {"numba"}  # the same module as the step's
    assert report.kernels["fit"].lines == kernel.lines


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_per_layer_dicts_with_the_same_keys_each_get_their_own_update(backend):
    """[{"W", "b"}, {"W", "b"}]: the step once keyed its parameters by the innermost key, so
    every layer read (and only the last was updated with) the last layer's arrays."""
    def tanh_net(layers, X, y):
        h = X
        for layer in layers:
            h = np.tanh(h @ layer["W"] + layer["b"])
        return np.mean((h - y) ** 2)

    rng = np.random.default_rng(3)
    initial = [{"W": rng.normal(size=(6, 6)) / 3, "b": rng.normal(size=6)} for _ in range(2)]
    expected_loss, grads = compile_grad(tanh_net, backend="interpreter").value_and_grad(
        initial, X, X)
    layers = [{k: Parameter(v.copy()) for k, v in layer.items()} for layer in initial]
    optimizer = optim.SGD([p for layer in layers for p in layer.values()], lr=0.1)
    step = train_step(compile_grad(tanh_net, backend=backend), layers, optimizer)
    assert step(X, X) == pytest.approx(expected_loss, rel=1e-12)
    for layer, before, grad in zip(layers, initial, grads):
        for key in ("W", "b"):
            np.testing.assert_allclose(layer[key].data, before[key] - 0.1 * grad[key],
                                       rtol=1e-12, atol=1e-15, err_msg=key)
