"""runtime.functional, init and utils as a PyTorch user calls them, against PyTorch.

Values and gradients of the functions inside compiled functions (the interpreter backend,
where compiled code is not the point) and on runtime Tensors outside them (recorded
compiled calls), with the keywords PyTorch users pass, extreme inputs, empty batches,
float32 and float64; the errors for what gradfuse does not take.
"""

import warnings

import numpy as np
import pytest

from compiler import compile_grad
from compiler.functional_calls import _tensor_call
from runtime import Parameter, Tensor, init, no_grad
from runtime import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

rng = np.random.default_rng(11)


def t(a):
    """NumPy to PyTorch, keeping the dtype."""
    return torch.tensor(np.asarray(a))


_interpreted: dict = {}


def interpreted(fn):
    """fn compiled by the interpreter backend, once per function."""
    if fn not in _interpreted:
        _interpreted[fn] = compile_grad(fn, backend="interpreter")
    return _interpreted[fn]


@pytest.fixture
def interpreted_tensor_calls():
    """F's functions on Tensors as interpreted compiled calls (the recording is the point)."""
    F.set_tensor_call(interpreted)
    yield
    F.set_tensor_call(_tensor_call)


# -- on runtime Tensors outside compiled functions -------------------------------------------


MODEL = compile_grad(init.mlp)  # numba: the registered F calls below use its default backend


def _torch_mlp(tp, X):
    return torch.relu(X @ tp["W0"] + tp["b0"]) @ tp["W1"] + tp["b1"]


def test_functions_of_tensors_are_recorded_in_the_graph():
    """F.relu(h), F.sigmoid(h), F.cross_entropy(h, y) on a compiled call's output h: relu and
    sigmoid gave a plain ndarray (NumPy read h's array), silently dropping their terms'
    gradients; the others failed with bare TypeErrors. Now compiled calls in the graph."""
    params = init.mlp_params([4, 5, 3], 0, dtype=np.float64)
    X, y = rng.normal(size=(6, 4)), np.array([0, 1, 2, 2, 1, 0])
    h = MODEL(params, X)
    terms = [F.relu(h).sum() * 0.1, F.sigmoid(h).mean(), F.cross_entropy(h, y)]
    assert all(isinstance(term, Tensor) and term.requires_grad for term in terms)
    loss = terms[0] + terms[1] + terms[2]
    loss.backward()
    tp = {k: t(v.data).requires_grad_() for k, v in params.items()}
    ht = _torch_mlp(tp, t(X))
    expected = TF.relu(ht).sum() * 0.1 + torch.sigmoid(ht).mean() + TF.cross_entropy(ht, t(y))
    expected.backward()
    np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-12)
    for k, p in params.items():
        np.testing.assert_allclose(p.grad, tp[k].grad.numpy(), rtol=1e-10, atol=1e-14)


def test_tensors_anywhere_in_the_arguments(interpreted_tensor_calls):
    """The Tensor as the target (a keyword), labels as an int Tensor, under no_grad."""
    W = Parameter(rng.normal(size=(3, 3)))
    x = rng.normal(size=(4, 3))
    pred = MODEL({"W0": W}, x)
    loss = F.mse_loss(np.ones((4, 3)), target=pred, reduction="sum")
    loss.backward()
    Wt = t(W.data).requires_grad_()
    TF.mse_loss(torch.ones(4, 3, dtype=torch.float64), t(x) @ Wt, reduction="sum").backward()
    np.testing.assert_allclose(W.grad, Wt.grad.numpy(), rtol=1e-12)
    labels = Tensor(np.array([2, 0, 1, 1]))
    with no_grad():
        out = F.cross_entropy(MODEL({"W0": W}, x), labels)
    assert isinstance(out, Tensor) and not out.requires_grad
    expected = TF.cross_entropy(t(x) @ t(W.data), t(labels.data))
    np.testing.assert_allclose(out.item(), expected.item(), rtol=1e-12)


