"""Gradient clipping and norms (against PyTorch), and .npz checkpoints."""

import math

import numpy as np
import pytest

from runtime import Parameter, optim, record, utils


def params_with_grads(scale=1.0, dtype=np.float64):
    rng = np.random.default_rng(3)
    params = {"W": Parameter(rng.normal(size=(3, 4)).astype(dtype)), "b": Parameter(np.zeros(4))}
    params["W"].grad = (scale * rng.normal(size=(3, 4))).astype(dtype)
    params["b"].grad = scale * rng.normal(size=4)
    return params


def joint_norm(params, ord=2.0):
    return np.linalg.norm(
        np.concatenate([p.grad.ravel() for p in params.values() if p.grad is not None]), ord
    )


def test_clip_grad_norm_returns_the_norm_before_clipping_and_clips_to_max_norm():
    params = params_with_grads(scale=5.0)
    before = joint_norm(params)
    assert before > 1.0
    total = utils.clip_grad_norm_(params, max_norm=1.0)
    assert total == pytest.approx(before, rel=1e-12)
    assert joint_norm(params) == pytest.approx(1.0, rel=1e-5)


def test_clip_grad_norm_leaves_small_gradients_alone():
    params = params_with_grads(scale=0.01)
    grads = [p.grad.copy() for p in params.values()]
    arrays = [p.grad for p in params.values()]
    total = utils.clip_grad_norm_(params.values(), max_norm=10.0)
    assert total == pytest.approx(joint_norm(params))
    for p, g, a in zip(params.values(), grads, arrays, strict=True):
        np.testing.assert_array_equal(p.grad, g)
        assert p.grad is a  # clipping works in place


def test_clip_grad_norm_inf_norm_and_no_gradients():
    params = params_with_grads(scale=3.0)
    largest = max(np.abs(p.grad).max() for p in params.values())
    assert utils.clip_grad_norm_(params, 0.5, norm_type=float("inf")) == pytest.approx(largest)
    assert joint_norm(params, np.inf) == pytest.approx(0.5, rel=1e-5)
    assert utils.clip_grad_norm_([Parameter(1.0)], 1.0) == 0.0


def test_clip_grad_norm_nonfinite():
    p = Parameter(np.ones(2))
    p.grad = np.array([np.inf, 1.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf"), 0.5, 0.0])
def test_clip_grad_norm_matches_pytorch(norm_type):
    torch = pytest.importorskip("torch")
    ours = params_with_grads(scale=4.0)
    theirs = [torch.tensor(p.data, requires_grad=True) for p in ours.values()]
    for t, p in zip(theirs, ours.values(), strict=True):
        t.grad = torch.tensor(p.grad)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 2.0, norm_type=norm_type, foreach=True)
    total = utils.clip_grad_norm_(ours, 2.0, norm_type=norm_type, foreach=True)
    assert total.item() == pytest.approx(expected.item(), rel=1e-12)  # PyTorch's idiom works
    assert isinstance(total, float)
    for t, p in zip(theirs, ours.values(), strict=True):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12)


def test_clip_grad_value_matches_pytorch():
    torch = pytest.importorskip("torch")
    ours = params_with_grads(scale=2.0)
    theirs = [torch.tensor(p.data, requires_grad=True) for p in ours.values()]
    for t, p in zip(theirs, ours.values(), strict=True):
        t.grad = torch.tensor(p.grad)
    torch.nn.utils.clip_grad_value_(theirs, 0.7, foreach=False)
    utils.clip_grad_value_(ours, 0.7, foreach=False)
    for t, p in zip(theirs, ours.values(), strict=True):
        np.testing.assert_array_equal(p.grad, t.grad.numpy())
    assert max(np.abs(p.grad).max() for p in ours.values()) == 0.7


def test_grad_norms_by_name_and_by_position():
    params = params_with_grads()
    params["unused"] = Parameter(np.ones(2))
    norms = utils.grad_norms(params)
    assert list(norms) == ["W", "b", "unused"] and norms["unused"] is None
    assert norms["W"] == pytest.approx(np.linalg.norm(params["W"].grad))
    as_list = utils.grad_norms(list(params.values()), norm_type=1)
    assert as_list[1] == pytest.approx(np.abs(params["b"].grad).sum()) and as_list[2] is None


def test_exploding_gradients_in_a_deep_linear_chain():
    """20 linear layers with std-1 weights: gradients grow geometrically towards the input."""
    rng = np.random.default_rng(0)
    layers = {f"W{i}": Parameter(rng.normal(size=(8, 8))) for i in range(20)}
    h = Parameter(rng.normal(size=(4, 8)))
    hidden = {"input": h}
    for i, W in enumerate(layers.values()):  # noqa: N806
        a, w = h.data, W.data
        [h] = record([a @ w], [h, W], lambda cts, a=a, w=w: [cts[0] @ w.T, a.T @ cts[0]], "mm")
        h.retain_grad()
        hidden[f"h{i}"] = h
    [loss] = record([np.sum(h.data)], [h], lambda cts, s=h.shape: [np.full(s, cts[0])], "sum")
    loss.backward()
    norms = utils.grad_norms(hidden)
    assert norms["h19"] == pytest.approx(np.sqrt(32))  # d sum / d h = ones(4, 8)
    assert norms["input"] > 1e6 * norms["h19"]
    assert norms["input"] > norms["h9"] > norms["h19"]
    assert all(n > 0 for n in utils.grad_norms(layers).values())


