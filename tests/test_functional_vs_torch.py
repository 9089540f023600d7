"""runtime.functional, init and utils as a PyTorch user calls them, against PyTorch.

Values and gradients of the functions inside compiled functions (the interpreter backend,
where compiled code is not the point) and on runtime Tensors outside them (recorded
compiled calls), with the keywords PyTorch users pass, extreme inputs, empty batches,
float32 and float64; the errors for what gradfuse does not take.
"""

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
