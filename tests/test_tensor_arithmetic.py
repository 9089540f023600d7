"""Tensor arithmetic outside compiled functions (runtime/arithmetic.py), against PyTorch: values,
dtypes and gradients, alone and combining the results of compiled calls."""

from __future__ import annotations

import operator

import numpy as np
import pytest

from compiler import compile_grad
from runtime import Parameter, Tensor, no_grad
from runtime.arithmetic import result_dtype

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def float64_default():
    """A Python float is float64 in gradfuse; PyTorch agrees once that is its default."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


RNG = np.random.default_rng(0)


def array(shape, dtype=np.float64, low=0.5, high=2.0):
    return RNG.uniform(low, high, size=shape).astype(dtype)


def ours_and_theirs(value, requires_grad=True):
    """(our operand, PyTorch's): Tensors for arrays, the number itself for numbers."""
    if isinstance(value, np.ndarray):
        ours = Parameter(value) if requires_grad else Tensor(value.copy())
        theirs = torch.tensor(value, requires_grad=requires_grad)
        return ours, theirs
    return value, value


OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
       "**": operator.pow}
OPERANDS = [  # (left, right): arrays become Tensors requiring grad
    (array((3, 4)), array((3, 4))),
    (array((3, 4)), array((4,))),  # broadcast along the leading axis
    (array((3, 1)), array((1, 4))),  # both broadcast
    (array(()), array((2, 3))),  # a 0-d Tensor (a loss) and a dimensioned one
    (array((2, 3)), 0.5),
    (1.5, array((2, 3))),
    (array((2, 3), np.float32), 0.25),  # a Python float keeps float32
    (array((2, 3), np.float32), array((), np.float64)),  # the dimensioned Tensor's dtype wins
    (array((), np.float32), array((), np.float64)),  # two 0-d Tensors: promoted
    (array((2, 3), np.float32), array((2, 3), np.float64)),
]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("left, right", OPERANDS, ids=range(len(OPERANDS)))
def test_binary_ops_match_pytorch_in_values_dtypes_and_gradients(op, left, right):
    (a, ta), (b, tb) = ours_and_theirs(left), ours_and_theirs(right)
    out, expected = OPS[op](a, b), OPS[op](ta, tb)
    assert out.dtype == np.dtype(str(expected.dtype).removeprefix("torch."))
    rtol = 1e-6 if out.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=rtol)
    weights = RNG.normal(size=out.shape)
    (out * weights).sum().backward()
    (expected * torch.tensor(weights)).sum().backward()
    for ours, theirs in ((a, ta), (b, tb)):
        if isinstance(ours, Tensor):
            assert ours.grad.dtype == ours.dtype and ours.grad.shape == ours.shape
            np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=rtol * 10,
                                       atol=rtol)


@pytest.mark.parametrize("dim, keepdim", [(None, False), (0, False), (1, True), ((0, 2), False),
                                          (-1, True)])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_sum_and_mean_match_pytorch(reduction, dim, keepdim):
    x = array((2, 3, 4))
    ours, theirs = Parameter(x), torch.tensor(x, requires_grad=True)
    kwargs = {} if dim is None else {"dim": dim, "keepdim": keepdim}
    out, expected = getattr(ours, reduction)(**kwargs), getattr(theirs, reduction)(**kwargs)
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-12)
    weights = RNG.normal(size=out.shape)
    (out * weights).sum().backward()
    (expected * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-12)


def test_unary_ops_and_comparisons_match_pytorch():
    x = RNG.normal(size=(3, 4))
    ours, theirs = Parameter(x), torch.tensor(x, requires_grad=True)
    out = (-ours + abs(ours)).sum()
    expected = (-theirs + theirs.abs()).sum()
    out.backward()
    expected.backward()
    np.testing.assert_allclose(out.item(), expected.item(), rtol=1e-12)
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy())
    for name in ("lt", "le", "gt", "ge", "eq", "ne"):
        compare = getattr(operator, name)
        result = compare(ours, 0.0)
        assert result.dtype == bool and not result.requires_grad
        np.testing.assert_array_equal(result.data, compare(theirs, 0.0).numpy())


