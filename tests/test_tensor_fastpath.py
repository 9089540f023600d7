"""Repeated calls with runtime Tensors run the last recorded kernels without the general path;
every call whose arguments differ in a way the kernels do not check (the tree, a Tensor's class
or requires_grad, grad mode, keywords) or do check (dtypes, shapes) takes the general path, and
both give the same values, gradients and errors."""

from __future__ import annotations

import numpy as np
import pytest
from counting import CountingGeneral

from compiler import compile_grad, pytree
from compiler.errors import ArgumentError
from compiler.fastpath import REFUSED
from runtime import Parameter, Tensor, no_grad, optim


def mlp_loss(params, x, y):
    h = np.tanh(x @ params["W"] + params["b"])
    return np.mean((h @ params["v"] - y) ** 2)


def reference(W, b, v, x, y):
    """mlp_loss and its gradients in NumPy, for (W, b, v) arrays."""
    h = np.tanh(x @ W + b)
    r = h @ v - y
    loss = np.mean(r**2)
    dr = 2 * r / r.size
    dh = np.outer(dr, v) * (1 - h**2)
    return loss, {"W": x.T @ dh, "b": dh.sum(axis=0), "v": h.T @ dr}


def make_params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {"W": Parameter(rng.normal(size=(3, 2)).astype(dtype)),
            "b": Parameter(rng.normal(size=2).astype(dtype)),
            "v": Parameter(rng.normal(size=2).astype(dtype))}


def data(n=5, seed=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)).astype(dtype), rng.normal(size=n).astype(dtype)


def check(params, x, y, loss, rtol=1e-10):
    expected, grads = reference(*(params[k].data for k in "Wbv"), x, y)
    np.testing.assert_allclose(loss.item(), expected, rtol=rtol)
    for k, g in grads.items():
        np.testing.assert_allclose(params[k].grad, g, rtol=rtol, atol=rtol)


class Counting(CountingGeneral):
    """A compiled mlp_loss whose general path counts its calls (fast calls do not bind)."""

    def __init__(self, fn=mlp_loss, **options):
        super().__init__(fn, **options)

    def step(self, params, *rest, **kwargs):
        for p in params.values():
            p.zero_grad()
        loss = self.f(params, *rest, **kwargs)
        loss.backward()
        return loss


@pytest.fixture
def counting():
    return Counting()


def test_a_repeated_call_skips_the_general_path_and_gives_the_same_values(counting):
    params, (x, y) = make_params(), data()
    check(params, x, y, counting.step(params, x, y))
    assert counting.general == 1 and counting.f._tensor_call is not None
    for _ in range(3):
        check(params, x, y, counting.step(params, x, y))
    assert counting.general == 1
    assert counting.f.source("backward") == counting.f._last.kernel("backward").source


def test_another_dict_of_the_same_structure_is_fast_and_its_parameters_get_the_grads(counting):
    first, (x, y) = make_params(0), data()
    counting.step(first, x, y)
    second = make_params(7)
    check(second, x, y, counting.step(second, x, y))
    assert counting.general == 1
    assert all(p.grad is not None for p in second.values())


def test_a_new_batch_size_is_fast(counting):
    params, (x, y) = make_params(), data(5)
    counting.step(params, x, y)
    x9, y9 = data(9, seed=3)
    check(params, x9, y9, counting.step(params, x9, y9))
    assert counting.general == 1


@pytest.mark.parametrize("change", [
    "key added", "keys reordered", "dict subclass", "list for dict",
    "plain array for a Parameter", "Parameter for the data", "Tensor for a Parameter",
])
def test_another_tree_or_pattern_takes_the_general_path(counting, change):
    params, (x, y) = make_params(), data()
    counting.step(params, x, y)
    args = {
        "key added": ({**params, "extra": Parameter(1.0)}, x, y),
        "keys reordered": ({k: params[k] for k in "vbW"}, x, y),
        "dict subclass": (type("Params", (dict,), {})(params), x, y),
        "list for dict": ([params["W"]], x, y),
        "plain array for a Parameter": ({**params, "v": params["v"].data}, x, y),
        "Parameter for the data": (params, Parameter(x), y),
        "Tensor for a Parameter": ({**params, "b": Tensor(params["b"].data)}, x, y),
    }[change]
    call = counting.f._tensor_call
    assert call.run(args) is REFUSED
    if change == "list for dict":
        with pytest.raises(TypeError):  # the general path's own answer: params["W"] of a list
            counting.f(*args)
        return
    for p in params.values():
        p.zero_grad()
    loss = counting.f(*args)
    loss.backward()
    assert counting.general == 2
    expected, grads = reference(*(params[k].data for k in "Wbv"), x, y)
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-10)
    if change == "Tensor for a Parameter":
        assert params["b"].grad is None  # a Tensor that does not require grad
    elif change == "plain array for a Parameter":
        assert params["v"].grad is None
        np.testing.assert_allclose(params["W"].grad, grads["W"], rtol=1e-10)
    else:
        for k in "Wbv":
            np.testing.assert_allclose(params[k].grad, grads[k], rtol=1e-10)


