"""Traced gradients of `runtime.functional`'s losses, every reduction, against central
finite differences (float64) and PyTorch: through the interpreter loss by loss, and
through numba in one combined function (one compilation)."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import central_differences

from compiler import compile_grad
from runtime import functional as F

REDUCTIONS = ["mean", "sum", "none"]
rng = np.random.default_rng(11)


def away_from(values, kinks, margin=0.15):
    """Push each value at least `margin` away from every kink (finite differences need it)."""
    values = np.array(values)
    for kink in kinks:
        close = np.abs(values - kink) < margin
        values[close] = kink + np.where(values[close] >= kink, margin, -margin)
    return values


# Data: one set per loss, the first arguments float (differentiated), the rest fixed.
PRED = rng.normal(size=(4, 3))
TARGET = PRED - away_from(rng.normal(scale=1.5, size=(4, 3)), [0.0, 0.7, -0.7])
LOGITS = rng.normal(scale=2.0, size=(5, 4))
LABELS = np.array([0, 3, 1, 1, 2])
BCE_LOGITS = rng.normal(scale=2.0, size=(6,))
BCE_TARGETS = rng.uniform(size=(6,))
# Weights that turn reduction="none" into a scalar without hiding a wrong element.
W_REGRESSION = rng.normal(size=(4, 3))
W_CE = rng.normal(size=(5,))
W_BCE = rng.normal(size=(6,))


def weighted(loss, weights, reduction):
    return np.sum(loss * weights) if reduction == "none" else loss


# name -> (scalar function of (differentiated..., fixed...), arguments, number differentiated)
def cases(reduction):
    r = reduction
    return {
        "mse_loss": (
            lambda p, t, w: weighted(F.mse_loss(p, t, reduction=r), w, r),
            (PRED, TARGET, W_REGRESSION), 2),
        "l1_loss": (
            lambda p, t, w: weighted(F.l1_loss(p, t, reduction=r), w, r),
            (PRED, TARGET, W_REGRESSION), 2),
        "huber_loss": (
            lambda p, t, w: weighted(F.huber_loss(p, t, delta=0.7, reduction=r), w, r),
            (PRED, TARGET, W_REGRESSION), 2),
        "cross_entropy": (
            lambda x, labels, w: weighted(F.cross_entropy(x, labels, reduction=r), w, r),
            (LOGITS, LABELS, W_CE), 1),
        "binary_cross_entropy_with_logits": (
            lambda x, t, w: weighted(
                F.binary_cross_entropy_with_logits(x, t, reduction=r), w, r),
            (BCE_LOGITS, BCE_TARGETS, W_BCE), 2),
    }



def torch_grads(name, reduction, args, n_diff):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    leaves = [torch.tensor(a, requires_grad=True) for a in args[:n_diff]]
    rest = [torch.tensor(a) for a in args[n_diff:]]
    inputs = leaves + rest
    if name == "cross_entropy":
        loss = tf.cross_entropy(inputs[0], inputs[1], reduction=reduction)
    elif name == "huber_loss":
        loss = tf.huber_loss(inputs[0], inputs[1], delta=0.7, reduction=reduction)
    else:
        loss = getattr(tf, name)(inputs[0], inputs[1], reduction=reduction)
    if reduction == "none":
        loss = (loss * inputs[2]).sum()
    loss.backward()
    return float(loss.detach()), [leaf.grad.numpy() for leaf in leaves]


NAMES = list(cases("mean"))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", NAMES)
def test_interpreter_gradients_match_finite_differences(name, reduction):
    fn, args, n_diff = cases(reduction)[name]
    f = compile_grad(fn, wrt=tuple(range(n_diff)), backend="interpreter")
    value, grads = f.value_and_grad(*args)
    np.testing.assert_allclose(value, fn(*args), rtol=1e-12)
    for k, grad in enumerate(grads):
        assert grad.dtype == np.float64 and grad.shape == args[k].shape
        np.testing.assert_allclose(grad, central_differences(fn, args, k), rtol=1e-6, atol=1e-8)
        assert np.abs(grad).max() > 1e-3  # a zero gradient would pass too easily


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", NAMES)
def test_interpreter_gradients_match_pytorch(name, reduction):
    fn, args, n_diff = cases(reduction)[name]
    torch_value, expected = torch_grads(name, reduction, args, n_diff)
    f = compile_grad(fn, wrt=tuple(range(n_diff)), backend="interpreter")
    value, grads = f.value_and_grad(*args)
    np.testing.assert_allclose(value, torch_value, rtol=1e-12)
    for grad, want in zip(grads, expected, strict=True):
        np.testing.assert_allclose(grad, want, rtol=1e-10, atol=1e-14)


# -- every loss and reduction in one numba kernel ----------------------------------------

# Distinct weights per term, so a gradient that went to the wrong term shows.
TERM_WEIGHTS = {(name, r): 1.0 + 0.37 * i
                for i, (name, r) in enumerate((n, r) for n in NAMES for r in REDUCTIONS)}


def all_losses(pred, target, logits, bce_logits, labels, bce_targets):
    total = 0.0
    for reduction in REDUCTIONS:
        c = cases(reduction)
        total = total + TERM_WEIGHTS["mse_loss", reduction] * c["mse_loss"][0](
            pred, target, W_REGRESSION)
        total = total + TERM_WEIGHTS["l1_loss", reduction] * c["l1_loss"][0](
            pred, target, W_REGRESSION)
        total = total + TERM_WEIGHTS["huber_loss", reduction] * c["huber_loss"][0](
            pred, target, W_REGRESSION)
        total = total + TERM_WEIGHTS["cross_entropy", reduction] * c["cross_entropy"][0](
            logits, labels, W_CE)
        bce = c["binary_cross_entropy_with_logits"][0]
        total = total + TERM_WEIGHTS["binary_cross_entropy_with_logits", reduction] * bce(
            bce_logits, bce_targets, W_BCE)
    return total


ALL_ARGS = (PRED, TARGET, LOGITS, BCE_LOGITS, LABELS, BCE_TARGETS)
all_losses_numba = compile_grad(all_losses, wrt=(0, 1, 2, 3))


def test_numba_combined_gradients_match_finite_differences():
    value, grads = all_losses_numba.value_and_grad(*ALL_ARGS)
    np.testing.assert_allclose(value, all_losses(*ALL_ARGS), rtol=1e-12)
    for k, grad in enumerate(grads):
        expected = central_differences(all_losses, ALL_ARGS, k)
        np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-7)


def test_numba_combined_gradients_match_pytorch():
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    pred, target, logits, bce_logits = (torch.tensor(a, requires_grad=True)
                                        for a in ALL_ARGS[:4])
    labels, bce_targets = torch.tensor(LABELS), torch.tensor(BCE_TARGETS)
    w_reg, w_ce, w_bce = (torch.tensor(w) for w in (W_REGRESSION, W_CE, W_BCE))
    total = torch.zeros((), dtype=torch.float64)
    for r in REDUCTIONS:
        terms = {
            "mse_loss": (tf.mse_loss(pred, target, reduction=r), w_reg),
            "l1_loss": (tf.l1_loss(pred, target, reduction=r), w_reg),
            "huber_loss": (tf.huber_loss(pred, target, delta=0.7, reduction=r), w_reg),
            "cross_entropy": (tf.cross_entropy(logits, labels, reduction=r), w_ce),
            "binary_cross_entropy_with_logits": (
                tf.binary_cross_entropy_with_logits(bce_logits, bce_targets, reduction=r),
                w_bce),
        }
        for name, (loss, w) in terms.items():
            loss = (loss * w).sum() if r == "none" else loss
            total = total + TERM_WEIGHTS[name, r] * loss
    total.backward()
    value, grads = all_losses_numba.value_and_grad(*ALL_ARGS)
    np.testing.assert_allclose(value, total.item(), rtol=1e-12)
    for grad, leaf in zip(grads, (pred, target, logits, bce_logits), strict=True):
        np.testing.assert_allclose(grad, leaf.grad.numpy(), rtol=1e-10, atol=1e-13)