def test_mlp_run_eagerly_on_parameters_backpropagates_into_every_layer(interpreted_tensor_calls):
    """init.mlp(params, X) outside a compiled function: its relu gave an ndarray, so the layers
    before the last got no gradient, silently. A layer without a bias too (linear's b=None)."""
    params = init.mlp_params([4, 5, 3], 3, dtype=np.float64)
    del params["b1"]
    X = rng.normal(size=(6, 4))
    loss = (init.mlp(params, X) ** 2).mean()
    loss.backward()
    tp = {k: t(v.data).requires_grad_() for k, v in params.items()}
    expected = ((torch.relu(t(X) @ tp["W0"] + tp["b0"]) @ tp["W1"]) ** 2).mean()
    expected.backward()
    np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-12)
    for k, p in params.items():
        np.testing.assert_allclose(p.grad, tp[k].grad.numpy(), rtol=1e-12, atol=1e-15)


def test_without_the_compiler_tensors_not_requiring_grad_compute_and_others_are_refused():
    F.set_tensor_call(None)
    try:
        out = F.softmax(Tensor(np.array([1.0, 2.0, 3.0])))
        assert isinstance(out, Tensor)
        np.testing.assert_allclose(out.data, TF.softmax(t([1.0, 2.0, 3.0]), 0).numpy())
        with pytest.raises(RuntimeError, match="F.relu of a Tensor that requires grad.*import"):
            F.relu(Parameter(np.ones(2)))
    finally:
        F.set_tensor_call(_tensor_call)


# -- values and gradients against PyTorch, eagerly and compiled ------------------------------

LOGITS = np.concatenate([rng.normal(scale=3.0, size=(5, 4)),
                         [[300.0, -300.0, 0.0, 1.0], [-1e4, 0.0, 1e4, 5.0], [50.0] * 4]])
LABELS = np.array([0, 3, 1, 2, 2, 1, 0, 3])
PADDED = np.array([0, -100, 1, 2, -100, 1, 0, 3])  # -100: PyTorch's ignore_index
PROBS = rng.dirichlet(np.ones(4), size=8)
WEIGHT = np.array([0.5, 2.0, 1.0, 3.0])
Z = np.array([-1000.0, -40.0, -3.0, -1e-3, 0.0, 1e-3, 0.7, 3.0, 25.0, 40.0, 1000.0])
TARGETS = np.array([0.0, 1.0, 0.3, 1.0, 0.5, 0.0, 1.0, 0.2, 0.0, 1.0, 0.0])
P = np.array([1e-30, 1e-8, 0.1, 0.5, 0.9, 1 - 1e-6, 0.3, 0.6, 0.25, 0.75, 0.5])
PRED, TARGET = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
PRED[0, :3] = TARGET[0, :3] + [0.5, -0.5, 2.0]  # on the quadratic/linear boundaries of beta 0.5
LOGP = np.log(PROBS)


def _sum(out):
    return out if np.ndim(out) == 0 else np.sum(out)


def _tsum(out):
    return out if out.ndim == 0 else out.sum()