def test_requires_grad_toggled_takes_the_general_path_once(counting):
    params, (x, y) = make_params(), data()
    counting.step(params, x, y)
    params["b"].requires_grad = False
    loss = counting.step(params, x, y)
    assert counting.general == 2 and params["b"].grad is None
    np.testing.assert_allclose(params["W"].grad, reference(*(params[k].data for k in "Wbv"),
                                                           x, y)[1]["W"], rtol=1e-10)
    params["b"].requires_grad = True  # the first call's fast path (it is kept) takes it
    check(params, x, y, counting.step(params, x, y))
    assert counting.general == 2 and loss.requires_grad


def test_no_grad_takes_the_general_path_and_records_nothing(counting):
    params, (x, y) = make_params(), data()
    counting.step(params, x, y)
    with no_grad():
        out = counting.f(params, x, y)
    assert counting.general == 2 and not out.requires_grad and out.grad_fn is None
    np.testing.assert_allclose(out.item(), reference(*(params[k].data for k in "Wbv"), x, y)[0])
    check(params, x, y, counting.step(params, x, y))  # and the fast path again after it
    assert counting.general == 2


def test_an_evaluation_loop_under_no_grad_is_fast_and_records_nothing(counting):
    params, (x, y) = make_params(), data()
    counting.step(params, x, y)
    grads = {k: p.grad.copy() for k, p in params.items()}
    for n in (5, 4, 5):  # validation batches of other sizes stay on the fast path
        with no_grad():
            out = counting.f(params, x[:n], y[:n])
        assert type(out) is Tensor and not out.requires_grad and out.grad_fn is None
        expected = reference(*(params[k].data for k in "Wbv"), x[:n], y[:n])[0]
        np.testing.assert_allclose(out.item(), expected, rtol=1e-12)
    assert counting.general == 2
    # Tensors that require no grad record nothing with grad mode on either
    frozen = {k: Tensor(p.data) for k, p in params.items()}
    for _ in range(2):
        out = counting.f(frozen, x, y)
        assert not out.requires_grad and out.grad_fn is None
    assert counting.general == 3
    # once a Parameter is among them, the call is recorded, and backward reaches it
    mixed = {**frozen, "v": params["v"]}
    counting.f(mixed, x, y).backward()
    assert counting.general == 4
    _, expected_grads = reference(*(params[k].data for k in "Wbv"), x, y)
    np.testing.assert_allclose(params["v"].grad, grads["v"] + expected_grads["v"], rtol=1e-10)
    for k in "Wb":  # untouched by every call since the step
        np.testing.assert_array_equal(params[k].grad, grads[k])
    # a Parameter's array replaced by one of another dtype is refused by numba: general path
    params["W"].data = params["W"].data.astype(np.float32)
    with no_grad():
        out = counting.f(params, x, y)
    assert counting.general == 5 and out.dtype == np.float64
    np.testing.assert_allclose(
        out.item(), reference(*(params[k].data.astype(np.float64) for k in "Wbv"), x, y)[0],
        rtol=1e-6)


def test_keywords_take_the_general_path():
    def scaled_loss(params, x, y, scale=1.0):
        return scale * mlp_loss(params, x, y)

    counting = Counting(scaled_loss)
    params, (x, y) = make_params(), data()
    counting.step(params, x, y)
    check(params, x, y, counting.step(params, x, y=y))
    loss = counting.step(params, x, y, scale=2.0)  # as many positional arguments as before
    assert counting.general == 3
    expected, grads = reference(*(params[k].data for k in "Wbv"), x, y)
    np.testing.assert_allclose(loss.item(), 2 * expected, rtol=1e-10)
    np.testing.assert_allclose(params["v"].grad, 2 * grads["v"], rtol=1e-10)


def test_replaced_data_of_the_same_dtype_and_shape_is_read_afresh(counting):
    params, (x, y) = make_params(), data()
    counting.step(params, x, y)
    params["W"].data = np.full((3, 2), 0.25)
    check(params, x, y, counting.step(params, x, y))
    assert counting.general == 1


def test_replaced_data_of_another_dtype_is_refused_by_numba():
    counting = Counting()
    params, (x, y) = make_params(dtype=np.float32), data(dtype=np.float32)
    counting.step(params, x, y)
    for p in params.values():
        p.data = p.data.astype(np.float64)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    loss = counting.step(params, x64, y64)
    assert counting.general == 2 and loss.dtype == np.float64
    assert params["W"].grad.dtype == np.float64
    check(params, x64, y64, loss)


