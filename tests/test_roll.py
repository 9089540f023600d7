"""The loop roller: Python loops in a trace become scans, with the values and gradients of the
unrolled program, and kernels that do not grow with the number of iterations."""

from __future__ import annotations

import numpy as np
from gradcheck import central_differences

from compiler import compile_grad
from compiler.roll import ROLL_MIN_NODES
from compiler.training import train_step
from runtime import Parameter, optim

rng = np.random.default_rng(3)
WIDTH = 6


def deep_params(layers: int, width: int = WIDTH) -> dict:
    return {"W": [rng.normal(size=(width, width)) / np.sqrt(width) for _ in range(layers)],
            "b": [rng.normal(size=width) * 0.1 for _ in range(layers)]}


def deep_net(params, X, y):
    h = X
    for W, b in zip(params["W"], params["b"]):
        h = np.tanh(h @ W + b)
    return np.mean((h - y) ** 2)


X = rng.normal(size=(5, WIDTH))
Y = rng.normal(size=(5, WIDTH))


def scans(graph_text: str) -> list[str]:
    """The scans of a printed graph, not those in their bodies (printed indented)."""
    return [line.strip() for line in graph_text.splitlines()
            if "= scan(" in line and not line.startswith("   ")]


def assert_trees_close(a, b, **tolerance):
    if isinstance(a, dict):
        for key in a:
            assert_trees_close(a[key], b[key], **tolerance)
    elif isinstance(a, (list, tuple)):
        for x, y in zip(a, b):
            assert_trees_close(x, y, **tolerance)
    else:
        np.testing.assert_allclose(a, b, **tolerance)


def test_a_deep_net_rolls_into_one_scan_with_the_unrolled_gradients(unrolled):
    params = deep_params(12)
    f = compile_grad(deep_net, backend="interpreter")
    value, grads = f.value_and_grad(params, X, Y)
    (loop,) = scans(f.ir("forward"))
    assert "12 steps" in loop
    ref_value, ref_grads = unrolled(deep_net)(params, X, Y)
    assert np.isclose(value, ref_value, rtol=1e-14)
    assert_trees_close(grads, ref_grads, rtol=1e-12, atol=1e-15)
    W3 = params["W"][3]

    def with_W3(W):
        return deep_net({"W": params["W"][:3] + [W] + params["W"][4:], "b": params["b"]}, X, Y)

    np.testing.assert_allclose(grads["W"][3], central_differences(with_W3, [W3], 0),
                               rtol=1e-6, atol=1e-9)


# One numba compilation per depth, shared by the tests below.
DEEP = {layers: compile_grad(deep_net) for layers in (12, 36)}


def test_the_kernel_does_not_grow_with_the_number_of_layers():
    sources = {}
    for layers, f in DEEP.items():
        params = deep_params(layers)
        value, grads = f.value_and_grad(params, X, Y)
        ref_value, ref_grads = compile_grad(deep_net, backend="interpreter").value_and_grad(
            params, X, Y)
        assert np.isclose(value, ref_value, rtol=1e-12)
        assert_trees_close(grads, ref_grads, rtol=1e-10, atol=1e-13)
        sources[layers] = f.source("value_and_grad")
    short, deep = sources[12], sources[36]
    assert short.count("\n") == deep.count("\n")  # only the loop's length differs
    # the 2 x layers weights travel as two stacks, and their gradients come back as two
    assert "def deep_net_vjp(W, b, X, y):" in deep
    assert "for t in range(36):" in deep and "for t_2 in range(36 - 1, -1, -1):" in deep


def test_runtime_backward_through_a_rolled_net_matches_the_functional_gradient():
    params = deep_params(12)
    tensors = {"W": [Parameter(w) for w in params["W"]], "b": [Parameter(b) for b in params["b"]]}
    loss = DEEP[12](tensors, X, Y)
    loss.backward()
    _, grads = DEEP[12].value_and_grad(params, X, Y)
    for key in ("W", "b"):
        for p, g in zip(tensors[key], grads[key]):
            np.testing.assert_allclose(p.grad, g, rtol=1e-12)