# (id, ours, theirs, arguments, positions differentiated)
CASES = [
    ("relu", lambda x: F.relu(x), TF.relu, (Z,), (0,)),
    ("leaky_relu", lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2), (Z,), (0,)),
    ("elu", lambda x: F.elu(x, alpha=1.5), lambda x: TF.elu(x, alpha=1.5), (Z,), (0,)),
    ("silu", F.silu, TF.silu, (Z,), (0,)),
    ("gelu", F.gelu, TF.gelu, (Z[1:-1],), (0,)),
    ("gelu-tanh", lambda x: F.gelu(x, approximate="tanh"),
     lambda x: TF.gelu(x, approximate="tanh"), (Z[1:-1],), (0,)),
    ("softplus", F.softplus, TF.softplus, (Z,), (0,)),
    ("softplus-beta", lambda x: F.softplus(x, beta=2.0, threshold=10.0),
     lambda x: TF.softplus(x, beta=2.0, threshold=10.0), (Z,), (0,)),
    ("logsigmoid", F.logsigmoid, TF.logsigmoid, (Z,), (0,)),
    ("sigmoid", F.sigmoid, torch.sigmoid, (Z,), (0,)),
    ("softmax-dim0", lambda x: F.softmax(x, dim=0) * WEIGHT.astype(x.dtype),
     lambda x: TF.softmax(x, dim=0) * t(WEIGHT), (LOGITS,), (0,)),
    ("log_softmax-dim1", lambda x: F.log_softmax(x, dim=1) * WEIGHT.astype(x.dtype),
     lambda x: TF.log_softmax(x, dim=1) * t(WEIGHT), (LOGITS[:6],), (0,)),
    ("logsumexp-keepdim",
     lambda x: F.logsumexp(x, dim=1, keepdim=True) * LABELS[:, None].astype(x.dtype),
     lambda x: torch.logsumexp(x, dim=1, keepdim=True) * t(LABELS[:, None]), (LOGITS,), (0,)),
    ("cross_entropy", F.cross_entropy, TF.cross_entropy, (LOGITS, LABELS), (0,)),
    ("ce-sum", lambda x, y: F.cross_entropy(x, y, reduction="sum"),
     lambda x, y: TF.cross_entropy(x, y, reduction="sum"), (LOGITS, LABELS), (0,)),
    ("ce-weight", lambda x, y, w: F.cross_entropy(x, y, weight=w),
     lambda x, y, w: TF.cross_entropy(x, y, weight=w), (LOGITS, LABELS, WEIGHT), (0,)),
    ("ce-constant-weight",  # a constant weight read at traced labels
     lambda x, y: F.cross_entropy(x, y, weight=WEIGHT.astype(x.dtype), ignore_index=1),
     lambda x, y: TF.cross_entropy(x, y, weight=t(WEIGHT), ignore_index=1), (LOGITS, LABELS),
     (0,)),
    ("ce-ignore", F.cross_entropy, TF.cross_entropy, (LOGITS, PADDED), (0,)),
    ("ce-ignore-none", lambda x, y: F.cross_entropy(x, y, reduction="none"),
     lambda x, y: TF.cross_entropy(x, y, reduction="none"), (LOGITS, PADDED), (0,)),
    ("ce-ignore-3", lambda x, y: F.cross_entropy(x, y, ignore_index=3),
     lambda x, y: TF.cross_entropy(x, y, ignore_index=3), (LOGITS, LABELS), (0,)),
    ("ce-smooth", lambda x, y: F.cross_entropy(x, y, label_smoothing=0.1),
     lambda x, y: TF.cross_entropy(x, y, label_smoothing=0.1), (LOGITS, LABELS), (0,)),
    ("ce-all", lambda x, y, w: F.cross_entropy(x, y, weight=w, label_smoothing=0.2),
     lambda x, y, w: TF.cross_entropy(x, y, weight=w, label_smoothing=0.2),
     (LOGITS, PADDED, WEIGHT), (0,)),
    ("ce-all-sum", lambda x, y, w: F.cross_entropy(x, y, "sum", weight=w, label_smoothing=0.2),
     lambda x, y, w: TF.cross_entropy(x, y, w, reduction="sum", label_smoothing=0.2),
     (LOGITS, PADDED, WEIGHT), (0,)),
    ("ce-probs", F.cross_entropy, TF.cross_entropy, (LOGITS, PROBS), (0, 1)),
    ("ce-probs-all", lambda x, y, w: F.cross_entropy(x, y, weight=w, label_smoothing=0.3),
     lambda x, y, w: TF.cross_entropy(x, y, weight=w, label_smoothing=0.3),
     (LOGITS, PROBS, WEIGHT), (0, 1, 2)),
    ("ce-one-row", F.cross_entropy, TF.cross_entropy, (LOGITS[:1], LABELS[:1]), (0,)),
    ("ce-unbatched", F.cross_entropy, TF.cross_entropy, (LOGITS[0], LABELS[0]), (0,)),
    ("nll_loss", lambda x, y, w: F.nll_loss(x, y, weight=w),
     lambda x, y, w: TF.nll_loss(x, y, weight=w), (LOGP, PADDED, WEIGHT), (0,)),
    ("bce-logits", F.binary_cross_entropy_with_logits, TF.binary_cross_entropy_with_logits,
     (Z, TARGETS), (0, 1)),
    ("bce-logits-weights", lambda x, y, w, p: F.binary_cross_entropy_with_logits(
        x, y, "sum", weight=w, pos_weight=p),
     lambda x, y, w, p: TF.binary_cross_entropy_with_logits(
         x, y, w, reduction="sum", pos_weight=p),
     (LOGITS, PROBS, PROBS[::-1] + 0.5, WEIGHT), (0, 1)),
    ("bce", F.binary_cross_entropy, TF.binary_cross_entropy, (P[1:-1], TARGETS[1:-1]), (0, 1)),
    ("bce-edges", lambda p, y, w: F.binary_cross_entropy(p, y, weight=w, reduction="none"),
     lambda p, y, w: TF.binary_cross_entropy(p, y, weight=w, reduction="none"),
     (np.array([0.0, 1.0, 0.0, 1.0, 1e-50]), np.array([0.0, 1.0, 1.0, 0.0, 0.5]),
      WEIGHT[[0, 1, 2, 3, 0]]),
     ()),
    ("mse", F.mse_loss, TF.mse_loss, (PRED, TARGET), (0, 1)),
    ("l1-none", lambda x, y: F.l1_loss(x, y, "none"),
     lambda x, y: TF.l1_loss(x, y, reduction="none"),
     (PRED, TARGET), (0, 1)),
    ("huber", lambda x, y: F.huber_loss(x, y, "sum", 0.5),
     lambda x, y: TF.huber_loss(x, y, "sum", 0.5),
     (PRED, TARGET), (0, 1)),
    ("smooth_l1", lambda x, y: F.smooth_l1_loss(x, y, beta=0.5),
     lambda x, y: TF.smooth_l1_loss(x, y, beta=0.5), (PRED, TARGET), (0, 1)),
    ("smooth_l1-beta0", lambda x, y: F.smooth_l1_loss(x, y, beta=0.0),
     lambda x, y: TF.smooth_l1_loss(x, y, beta=0.0), (PRED, TARGET), (0, 1)),
    # at a target of 0 the target's gradient is 0 here, NaN in PyTorch (log 0's derivative)
    ("kl_div", F.kl_div, TF.kl_div, (LOGP, PROBS * (PROBS > 0.1)), (0,)),
    ("kl_div-batchmean", lambda x, y: F.kl_div(x, y, reduction="batchmean"),
     lambda x, y: TF.kl_div(x, y, reduction="batchmean"), (LOGP, PROBS), (0, 1)),
    ("kl_div-log_target", lambda x, y: F.kl_div(x, y, "sum", log_target=True),
     lambda x, y: TF.kl_div(x, y, reduction="sum", log_target=True), (LOGP, LOGP[::-1]), (0, 1)),
]


