"""Parameters of an elementwise rule share one call of it (runtime.optim.foreach): every
optimizer gives bit for bit what it gives one parameter at a time, and what cannot share a
call (0-d parameters, other dtypes, other step counts, stateless rules, a rule that is not
elementwise) is updated on its own."""

from __future__ import annotations

import numpy as np
import pytest
from test_runtime_optim import CONFIGS, config_id

from runtime import Parameter, optim
from runtime.optim import foreach

SHAPES = [(3, 4), (4,), (2, 1, 3), (), (5,), ()]  # two 0-d: their moments are 0-d too


def weights(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype(dtype) for shape in SHAPES]


def run(make, elementwise: bool, steps=12, dtype=np.float32, skip=None):
    """Steps with seeded gradients; `skip(k, i)`: parameter i has no gradient at step k."""
    params = [Parameter(w) for w in weights(dtype)]
    opt = make(params)
    opt.elementwise = elementwise
    rng = np.random.default_rng(1)
    for k in range(steps):
        for i, p in enumerate(params):
            g = (p.data - 1.0 + 0.3 * rng.normal(size=p.shape)).astype(dtype)
            p.grad = None if skip is not None and skip(k, i) else g
        opt.step()
    return params, opt


def assert_same(a, b):
    (params_a, opt_a), (params_b, opt_b) = a, b
    for p, q in zip(params_a, params_b, strict=True):
        assert p.dtype == q.dtype and np.array_equal(p.data, q.data)
        assert p._version == q._version
        state_a, state_b = opt_a.state[p], opt_b.state[q]
        assert state_a.keys() == state_b.keys()
        for key in state_a:
            assert np.array_equal(state_a[key], state_b[key]), key


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shared_calls_give_exactly_the_one_at_a_time_results(config, dtype):
    name, kwargs = config
    make = lambda ps: getattr(optim, name)(ps, **kwargs)  # noqa: E731
    assert getattr(optim, name).elementwise
    assert_same(run(make, True, dtype=dtype), run(make, False, dtype=dtype))


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad"])
def test_parameters_with_other_step_counts_share_no_call(name):
    kwargs = {"momentum": 0.9} if name == "SGD" else {}
    make = lambda ps: getattr(optim, name)(ps, lr=0.05, **kwargs)  # noqa: E731
    skip = lambda k, i: i == 1 and k % 3 == 0  # noqa: E731 -- parameter 1 lags behind
    assert_same(run(make, True, skip=skip), run(make, False, skip=skip))


def test_batches_follow_dtypes_and_step_counts():
    items = []
    for shape, dtype, step in [((2,), np.float32, 1), ((3,), np.float32, 1),
                               ((2,), np.float64, 1), ((2,), np.float32, 2), ((), np.float32, 1)]:
        p = Parameter(np.zeros(shape, dtype))
        state = {"step": np.array(float(step)), "exp_avg": np.zeros(shape, dtype)}
        items.append((p, np.ones(shape, dtype), state))
    keys = [foreach._batch_key(*item) for item in items]
    assert keys[0] == keys[1]  # same dtype and step: one call
    assert len({keys[0], keys[2], keys[3]}) == 3
    assert keys[4] is None  # a 0-d parameter: its moments are 0-d too
    assert foreach._batch_key(items[0][0], items[0][1], {}) is None  # stateless


def test_grads_and_parameters_in_non_contiguous_arrays():
    def make(ps):
        return optim.Adam(ps, lr=0.1)

    results = []
    for elementwise in (True, False):
        a = Parameter(np.arange(12, dtype=np.float32).reshape(3, 4))
        a.data = np.asfortranarray(a.data)  # written back through .flat in C order
        b, c = Parameter(np.ones((4, 3), np.float32)), Parameter(np.full(3, 2.0, np.float32))
        opt = make([a, b, c])
        opt.elementwise = elementwise
        for _ in range(3):
            a.grad = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
            b.grad = np.linspace(0, 1, 12, dtype=np.float32).reshape(4, 3)[:, ::-1]  # strided
            c.grad = np.linspace(0.1, 0.3, 3, dtype=np.float32)
            opt.step()
        assert a.data.flags.f_contiguous
        results.append(([a, b, c], opt))
    assert_same(*results)


def test_state_arrays_and_parameter_arrays_keep_their_identity():
    params = [Parameter(np.ones(3)), Parameter(np.ones((2, 2)))]
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    arrays = [p.data for p in params]
    for _ in range(2):
        for p in params:
            p.grad = np.ones_like(p.data)
        opt.step()
        buffers = [opt.state[p]["momentum_buffer"] for p in params]
    opt.step()
    assert all(p.data is array for p, array in zip(params, arrays))
    assert all(opt.state[p]["momentum_buffer"] is b for p, b in zip(params, buffers))
    assert [p._version for p in params] == [3, 3]
    np.testing.assert_allclose(params[0].data, 1 - 0.1 * (1 + 1.9 + 2.71))


def test_a_rule_that_is_not_elementwise_is_called_per_parameter():
    def unit_step(param, grad, state, *, lr):
        """Moves by lr along the gradient's direction: a norm over each parameter."""
        return param - lr * grad / np.sqrt(np.sum(grad * grad)), {}

    class UnitStep(optim.Optimizer):
        rule = staticmethod(unit_step)

        def __init__(self, params, lr):
            super().__init__(params, {"lr": lr})

        def rule_options(self, group):
            return {"lr": group["lr"]}

        def init_state(self, param, group):
            return {}

    a, b = Parameter(np.zeros(2)), Parameter(np.zeros(3))
    opt = UnitStep([a, b], lr=1.0)
    assert not opt.elementwise
    a.grad, b.grad = np.array([3.0, 4.0]), np.array([0.0, 0.0, 2.0])
    opt.step()
    np.testing.assert_allclose(a.data, [-0.6, -0.8])
    np.testing.assert_allclose(b.data, [0.0, 0.0, -1.0])


def test_a_gradient_of_another_shape_than_the_data_is_not_batched():
    items = [(Parameter(np.zeros(3)), np.ones(3), {"step": np.array(0.0), "m": np.zeros(3)})]
    items.append((Parameter(np.zeros(2)), np.ones(3), {"step": np.array(0.0), "m": np.zeros(2)}))
    assert foreach._batch_key(*items[0]) is not None
    assert foreach._batch_key(*items[1]) is None  # its .data was replaced after backward
