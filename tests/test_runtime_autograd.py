"""The backward engine's PyTorch semantics, on graphs built with `record` and hand-written VJPs."""

import gc
import threading
import weakref

import numpy as np
import pytest

from runtime import Parameter, Tensor, autograd, enable_grad, is_grad_enabled, no_grad, record
from runtime.autograd import set_grad_enabled

# -- tiny "compiled functions": a forward in NumPy and its VJP, linked by record ----------


def power(x: Tensor, n: int) -> Tensor:
    a = x.data
    [y] = record([a**n], [x], lambda cts: [n * a ** (n - 1) * cts[0]], f"pow{n}")
    return y


def add(x: Tensor, y: Tensor) -> Tensor:
    [z] = record([x.data + y.data], [x, y], lambda cts: [cts[0], cts[0]], "add")
    return z


def mul(x: Tensor, y: Tensor) -> Tensor:
    a, b = x.data, y.data
    [z] = record([a * b], [x, y], lambda cts: [cts[0] * b, cts[0] * a], "mul")
    return z


def scale(x: Tensor, c: float) -> Tensor:
    [y] = record([c * x.data], [x], lambda cts: [c * cts[0]], "scale")
    return y


def mean(x: Tensor) -> Tensor:
    shape, n = x.shape, x.size
    [y] = record([np.mean(x.data)], [x], lambda cts: [np.full(shape, cts[0] / n)], "mean")
    return y


# -- the seed examples ----------------------------------------------------------------


def test_x_squared_plus_y_cubed():
    x, y = Parameter(2.0), Parameter(3.0)
    z = add(power(x, 2), power(y, 3))
    assert z.item() == 31.0
    z.backward()
    assert x.grad == 4.0 and y.grad == 27.0
    assert x.grad.dtype == np.float64 and x.grad.shape == ()


def test_gradients_accumulate_until_zeroed():
    x = Parameter(2.0)
    power(x, 2).backward()
    assert x.grad == 4.0
    power(x, 3).backward()
    assert x.grad == 16.0  # 4 + 12
    x.zero_grad(set_to_none=False)
    assert x.grad == 0.0
    x.zero_grad()
    assert x.grad is None


def test_retain_graph_allows_a_second_backward_and_then_raises():
    x = Parameter(2.0)
    y = power(x, 3)
    y.backward(retain_graph=True)
    assert x.grad == 12.0
    x.zero_grad()
    y.backward()
    assert x.grad == 12.0
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        y.backward()
    assert x.grad == 12.0  # the failed pass touched nothing


def test_gradient_argument_for_a_non_scalar_output():
    x = Parameter(np.array([2.0, 3.0]))
    y = power(x, 2)
    y.backward(gradient=[1, 1])  # ints are cast to the output's dtype
    np.testing.assert_array_equal(x.grad, [4.0, 6.0])
    y2 = power(x, 2)
    y2.backward(gradient=Tensor(np.array([1.0, 0.0])))  # a Tensor is accepted too
    np.testing.assert_array_equal(x.grad, [8.0, 6.0])


def test_gradient_masks_select_entries_of_24x_squared():
    x_value = np.array([[1.0, 2.0], [3.0, 4.0]])
    expected = 24 * x_value**2  # d/dx (2x)**3
    for mask in ([[0, 1], [0, 1]], [[1, 1], [0, 0]]):
        x = Parameter(x_value)
        power(scale(x, 2), 3).backward(gradient=np.array(mask, dtype=float))
        np.testing.assert_allclose(x.grad, expected * np.array(mask))
    x = Parameter(x_value)
    out = mean(power(scale(x, 2), 3))
    out.backward(retain_graph=True)
    np.testing.assert_allclose(x.grad, expected / 4)
    with pytest.raises(RuntimeError, match=r"shape of \(2, 2\).*shape of \(\)"):
        out.backward(gradient=np.ones((2, 2)))


def test_mean_absolute_error_example():
    inputs, targets = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([5.0, 6.0])
    coeffs = Parameter(np.array([0.5, 0.5]))
    residual = inputs @ coeffs.data - targets
    loss_value = np.mean(np.abs(residual))

    def vjp(cts):
        return [inputs.T @ np.sign(residual) * cts[0] / len(targets)]

    [loss] = record([loss_value], [coeffs], vjp, "mae")
    assert loss.item() == 3.0
    loss.backward()
    np.testing.assert_array_equal(coeffs.grad, [-2.0, -3.0])


# -- errors ---------------------------------------------------------------------------


def test_non_scalar_backward_without_gradient_says_what_to_pass():
    y = power(Parameter(np.array([2.0, 3.0])), 2)
    with pytest.raises(RuntimeError, match=r"only for scalar outputs.*gradient=.*\(2,\)"):
        y.backward()