def test_losses_log_like_pytorch_numbers():
    loss, best = Parameter(0.25), 0.5
    assert bool(loss < best) and f"{loss:.3f}" == "0.250" and int(Tensor(3.7)) == 3
    assert (loss < best).item() is True
    with pytest.raises(RuntimeError, match="more than one value is ambiguous"):
        bool(Tensor(np.ones(2)) > 0)
    with pytest.raises(TypeError):
        f"{Tensor(np.ones(2)):.3f}"  # noqa: B018 -- as PyTorch: only 0-d Tensors format


def test_tensors_stay_dict_keys_and_set_members_by_identity():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    table = {a: 1, b: 2}
    assert table[a] == 1 and table[b] == 2 and len({a, b, a}) == 2


@pytest.mark.parametrize("operands", [
    (np.array([1, 2], np.int32), 0.5),  # an integer Tensor and a Python float: the default
    (np.array([1, 2], np.int32), 3),  # an integer Tensor keeps its dtype
    (np.array([True, False]), 2),  # bool and int: int64
    (np.array([1, 2], np.int64), np.array(1.5, np.float32)),  # a 0-d float of higher category
    (np.array([1, 2], np.uint8), np.array([1, 2], np.int8)),
])
def test_result_dtypes_follow_pytorchs_promotion(operands):
    ours = [Tensor(x) if isinstance(x, np.ndarray) else x for x in operands]
    theirs = [torch.tensor(x) if isinstance(x, np.ndarray) else x for x in operands]
    expected = (theirs[0] + theirs[1]).dtype
    assert result_dtype(*ours) == np.dtype(str(expected).removeprefix("torch."))
    assert (Tensor(np.array([1, 2])) / 2).dtype == np.float64  # true division: floats


def test_pow_at_zero_follows_pytorchs_gradient_conventions():
    x = np.array([0.0, 1.0, 2.0])
    ours, theirs = Parameter(x), torch.tensor(x, requires_grad=True)
    e, te = Parameter(np.array([0.0, 2.0, 0.5])), torch.tensor([0.0, 2.0, 0.5],
                                                                requires_grad=True)
    (ours ** e).sum().backward()
    (theirs ** te).sum().backward()
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy())
    np.testing.assert_allclose(e.grad, te.grad.numpy())


def test_no_grad_records_nothing():
    x = Parameter(np.ones(3))
    with no_grad():
        y = x * 2 + 1
    assert not y.requires_grad and y.grad_fn is None
    z = Tensor(np.ones(3)) * 2  # no operand requires grad: nothing to record either
    assert z.grad_fn is None


# -- combining compiled calls -------------------------------------------------------------


@compile_grad
def mse(params, x, y):
    return np.mean((np.tanh(x @ params["W"]) @ params["v"] - y) ** 2)


def torch_mse(params, x, y):
    return ((torch.tanh(torch.tensor(x) @ params["W"]) @ params["v"] - torch.tensor(y)) ** 2
            ).mean()


def test_losses_of_compiled_calls_combine_and_backpropagate_like_pytorch():
    W, v = RNG.normal(size=(3, 2)), RNG.normal(size=2)
    batches = [(RNG.normal(size=(5, 3)), RNG.normal(size=5)) for _ in range(3)]
    params = {"W": Parameter(W), "v": Parameter(v)}
    theirs = {"W": torch.tensor(W, requires_grad=True), "v": torch.tensor(v, requires_grad=True)}
    for build, torch_build in [
        (lambda f: f(params, *batches[0]) + 0.5 * f(params, *batches[1]),
         lambda f: f(theirs, *batches[0]) + 0.5 * f(theirs, *batches[1])),
        (lambda f: sum([f(params, *b) for b in batches]) / len(batches),
         lambda f: sum([f(theirs, *b) for b in batches]) / len(batches)),
        (lambda f: (f(params, *batches[2]) - 1.0) ** 2,
         lambda f: (f(theirs, *batches[2]) - 1.0) ** 2),
        # one result used twice: its two 0-d cotangents are summed before its backward
        ((lambda f: (lambda once: once + once * once)(f(params, *batches[0]))),
         (lambda f: (lambda once: once + once * once)(f(theirs, *batches[0])))),
    ]:
        for p in (*params.values(), *theirs.values()):
            p.grad = None
        loss, expected = build(mse), torch_build(torch_mse)
        loss.backward()
        expected.backward()
        np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-12)
        for key in params:
            np.testing.assert_allclose(params[key].grad, theirs[key].grad.numpy(), rtol=1e-10)