def test_replaced_data_of_another_shape_is_refused_by_the_kernel():
    @compile_grad
    def norm_plus(params, x):
        return np.sum(params["w"] ** 2) + np.sum(x)

    params, x = {"w": Parameter(np.ones(3))}, np.ones(4)
    norm_plus(params, x).backward()
    params["w"].data = np.arange(5.0)
    params["w"].zero_grad()
    fast = norm_plus._tensor_call
    assert fast.run((params, x)) is REFUSED
    loss = norm_plus(params, x)
    loss.backward()
    assert loss.item() == 30.0 + 4.0
    np.testing.assert_array_equal(params["w"].grad, 2 * np.arange(5.0))
    assert norm_plus._tensor_call is not fast


def test_scalar_leaves_are_converted_like_the_general_path_and_their_type_is_checked():
    @compile_grad
    def scaled(params, c):
        return c * np.sum(params["w"] ** 2)

    params = {"w": Parameter(np.array([1.0, 2.0]))}
    scaled(params, 2.0).backward()
    fast = scaled._tensor_call
    params["w"].zero_grad()
    out = scaled(params, 3.0)
    assert scaled._tensor_call is fast and out.item() == 15.0
    out.backward()
    np.testing.assert_array_equal(params["w"].grad, [6.0, 12.0])
    assert fast.run((params, 3)) is REFUSED  # an int is another type of leaf
    assert scaled(params, 3).item() == 15.0


def test_gradients_accumulate_and_retain_graph_is_required_through_the_fast_path(counting):
    params, (x, y) = make_params(), data()
    counting.step(params, x, y)
    grads = {k: p.grad.copy() for k, p in params.items()}
    loss = counting.f(params, x, y)
    assert counting.general == 1
    loss.backward(retain_graph=True)
    loss.backward()
    for k, p in params.items():
        np.testing.assert_allclose(p.grad, 3 * grads[k], rtol=1e-12)
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        loss.backward()


def test_version_checks_hold_through_the_fast_path():
    @compile_grad
    def weighted(params, x):
        return np.sum(np.tanh(x @ params["w"]) * params["v"])

    rng = np.random.default_rng(2)
    params = {"w": Parameter(rng.normal(size=(3, 2))), "v": Parameter(rng.normal(size=2))}
    frozen_x = Tensor(rng.normal(size=(4, 3)))  # read by backward, needs no gradient
    opt = optim.SGD(params, lr=0.1)
    weighted(params, frozen_x).backward()
    loss = weighted(params, frozen_x)
    assert weighted._tensor_call.run((params, frozen_x)) is not REFUSED
    opt.step()
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation.*input 0"):
        loss.backward()
    loss = weighted(params, frozen_x)
    frozen_x._version += 1  # what an in-place update by the library does
    with pytest.raises(RuntimeError, match="an input saved for backward"):
        loss.backward()


def test_parameters_in_lists_and_tuples_are_fast():
    @compile_grad
    def nested(layers, x):
        (W, b), scale = layers
        return np.sum(scale * np.tanh(x @ W + b))

    rng = np.random.default_rng(4)
    W, b, scale = Parameter(rng.normal(size=(3, 2))), Parameter(np.zeros(2)), Parameter(2.0)
    x = rng.normal(size=(4, 3))
    nested([(W, b), scale], x).backward()
    fast = nested._tensor_call
    for p in (W, b, scale):
        p.zero_grad()
    nested([(W, b), scale], x).backward()
    assert nested._tensor_call is fast
    t = np.tanh(x @ W.data + b.data)
    np.testing.assert_allclose(W.grad, x.T @ (2.0 * (1 - t**2)), rtol=1e-12)
    np.testing.assert_allclose(scale.grad, np.sum(t), rtol=1e-12)
    assert fast.run(([[W, b], scale], x)) is REFUSED  # a list where there was a tuple


def test_parameters_passed_one_by_one_get_the_generated_fast_path():
    """loss(W, b, x): positional Tensors and arrays, no tree. The generated `run` serves it
    (it took the general `_run`, about 0.9 us more per step), refusing other classes."""
    @compile_grad
    def flat(W, b, x):
        return np.sum(np.tanh(x @ W + b) ** 2)

    rng = np.random.default_rng(5)
    W, b, x = Parameter(rng.normal(size=(3, 2))), Parameter(np.zeros(2)), rng.normal(size=(4, 3))
    flat(W, b, x).backward()
    fast = flat._tensor_call
    assert "def run(args" in fast.run.source
    for _ in range(2):
        W.zero_grad()
        b.zero_grad()
        flat(W, b, x).backward()
    assert flat._tensor_call is fast
    t = np.tanh(x @ W.data + b.data)
    np.testing.assert_allclose(W.grad, x.T @ (2 * t * (1 - t**2)), rtol=1e-12)
    np.testing.assert_allclose(b.grad, np.sum(2 * t * (1 - t**2), axis=0), rtol=1e-12)
    assert fast.run((W, b.data, x)) is REFUSED  # an array where there was a Parameter
    assert fast.run((W, b)) is REFUSED