def test_one_element_outputs_seed_implicitly():
    x = Parameter(np.array([3.0]))
    power(x, 2).backward()
    np.testing.assert_array_equal(x.grad, [6.0])


def test_backward_on_a_tensor_that_does_not_require_grad():
    with pytest.raises(RuntimeError, match="element 0 of tensors does not require grad"):
        Tensor(np.array(1.0)).backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        power(Parameter(2.0, requires_grad=False), 2).backward()


def test_wrong_gradient_shape_from_a_backward_callable_names_the_node():
    x = Parameter(np.ones(3))
    [y] = record([np.sum(x.data)], [x], lambda cts: [np.ones(2)], "broken_sum")
    with pytest.raises(RuntimeError, match=r"broken_sum.*\(2,\).*\(3,\)"):
        y.backward()
    [z] = record([np.sum(x.data)], [x], lambda cts: [np.ones(3), np.ones(3)], "two_grads")
    with pytest.raises(RuntimeError, match="two_grads returned 2 gradients, expected 1"):
        z.backward()


# -- graph structure ------------------------------------------------------------------


def test_chain_of_two_nodes():
    x = Parameter(2.0)
    z = power(power(x, 2), 3)  # x**6
    z.backward()
    assert z.item() == 64.0 and x.grad == 192.0  # 6 x**5


def test_node_with_two_outputs_runs_once_with_both_cotangents():
    calls = []

    def sincos(x):
        a = x.data

        def vjp(cts):
            calls.append([c.copy() for c in cts])
            return [np.cos(a) * cts[0] - np.sin(a) * cts[1]]

        return record([np.sin(a), np.cos(a)], [x], vjp, "sincos")

    x = Parameter(np.array([0.3, 1.1]))
    s, c = sincos(x)
    assert s.grad_fn is c.grad_fn and (s.output_nr, c.output_nr) == (0, 1)
    add(s, scale(c, 2.0)).backward(gradient=np.ones(2))
    assert len(calls) == 1
    np.testing.assert_allclose(x.grad, np.cos(x.data) - 2 * np.sin(x.data))

    calls.clear()
    x.zero_grad()
    s, c = sincos(x)
    s.backward(gradient=np.ones(2))  # c got no gradient: its cotangent is zeros
    np.testing.assert_array_equal(calls[0][1], np.zeros(2))
    np.testing.assert_allclose(x.grad, np.cos(x.data))


def test_fan_out_sums_cotangents_before_the_producer_runs():
    calls = []
    x = Parameter(3.0)
    a = x.data
    [y] = record([a**2], [x], lambda cts: calls.append(cts[0]) or [2 * a * cts[0]], "sq")
    add(scale(y, 2.0), scale(y, 3.0)).backward()
    assert calls == [5.0]
    assert x.grad == 30.0


def test_same_leaf_in_two_positions_and_partial_inputs():
    x = Parameter(3.0)
    mul(x, x).backward()
    assert x.grad == 6.0
    # An input that needs no gradient: its edge is None and its gradient is dropped.
    w, c = Parameter(2.0), Tensor(np.array(5.0))
    z = mul(w, c)
    assert z.requires_grad
    z.backward()
    assert w.grad == 5.0 and c.grad is None
    # A plain array position (None in `inputs`).
    [y] = record([w.data * 4.0], [w, None], lambda cts: [4.0 * cts[0], None], "mul_const")
    y.backward()
    assert w.grad == 9.0


def test_backward_of_several_roots_and_of_a_leaf():
    x = Parameter(2.0)
    autograd.backward([power(x, 2), power(x, 3)])
    assert x.grad == 16.0
    x.backward()
    assert x.grad == 17.0


def test_backward_of_one_tensor_not_in_a_list_as_pytorch():
    # autograd.backward(loss) failed 'iteration over a 0-d tensor'; a dimensioned root was
    # taken row by row, and its gradient (a Tensor or array) row by row with it
    x = Parameter(np.array([1.0, 2.0]))
    autograd.backward(mean(power(x, 2)))
    np.testing.assert_array_equal(x.grad, [1.0, 2.0])
    autograd.backward(power(x, 2), np.array([1.0, 3.0]))
    np.testing.assert_array_equal(x.grad, [3.0, 14.0])
    autograd.backward(power(x, 2), Tensor(np.array([1.0, 1.0])))
    np.testing.assert_array_equal(x.grad, [5.0, 18.0])
    with pytest.raises(RuntimeError, match="grad_tensors has 1 entries, but there are 2"):
        autograd.backward([power(x, 2), power(x, 3)], [None])


