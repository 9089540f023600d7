"""Optimizers and schedulers: semantics, seed examples, and parity with PyTorch step by step."""

import numpy as np
import pytest

from runtime import Parameter, init, optim, record
from runtime import functional as F
from runtime.optim import lr_scheduler, rules


@pytest.fixture(scope="module")
def torch():
    """PyTorch for the parity tests, which are skipped where it is not installed."""
    return pytest.importorskip("torch")


SHAPES = [(3, 4), (4,), ()]


def initial_weights(dtype=np.float64):
    rng = np.random.default_rng(0)
    return [rng.normal(size=shape).astype(dtype) for shape in SHAPES]


def gradient(k, weights):
    """The gradient at step k: a fixed quadratic's pull towards 1, plus seeded noise.

    It depends on the current weights, so both sides only see the same gradients
    if their trajectories agree.
    """
    rng = np.random.default_rng(100 + k)
    return [(1.0 + i) * (w - 1.0) + 0.3 * rng.normal(size=w.shape) for i, w in enumerate(weights)]


def run_ours(make, steps=20, dtype=np.float64, weights=None):
    params = [Parameter(w) for w in (weights or initial_weights(dtype))]
    opt = make(params)
    for k in range(steps):
        for p, g in zip(params, gradient(k, [p.data for p in params]), strict=True):
            p.grad = g.astype(dtype)
        opt.step()
    return params, opt


def run_torch(torch, make, steps=20, dtype=np.float64):
    params = [torch.tensor(w, requires_grad=True) for w in initial_weights(dtype)]
    opt = make(params)
    for k in range(steps):
        for p, g in zip(params, gradient(k, [p.detach().numpy() for p in params]), strict=True):
            p.grad = torch.tensor(g.astype(dtype))
        opt.step()
    return params, opt


CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("SGD", dict(lr=0.01, momentum=0.5, maximize=True)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
    ("Adam", dict(lr=0.05, amsgrad=True, weight_decay=0.05)),
    ("Adam", dict(lr=0.02, maximize=True)),
    ("Adam", dict(lr=0.05, weight_decay=0.3, decoupled_weight_decay=True)),  # AdamW's rule
    ("Adam", dict(lr=0.05, foreach=False)),  # accepted, changes nothing
    ("AdamW", dict()),
    ("AdamW", dict(lr=0.05, weight_decay=0.3, amsgrad=True)),
    ("AdamW", dict(lr=0.05, weight_decay=0.3, foreach=True)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.01, alpha=0.9, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1, eps=1e-6)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, maximize=True)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.2)),
    ("Adagrad", dict(lr=0.1, eps=1e-6, maximize=True)),
]


def config_id(config):
    name, kwargs = config
    return name + "".join(f"-{k}={_shown(v)}" for k, v in kwargs.items())


def _shown(value):
    """A setting as a test id shows it (a function by its name: its repr holds an address)."""
    if isinstance(value, list):
        return "[" + ",".join(str(_shown(v)) for v in value) + "]"
    return value.__name__ if callable(value) else value


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_twenty_steps_match_pytorch_in_float64(config, torch):
    name, kwargs = config
    ours, opt = run_ours(lambda ps: getattr(optim, name)(ps, **kwargs))
    theirs, topt = run_torch(torch, lambda ps: getattr(torch.optim, name)(ps, **kwargs))
    for p, t in zip(ours, theirs, strict=True):
        assert p.dtype == np.float64
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-10, atol=1e-12)
    # The optimizer state matches too, key by key.
    for i, p in enumerate(ours):
        torch_state = topt.state[theirs[i]]
        for key, value in opt.state[p].items():
            if name == "SGD" and key == "step":
                continue  # ours counts steps to start the momentum buffer at run time
            expected = torch_state[key]
            expected = expected.item() if key == "step" else expected.numpy()
            np.testing.assert_allclose(value, expected, rtol=1e-10, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_float32_parameters_stay_float32_and_match_pytorch(name, torch):
    kwargs = {"lr": 0.05, "momentum": 0.9} if name == "SGD" else {"lr": 0.05}
    ours, _ = run_ours(lambda ps: getattr(optim, name)(ps, **kwargs), dtype=np.float32)
    theirs, _ = run_torch(
        torch, lambda ps: getattr(torch.optim, name)(ps, **kwargs), dtype=np.float32
    )
    for p, t in zip(ours, theirs, strict=True):
        assert p.dtype == np.float32
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_defaults_match_pytorch(torch):
    for name in ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]:
        ours = getattr(optim, name)([Parameter(1.0)]).defaults
        theirs = getattr(torch.optim, name)([torch.tensor(1.0, requires_grad=True)]).defaults
        for key, value in ours.items():
            assert theirs[key] == value, (name, key)