def test_chains_of_calls_are_fast_and_backpropagate_through_both():
    layer = compile_grad(lambda w, x: np.tanh(x @ w))
    head = compile_grad(lambda h, v: np.sum(h * v))
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 3))
    w, v = Parameter(rng.normal(size=(3, 2))), Parameter(rng.normal(size=2))
    for _ in range(3):  # the second and third calls are fast: a fresh h each time
        w.zero_grad()
        v.zero_grad()
        h = layer(w, x)
        h.retain_grad()
        head(h, v).backward()
        t = np.tanh(x @ w.data)
        np.testing.assert_allclose(v.grad, t.sum(axis=0), rtol=1e-12)
        np.testing.assert_allclose(h.grad, np.broadcast_to(v.data, (5, 2)))
        np.testing.assert_allclose(w.grad, x.T @ ((1 - t**2) * v.data), rtol=1e-12)
    fast = head._tensor_call
    assert fast.run((layer(w, x), v)) is not REFUSED
    assert fast.run((h.detach(), v)) is REFUSED  # a Tensor that does not require grad


def test_wrong_arguments_still_name_the_signature_after_a_fast_call(counting):
    params, (x, y) = make_params(), data()
    counting.step(params, x, y)
    with pytest.raises(ArgumentError, match=r"missing a required argument: 'y'"):
        counting.f(params, x)
    with pytest.raises(ArgumentError, match=r"too many positional arguments"):
        counting.f(params, x, y, y)


def test_several_outputs_and_aux_are_fast():
    f = compile_grad(lambda w: (np.sum(w**2), w.max()), has_aux=True)
    w = Parameter(np.array([1.0, -3.0]))
    f(w)[0].backward()
    fast = f._tensor_call
    w.zero_grad()
    value, aux = f(w)
    assert f._tensor_call is fast and aux.item() == 1.0 and not aux.requires_grad
    value.backward()
    np.testing.assert_array_equal(w.grad, [2.0, -6.0])


def test_inside_a_trace_the_function_is_inlined_not_run(counting):
    params, (x, y) = make_params(), data()
    counting.step(params, x, y)
    runs = []
    fast = counting.f._tensor_call
    fast_run = fast.run
    fast.run = lambda args: runs.append(args) or fast_run(args)
    outer = compile_grad(lambda s: s * counting.f({k: p.data for k, p in params.items()}, x, y))
    value, grad = outer.value_and_grad(2.0)
    expected = reference(*(params[k].data for k in "Wbv"), x, y)[0]
    np.testing.assert_allclose([value, grad], [2 * expected, expected], rtol=1e-10)
    assert runs == []


def test_the_interpreter_backend_has_no_fast_path():
    f = compile_grad(mlp_loss, backend="interpreter")
    params, (x, y) = make_params(), data()
    f(params, x, y).backward()
    assert f._tensor_call is None
    for p in params.values():
        p.zero_grad()
    loss = f(params, x, y)
    loss.backward()
    check(params, x, y, loss)


# -- pytree.leaves_if_shaped: the structure check the fast path relies on ----------------


@pytest.mark.parametrize("tree, other, same", [
    ({"a": 1, "b": (2, [3])}, {"a": 4, "b": (5, [6])}, True),
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}, False),  # key order decides which leaf is which
    ({"a": 1}, {"a": 1, "b": 2}, False),
    ((1, 2), [1, 2], False),
    ([1, 2], [1, 2, 3], False),
    ((1, None), (1, None), True),
    ((1, None), (1, 2), False),
])
def test_leaves_if_shaped(tree, other, same):
    leaves, treedef = pytree.flatten(tree)
    assert pytree.leaves_if_shaped(treedef, tree) == leaves
    result = pytree.leaves_if_shaped(treedef, other)
    assert (result == pytree.flatten(other)[0]) if same else result is None


def test_the_recorded_node_is_the_one_its_constructor_makes(counting):
    """The fast path writes a loss's Node out slot by slot (compiler/recording.py `loss_body`):
    every slot holds what `Node.__init__` puts there for the same call."""
    from runtime.graph import Node

    params, (x, y) = make_params(), data()
    counting.step(params, x, y)
    node = counting.f(params, x, y).grad_fn
    assert counting.general == 1  # the second call was the fast path's
    made = Node(node._backward, node.site, node.tensors, node.output_meta, node.trusted,
                node.backward_into)
    for slot in Node.__slots__:
        if slot != "__weakref__":
            assert getattr(node, slot) == getattr(made, slot), slot
    assert node.versions == [p._version for p in params.values()]