def _torch_value_and_grads(theirs, args, wrt):
    targs = [t(a) for a in args]
    for i in wrt:
        targs[i].requires_grad_()
    out = theirs(*targs)
    if wrt:
        _tsum(out).backward()
    return out.detach().numpy(), [targs[i].grad.numpy() for i in wrt]


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")  # PyTorch's kl_div mean
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_values_and_gradients_match_pytorch(case, dtype):
    """float32 against PyTorch in float64 on the same (rounded) inputs: gelu's float32 there is
    1e-4 off at x = -3 (1 + erf(x / sqrt 2) cancels; ours takes erf in float64)."""
    _, ours, theirs, args, wrt = case
    args = tuple(a.astype(dtype) if a.dtype.kind == "f" else a for a in args)
    expected, expected_grads = _torch_value_and_grads(
        theirs, [a.astype(np.float64) if a.dtype.kind == "f" else a for a in args], wrt)
    rtol, atol = (1e-12, 1e-300) if dtype == np.float64 else (1e-5, 1e-6)
    with np.errstate(all="ignore"):
        eager = ours(*args)
    assert np.shape(eager) == expected.shape and np.result_type(eager) == dtype
    np.testing.assert_allclose(eager, expected, rtol=rtol, atol=atol)
    for i, expected_grad in zip(wrt, expected_grads):
        f = compile_grad(lambda *a: _sum(ours(*a)), backend="interpreter", wrt=i)
        value, grad = f.value_and_grad(*args)
        np.testing.assert_allclose(value, expected.sum(), rtol=rtol * 10, atol=atol)
        assert grad.dtype == dtype
        np.testing.assert_allclose(grad, expected_grad, rtol=rtol * 10, atol=atol + 1e-15)