def test_named_parameters_as_pairs_as_in_pytorch(torch):
    # PyTorch takes model.named_parameters(); here, a dict's items: a group with names
    ours, opt = run_ours(lambda ps: optim.Adam([(f"w{i}", p) for i, p in enumerate(ps)],
                                               lr=0.05))
    theirs, topt = run_torch(
        torch, lambda ps: torch.optim.Adam([(f"w{i}", p) for i, p in enumerate(ps)], lr=0.05))
    assert opt.param_groups[0]["param_names"] == topt.param_groups[0]["param_names"]
    for p, t in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-10)
    with pytest.raises(ValueError, match="name appears more than once"):
        optim.SGD([("w", Parameter(1.0)), ("w", Parameter(2.0))])


def test_param_groups_with_their_own_learning_rates(torch):
    def groups(ps):
        return [{"params": ps[:1], "lr": 0.1}, {"params": ps[1:], "momentum": 0.5}]

    ours, opt = run_ours(lambda ps: optim.SGD(groups(ps), lr=0.01, momentum=0.9))
    theirs, _ = run_torch(torch, lambda ps: torch.optim.SGD(groups(ps), lr=0.01, momentum=0.9))
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    assert [g["momentum"] for g in opt.param_groups] == [0.9, 0.5]
    for p, t in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-10)


def test_step_updates_in_place_and_keeps_identity():
    p = Parameter(np.array([1.0, 2.0]))
    array = p.data
    opt = optim.Adam([p], lr=0.1)
    p.grad = np.array([1.0, -1.0])
    opt.step()
    state_array = opt.state[p]["exp_avg"]
    opt.step()
    assert p.data is array and opt.state[p]["exp_avg"] is state_array
    assert opt.state[p]["step"] == 2.0


def test_parameters_without_gradient_are_skipped_and_zero_grad():
    a, b = Parameter(1.0), Parameter(2.0)
    opt = optim.SGD({"a": a, "b": b}, lr=0.5)
    assert opt.param_groups[0]["param_names"] == ["a", "b"]
    a.grad = np.array(2.0)
    opt.step()
    assert a.item() == 0.0 and b.item() == 2.0 and b not in opt.state
    opt.zero_grad(set_to_none=False)
    assert a.grad == 0.0 and b.grad is None
    opt.zero_grad()
    assert a.grad is None


def test_data_bound_to_a_number_is_an_array():
    """p.data = p.data - lr * g on a 0-d Parameter binds a NumPy scalar (0-d arithmetic gives
    one): it was stored as is, and the next step or compiled call failed far from the line
    ('numpy.float64' object does not support item assignment; 'holds a Parameter')."""
    p = Parameter(1.5)
    p.data = p.data - 0.5
    assert type(p.data) is np.ndarray and p.data.shape == () and p.dtype == np.float64
    p.grad = np.array(1.0)
    optim.SGD([p], lr=0.25).step()
    assert p.item() == 0.75


