"""Repeated plain-array calls run the last kernel at once; whatever does not fit it (another
dtype, rank, layout, static size or argument count) is refused by numba's dispatcher or by the
kernel's own shape check, before any memory is touched, and takes the general path."""

from __future__ import annotations

import numpy as np
import pytest
from counting import CountingGeneral

from compiler import compile_grad, pytree
from compiler.errors import TraceError
from compiler.fastpath import REFUSED
from runtime import Parameter, no_grad

square_norm = compile_grad(lambda w, x: np.sum((x @ w) ** 2))
W, X = np.ones(3), np.ones((4, 3))


@pytest.fixture(scope="module")
def fast():
    square_norm.value_and_grad(W, X)
    return square_norm._fast["value_and_grad"]


@pytest.mark.parametrize("args", [
    (W, np.ones((9, 2))),  # a static size differs: the kernel's shape check
    (np.ones(4), X),  # the differentiated argument's size
    (W, np.ones((4, 3), np.float32)),  # dtype: numba's dispatcher
    (W, np.ones(4)),  # rank
    (W, np.ones((6, 3))[::2]),  # not contiguous
    (W, [[1.0, 2.0, 3.0]]),  # not an array
    (W,),  # argument count
    (Parameter(W), X),  # a runtime Tensor: the recorded path's business
], ids=["static-size", "wrt-size", "dtype", "rank", "layout", "list", "count", "tensor"])
def test_what_does_not_fit_the_last_kernel_is_refused_without_compiling(fast, args):
    assert fast.run(args) is REFUSED
    assert len(fast.kernel.dispatcher.signatures) == 1


def test_a_new_batch_size_fits_and_gives_the_right_values(fast):
    value, grad = fast.run((W, np.full((9, 3), 2.0)))
    assert value == 9 * 36.0
    np.testing.assert_allclose(grad, np.full(3, 2 * 6.0 * 2 * 9))


def test_refused_calls_take_the_general_path_and_its_answers(fast):
    with pytest.raises(TraceError, match=r"matmul"):
        square_norm.value_and_grad(W, np.ones((9, 2)))
    x32 = np.full((5, 3), 0.5, np.float32)
    value, grad = square_norm.value_and_grad(W.astype(np.float32), x32)
    assert value.dtype == np.float32 and value == np.float32(5 * 1.5**2)
    np.testing.assert_allclose(grad, np.full(3, 2 * 1.5 * 0.5 * 5, np.float32))


# -- trees and keywords: flattened by a function built for the call's structure ------------


def mlp(params, x, y):
    return np.mean((np.tanh(x @ params["W"] + params["b"]) @ params["v"] - y) ** 2)


def mlp_reference(params, x, y):
    h = np.tanh(x @ params["W"] + params["b"])
    r = h @ params["v"] - y
    dh = np.outer(2 * r / r.size, params["v"]) * (1 - h**2)
    return np.mean(r**2), {"W": x.T @ dh, "b": dh.sum(axis=0), "v": h.T @ (2 * r / r.size)}


RNG = np.random.default_rng(3)
PARAMS = {"W": RNG.normal(size=(3, 2)), "b": RNG.normal(size=2), "v": RNG.normal(size=2)}
XS, YS = RNG.normal(size=(5, 3)), RNG.normal(size=5)