def test_integer_outputs_never_require_grad():
    x = Parameter(np.array([0.5, 2.0]))
    y, idx = record([x.data * 2, np.argmax(x.data)], [x], lambda cts: [2 * cts[0]], "f")
    assert y.requires_grad and not idx.requires_grad and idx.grad_fn is None


def test_a_pass_frees_the_residuals_unless_retain_graph():
    x = Parameter(np.arange(3.0))
    residual = x.data * 2
    probe = weakref.ref(residual)
    [y] = record([np.sum(residual)], [x], lambda cts, r=residual: [r * 0 + 2 * cts[0]], "f")
    del residual
    y.backward(retain_graph=True)
    gc.collect()
    assert probe() is not None and not y.grad_fn.released
    y.backward()
    gc.collect()
    assert probe() is None and y.grad_fn.released


def test_gradients_never_alias_arrays_handed_out():
    x = Parameter(np.array([1.0, 2.0]))
    seed = np.array([1.0, 1.0])
    kept = np.array([7.0, 7.0])
    [y] = record([x.data + 0], [x], lambda cts: [kept], "f")
    y.backward(gradient=seed)
    assert x.grad is not kept and x.grad is not seed
    [z] = record([x.data + 0], [x], lambda cts: [kept], "g")
    z.backward(gradient=seed)
    np.testing.assert_array_equal(kept, [7.0, 7.0])  # accumulation wrote into x.grad only
    np.testing.assert_array_equal(x.grad, [14.0, 14.0])


def test_float32_stays_float32_and_gradients_are_cast_to_the_input_dtype():
    x = Parameter(np.array([1.0, 2.0], dtype=np.float32))
    [y] = record([x.data * 3], [x], lambda cts: [np.full(2, 3.0)], "f")  # float64 gradient
    assert y.dtype == np.float32
    y.backward(gradient=np.ones(2))
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])


# -- grad mode ------------------------------------------------------------------------


def test_no_grad_saves_nothing_and_the_result_cannot_backpropagate():
    x = Parameter(2.0)
    with no_grad():
        assert not is_grad_enabled()
        y = power(x, 2)
        with enable_grad():
            assert power(x, 2).requires_grad
    assert is_grad_enabled()
    assert y.item() == 4.0 and not y.requires_grad and y.grad_fn is None and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_grad_mode_decorators_and_set_grad_enabled():
    @no_grad
    def bare(x):
        return power(x, 2)

    @no_grad()
    def called(x):
        return power(x, 2)

    @enable_grad()
    def enabled(x):
        return power(x, 2)

    x = Parameter(2.0)
    assert not bare(x).requires_grad and not called(x).requires_grad
    with no_grad():
        assert enabled(x).requires_grad
    with set_grad_enabled(False):
        assert not power(x, 2).requires_grad
    assert is_grad_enabled()
    set_grad_enabled(False)
    assert not is_grad_enabled()
    set_grad_enabled(True)

    # As a decorator, as PyTorch's: the mode holds inside the function only (it was 'not
    # callable', and left grad mode off for the rest of the program)
    @set_grad_enabled(False)
    def off(x):
        return is_grad_enabled(), power(x, 2).requires_grad

    assert is_grad_enabled() and off(x) == (False, False) and is_grad_enabled()
    with no_grad():
        on = set_grad_enabled(True)(lambda x: (is_grad_enabled(), power(x, 2).requires_grad))
        assert not is_grad_enabled() and on(x) == (True, True) and not is_grad_enabled()


def test_a_decorated_generator_runs_its_body_in_the_mode_and_the_caller_in_its_own():
    # as PyTorch wraps generators (an evaluation loop that yields batches' losses)
    @no_grad()
    def evaluate(x):
        received = yield is_grad_enabled(), power(x, 2).requires_grad
        yield received, is_grad_enabled()
        return "done"

    x = Parameter(2.0)
    gen = evaluate(x)
    assert next(gen) == (False, False)
    assert is_grad_enabled()  # the caller, between resumptions
    assert gen.send("sent") == ("sent", False)
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "done" and is_grad_enabled()


def test_grad_mode_is_thread_local():
    seen = []
    with no_grad():
        thread = threading.Thread(target=lambda: seen.append(is_grad_enabled()))
        thread.start()
        thread.join()
    assert seen == [True]


# -- retain_grad and hooks ------------------------------------------------------------


def test_retain_grad_keeps_an_intermediate_gradient():
    x = Parameter(2.0)
    y = power(x, 2)
    z = scale(y, 3.0)
    assert y.grad is None and not y.is_leaf
    z.backward(retain_graph=True)
    assert y.grad is None  # only leaves get .grad by default
    x.zero_grad()
    y.retain_grad()
    assert y.retains_grad
    z.backward(retain_graph=True)
    assert y.grad == 3.0 and x.grad == 12.0
    z.backward()
    assert y.grad == 6.0  # retained gradients accumulate too