def test_seed_example_one_sgd_step_moves_by_minus_lr_times_grad():
    x, w, b = Parameter(1.5), Parameter(0.5), Parameter(0.25)
    y = x.item() * w.item() + b.item()
    x.grad, w.grad, b.grad = (np.array(2 * (y - 2) * d) for d in (w.item(), x.item(), 1.0))
    before = {p: (p.item(), p.grad.item()) for p in (x, w, b)}
    optim.SGD([x, w, b], lr=0.01).step()
    for p, (value, grad) in before.items():
        assert p.item() == pytest.approx(value - 0.01 * grad)


def test_closure_is_called_and_its_loss_returned():
    p = Parameter(3.0)

    def closure():
        p.grad = 2 * p.data
        return float(p.data**2)

    opt = optim.SGD([p], lr=0.25)
    assert opt.step(closure) == 9.0
    assert p.item() == 1.5


def test_construction_errors():
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([])
    p = Parameter(1.0)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [p]}])
    with pytest.raises(ValueError, match="Nesterov momentum requires"):
        optim.SGD([p], nesterov=True)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        optim.Adam([p], lr=-1.0)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1"):
        optim.AdamW([p], betas=(0.9, 1.0))


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
        lambda ps: optim.Adam(ps, lr=0.05, amsgrad=True),
        lambda ps: optim.RMSprop(ps, momentum=0.5, centered=True),
        lambda ps: optim.Adagrad(ps, lr_decay=0.1),
    ],
)
def test_state_dict_round_trip_resumes_exactly(make):
    straight, _ = run_ours(make, steps=20)
    first, opt = run_ours(make, steps=10)
    saved = opt.state_dict()
    for p in first:  # the snapshot does not follow later steps
        p.grad = np.ones_like(p.data)
    opt.step()
    resumed = [Parameter(w) for w in initial_weights()]
    for p, q in zip(resumed, run_ours(make, steps=10)[0], strict=True):
        p.data[...] = q.data
    opt2 = make(resumed)
    opt2.load_state_dict(saved)
    for k in range(10, 20):
        for p, g in zip(resumed, gradient(k, [p.data for p in resumed]), strict=True):
            p.grad = g
        opt2.step()
    for p, q in zip(resumed, straight, strict=True):
        np.testing.assert_array_equal(p.data, q.data)


def test_state_dict_layout_matches_pytorch(torch):
    ours, opt = run_ours(lambda ps: optim.Adam(ps, lr=0.01, amsgrad=True), steps=2)
    theirs, topt = run_torch(torch, lambda ps: torch.optim.Adam(ps, lr=0.01, amsgrad=True), steps=2)
    mine, reference = opt.state_dict(), topt.state_dict()
    assert sorted(mine["state"]) == sorted(reference["state"]) == [0, 1, 2]
    assert set(mine["state"][0]) == set(reference["state"][0])
    assert mine["param_groups"][0]["params"] == reference["param_groups"][0]["params"]
    assert set(mine["param_groups"][0]) <= set(reference["param_groups"][0])


@pytest.mark.parametrize("config", [c for c in CONFIGS if "foreach" not in c[1]],
                         ids=config_id)
def test_a_pytorch_state_dict_loads_and_training_goes_on_as_in_pytorch(config, torch):
    """PyTorch's SGD keeps no step count: its momentum state was refused ('has entries
    ['momentum_buffer'], but this optimizer keeps ['momentum_buffer', 'step']')."""
    name, kwargs = config
    make_theirs = lambda ps: getattr(torch.optim, name)(ps, **kwargs)  # noqa: E731
    straight, _ = run_torch(torch, make_theirs, steps=8)
    theirs, topt = run_torch(torch, make_theirs, steps=4)
    ours = [Parameter(t.detach().numpy().copy()) for t in theirs]
    opt = getattr(optim, name)(ours, **kwargs)
    opt.load_state_dict(topt.state_dict())  # tensors and PyTorch's own group settings
    for k in range(4, 8):
        for p, g in zip(ours, gradient(k, [p.data for p in ours]), strict=True):
            p.grad = g
        opt.step()
    for p, t in zip(ours, straight, strict=True):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_load_state_dict_rejects_a_different_layout():
    opt = optim.SGD([Parameter(1.0), Parameter(2.0)], momentum=0.9)
    with pytest.raises(ValueError, match="doesn't match the size"):
        optim.SGD([Parameter(1.0)], momentum=0.9).load_state_dict(opt.state_dict())