def test_keywords_on_float32_tensors_keep_float32(interpreted_tensor_calls):
    """Keyword numbers of a call on Tensors are traced arguments of the compiled call: a
    float32 result stays float32 (smooth_l1_loss's beta = 0 made it float64)."""
    W = Parameter(rng.normal(size=(3, 3)).astype(np.float32))
    x = rng.normal(size=(5, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1])
    zeros, zeros64 = np.zeros((5, 3), np.float32), np.zeros((5, 3))
    for call, theirs in [
        (lambda h: F.cross_entropy(h, y, label_smoothing=0.1, weight=WEIGHT[:3].astype(np.float32)),
         lambda h: TF.cross_entropy(h, t(y), label_smoothing=0.1, weight=t(WEIGHT[:3]))),
        (lambda h: F.smooth_l1_loss(h, zeros, beta=0.0), lambda h: TF.l1_loss(h, t(zeros64))),
        (lambda h: F.softplus(h, beta=2.0).sum(), lambda h: TF.softplus(h, beta=2.0).sum()),
        (lambda h: F.huber_loss(h, zeros, delta=0.5),
         lambda h: TF.huber_loss(h, t(zeros64), delta=0.5)),
    ]:
        W.grad = None
        loss = call(MODEL({"W0": W}, x))
        assert loss.data.dtype == np.float32
        loss.backward()
        Wt = t(W.data.astype(np.float64)).requires_grad_()
        expected = theirs(t(x.astype(np.float64)) @ Wt)
        expected.backward()
        np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-5)
        assert W.grad.dtype == np.float32
        np.testing.assert_allclose(W.grad, Wt.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_one_hot_matches_pytorch():
    labels = np.array([[0, 3], [2, 2]])
    expected = TF.one_hot(t(labels), 5).numpy()
    out = F.one_hot(labels, 5)
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(out, expected)
    f = interpreted(lambda x, labels: np.sum(x * F.one_hot(labels, 5)))
    np.testing.assert_array_equal(f.grad(np.ones((2, 2, 5)), labels), expected)


@pytest.mark.parametrize("call, error, words", [
    (lambda: F.cross_entropy(LOGITS, LABELS, WEIGHT), ValueError, "a ndarray is not a valid"),
    (lambda: F.cross_entropy(LOGITS, LABELS, "batchmean"), ValueError, "'batchmean' is not"),
    (lambda: F.cross_entropy(LOGITS, LABELS, size_average=False), TypeError, "size_average"),
    (lambda: F.cross_entropy(LOGITS, LABELS[:, None]), ValueError, "np.moveaxis"),
    (lambda: F.cross_entropy(LOGITS, LABELS.astype(float)), ValueError, "class indices"),
    (lambda: F.cross_entropy(LOGITS, PROBS, ignore_index=0), ValueError, "ignore_index"),
    (lambda: F.nll_loss(LOGP, LABELS.astype(float)), TypeError, "integers"),
    (lambda: F.relu(Z, inplace=True), ValueError, "x = F.relu"),
    (lambda: F.gelu(Z, approximate="erf"), ValueError, "'none' or 'tanh'"),
    (lambda: F.one_hot(LABELS), TypeError, "num_classes"),
    (lambda: F.one_hot(LABELS, -1), ValueError, "num_classes"),
    (lambda: F.softmax(LOGITS, axis=0, dim=1), TypeError, "not both"),
    (lambda: F.kl_div(LOGP, PROBS, reduction="avg"), ValueError, "batchmean"),
    (lambda: F.binary_cross_entropy_with_logits(Z[:, None], TARGETS), ValueError,
     r"target's shape \(11,\) is not the input's \(11, 1\)"),
    (lambda: F.binary_cross_entropy(P, TARGETS[:, None]), ValueError, "not the input's"),
], ids=["weight-positional", "reduction", "size_average", "labels-shape", "float-labels",
        "ignore-probs", "nll-float-labels", "inplace", "gelu", "one_hot", "one_hot-1", "dim",
        "kl_div", "bce-logits-shapes", "bce-shapes"])
def test_what_is_not_taken_is_a_clear_error(call, error, words):
    with pytest.raises(error, match=words):
        call()


# -- initializers against torch.nn.init -------------------------------------------------------


@pytest.mark.parametrize("name", ["kaiming_uniform", "kaiming_normal", "xavier_uniform",
                                  "xavier_normal", "orthogonal", "trunc_normal"])
@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 0)])
def test_initializers_of_empty_weights_are_empty(name, shape):
    """A weight with no entries (nn.Linear(0, 3)): a bare ZeroDivisionError before; PyTorch's
    init leaves such a tensor alone."""
    w = getattr(init, name)(shape, 0)
    assert w.shape == shape and w.dtype == np.float32
    W, b = init.linear_params(shape[0], shape[1], 0)
    assert W.shape == shape and b.shape == (shape[1],)