def test_a_training_loop_through_tensor_arithmetic_matches_pytorch_step_by_step():
    # gradient accumulation's `loss / n` and a penalty from another compiled call: backward
    # goes through the general pass, which refills the `.grad` arrays zero_grad() left (the
    # optimizer's compiled step wants stable arrays) but never one the user was handed
    from runtime import optim

    W, v = RNG.normal(size=(3, 2)), RNG.normal(size=2)
    params = {"W": Parameter(W.copy()), "v": Parameter(v.copy())}
    theirs = {"W": torch.tensor(W, requires_grad=True), "v": torch.tensor(v, requires_grad=True)}
    ours_opt = optim.SGD(list(params.values()), lr=0.1, momentum=0.9)
    torch_opt = torch.optim.SGD(list(theirs.values()), lr=0.1, momentum=0.9)
    penalty = compile_grad(lambda p: np.sum(p["W"] ** 2) + np.sum(p["v"] ** 2))
    held = {}
    for step, (x, y) in enumerate((RNG.normal(size=(5, 3)), RNG.normal(size=5))
                                  for _ in range(6)):
        ours_opt.zero_grad()
        torch_opt.zero_grad()
        if step % 2:
            loss = mse(params, x, y) / 4 + 0.01 * penalty(params)
            expected = torch_mse(theirs, x, y) / 4 + 0.01 * sum(
                torch.sum(t ** 2) for t in theirs.values())
        else:
            loss, expected = mse(params, x, y) / 4, torch_mse(theirs, x, y) / 4
        loss.backward()
        expected.backward()
        if step == 3:  # handed out: later steps must leave these arrays as they are
            held = {k: (p.grad, p.grad.copy()) for k, p in params.items()}
        ours_opt.step()
        torch_opt.step()
        np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-12)
        for key in params:
            np.testing.assert_allclose(params[key].data, theirs[key].detach().numpy(),
                                       rtol=1e-12)
    for array_, copy in held.values():
        np.testing.assert_array_equal(array_, copy)
        assert all(array_ is not p.grad for p in params.values())


def test_a_0d_leaf_reached_twice_gets_an_array_gradient_that_clipping_scales():
    from runtime import utils

    b, tb = Parameter(3.0), torch.tensor(3.0, requires_grad=True)
    (b * b).backward()
    (tb * tb).backward()
    assert type(b.grad) is np.ndarray and b.grad.shape == ()
    assert utils.clip_grad_norm_([b], 1.0) == pytest.approx(6.0)
    torch.nn.utils.clip_grad_norm_([tb], 1.0)
    np.testing.assert_allclose(b.grad, tb.grad.numpy(), rtol=1e-6)
    b.zero_grad(set_to_none=False)
    assert b.grad == 0.0


@pytest.mark.parametrize("name", ["sqrt", "exp", "log", "tanh", "sigmoid"])
def test_unary_math_methods_match_pytorch(name):
    x = array((3, 4))  # positive: sqrt and log are defined
    ours, theirs = Parameter(x), torch.tensor(x, requires_grad=True)
    out, expected = getattr(ours, name)(), getattr(theirs, name)()
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-12)
    weights = RNG.normal(size=x.shape)
    (out * weights).sum().backward()
    (expected * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-12)
    assert Tensor(np.arange(3)).sqrt().dtype == np.float64  # integers give floats