def test_rules_are_pure_and_treat_the_first_momentum_step_at_run_time():
    param, grad = np.array([1.0, 2.0]), np.array([0.5, -0.5])
    state = rules.sgd_init_state(param, use_momentum=True)
    options = dict(lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.0)
    new_param, new_state = rules.sgd_update(
        param, grad, state, **options, nesterov=False, maximize=False, use_momentum=True
    )
    np.testing.assert_array_equal(new_state["momentum_buffer"], grad)  # undamped first step
    np.testing.assert_array_equal(state["momentum_buffer"], [0.0, 0.0])  # input untouched
    np.testing.assert_allclose(new_param, param - 0.1 * grad)
    _, later = rules.sgd_update(
        new_param, grad, new_state, **options, nesterov=False, maximize=False, use_momentum=True
    )
    np.testing.assert_allclose(later["momentum_buffer"], 0.9 * grad + 0.5 * grad)


# -- schedulers -----------------------------------------------------------------------

def warmup_then_decay(epoch):
    return (epoch + 1) / 4 if epoch < 3 else 0.9 ** (epoch - 3)


def halving(epoch):
    return 0.5 ** (epoch // 2)


SCHEDULERS = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("MultiStepLR", dict(milestones=[2, 5, 5, 9], gamma=0.5)),
    ("LambdaLR", dict(lr_lambda=warmup_then_decay)),
    ("LambdaLR", dict(lr_lambda=[warmup_then_decay, halving])),  # one per group
    ("ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=5, eta_min=0.001)),
    ("CosineAnnealingLR", dict(T_max=4)),
    ("LinearLR", dict()),
    ("LinearLR", dict(start_factor=0.1, end_factor=0.9, total_iters=4)),
]


def lr_sequence(scheduler_module, optimizer_module, make_param, name, kwargs, epochs=16):
    """get_last_lr() after construction and after each of `epochs` steps, two groups."""
    groups = [{"params": [make_param(2)]}, {"params": [make_param(3)], "lr": 0.3}]
    opt = optimizer_module.SGD(groups, lr=0.1)
    sched = getattr(scheduler_module, name)(opt, **kwargs)
    lrs = [sched.get_last_lr()]
    for _ in range(epochs):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr())
    return np.array(lrs), sched, opt


def our_lr_sequence(name, kwargs, epochs=16):
    return lr_sequence(lr_scheduler, optim, lambda n: Parameter(np.zeros(n)), name, kwargs, epochs)


@pytest.mark.parametrize("config", SCHEDULERS, ids=config_id)
def test_scheduler_sequences_match_pytorch(config, torch):
    name, kwargs = config
    ours, _, opt = our_lr_sequence(name, kwargs)
    theirs, _, _ = lr_sequence(
        torch.optim.lr_scheduler,
        torch.optim,
        lambda n: torch.zeros(n, requires_grad=True),
        name,
        kwargs,
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    assert [g["lr"] for g in opt.param_groups] == list(ours[-1])
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.3]


@pytest.mark.parametrize("config", SCHEDULERS, ids=config_id)
def test_scheduler_state_dict_resumes_the_sequence(config):
    name, kwargs = config
    full, _, _ = our_lr_sequence(name, kwargs, epochs=12)
    _, sched, opt = our_lr_sequence(name, kwargs, epochs=6)
    saved_sched, saved_opt = sched.state_dict(), opt.state_dict()
    assert "optimizer" not in saved_sched and saved_sched["last_epoch"] == 6
    w, v = Parameter(np.zeros(2)), Parameter(np.zeros(3))
    opt2 = optim.SGD([{"params": [w]}, {"params": [v], "lr": 0.3}], lr=0.1)
    sched2 = getattr(lr_scheduler, name)(opt2, **kwargs)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    rest = []
    for _ in range(6):
        opt2.step()
        sched2.step()
        rest.append(sched2.get_last_lr())
    np.testing.assert_allclose(rest, full[7:], rtol=1e-12)