def test_short_loops_and_layers_that_differ_stay_unrolled():
    few = deep_params(3)
    f = compile_grad(deep_net, backend="interpreter")
    f.value_and_grad(few, X, Y)
    assert 3 * 2 < ROLL_MIN_NODES and not scans(f.ir("forward"))
    widths = [WIDTH, 5, 4, 3, 2, 3, 4, 5, WIDTH, 5, 4, 3, 2, WIDTH]
    varied = {"W": [rng.normal(size=(a, b)) for a, b in zip(widths, widths[1:])],
              "b": [rng.normal(size=b) for b in widths[1:]]}
    f.value_and_grad(varied, X, Y)
    assert not scans(f.ir("forward"))


# --- recurrent nets, simulations, values read after the loop, nested loops -------------------
def rnn(p, xs, y):
    """A Python loop over time reading xs[t]; every step's output enters the loss."""
    h = np.zeros((xs.shape[1], p["U"].shape[0]))
    outputs = []
    for t in range(xs.shape[0]):
        h = np.tanh(xs[t] @ p["W"] + h @ p["U"] + p["b"])
        outputs.append(h.sum(axis=1))
    return np.mean((np.stack(outputs) - y) ** 2) + 0.1 * np.sum(h)


def test_an_rnn_over_slices_reads_the_sequence_itself(unrolled):
    p = {"W": rng.normal(size=(3, 4)) * 0.5, "U": rng.normal(size=(4, 4)) * 0.5,
         "b": rng.normal(size=4) * 0.1}
    xs, y = rng.normal(size=(16, 2, 3)), rng.normal(size=(16, 2))
    f = compile_grad(rnn, backend="interpreter")
    value, grads = f.value_and_grad(p, xs, y)
    forward = f.ir("forward")
    (loop,) = scans(forward)
    assert "16 steps" in loop and "concatenate" not in forward  # xs[t] are rows of xs
    ref_value, ref_grads = unrolled(rnn)(p, xs, y)
    assert np.isclose(value, ref_value, rtol=1e-14)
    assert_trees_close(grads, ref_grads, rtol=1e-12, atol=1e-15)


def euler(v0, x0, k, dt):
    x, v = x0, v0
    for _ in range(40):
        a = -k * x - 0.1 * v
        v = v + dt * a
        x = x + dt * v
    return np.sum(x * x) + 0.5 * np.sum(v * v)


def test_a_simulation_loop_rolls_and_keeps_its_gradient(unrolled):
    v0, x0 = rng.normal(size=5), rng.normal(size=5)
    f = compile_grad(euler, backend="interpreter")
    value, grad = f.value_and_grad(v0, x0, 2.0, 0.05)
    assert "40 steps" in scans(f.ir("forward"))[0]
    np.testing.assert_allclose(grad, central_differences(euler, [v0, x0, 2.0, 0.05], 0),
                               rtol=1e-7, atol=1e-10)
    ref_value, ref_grad = unrolled(euler)(v0, x0, 2.0, 0.05)
    assert np.isclose(value, ref_value, rtol=1e-14)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12)


def blocks(p, x):
    """Nested loops: 6 blocks, each 8 small steps of its own weights, then a normalization."""
    for w, c in zip(p["w"], p["c"]):
        for k in range(8):
            x = np.sin(x * w + c * k)
        x = x / np.sqrt(np.sum(x * x) + 1.0)
    return np.sum(x ** 2)


def test_nested_python_loops_become_nested_scans(unrolled):
    p = {"w": [rng.normal(size=3) for _ in range(6)], "c": [rng.normal() for _ in range(6)]}
    x = rng.normal(size=3)
    f = compile_grad(blocks, backend="interpreter")
    value, grads = f.value_and_grad(p, x)
    (outer,) = scans(f.ir("forward"))
    assert "6 steps" in outer and "8 steps" in f.ir("forward")
    ref_value, ref_grads = unrolled(blocks)(p, x)
    assert np.isclose(value, ref_value, rtol=1e-14)
    assert_trees_close(grads, ref_grads, rtol=1e-12, atol=1e-15)


def shifted_sums(W, b, images):
    """A sum that starts from a smaller, broadcast value: the first step's input is a
    (4, 1, 1) array where every later step reads the (N, 4, 6, 6) sum, so the first step is
    not an iteration of the loop (it once became one, and its scan failed to type-check)."""
    total = b[:, None, None]
    for di in range(4):
        for dj in range(4):
            patch = images[:, :, di:di + 6, dj:dj + 6]
            total = total + np.sum(patch[:, None] * W[None, :, :, di, dj, None, None], axis=2)
    return np.sum(total * total)


