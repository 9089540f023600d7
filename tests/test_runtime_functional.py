"""Functional building blocks and initializers against PyTorch's values and distributions."""

import math

import numpy as np
import pytest

from compiler import compile_grad
from runtime import Parameter, init
from runtime import functional as F


@pytest.fixture(scope="module")
def torch():
    """PyTorch for the parity tests, which are skipped where it is not installed."""
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def t(torch):
    """NumPy to PyTorch, keeping the dtype."""
    return lambda a: torch.tensor(np.asarray(a))


rng = np.random.default_rng(7)
X = np.concatenate([rng.normal(scale=3.0, size=20), [0.0, 40.0, -40.0, 800.0, -800.0]])


@pytest.mark.parametrize("name", ["relu", "sigmoid", "softplus"])
def test_activations_match_pytorch_including_extremes(name, torch, t):
    ours, theirs = getattr(F, name), getattr(torch.nn.functional, name)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # never overflow
        out = ours(X)
    # Relative accuracy, in the tails too: sigmoid(-40) ~ 4e-18 is not rounded to 0.
    np.testing.assert_allclose(out, theirs(t(X)).numpy(), rtol=1e-12, atol=0)
    assert ours(X.astype(np.float32)).dtype == np.float32


def test_log_sigmoid_is_finite_far_in_the_negative_tail(torch, t):
    """log(sigmoid(x)) at x = -40: -40 and a gradient of 1, as in PyTorch (a sigmoid rounded
    to 0 there gave -inf and a NaN gradient); sigmoid'(0) = 1/4, with no kink."""
    x = np.array([-700.0, -100.0, -40.0, -30.0, 0.0, 30.0])
    f = compile_grad(lambda x: np.sum(np.log(F.sigmoid(x))))
    value, grad = f.value_and_grad(x)
    xt = t(x).requires_grad_()
    expected = torch.log(torch.sigmoid(xt)).sum()
    expected.backward()
    np.testing.assert_allclose(value, expected.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-12, atol=1e-13)


def test_relu_is_zero_at_zero():
    assert F.relu(np.array(0.0)) == 0.0 and F.relu(np.array(-0.0)) == 0.0


@pytest.mark.parametrize("axis, keepdims", [(None, False), (0, False), (-1, True), (1, False)])
def test_logsumexp_matches_pytorch(axis, keepdims, torch, t):
    x = rng.normal(scale=10.0, size=(4, 5)) + 500.0  # naive exp would overflow
    dims = tuple(range(x.ndim)) if axis is None else axis
    expected = torch.logsumexp(t(x), dim=dims, keepdim=keepdims).numpy()
    out = F.logsumexp(x, axis=axis, keepdims=keepdims)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_logsumexp_of_infinite_rows(torch, t):
    x = np.array([[-np.inf, -np.inf], [np.inf, 1.0], [0.0, -np.inf]])
    with np.errstate(divide="ignore"):  # log(0) = -inf is the right answer
        np.testing.assert_array_equal(F.logsumexp(x, axis=1), [-np.inf, np.inf, 0.0])
    np.testing.assert_array_equal(torch.logsumexp(t(x), dim=1).numpy(), [-np.inf, np.inf, 0.0])


