"""optimizer.step() as one compiled kernel per parameter group (compiler/update_kernels.py):
each optimizer's rule, in float32 and float64, gives what its NumPy rule gives, step after step,
and whatever changes between settled steps (a gradient array, a state entry, a setting, a
Parameter replaced or moved, a group added) is seen."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import update_kernels as kernels
from runtime import Parameter, optim
from runtime.optim.optimizer import set_compiled_update


@pytest.fixture
def numpy_rules():
    """optimizer.step() with the NumPy rules only, as without the compiler."""
    set_compiled_update(None)
    yield
    kernels.register_compiled_update()


CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.05, amsgrad=True, weight_decay=0.05)),
    ("AdamW", dict(lr=0.05, weight_decay=0.3)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.1)),
]
SHAPES = [(3, 4), (4,), (2, 1, 3), (5,)]


def run_steps(make, dtype, steps=8, fresh_grads=False, skip=None):
    """Steps with seeded gradients written into the same arrays (as backward() does), or
    into fresh ones; `skip(k, i)`: parameter i has no gradient at step k."""
    rng = np.random.default_rng(3)
    params = [Parameter(rng.normal(size=s).astype(dtype)) for s in SHAPES]
    opt = make(params)
    for k in range(steps):
        for i, p in enumerate(params):
            g = (p.data - 1.0 + 0.3 * rng.normal(size=p.shape)).astype(dtype)
            if skip is not None and skip(k, i):
                p.grad = None
            elif fresh_grads or p._grad is None:
                p.grad = g
            else:
                p._grad[...] = g
        opt.step()
    return params, opt


def config_id(config):
    return config[0] + "".join(f"-{k}={v}" for k, v in config[1].items())


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compiled_steps_match_the_numpy_rules(config, dtype, request):
    name, options = config
    make = lambda ps: getattr(optim, name)(ps, **options)  # noqa: E731
    params, opt = run_steps(make, dtype)
    assert opt._compiled[0]._tables  # the kernel ran the settled steps
    request.getfixturevalue("numpy_rules")
    expected, expected_opt = run_steps(make, dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for p, q in zip(params, expected, strict=True):
        assert p.dtype == dtype and p._version == q._version == 8
        np.testing.assert_allclose(p.data, q.data, rtol=rtol, atol=rtol)
        for key, value in opt.state[p].items():
            np.testing.assert_allclose(value, expected_opt.state[q][key], rtol=rtol, atol=rtol)


def test_fresh_gradient_arrays_every_step_keep_the_numpy_rules():
    make = lambda ps: optim.Adam(ps, lr=0.05)  # noqa: E731
    params, opt = run_steps(make, np.float32, fresh_grads=True)
    assert not opt._compiled[0]._tables
    set_compiled_update(None)
    try:
        expected, _ = run_steps(make, np.float32, fresh_grads=True)
    finally:
        kernels.register_compiled_update()
    for p, q in zip(params, expected, strict=True):
        np.testing.assert_array_equal(p.data, q.data)


def test_parameters_without_gradients_and_arrays_no_kernel_takes():
    def make(ps):
        ps[0].data = np.asfortranarray(ps[0].data)  # not C-contiguous: the rules update it
        return optim.SGD(ps, lr=0.1, momentum=0.9)

    skip = lambda k, i: i == 1 and k % 3 == 0  # noqa: E731 -- parameter 1 lags behind
    params, opt = run_steps(make, np.float64, steps=9, skip=skip)
    set_compiled_update(None)
    try:
        expected, _ = run_steps(make, np.float64, steps=9, skip=skip)
    finally:
        kernels.register_compiled_update()
    for p, q in zip(params, expected, strict=True):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-12)
        assert p._version == q._version
    assert params[0].data.flags.f_contiguous


def test_a_new_learning_rate_or_state_is_no_new_kernel():
    params, opt = run_steps(lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), np.float64)
    compiled = dict(kernels._kernels)
    scheduler = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    state = opt.state_dict()
    before = [p.data.copy() for p in params]
    for p in params:
        p._grad[...] = 1.0
    scheduler.step()
    opt.step()
    opt.step()
    assert kernels._kernels == compiled
    for p, b, s in zip(params, before, state["state"].values(), strict=True):
        buffer = 0.9 * (0.9 * s["momentum_buffer"] + 1.0) + 1.0  # two steps of ones at lr 0.05
        np.testing.assert_allclose(p.data, b - 0.05 * (0.9 * s["momentum_buffer"] + 1.0)
                                   - 0.05 * buffer, rtol=1e-12)
    opt.load_state_dict(state)  # another state table: the next steps use its arrays
    opt.step()
    opt.step()
    for p, s in zip(params, state["state"].values(), strict=True):
        np.testing.assert_allclose(opt.state[p]["momentum_buffer"],
                                   0.9 * (0.9 * s["momentum_buffer"] + 1.0) + 1.0, rtol=1e-12)


def test_whatever_changes_between_settled_steps_is_seen(numpy_rules):
    """A settled step is written out as checks of each parameter, gradient and state dict
    and of the settings; each change below, made between such steps, gives what the NumPy
    rules give (the fixture's rules run after the compiled steps, on the same changes)."""
    def changes(compiled):
        if compiled:
            kernels.register_compiled_update()
        else:
            set_compiled_update(None)
        params, opt = run_steps(lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), np.float64)
        if compiled:  # written out, as the group's step and the optimizer's whole step
            assert opt._compiled[0]._settled_step is not None
            assert opt._settled_step is not None
        group = opt.param_groups[0]

        def settle():  # steps on the same arrays: the step is written out again
            for _ in range(3):
                for p in group["params"]:
                    p._grad[...] = 1.0
                opt.step()

        params[1].grad = np.full(params[1].shape, 2.0)  # a new array
        settle()
        opt.state[params[2]] = {"step": np.array(5.0),
                                "momentum_buffer": np.full(params[2].shape, -1.0)}
        settle()
        opt.state[params[0]]["momentum_buffer"] = np.full(params[0].shape, 0.5)  # an entry
        settle()
        group["momentum"] = 0.5
        settle()
        group["params"][3] = replaced = Parameter(np.ones(SHAPES[3]))
        replaced.grad = np.full(SHAPES[3], 3.0)
        settle()
        group["params"] = mine = list(group["params"])  # a list of the user's, uncounted
        settle()
        mine[3], mine[0] = mine[0], mine[3]  # the same Parameters in another order
        settle()
        opt.add_param_group({"params": [added := Parameter(np.ones(2))], "lr": 0.5})
        added.grad = np.full(2, 4.0)  # the whole step of one group no longer applies
        settle()
        everything = [*params, replaced, added]
        return [p.data.copy() for p in everything], [p._version for p in everything]

    data, versions = changes(compiled=True)
    expected, expected_versions = changes(compiled=False)
    assert versions == expected_versions
    for a, b in zip(data, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_a_rule_that_is_not_elementwise_runs_on_each_parameter_shape():
    def unit_step(param, grad, state, *, lr):
        """Moves by lr along each row's gradient direction: a reduction along an axis."""
        norms = np.sqrt(np.sum(grad * grad, axis=-1, keepdims=True))
        return param - lr * grad / norms, {}

    class RowStep(optim.Optimizer):
        rule = staticmethod(unit_step)

        def __init__(self, params, lr):
            super().__init__(params, {"lr": lr})

        def rule_options(self, group):
            return {"lr": group["lr"]}

        def init_state(self, param, group):
            return {}

    a, b = Parameter(np.zeros((2, 2))), Parameter(np.zeros(3))
    opt = RowStep([a, b], lr=1.0)
    a.grad, b.grad = np.array([[3.0, 4.0], [0.0, 2.0]]), np.array([0.0, 0.0, 2.0])
    for _ in range(3):
        opt.step()
    assert opt._compiled[0]._tables
    np.testing.assert_allclose(a.data, 3 * np.array([[-0.6, -0.8], [0.0, -1.0]]))
    np.testing.assert_allclose(b.data, [0.0, 0.0, -3.0])


def test_a_parameter_put_in_anothers_place_is_updated_itself():
    new = Parameter(np.zeros(SHAPES[0]))  # made before the tables: no array replaced since
    params, opt = run_steps(lambda ps: optim.SGD(ps, lr=0.1), np.float64)
    assert opt._compiled[0]._tables
    old = params[0]
    new.grad = old._grad  # even with the very same gradient array
    opt.param_groups[0]["params"][0] = new
    before = old.data.copy()
    opt.step()
    np.testing.assert_array_equal(old.data, before)
    np.testing.assert_allclose(new.data, -0.1 * old._grad)