KEYS = [1, -1, (slice(None), 2), (Ellipsis, None, 0), slice(None, None, -1),
        np.array([0, 2, 0]), (np.array([0, 1]), np.array([3, 3])), np.array([1, 0, 1], bool)]


@pytest.mark.parametrize("key", KEYS, ids=range(len(KEYS)))
def test_indexing_matches_pytorch_with_repeated_indices_summed(key):
    x = array((3, 4))
    ours, theirs = Parameter(x), torch.tensor(x, requires_grad=True)
    torch_key = tuple(torch.tensor(k) if isinstance(k, np.ndarray) else k for k in key) \
        if isinstance(key, tuple) else torch.tensor(key) if isinstance(key, np.ndarray) else key
    if isinstance(key, slice) and key.step == -1:  # PyTorch has no negative steps: flip
        expected = theirs.flip(0)
    else:
        expected = theirs[torch_key]
    out = ours[key]
    np.testing.assert_array_equal(out.data, expected.detach().numpy())
    weights = RNG.normal(size=out.shape)
    (out * weights).sum().backward()
    (expected * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-12)


def test_a_compiled_result_indexed_and_iterated_backpropagates():
    f = compile_grad(lambda W, x: np.tanh(x @ W), backend="interpreter")
    W = RNG.normal(size=(3, 2))
    x = RNG.normal(size=(4, 3))
    ours, theirs = Parameter(W), torch.tensor(W, requires_grad=True)
    out = f(ours, x)
    loss = out[0].sum() + sum(row.sum() for row in out) + out[Tensor(np.array([1, 1]))].sum()
    t_out = torch.tanh(torch.tensor(x) @ theirs)
    t_loss = t_out[0].sum() + sum(row.sum() for row in t_out) + t_out[torch.tensor([1, 1])].sum()
    loss.backward()
    t_loss.backward()
    np.testing.assert_allclose(loss.item(), t_loss.item(), rtol=1e-12)
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-12)
    assert len(out) == 4
    with pytest.raises(TypeError, match="0-d tensor"):
        iter(loss)


def test_plain_arrays_refilled_before_backward_leave_the_gradient_as_at_forward():
    """Backward read the caller's own operand and index arrays when it ran: a batch buffer
    or index array refilled between forward and backward() changed the gradient silently
    (w * x gave x's new values; w[idx] scattered at the new indices)."""
    x = np.array([1.0, 2.0, 3.0])
    w = Parameter(np.full(3, 2.0))
    loss = (w * x).sum() + (x / w).sum()
    x[:] = 100.0
    loss.backward()
    np.testing.assert_array_equal(w.grad, [0.75, 1.5, 2.25])  # x - x / w**2 at forward
    idx, rows, mask = np.array([0, 0, 1]), [0, 0, 1], np.array([True, False, True, False])
    v = Parameter(np.ones((2, 4)))
    out = v[1, idx].sum() + 10 * v[0, rows].sum() + 100 * v[1][mask].sum()
    idx[:] = 3
    rows[0] = 3
    mask[:] = True
    out.backward()
    np.testing.assert_array_equal(v.grad, [[20, 10, 0, 0], [102, 1, 100, 0]])


@pytest.mark.parametrize("name", ["exp", "sqrt", "tanh", "sigmoid", "pow"])
def test_a_result_updated_in_place_before_backward_leaves_its_gradient_as_at_forward(name):
    """exp, sqrt, tanh, sigmoid and ** read their result in backward, the array the user's
    Tensor holds: h.zero_() under no_grad before h.backward() gave a zero gradient silently
    (PyTorch raises there; the node checks only its inputs' versions, so it keeps a copy)."""
    x = array((2, 3))
    ours, theirs = Parameter(x), torch.tensor(x, requires_grad=True)
    out = ours ** ours if name == "pow" else getattr(ours, name)()
    expected = theirs ** theirs if name == "pow" else getattr(theirs, name)()
    with no_grad():
        out.zero_()
    out.backward(np.ones(x.shape))
    expected.backward(torch.ones(x.shape))
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-12)