@pytest.mark.parametrize("axis", [0, -1])
def test_softmax_and_log_softmax_match_pytorch(axis, torch, t):
    x = rng.normal(scale=5.0, size=(3, 6))
    x[0, 0] = 1000.0
    np.testing.assert_allclose(F.softmax(x, axis), torch.softmax(t(x), axis).numpy(), rtol=1e-12)
    np.testing.assert_allclose(
        F.log_softmax(x, axis), torch.log_softmax(t(x), axis).numpy(), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(np.sum(F.softmax(x, axis), axis=axis), 1.0)
    assert F.softmax(x.astype(np.float32), axis).dtype == np.float32


def test_linear_uses_in_by_out_weights(torch, t):
    x, W, b = rng.normal(size=(5, 3)), rng.normal(size=(3, 2)), rng.normal(size=2)  # noqa: N806
    expected = torch.nn.functional.linear(t(x), t(W.T), t(b)).numpy()
    np.testing.assert_allclose(F.linear(x, W, b), expected, rtol=1e-12)
    np.testing.assert_allclose(F.linear(x, W), x @ W)


PRED, TARGET = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
REDUCTIONS = ["mean", "sum", "none"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "name, kwargs",
    [("mse_loss", {}), ("l1_loss", {}), ("huber_loss", {}),
     ("huber_loss", {"delta": 0.4}), ("huber_loss", {"delta": 2.5})],
    ids=["mse", "l1", "huber", "huber-0.4", "huber-2.5"],
)  # fmt: skip
def test_regression_losses_match_pytorch(name, kwargs, reduction, torch, t):
    ours, theirs = getattr(F, name), getattr(torch.nn.functional, name)
    out = ours(PRED, TARGET, reduction=reduction, **kwargs)
    expected = theirs(t(PRED), t(TARGET), reduction=reduction, **kwargs).numpy()
    assert np.shape(out) == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_matches_pytorch(reduction, torch, t):
    logits = rng.normal(scale=4.0, size=(8, 5))
    logits[0] = [300.0, -300.0, 0.0, 1.0, 2.0]
    labels = rng.integers(0, 5, size=8)
    labels[0] = 1  # a very unlikely class: a naive log(softmax) would be -inf
    expected = torch.nn.functional.cross_entropy(t(logits), t(labels), reduction=reduction).numpy()
    np.testing.assert_allclose(F.cross_entropy(logits, labels, reduction), expected, rtol=1e-12)
    out32 = F.cross_entropy(logits.astype(np.float32), labels, reduction)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_with_logits_matches_pytorch(reduction, torch, t):
    logits = np.concatenate([rng.normal(scale=3.0, size=10), [100.0, -100.0, 0.0]])
    targets = np.concatenate([rng.uniform(size=10), [0.0, 1.0, 0.5]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        t(logits), t(targets), reduction=reduction
    )
    out = F.binary_cross_entropy_with_logits(logits, targets, reduction)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-12)


def test_unknown_reduction_is_an_error():
    with pytest.raises(ValueError, match="'avg' is not a valid value for reduction"):
        F.mse_loss(PRED, TARGET, reduction="avg")


# -- initializers ---------------------------------------------------------------------

IN, OUT = 400, 300


INITIALIZERS = [  # name, options, the standard deviation both sides should have
    ("kaiming_uniform", {}, math.sqrt(2 / IN)),
    ("kaiming_uniform", {"a": math.sqrt(5)}, 1 / math.sqrt(3 * IN)),
    ("kaiming_normal", {"mode": "fan_out"}, math.sqrt(2 / OUT)),
    ("kaiming_normal", {"nonlinearity": "relu"}, math.sqrt(2 / IN)),
    ("xavier_uniform", {"gain": 2.0}, 2 * math.sqrt(2 / (IN + OUT))),
    ("xavier_normal", {}, math.sqrt(2 / (IN + OUT))),
]


@pytest.mark.parametrize("name, kwargs, std", INITIALIZERS)
def test_initializers_have_pytorchs_distribution(name, kwargs, std, torch):
    w = getattr(init, name)((IN, OUT), 0, dtype=np.float64, **kwargs)
    # PyTorch's weight has nn.Linear's layout (out, in), so its fan_in is also IN.
    torch.manual_seed(0)
    reference = torch.empty(OUT, IN, dtype=torch.float64)
    getattr(torch.nn.init, name + "_")(reference, **kwargs)
    reference = reference.numpy()
    assert w.shape == (IN, OUT) and w.dtype == np.float64
    assert abs(w.mean()) < 0.05 * std
    assert w.std() == pytest.approx(std, rel=0.01)
    assert reference.std() == pytest.approx(std, rel=0.01)
    if "uniform" in name:  # hard bounds: U(-sqrt(3) std, sqrt(3) std)
        bound = math.sqrt(3) * std
        assert np.abs(w).max() <= bound and np.abs(reference).max() <= bound
        assert np.abs(w).max() > 0.99 * bound


def test_calculate_gain_matches_pytorch(torch):
    for args in [("linear",), ("sigmoid",), ("tanh",), ("relu",), ("leaky_relu",),
                 ("leaky_relu", 0.2), ("selu",)]:  # fmt: skip
        assert init.calculate_gain(*args) == pytest.approx(torch.nn.init.calculate_gain(*args))


def test_linear_params_match_nn_linear_defaults(torch):
    W, b = init.linear_params(IN, OUT, rng=3)  # noqa: N806
    assert isinstance(W, Parameter) and W.requires_grad
    assert (W.shape, b.shape, W.dtype, b.dtype) == ((IN, OUT), (OUT,), np.float32, np.float32)
    bound = 1 / math.sqrt(IN)
    torch.manual_seed(0)
    layer = torch.nn.Linear(IN, OUT)
    for ours, theirs in [(W.data, layer.weight), (b.data, layer.bias)]:
        theirs = theirs.detach().numpy()
        assert np.abs(ours).max() <= bound and np.abs(theirs).max() <= bound
        assert ours.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)
        assert theirs.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    W64, _ = init.linear_params(3, 2, rng=np.random.default_rng(1), dtype=np.float64)  # noqa: N806
    assert W64.dtype == np.float64


def test_initializers_are_reproducible_and_need_an_explicit_rng():
    a = init.xavier_uniform((3, 4), 11)
    np.testing.assert_array_equal(a, init.xavier_uniform((3, 4), np.random.default_rng(11)))
    assert not np.array_equal(a, init.xavier_uniform((3, 4), 12))
    with pytest.raises(TypeError, match="Generator or an int seed"):
        init.xavier_uniform((3, 4), None)
    with pytest.raises(ValueError, match="2-D weight"):
        init.kaiming_uniform((5,), 0)


def test_mlp_params_and_mlp_match_a_pytorch_sequential(torch, t):
    params = init.mlp_params([10, 5, 1], rng=0, dtype=np.float64)
    assert list(params) == ["W0", "b0", "W1", "b1"]
    assert [p.shape for p in params.values()] == [(10, 5), (5,), (5, 1), (1,)]
    x = rng.normal(size=(20, 10))
    arrays = {name: p.data for name, p in params.items()}
    model = torch.nn.Sequential(
        torch.nn.Linear(10, 5), torch.nn.ReLU(), torch.nn.Linear(5, 1)
    ).double()
    with torch.no_grad():
        for i, layer in enumerate([model[0], model[2]]):
            layer.weight.copy_(t(arrays[f"W{i}"].T))
            layer.bias.copy_(t(arrays[f"b{i}"]))
    np.testing.assert_allclose(init.mlp(arrays, x), model(t(x)).detach().numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="at least an input and an output"):
        init.mlp_params([3], rng=0)
