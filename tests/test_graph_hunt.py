"""Compiled calls composed in the runtime's autograd graph, against PyTorch: seeds and hooks
of any layout, several outputs, losses combined by runtime arithmetic, the fast paths."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_grad, custom_vjp
from runtime import Parameter, Tensor, autograd

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(7)
X = RNG.normal(size=(6, 3))
Y = RNG.normal(size=(6, 2))
W0 = RNG.normal(size=(3, 2))
B0 = RNG.normal(size=2)


@compile_grad
def layer(W, b, x):
    return np.tanh(x @ W + b)


@compile_grad
def mse(h, y):
    return np.mean((h - y) ** 2)


def torch_layer(W, b, x):
    return torch.tanh(torch.as_tensor(x) @ W + b)


def torch_mse(h, y):
    return torch.mean((h - torch.as_tensor(y)) ** 2)


def leaves():
    """The same Parameters for gradfuse and for PyTorch."""
    return (Parameter(W0.copy()), Parameter(B0.copy()),
            torch.tensor(W0, requires_grad=True), torch.tensor(B0, requires_grad=True))


def assert_grads(ours, theirs):
    for p, t in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12, atol=1e-14)


G = RNG.normal(size=(2, 6))
GRADIENTS = {  # backward(gradient=...) as users pass them: numba's kernels take C order only
    "transposed": (G.T, torch.tensor(G).T),
    "broadcast": (np.broadcast_to(np.array([1.0, -2.0]), (6, 2)),
                  torch.tensor([1.0, -2.0]).expand(6, 2)),
    "strided": (np.repeat(G.T, 2, axis=1)[:, ::2], torch.tensor(G.T.copy())),
    "read-only": (np.frombuffer(G.T.tobytes()).reshape(6, 2), torch.tensor(G.T.copy())),
    "float32 transposed": (G.T.astype(np.float32), torch.tensor(G.T.astype(np.float32))),
}


@pytest.mark.parametrize("kind", GRADIENTS)
def test_a_seed_of_any_layout_reaches_the_kernels(kind):
    # backward(gradient=g.T) failed with numba's bare 'No matching definition for argument
    # type(s) ... array(float64, 2d, F)'; PyTorch takes any strides
    gradient, torch_gradient = GRADIENTS[kind]
    W, b, Wt, bt = leaves()
    for _ in range(3):  # the first call, and the fast paths of the next ones
        h, ht = layer(W, b, X), torch_layer(Wt, bt, X)
        h.backward(gradient=gradient, retain_graph=True)
        h.backward(gradient=gradient)  # the same graph again, accumulating
        ht.backward(gradient=torch_gradient.double(), retain_graph=True)
        ht.backward(gradient=torch_gradient.double())
        assert_grads((W, b), (Wt, bt))


def test_a_hook_returning_another_layout_reaches_the_kernels():
    # a hook on a compiled call's output gave a Fortran-ordered gradient: the same TypeError
    W, b, Wt, bt = leaves()
    for _ in range(3):
        h, ht = layer(W, b, X), torch_layer(Wt, bt, X)
        h.register_hook(lambda g: np.asfortranarray(2 * g))
        ht.register_hook(lambda g: 2 * g)
        mse(h, Y).backward()
        torch_mse(ht, Y).backward()
        assert_grads((W, b), (Wt, bt))


@compile_grad
def through_sign_and_a_comparison(p, x):
    # M reaches the loss through np.sign only (PyTorch: SignBackward, a zero gradient), N
    # through a comparison only (PyTorch's graph stops there), V as usual
    return np.sum(np.sign(p["M"]) * x) + np.sum(np.where(p["N"] > 0, x, 0.0)) \
        + np.sum(p["V"] ** 2)


def torch_through_sign_and_a_comparison(p, x):
    x = torch.as_tensor(x)
    return torch.sum(torch.sign(p["M"]) * x) + torch.sum(torch.where(p["N"] > 0, x, 0.0)) \
        + torch.sum(p["V"] ** 2)


def sign_and_comparison_leaves():
    from runtime import optim

    values = {"M": W0, "N": W0[::-1].copy(), "V": B0}
    ours = {k: Parameter(v.copy()) for k, v in values.items()}
    theirs = {k: torch.tensor(v, requires_grad=True) for k, v in values.items()}
    return (ours, optim.AdamW(ours.values(), lr=0.1, weight_decay=0.5),
            theirs, torch.optim.AdamW(theirs.values(), lr=0.1, weight_decay=0.5))


def test_a_parameter_reached_through_a_zero_gradient_op_gets_zeros_and_is_stepped():
    # M's .grad stayed None (np.sign has no gradient rule, which made M "not in the graph"),
    # so AdamW skipped it where PyTorch decays it: 0.05 away after one step
    ours, opt, theirs, torch_opt = sign_and_comparison_leaves()
    x = W0 * 0.5
    for _ in range(3):
        opt.zero_grad()
        torch_opt.zero_grad()
        through_sign_and_a_comparison(ours, x).backward()
        torch_through_sign_and_a_comparison(theirs, x).backward()
        np.testing.assert_array_equal(ours["M"].grad, np.zeros_like(W0))
        assert ours["N"].grad is None and theirs["N"].grad is None
        opt.step()
        torch_opt.step()
        for k in ours:
            np.testing.assert_allclose(ours[k].data, theirs[k].detach().numpy(), rtol=1e-12)


def test_train_step_skips_a_parameter_reached_only_through_a_comparison():
    # train_step stepped N (its zero gradient, AdamW's decay) where PyTorch leaves it alone
    from compiler.training import train_step

    ours, opt, theirs, torch_opt = sign_and_comparison_leaves()
    step = train_step(through_sign_and_a_comparison, ours, opt)
    x = W0 * 0.5
    for _ in range(3):
        step(x)
        torch_opt.zero_grad()
        torch_through_sign_and_a_comparison(theirs, x).backward()
        torch_opt.step()
        for k in ours:
            np.testing.assert_allclose(ours[k].data, theirs[k].detach().numpy(), rtol=1e-12)


@compile_grad
def with_constant_results(W, x):
    return np.sum(W**2), x * 2.0, np.ones(3)


def test_results_that_depend_on_no_parameter_do_not_require_grad():
    # they required grad (PyTorch: False), and backward() from one passed silently, giving
    # no gradient, or said that the graph had been freed
    x = np.arange(3.0)
    W, Wt = Parameter(W0.copy()), torch.tensor(W0, requires_grad=True)
    for _ in range(3):  # the general path, then the fast path
        total, doubled, ones = with_constant_results(W, x)
        assert total.requires_grad and not doubled.requires_grad and not ones.requires_grad
        assert not (torch.as_tensor(x) * 2.0).requires_grad
        np.testing.assert_array_equal(doubled.data, 2 * x)
        for result in (doubled, ones):
            with pytest.raises(RuntimeError, match="does not require grad"):
                result.sum().backward()
        (total + doubled.sum()).backward()
        torch.sum(Wt**2).backward()
        np.testing.assert_allclose(W.grad, Wt.grad.numpy(), rtol=1e-14)


def adam_steps(settled: bool, steps: int = 12):
    """float32 Parameters stepped by AdamW over the same gradients: written into the same
    `.grad` arrays each step (the group settles: its compiled step runs) or given as fresh
    arrays each step (the NumPy rules run)."""
    from runtime import optim

    rng = np.random.default_rng(3)
    shapes = [(5, 7), (7,), (7, 1)]
    params = [Parameter(rng.normal(size=s).astype(np.float32)) for s in shapes]
    opt = optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    for _ in range(steps):
        grads = [rng.normal(size=s).astype(np.float32) for s in shapes]
        for p, g in zip(params, grads):
            if settled and p.grad is not None:
                p.grad[...] = g
            else:
                p.grad = g
        opt.step()
    return [p.data for p in params]


def test_the_compiled_optimizer_step_computes_as_the_numpy_rules_in_float32():
    # the compiled step cast lr and the betas to float32 before computing 1 - beta1 and the
    # like, where the rules (and PyTorch) compute them from Python floats: 3e-7 apart after
    # 12 AdamW steps, depending on whether the loop read .grad (which keeps the group off the
    # compiled step)
    for compiled, rules in zip(adam_steps(True), adam_steps(False), strict=True):
        np.testing.assert_array_equal(compiled, rules)


def test_backward_inputs_that_do_not_require_grad_are_refused_as_in_pytorch():
    # such a Tensor was silently left without a gradient; PyTorch raises
    W, b, Wt, bt = leaves()
    x = Tensor(X)
    loss = mse(layer(W, b, x), Y)
    torch_loss = torch_mse(torch_layer(Wt, bt, torch.tensor(X)), Y)
    with pytest.raises(RuntimeError):
        torch_loss.backward(inputs=[bt, torch.tensor(X)])
    with pytest.raises(RuntimeError, match=r"inputs\[1\] \(shape \(6, 3\)\) does not require grad"):
        loss.backward(inputs=[b, x])
    assert W.grad is None and b.grad is None  # refused before anything ran
    loss.backward(inputs=[b])
    torch_loss.backward(inputs=[bt])
    assert W.grad is None
    np.testing.assert_allclose(b.grad, bt.grad.numpy(), rtol=1e-12)


@compile_grad
def two_results(A, h):
    z = h @ A
    return np.sin(z), np.sum(z**2)


def torch_two_results(A, h):
    z = h @ A
    return torch.sin(z), torch.sum(z**2)


def composed_program(rng, ours, theirs, x0):
    """Random compositions of compiled calls (one of two results, layer, mse) and runtime
    arithmetic (sums, scaling, indexing, flips, means), with retain_grad and hooks that change
    gradients, then one of three kinds of backward; the same in PyTorch. Returns the pairs of
    retained results."""
    (As, b), (torch_As, torch_b) = ours, theirs
    values, torch_values = [Tensor(x0)], [torch.tensor(x0)]
    losses, torch_losses, retained = [], [], []
    for _ in range(int(rng.integers(2, 9))):
        kind, i, k = int(rng.integers(6)), int(rng.integers(len(values))), int(rng.integers(2))
        h, th = values[i], torch_values[i]
        if kind == 0:
            out, torch_out = layer(As[k], b, h), torch_layer(torch_As[k], torch_b, th)
        elif kind == 1:
            (out, total), (torch_out, torch_total) = two_results(As[k], h), \
                torch_two_results(torch_As[k], th)
            losses.append(total)
            torch_losses.append(torch_total)
        elif kind == 2:
            losses.append(mse(h, Y[:3, :1] * np.ones(3)))
            torch_losses.append(torch_mse(th, Y[:3, :1] * np.ones(3)))
            continue
        elif kind == 3:
            j = int(rng.integers(len(values)))
            out, torch_out = h * 0.5 + values[j], th * 0.5 + torch_values[j]
        elif kind == 4:
            losses.append(h.mean() + h[1, 2])
            torch_losses.append(th.mean() + th[1, 2])
            continue
        else:
            out, torch_out = h[::-1] * h, th.flip(0) * th
        values.append(out)
        torch_values.append(torch_out)
        if out.requires_grad and rng.random() < 0.3:
            out.retain_grad()
            torch_out.retain_grad()
            retained.append((out, torch_out))
        if out.requires_grad and rng.random() < 0.2:
            c = float(rng.normal())
            out.register_hook(lambda g, c=c: g * c)
            torch_out.register_hook(lambda g, c=c: g * c)
    pairs = [(a, t) for a, t in zip(losses, torch_losses, strict=True) if a.requires_grad]
    if not pairs:
        return retained
    mode = int(rng.integers(3))
    if mode == 0:
        sum(a for a, _ in pairs).backward()
        sum(t for _, t in pairs).backward()
    elif mode == 1:
        pairs[0][0].backward(retain_graph=True)
        pairs[0][1].backward(retain_graph=True)
        (pairs[-1][0] * 2).backward()
        (pairs[-1][1] * 2).backward()
    else:
        weights = [float(w) for w in rng.normal(size=len(pairs))]
        autograd.backward([a for a, _ in pairs],
                          [np.array(w) for w in weights])
        torch.autograd.backward([t for _, t in pairs],
                                [torch.tensor(w, dtype=torch.float64) for w in weights])
    return retained


@pytest.mark.parametrize("seed", range(4))
def test_random_compositions_of_compiled_calls_match_pytorch(seed):
    # 3 rounds of 10 programs on the same Parameters: general paths first, then fast paths
    rng = np.random.default_rng(seed)
    values = [RNG.normal(size=(3, 3)) * 0.7 for _ in range(2)], RNG.normal(size=3)
    x0 = rng.normal(size=(3, 3))
    ours = [Parameter(a.copy()) for a in values[0]], Parameter(values[1].copy())
    theirs = [torch.tensor(a, requires_grad=True) for a in values[0]], \
        torch.tensor(values[1], requires_grad=True)
    if seed % 2:  # a hook on a Parameter too
        ours[0][0].register_hook(lambda g: g + 1.0)
        theirs[0][0].register_hook(lambda g: g + 1.0)
    for program in range(30):
        retained = composed_program(np.random.default_rng(100 * seed + program % 10), ours,
                                    theirs, x0)
        for p, t in [*zip([*ours[0], ours[1]], [*theirs[0], theirs[1]]), *retained]:
            if t.grad is None:
                assert p.grad is None
            else:
                np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-9, atol=1e-12)


@compile_grad
def dict_loss(p, x, y):
    return np.mean((np.tanh(x @ p["W"] + p["b"]) - y) ** 2)


def test_micro_batches_through_the_fast_and_the_general_paths_accumulate_as_pytorch():
    # the settled backward (one compiled loss), the general one (two compiled calls), runtime
    # arithmetic on the losses, .grad read midway (its array handed out), requires_grad
    # toggled, then AdamW: the trajectory is PyTorch's
    from runtime import optim

    W, b, Wt, bt = leaves()
    ours = {"W": W, "b": b}
    opt = optim.AdamW([W, b], lr=0.05, weight_decay=0.1)
    torch_opt = torch.optim.AdamW([Wt, bt], lr=0.05, weight_decay=0.1)
    for step in range(9):
        opt.zero_grad()
        torch_opt.zero_grad()
        b.requires_grad = bt.requires_grad = step % 4 != 2
        for m in range(3):
            rows = slice(2 * m, 2 * m + 2)
            kind = (step + m) % 3
            if kind == 0:
                loss = dict_loss(ours, X[rows], Y[rows]) / 3
            elif kind == 1:
                loss = mse(layer(W, b, X[rows]), Y[rows]) / 3
            else:
                loss = dict_loss(ours, X[rows], Y[rows]) * (1 / 3)
            loss.backward()
            torch_mse(torch_layer(Wt, bt, X[rows]), Y[rows]).div(3).backward()
            if m == 1 and step % 2:
                np.testing.assert_allclose(W.grad, Wt.grad.numpy(), rtol=1e-12)
        for p, t in ((W, Wt), (b, bt)):
            if t.grad is None:
                assert p.grad is None
            else:
                np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12, atol=1e-15)
        opt.step()
        torch_opt.step()
        np.testing.assert_allclose(W.data, Wt.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(b.data, bt.detach().numpy(), rtol=1e-12)


def test_autograd_grad_returns_gradients_as_torch_autograd_grad_does():
    # torch.autograd.grad was missing: gradients with respect to Parameters, an input Tensor
    # (a saliency map) and an intermediate result, with the leaves' hooks, and no .grad touched
    W, b, Wt, bt = leaves()
    x, xt = Tensor(X.copy(), requires_grad=True), torch.tensor(X, requires_grad=True)
    W.grad, Wt.grad = np.ones_like(W0), torch.ones_like(Wt)
    W.register_hook(lambda g: 2 * g)
    Wt.register_hook(lambda g: 2 * g)
    h, ht = layer(W, b, x), torch_layer(Wt, bt, xt)
    loss, torch_loss = mse(h, Y) + 0.1 * h.sum(), torch_mse(ht, Y) + 0.1 * ht.sum()
    ours = autograd.grad(loss, [W, x, h], retain_graph=True)
    theirs = torch.autograd.grad(torch_loss, [Wt, xt, ht], retain_graph=True)
    for g, t in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(g, t.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(W.grad, np.ones_like(W0))  # left alone, as PyTorch does
    assert b.grad is None and x.grad is None and h.grad is None
    (gb,) = autograd.grad([loss], b)  # freeing the graph this time
    np.testing.assert_allclose(gb, torch.autograd.grad([torch_loss], bt)[0].numpy(), rtol=1e-12)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        autograd.grad(loss, b)

    other = Parameter(B0.copy())
    loss = mse(layer(W, b, X), Y)
    with pytest.raises(RuntimeError, match="appears to not have been used in the graph"):
        autograd.grad(loss, [other, b], retain_graph=True)
    assert autograd.grad(loss, [other, b], allow_unused=True, retain_graph=True)[0] is None
    np.testing.assert_array_equal(
        autograd.grad(loss, other, materialize_grads=True, retain_graph=True)[0], np.zeros(2))
    for call in (lambda: autograd.grad(loss, W, create_graph=True),
                 lambda: loss.backward(create_graph=True)):  # was a bare TypeError
        with pytest.raises(RuntimeError, match=r"create_graph=True\): .* f\.grad"):
            call()


@custom_vjp
def scaled_product(a, b):
    return a * b


@scaled_product.defvjp
def scaled_product_vjp(g, out, a, b):
    return g * b * 10.0, None  # no gradient for b, as a Function's backward returning None


@compile_grad
def through_a_custom_rule(p):  # the Parameters alone: no data argument
    return np.sum(scaled_product(p["a"], p["b"])) + np.sum(p["c"] ** 2)


class TorchScaledProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        (b,) = ctx.saved_tensors
        return g * b * 10.0, None


def custom_rule_leaves():
    from runtime import optim

    values = {"a": B0, "b": B0[::-1].copy(), "c": B0 * 2}
    ours = {k: Parameter(v.copy()) for k, v in values.items()}
    theirs = {k: torch.tensor(v, requires_grad=True) for k, v in values.items()}
    return (ours, optim.AdamW(ours.values(), lr=0.1, weight_decay=0.5),
            theirs, torch.optim.AdamW(theirs.values(), lr=0.1, weight_decay=0.5))


def torch_custom_rule_step(theirs, torch_opt):
    torch_opt.zero_grad()
    loss = torch.sum(TorchScaledProduct.apply(theirs["a"], theirs["b"])) \
        + torch.sum(theirs["c"] ** 2)
    loss.backward()
    torch_opt.step()


def test_a_custom_rule_returning_none_leaves_the_parameter_out_of_the_graph():
    # b got a .grad of zeros (PyTorch: None), so AdamW decayed it: 0.05 away after one step
    ours, opt, theirs, torch_opt = custom_rule_leaves()
    for _ in range(3):
        opt.zero_grad()
        through_a_custom_rule(ours).backward()
        assert ours["b"].grad is None
        opt.step()
        torch_custom_rule_step(theirs, torch_opt)
        for k in ours:
            np.testing.assert_allclose(ours[k].data, theirs[k].detach().numpy(), rtol=1e-12)


def test_train_step_of_a_loss_without_data_and_a_custom_rule_returning_none():
    # step() of a loss of the Parameters alone failed with a bare IndexError from code
    # generation (the fit loop of no rows); and it decayed b as the runtime did
    from compiler.training import train_step

    ours, opt, theirs, torch_opt = custom_rule_leaves()
    step = train_step(through_a_custom_rule, ours, opt)
    for _ in range(3):
        step()
        torch_custom_rule_step(theirs, torch_opt)
        for k in ours:
            np.testing.assert_allclose(ours[k].data, theirs[k].detach().numpy(), rtol=1e-12)