def test_retain_grad_on_a_root_and_errors():
    x = Parameter(2.0)
    y = power(x, 2)
    y.retain_grad()
    y.backward()
    assert y.grad == 1.0
    with pytest.raises(RuntimeError, match="requires_grad=False"):
        Tensor(np.ones(2)).retain_grad()
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        Tensor(np.ones(2)).register_hook(print)


def test_leaf_hook_sees_the_total_gradient_once_and_may_replace_it():
    x = Parameter(3.0)
    seen = []
    x.register_hook(lambda g: seen.append(float(g)))
    x.register_hook(lambda g: 2 * g)
    add(power(x, 2), scale(x, 4.0)).backward()  # 2x + 4 = 10
    assert seen == [10.0]
    assert x.grad == 20.0


def test_hook_on_an_intermediate_changes_what_flows_upstream():
    x = Parameter(2.0)
    y = power(x, 2)
    order = []
    y.register_hook(lambda g: order.append("first") or g * 10)
    y.register_hook(lambda g: order.append(("second", float(g))))
    y.retain_grad()
    z = scale(y, 3.0)
    del y  # the hook lives on the graph node, not on the Python object
    z.backward()
    assert order == ["first", ("second", 30.0)]
    assert x.grad == 120.0  # 2x * 30


def test_hook_handle_remove():
    x = Parameter(2.0)
    handle = x.register_hook(lambda g: g * 0)
    handle.remove()
    power(x, 2).backward()
    assert x.grad == 4.0


def test_hook_returning_a_wrong_shape_is_an_error():
    x = Parameter(np.ones(2))
    x.register_hook(lambda g: np.ones(3))
    with pytest.raises(RuntimeError, match=r"hook.*\(3,\).*\(2,\)"):
        power(x, 2).backward(gradient=np.ones(2))


# -- Tensor and Parameter -------------------------------------------------------------


def test_parameter_dtypes_and_copies():
    assert Parameter(2.0).dtype == np.float64 and Parameter(2.0).shape == ()
    assert Parameter(np.float32(2.0)).dtype == np.float32
    assert Parameter(np.ones(3, np.float32)).dtype == np.float32
    assert Parameter([1.0, 2.0]).dtype == np.float64
    user = np.array([1.0, 2.0])
    p = Parameter(user)
    p.data[0] = 5.0
    assert user[0] == 1.0  # never aliases the caller's array
    with pytest.raises(RuntimeError, match="only Tensors of floating point dtype"):
        Parameter(2)
    with pytest.raises(RuntimeError, match="floating point"):
        Parameter(np.arange(3))
    assert Parameter(np.arange(3), requires_grad=False).dtype == np.int64


def test_tensor_accessors():
    x = Parameter(np.array([[1.0, 2.0]], dtype=np.float32))
    assert (x.shape, x.ndim, x.dtype) == ((1, 2), 2, np.float32)
    assert x.numpy() is x.data and x.is_leaf and x.grad_fn is None
    assert repr(x) == "Parameter([[1., 2.]], dtype=float32, requires_grad=True)"
    y = power(Parameter(2.0), 2)
    assert repr(y) == "Tensor(4., grad_fn=<pow2>)" and isinstance(y.item(), float)
    with pytest.raises(RuntimeError, match="2 elements cannot be converted"):
        x.item()
    d = y.detach()
    assert d.data is y.data and not d.requires_grad and d.is_leaf
    np.testing.assert_array_equal(np.asarray(x), [[1.0, 2.0]])
    with pytest.raises(RuntimeError, match="leaf variables"):
        y.requires_grad = False
    assert y.requires_grad_() is y and y.grad_fn is not None  # True on a result: a no-op
    with pytest.raises(TypeError):
        np.exp(x)  # would silently leave the graph


@pytest.mark.parametrize("value, message", [
    (np.zeros(3, np.float32), r"assigned grad has dtype float32, but the tensor has dtype float64"),
    (np.zeros(3, np.int64), r"assigned grad has dtype int64, but the tensor has dtype float64"),
    (np.zeros((3, 1)), r"assigned grad has shape \(3, 1\), but the tensor has shape \(3,\)"),
])
def test_assigning_a_grad_of_another_dtype_or_shape_is_refused_as_in_pytorch(value, message):
    p = Parameter(np.ones(3))
    p.grad = np.full(3, 2.0)
    with pytest.raises(RuntimeError, match=message):
        p.grad = value
    assert np.array_equal(p.grad, np.full(3, 2.0))  # the old one stays
    torch = pytest.importorskip("torch")
    q = torch.ones(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError):
        q.grad = torch.from_numpy(value)