def assert_value_and_grads(result, params, x, y):
    value, grads = result
    expected, expected_grads = mlp_reference(params, x, y)
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    assert list(grads) == list(params)  # the structure (and key order) of the argument
    for key, g in expected_grads.items():
        np.testing.assert_allclose(grads[key], g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("call", [
    lambda f, p, x, y: f(p, x, y),
    lambda f, p, x, y: f(p, x, y=y),
    lambda f, p, x, y: f(p, y=y, x=x),  # keywords in another order than the signature's
    lambda f, p, x, y: f(params=p, x=x, y=y),
], ids=["positional", "keyword", "reordered-keywords", "all-keywords"])
def test_dict_and_keyword_calls_are_fast_and_give_the_general_paths_values(call):
    counting = CountingGeneral(mlp)
    for n in (5, 4, 5):  # a new batch size stays on the fast path
        x, y = XS[:n], YS[:n]
        assert_value_and_grads(call(counting.f.value_and_grad, PARAMS, x, y), PARAMS, x, y)
    assert counting.general == 1
    value = call(counting.f, PARAMS, XS, YS)
    call(counting.f, PARAMS, XS, YS)
    assert counting.general == 2
    np.testing.assert_allclose(value, mlp_reference(PARAMS, XS, YS)[0], rtol=1e-12)


def test_a_call_made_another_way_takes_the_general_path():
    counting = CountingGeneral(mlp)
    counting.f.value_and_grad(PARAMS, XS, y=YS)
    swapped = {"b": PARAMS["b"], "W": PARAMS["W"], "v": PARAMS["v"]}
    assert_value_and_grads(counting.f.value_and_grad(swapped, XS, y=YS), swapped, XS, YS)
    assert_value_and_grads(counting.f.value_and_grad(PARAMS, XS, YS), PARAMS, XS, YS)
    assert_value_and_grads(counting.f.value_and_grad(PARAMS, y=YS, x=XS), PARAMS, XS, YS)
    assert counting.general == 4
    with pytest.raises(Exception, match="argument"):
        counting.f.value_and_grad(PARAMS, XS, z=YS)


def test_calls_that_alternate_patterns_keep_each_patterns_fast_path():
    # a training loop's dict call, an evaluation's keywords, a call with the arguments
    # reordered: each pattern goes the general way once, then alternating costs nothing
    counting = CountingGeneral(mlp)
    swapped = {"b": PARAMS["b"], "W": PARAMS["W"], "v": PARAMS["v"]}
    patterns = [(lambda f: f(PARAMS, XS, YS), PARAMS), (lambda f: f(PARAMS, x=XS, y=YS), PARAMS),
                (lambda f: f(swapped, XS, y=YS), swapped)]
    for _ in range(3):
        for call, params in patterns:
            assert_value_and_grads(call(counting.f.value_and_grad), params, XS, YS)
            np.testing.assert_allclose(call(counting.f), mlp_reference(PARAMS, XS, YS)[0],
                                       rtol=1e-12)
    assert counting.general == 2 * len(patterns)


def test_recorded_calls_that_alternate_patterns_keep_each_patterns_fast_path():
    # Parameters one call, Parameters and keywords the next: both recorded for backward
    counting = CountingGeneral(mlp)
    params = {k: Parameter(v) for k, v in PARAMS.items()}
    expected, expected_grads = mlp_reference(PARAMS, XS, YS)
    for step in range(1, 4):
        counting.f(params, XS, YS).backward()
        counting.f(params, x=XS, y=YS).backward()
        for key, g in expected_grads.items():
            np.testing.assert_allclose(params[key].grad, 2 * step * g, rtol=1e-10)
    assert counting.general == 2
    # under no_grad nothing is recorded, and the fast paths stay as they were
    with no_grad():
        np.testing.assert_allclose(counting.f(params, XS, YS).item(), expected, rtol=1e-12)
    counting.f(params, XS, YS).backward()
    np.testing.assert_allclose(params["W"].grad, 7 * expected_grads["W"], rtol=1e-10)


def test_var_positional_and_var_keyword_arguments_are_fast():
    def total(w, *xs, **named):
        return np.sum(w * sum(xs)) + sum(np.sum(v * w) for v in named.values())

    counting = CountingGeneral(total)
    w, a, b, c = np.ones(2), np.array([1.0, 2.0]), np.array([3.0, 4.0]), np.array([5.0, 7.0])
    for _ in range(2):
        value, grad = counting.f.value_and_grad(w, a, b, scale=c)
        assert value == 10.0 + 12.0 and np.array_equal(grad, a + b + c)
    assert counting.general == 1


@pytest.mark.parametrize("tree, other, same", [
    ({"a": 1, "b": (2, [3])}, {"a": 4, "b": (5, [6])}, True),
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}, False),  # key order decides which leaf is which
    ({"a": 1}, {"a": 1, "b": 2}, False),
    ((1, 2), [1, 2], False),
    ([1, 2], [1, 2, 3], False),
    ((1, None), (1, None), True),
    ((1, None), (1, 2), False),
    ([{"W": 1, "b": 2}, {"W": 3, "b": 4}], [{"W": 5, "b": 6}, {"W": 7, "b": 8}], True),
    ([{"W": 1, "b": 2}, {"W": 3, "b": 4}], [{"W": 5, "b": 6}, {"b": 7, "W": 8}], False),
])
def test_flattener_and_unflattener_of_one_structure(tree, other, same):
    leaves, treedef = pytree.flatten(tree)
    flatten, rebuild = pytree.flattener(treedef), pytree.unflattener(treedef)
    assert flatten(tree) == leaves and rebuild(leaves) == tree
    result = flatten(other)
    assert (result == pytree.flatten(other)[0] and rebuild(result) == other) if same \
        else result is None