def test_initializers_refuse_integer_dtypes():
    """int64 samples of U(-0.4, 0.4) are all 0: refused, not truncated."""
    for name in ["kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal",
                 "orthogonal", "trunc_normal"]:
        with pytest.raises(TypeError, match="not a float dtype"):
            getattr(init, name)((3, 4), 0, dtype=np.int64)


def test_calculate_gain_of_convolutions_and_bad_slopes_as_pytorch():
    for name in ["conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                 "conv_transpose3d", "linear", "sigmoid", "tanh", "relu", "selu"]:
        assert init.calculate_gain(name) == pytest.approx(torch.nn.init.calculate_gain(name))
    assert init.calculate_gain("leaky_relu", 3) == torch.nn.init.calculate_gain("leaky_relu", 3)
    for bad in [True, "0.1"]:
        with pytest.raises(ValueError, match="not a valid number"):
            init.calculate_gain("leaky_relu", bad)
        with pytest.raises(ValueError, match="not a valid number"):
            torch.nn.init.calculate_gain("leaky_relu", bad)


@pytest.mark.filterwarnings("ignore:mean is more than 2 std")  # PyTorch's, for the tail case
@pytest.mark.parametrize("mean, std, a, b", [(0.0, 1.0, -2.0, 2.0), (0.0, 0.02, -2.0, 2.0),
                                             (1.0, 2.0, 0.5, 1.5), (0.0, 1.0, 3.0, 4.0)])
def test_trunc_normal_has_pytorchs_distribution(mean, std, a, b):
    """Bounds, mean and spread against torch.nn.init.trunc_normal_ on as many samples (a wide
    interval, a narrow one, one far in the tail)."""
    ours = init.trunc_normal((300, 200), 0, mean=mean, std=std, a=a, b=b, dtype=np.float64)
    torch.manual_seed(0)
    theirs = torch.nn.init.trunc_normal_(torch.empty(200, 300, dtype=torch.float64),
                                         mean, std, a, b).numpy()
    assert ours.shape == (300, 200) and ours.min() >= a and ours.max() <= b
    assert ours.mean() == pytest.approx(theirs.mean(), abs=0.01 * min(std, b - a))
    assert ours.std() == pytest.approx(theirs.std(), rel=0.02)


@pytest.mark.parametrize("shape", [(6, 3), (3, 6), (5, 5)])
def test_orthogonal_is_orthogonal_as_pytorchs(shape):
    w = init.orthogonal(shape, 0, gain=2.0, dtype=np.float64)
    theirs = torch.nn.init.orthogonal_(torch.empty(shape[::-1], dtype=torch.float64),
                                       gain=2.0).numpy().T  # nn.Linear's layout, transposed
    for m in (w, theirs):
        small = m.T @ m if shape[0] >= shape[1] else m @ m.T
        np.testing.assert_allclose(small, 4 * np.eye(min(shape)), atol=1e-12)
    np.testing.assert_array_equal(w, init.orthogonal(shape, 0, gain=2.0, dtype=np.float64))


# -- utils ----------------------------------------------------------------------------------


def test_parameters_to_vector_is_differentiable_as_pytorchs():
    """An L2 penalty on the flattened parameters beside a compiled loss, vs PyTorch."""
    from runtime import utils

    params = init.mlp_params([4, 3, 2], 1, dtype=np.float64)
    X = rng.normal(size=(5, 4))
    vec = utils.parameters_to_vector(params)
    assert vec.shape == (4 * 3 + 3 + 3 * 2 + 2,) and vec.requires_grad
    loss = MODEL(params, X).sum() + 0.1 * (utils.parameters_to_vector(params) ** 2).sum()
    loss.backward()
    tp = {k: t(v.data).requires_grad_() for k, v in params.items()}
    expected = _torch_mlp(tp, t(X)).sum() \
        + 0.1 * (torch.nn.utils.parameters_to_vector(tp.values()) ** 2).sum()
    expected.backward()
    np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-12)
    for k, p in params.items():
        np.testing.assert_allclose(p.grad, tp[k].grad.numpy(), rtol=1e-12)
    with no_grad():
        assert not utils.parameters_to_vector(params).requires_grad