def test_gradient_accumulation_over_micro_batches_equals_the_full_batch():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(8, 3)), rng.normal(size=8)

    def loss(w, xb, yb, weight):
        r = xb @ w.data - yb
        vjp = lambda cts: [weight * 2 * xb.T @ r / len(yb) * cts[0]]  # noqa: E731
        return record([weight * np.mean(r**2)], [w], vjp, "mse")[0]

    full, accumulated = Parameter(np.ones(3)), Parameter(np.ones(3))
    loss(full, x, y, 1.0).backward()
    for k in range(4):
        loss(accumulated, x[2 * k : 2 * k + 2], y[2 * k : 2 * k + 2], 0.25).backward()
    np.testing.assert_allclose(accumulated.grad, full.grad, rtol=1e-12)


# -- checkpoints ----------------------------------------------------------------------


def train(params, opt, steps):
    for k in range(steps):
        for i, p in enumerate(params.values()):
            p.grad = p.data - k * 0.1 + i
        opt.step()


def test_save_and_load_round_trip_with_optimizer(tmp_path):
    params = params_with_grads(dtype=np.float32)
    opt = optim.Adam(params, lr=0.1, amsgrad=True)
    train(params, opt, 3)
    path = tmp_path / "checkpoint"  # no .npz suffix: written exactly here
    utils.save(path, params, opt)
    assert path.exists()

    restored = {name: Parameter(np.zeros_like(p.data)) for name, p in params.items()}
    arrays = [p.data for p in restored.values()]
    opt2 = optim.Adam(restored, lr=0.5)
    utils.load(path, restored, opt2)
    for name, p in params.items():
        np.testing.assert_array_equal(restored[name].data, p.data)
        assert restored[name].dtype == p.dtype
    assert [p.data for p in restored.values()] == arrays  # loaded in place
    assert opt2.param_groups[0]["lr"] == 0.1 and opt2.param_groups[0]["betas"] == (0.9, 0.999)
    train(params, opt, 3)
    train(restored, opt2, 3)
    for name, p in params.items():
        np.testing.assert_array_equal(restored[name].data, p.data)


def test_settings_held_as_numpy_numbers_save_and_load(tmp_path):
    """An lr of np.float32 (or a 0-d array, an np.int64) made save a bare TypeError from json
    ('Object of type float32 is not JSON serializable')."""
    params = params_with_grads()
    opt = optim.SGD(params, lr=np.float32(0.01), momentum=np.array(0.9))
    opt.param_groups[0]["dampening"] = np.int64(0)
    path = tmp_path / "numbers.npz"
    utils.save(path, params, opt)
    opt2 = optim.SGD(params, lr=0.5)
    utils.load(path, params, opt2)
    group = opt2.param_groups[0]
    assert (group["lr"], group["momentum"], group["dampening"]) == (float(np.float32(0.01)), 0.9, 0)
    opt.param_groups[0]["lr"] = object()
    with pytest.raises(TypeError, match="setting 'lr' of param_groups\\[0\\] is a object"):
        utils.save(tmp_path / "other.npz", params, opt)
    assert not (tmp_path / "other.npz").exists()


def test_save_a_list_and_load_errors(tmp_path):
    path = tmp_path / "params.npz"
    a, b = Parameter(np.arange(3.0)), Parameter(1.5)
    utils.save(path, [a, b])
    c, d = Parameter(np.zeros(3)), Parameter(0.0)
    utils.load(path, [c, d])
    assert c.data.tolist() == [0.0, 1.0, 2.0] and d.item() == 1.5
    with pytest.raises(KeyError, match=r"missing \['2'\]"):
        utils.load(path, [c, d, Parameter(0.0)])
    with pytest.raises(KeyError, match=r"unexpected \['1'\]"):
        utils.load(path, [c])
    utils.load(path, [c], strict=False)
    wrong = Parameter(np.zeros(4))
    with pytest.raises(ValueError, match=r"saved shape \(3,\).*shape \(4,\)"):
        utils.load(path, [wrong, Parameter(0.0)])
    assert not wrong.data.any()
    with pytest.raises(KeyError, match="no optimizer state"):
        utils.load(path, [c, d], optim.SGD([c, d]))
    assert math.isfinite(d.item())


def test_save_with_torch_habits_gets_errors_that_say_what_to_pass(tmp_path):
    path = tmp_path / "params.npz"
    params = {"enc": {"W": Parameter(np.ones((2, 2)))}}
    opt = optim.Adam(utils.parameters(params))
    with pytest.raises(TypeError, match=r"takes the path first"):
        utils.save(params, path)  # torch.save(obj, path)'s order
    with pytest.raises(TypeError, match=r"at 'opt/param_groups/0/lr' is a float"):
        utils.save(path, {"params": params, "opt": opt.state_dict()})
    with pytest.raises(TypeError, match=r"at 'enc/W' is a ndarray"):
        utils.save(path, {"enc": {"W": np.ones(2)}})
    assert not path.exists()