def test_a_carry_whose_first_value_has_another_shape_starts_the_loop_one_step_later(unrolled):
    W, b, images = rng.normal(size=(4, 2, 4, 4)), rng.normal(size=4), rng.normal(size=(2, 2, 9, 9))
    f = compile_grad(shifted_sums, backend="interpreter")
    value, grad = f.value_and_grad(W, b, images)
    assert "15 steps" in scans(f.ir("forward"))[0]
    ref_value, ref_grad = unrolled(shifted_sums)(W, b, images)
    assert np.isclose(value, ref_value, rtol=1e-14)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12)


# --- training ---------------------------------------------------------------------------------
def flat_deep_net(params, X, y):
    h = X
    for k in range(len(params) // 2):
        h = np.tanh(h @ params[f"W{k}"] + params[f"b{k}"])
    return np.mean((h - y) ** 2)


def test_a_train_step_on_a_deep_net_updates_stacked_parameters_in_place(unrolled):
    layers = 12
    arrays = {}
    for k in range(layers):
        arrays[f"W{k}"] = rng.normal(size=(WIDTH, WIDTH)) / np.sqrt(WIDTH)
        arrays[f"b{k}"] = rng.normal(size=WIDTH) * 0.1
    params = {k: Parameter(v.copy()) for k, v in arrays.items()}
    step = train_step(flat_deep_net, params, optim.SGD(params, lr=0.1, momentum=0.9))
    reference = unrolled(flat_deep_net)
    velocity = {k: np.zeros_like(v) for k, v in arrays.items()}
    for _ in range(3):
        loss = step(X, Y)
        ref_loss, grads = reference(arrays, X, Y)
        assert np.isclose(loss, ref_loss, rtol=1e-12)
        for k in arrays:  # PyTorch's SGD with momentum
            velocity[k] = 0.9 * velocity[k] + grads[k]
            arrays[k] = arrays[k] - 0.1 * velocity[k]
    for k in arrays:
        np.testing.assert_allclose(params[k].data, arrays[k], rtol=1e-12, atol=1e-14)
    # the weights live in one stack, which the kernel updates in place
    assert params["W3"].data.base is params["W7"].data.base is not None
    source = step.source("step")
    # one loop over the layers in each of the module's two kernels (the step, and fit's loop
    # over minibatches), each with the layer written once: unrolled, 12 layers are ~1,500 lines
    assert source.count("for t in range(12):") == 2 and source.count("\n") < 600


def test_an_adam_step_on_a_deep_net_rolls_its_updates_too(unrolled):
    """Adam's update of a weight, then of a bias, is one iteration of a loop over the layers
    (the same ops recur within an update, so an iteration is not the distance between two
    of them: 30 layers of Adam updates once compiled for minutes)."""
    layers, lr, beta1, beta2, eps = 12, 0.01, 0.9, 0.999, 1e-8
    arrays = {}
    for k in range(layers):
        arrays[f"W{k}"] = rng.normal(size=(WIDTH, WIDTH)) / np.sqrt(WIDTH)
        arrays[f"b{k}"] = rng.normal(size=WIDTH) * 0.1
    params = {k: Parameter(v.copy()) for k, v in arrays.items()}
    step = train_step(flat_deep_net, params, optim.Adam(params, lr=lr))
    reference = unrolled(flat_deep_net)
    m = {k: np.zeros_like(v) for k, v in arrays.items()}
    v = {k: np.zeros_like(a) for k, a in arrays.items()}
    for t in range(1, 4):
        loss = step(X, Y)
        ref_loss, grads = reference(arrays, X, Y)
        assert np.isclose(loss, ref_loss, rtol=1e-12)
        for k in arrays:  # Kingma & Ba, as PyTorch's Adam computes it
            m[k] = beta1 * m[k] + (1 - beta1) * grads[k]
            v[k] = beta2 * v[k] + (1 - beta2) * grads[k] ** 2
            denom = np.sqrt(v[k]) / np.sqrt(1 - beta2 ** t) + eps
            arrays[k] = arrays[k] - lr / (1 - beta1 ** t) * m[k] / denom
    for k in arrays:
        np.testing.assert_allclose(params[k].data, arrays[k], rtol=1e-10, atol=1e-13)
    assert params["W3"].data.base is params["W7"].data.base is not None
    source = step.source("step")
    # the layers' loops are written once in each kernel of the module (the step, and fit's
    # loop over minibatches); unrolled, every one of the 12 layers would be written out
    assert source.count("for t in range(12):") >= 2 and source.count("\n") < 700