def test_vector_to_parameters_copies_in_place_as_pytorchs():
    from runtime import utils

    params = init.mlp_params([3, 2], 2, dtype=np.float64)
    arrays = {k: p.data for k, p in params.items()}
    versions = {k: p._version for k, p in params.items()}
    vec = np.arange(8.0)
    utils.vector_to_parameters(vec, params)
    tp = [torch.zeros(3, 2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)]
    torch.nn.utils.vector_to_parameters(t(vec), tp)
    for (k, p), theirs in zip(params.items(), tp):
        assert p.data is arrays[k] and p._version == versions[k] + 1
        np.testing.assert_array_equal(p.data, theirs.numpy())
    np.testing.assert_array_equal(utils.parameters_to_vector(params).data, vec)
    with pytest.raises(ValueError, match="1-D vector of the parameters' 8 entries"):
        utils.vector_to_parameters(np.arange(7.0), params)


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss"])
def test_regression_targets_of_another_shape_warn_as_in_pytorch(name):
    """(N, 1) predictions against (N,) targets broadcast to an (N, N) loss: PyTorch warns; so
    does gradfuse, eagerly and when tracing, naming the shapes. Same shapes and a number do
    not."""
    ours = getattr(F, name)
    with pytest.warns(UserWarning, match=r"target's shape \(3,\) is not the input's \(3, 1\)"):
        ours(np.zeros((3, 1)), np.ones(3))
    with pytest.warns(UserWarning, match="likely give the wrong loss"):
        interpreted(lambda x, y: ours(x, y)).grad(np.zeros((4, 1)), np.ones(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours(np.zeros((3, 1)), np.ones((3, 1)))
        ours(np.zeros((3, 1)), 0.5)


@pytest.mark.parametrize("dtype, logits", [
    (np.float32, [[3e4, 3e4 + 1, 0.0], [-5e4, -5e4 - 2, -5e4 + 0.5]]),
    (np.float64, [[1e308, 1e308, 0.0], [1e17, 1e17 + 16, 0.0]]),
])
def test_log_softmax_and_cross_entropy_of_large_logits(dtype, logits):
    """x - logsumexp(x) rounded log(sum) away when |max| was large: float32 logits of 3e4 lost
    1e-3 and [1e308, 1e308, 0] gave log-probabilities 0, 0 (cross entropy 0, not log 2);
    now (x - m) - log(sum exp(x - m)), as PyTorch, eagerly and compiled."""
    x = np.array(logits, dtype)
    labels = np.array([0, 1])
    expected = TF.log_softmax(t(x), -1).numpy()
    expected_ce = TF.cross_entropy(t(x), t(labels), reduction="none").numpy()
    compiled = interpreted(lambda x, y: F.cross_entropy(x, y, reduction="sum"))
    np.testing.assert_allclose(F.log_softmax(x), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(F.cross_entropy(x, labels, reduction="none"), expected_ce,
                               rtol=1e-6, atol=1e-6)
    value, grad = compiled.value_and_grad(x, labels)
    np.testing.assert_allclose(value, expected_ce.sum(), rtol=1e-6)
    xt = t(x).requires_grad_()
    TF.cross_entropy(xt, t(labels), reduction="sum").backward()
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_labels_as_a_python_list(interpreted_tensor_calls):
    """F.cross_entropy(logits, [0, 2]): a bare AttributeError ('bool' object has no attribute
    'astype': the list compared with ignore_index as a whole); PyTorch needs a tensor, NumPy
    users pass lists."""
    expected = TF.cross_entropy(t(LOGITS[:2]), t([0, 2])).item()
    np.testing.assert_allclose(F.cross_entropy(LOGITS[:2], [0, 2]), expected, rtol=1e-12)
    np.testing.assert_allclose(F.nll_loss(F.log_softmax(LOGITS[:2]), (0, 2)), expected,
                               rtol=1e-12)
    np.testing.assert_allclose(F.cross_entropy(Tensor(LOGITS[:2]), [0, 2]).item(), expected,
                               rtol=1e-12)


def test_relu_keeps_nan_as_pytorch():
    """relu(NaN) was 0 (where(x > 0, x, 0)), hiding the NaN from anomaly checks; PyTorch's is
    NaN, with gradient 1 there; relu'(0) stays 0."""
    x = np.array([np.nan, 0.0, -1.0, 2.0])
    xt = t(x).requires_grad_()
    TF.relu(xt).sum().backward()
    np.testing.assert_array_equal(F.relu(x), TF.relu(t(x)).numpy())
    np.testing.assert_array_equal(interpreted(lambda x: np.sum(F.relu(x))).grad(x),
                                  xt.grad.numpy())