PLATEAU = [
    dict(),
    dict(patience=2, factor=0.5, cooldown=1),
    dict(mode="max", threshold_mode="abs", threshold=0.05, patience=1, min_lr=[0.01, 0.2]),
    dict(patience=0, factor=0.5, min_lr=0.02, eps=1e-3),
]


@pytest.mark.parametrize("options", PLATEAU, ids=[f"plateau{k}" for k in range(len(PLATEAU))])
def test_reduce_lr_on_plateau_matches_pytorch(options, torch):
    # a metric that improves, stalls, wobbles within the threshold, and improves again
    metrics = [1.0, 0.8, 0.8, 0.81, 0.79995, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.69,
               0.69, 0.69, 0.69] + [0.5] * 14
    sequences = []
    for module, make in ((optim, lambda n: Parameter(np.zeros(n))),
                         (torch.optim, lambda n: torch.zeros(n, requires_grad=True))):
        opt = module.SGD([{"params": [make(2)]}, {"params": [make(3)], "lr": 0.3}], lr=0.1)
        sched = module.lr_scheduler.ReduceLROnPlateau(opt, **options)
        lrs = []
        for metric in metrics:
            sched.step(np.float64(metric) if module is optim else torch.tensor(metric))
            lrs.append(sched.get_last_lr() + [sched.num_bad_epochs, sched.cooldown_counter])
        sequences.append(np.array(lrs))
    np.testing.assert_allclose(sequences[0], sequences[1], rtol=1e-15, atol=0)
    assert sequences[0][-1, 0] < 0.1  # it did reduce


def test_linear_warmup_reaches_the_base_lr():
    opt = optim.SGD([Parameter(0.0)], lr=1.0)
    sched = lr_scheduler.LinearLR(opt, start_factor=0.25, total_iters=3)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(5):
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    np.testing.assert_allclose(lrs, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


# -- training loops from the seed documents, with a hand-written backward -----------------


def mlp_mse(params, x, y):
    """MSE of a one-hidden-layer MLP, recorded as one node with a hand-written VJP."""

    arrays = {name: p.data for name, p in params.items()}
    pre = x @ arrays["W0"] + arrays["b0"]
    hidden = F.relu(pre)
    residual = init.mlp(arrays, x) - y

    def vjp(cts):
        d_out = 2 * residual / residual.size * cts[0]
        d_pre = (d_out @ arrays["W1"].T) * (pre > 0)
        grads = {"W0": x.T @ d_pre, "b0": d_pre.sum(0), "W1": hidden.T @ d_out, "b1": d_out.sum(0)}
        return [grads[name] for name in params]

    return record([F.mse_loss(init.mlp(arrays, x), y)], list(params.values()), vjp, "mlp_mse")[0]


def test_mlp_training_loop_loss_falls():

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 10)), rng.normal(size=(20, 1))
    params = init.mlp_params([10, 5, 1], rng, dtype=np.float64)
    opt = optim.SGD(params, lr=0.01)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = mlp_mse(params, x, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:]))


def test_linear_fit_of_y_equals_2x_improves_after_one_update():

    x = np.linspace(-1, 1, 8)[:, None]
    w, b = Parameter(np.array([[0.3]])), Parameter(np.array([0.1]))

    def loss_of():
        r = x @ w.data + b.data - 2 * x
        vjp = lambda cts: [x.T @ (2 * r / r.size) * cts[0], (2 * r / r.size).sum(0) * cts[0]]  # noqa: E731
        return record([F.mse_loss(x @ w.data + b.data, 2 * x)], [w, b], vjp, "fit")[0]

    before = loss_of()
    before.backward()
    optim.SGD([w, b], lr=0.1).step()
    assert loss_of().item() < before.item()
