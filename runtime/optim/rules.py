"""Optimizer update rules, each written once as a pure, traceable NumPy function.

Every rule has the form

    rule(param, grad, state, **options) -> (new_param, new_state)

and follows PyTorch's single-tensor implementation formula by formula. `state`
is a dict of arrays (its keys are listed per rule; "step" is a 0-d float64
array counting updates) and is never modified: the rule returns new arrays and
the optimizer writes them back in place. `init_state` functions give the state
before the first step.

The options split in two kinds, because a later step fuses these rules into
compiled kernels:
- numeric hyper-parameters (lr, momentum, betas, eps, weight_decay ...) and the
  step count are run-time values: the rules never branch on them in Python
  (np.where instead), so changing the learning rate never recompiles;
- structural flags (maximize, nesterov, amsgrad, centered, use_momentum,
  decoupled_weight_decay) are Python bools that choose which code is traced.

Scalars derived from the float64 step count are cast to the parameter's dtype,
so a float32 parameter is updated in float32 arithmetic like in PyTorch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any  # an ndarray, or the compiler's symbolic value standing in for one
State = dict[str, Array]


def _step_zero() -> np.ndarray:
    return np.zeros((), dtype=np.float64)


# -- SGD -----------------------------------------------------------------------------


def sgd_init_state(param: np.ndarray, *, use_momentum: bool) -> State:
    """{"step", "momentum_buffer"} with momentum, else {}."""
    if not use_momentum:
        return {}
    return {"step": _step_zero(), "momentum_buffer": np.zeros_like(param)}


def sgd_update(
    param: Array,
    grad: Array,
    state: State,
    *,
    lr: Array,
    momentum: Array,
    dampening: Array,
    weight_decay: Array,
    nesterov: bool,
    maximize: bool,
    use_momentum: bool,
) -> tuple[Array, State]:
    """SGD with optional momentum, dampening, Nesterov momentum and L2 weight decay.

    state: {"step", "momentum_buffer"} when use_momentum, else {}.
    Run-time: lr, momentum, dampening, weight_decay. Structural: nesterov,
    maximize, use_momentum (PyTorch's `momentum != 0`).
    """
    if maximize:
        grad = -grad
    grad = grad + weight_decay * param
    if not use_momentum:
        return param - lr * grad, {}
    step = state["step"] + 1
    # PyTorch starts the buffer as a copy of the first gradient, undamped.
    buf = np.where(step == 1, grad, momentum * state["momentum_buffer"] + (1 - dampening) * grad)
    direction = grad + momentum * buf if nesterov else buf
    return param - lr * direction, {"step": step, "momentum_buffer": buf}


# -- Adam and AdamW ------------------------------------------------------------------


def adam_init_state(param: np.ndarray, *, amsgrad: bool) -> State:
    """{"step", "exp_avg", "exp_avg_sq"} and, with amsgrad, "max_exp_avg_sq"."""
    state = {
        "step": _step_zero(),
        "exp_avg": np.zeros_like(param),
        "exp_avg_sq": np.zeros_like(param),
    }
    if amsgrad:
        state["max_exp_avg_sq"] = np.zeros_like(param)
    return state


def adam_update(
    param: Array,
    grad: Array,
    state: State,
    *,
    lr: Array,
    beta1: Array,
    beta2: Array,
    eps: Array,
    weight_decay: Array,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
) -> tuple[Array, State]:
    """Adam (Kingma & Ba) with bias correction; AdamW when decoupled_weight_decay.

    state: {"step", "exp_avg", "exp_avg_sq"} plus "max_exp_avg_sq" with amsgrad.
    Run-time: lr, beta1, beta2, eps, weight_decay. Structural: amsgrad,
    maximize, decoupled_weight_decay (AdamW shrinks the parameter by
    1 - lr * weight_decay instead of adding weight_decay * param to the gradient).
    """
    if maximize:
        grad = -grad
    step = state["step"] + 1
    if decoupled_weight_decay:
        param = param * (1 - lr * weight_decay)
    else:
        grad = grad + weight_decay * param
    # PyTorch's lerp form of beta1 * m + (1 - beta1) * g.
    exp_avg = state["exp_avg"] + (1 - beta1) * (grad - state["exp_avg"])
    exp_avg_sq = beta2 * state["exp_avg_sq"] + (1 - beta2) * (grad * grad)
    new_state = {"step": step, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    if amsgrad:
        second_moment = np.maximum(state["max_exp_avg_sq"], exp_avg_sq)
        new_state["max_exp_avg_sq"] = second_moment
    else:
        second_moment = exp_avg_sq
    bias_correction1 = (1 - beta1**step).astype(param.dtype)
    bias_correction2_sqrt = np.sqrt(1 - beta2**step).astype(param.dtype)
    denom = np.sqrt(second_moment) / bias_correction2_sqrt + eps
    new_param = param - (lr / bias_correction1) * (exp_avg / denom)
    return new_param, new_state


# -- RMSprop -------------------------------------------------------------------------


def rmsprop_init_state(param: np.ndarray, *, centered: bool, use_momentum: bool) -> State:
    """{"step", "square_avg"}, plus "momentum_buffer" and "grad_avg" when used."""
    state = {"step": _step_zero(), "square_avg": np.zeros_like(param)}
    if use_momentum:
        state["momentum_buffer"] = np.zeros_like(param)
    if centered:
        state["grad_avg"] = np.zeros_like(param)
    return state


def rmsprop_update(
    param: Array,
    grad: Array,
    state: State,
    *,
    lr: Array,
    alpha: Array,
    eps: Array,
    weight_decay: Array,
    momentum: Array,
    centered: bool,
    maximize: bool,
    use_momentum: bool,
) -> tuple[Array, State]:
    """RMSprop (Hinton), optionally centered (Graves) and with momentum.

    state: {"step", "square_avg"}, plus "grad_avg" when centered and
    "momentum_buffer" when use_momentum. Run-time: lr, alpha, eps,
    weight_decay, momentum. Structural: centered, maximize, use_momentum
    (PyTorch's `momentum > 0`).
    """
    if maximize:
        grad = -grad
    step = state["step"] + 1
    grad = grad + weight_decay * param
    square_avg = alpha * state["square_avg"] + (1 - alpha) * (grad * grad)
    new_state = {"step": step, "square_avg": square_avg}
    if centered:
        grad_avg = state["grad_avg"] + (1 - alpha) * (grad - state["grad_avg"])
        new_state["grad_avg"] = grad_avg
        avg = np.sqrt(square_avg - grad_avg * grad_avg) + eps
    else:
        avg = np.sqrt(square_avg) + eps
    if use_momentum:
        buf = momentum * state["momentum_buffer"] + grad / avg
        new_state["momentum_buffer"] = buf
        return param - lr * buf, new_state
    return param - lr * (grad / avg), new_state


# -- Adagrad -------------------------------------------------------------------------


def adagrad_init_state(param: np.ndarray, *, initial_accumulator_value: float) -> State:
    """{"step", "sum"}, the sum starting at initial_accumulator_value."""
    return {"step": _step_zero(), "sum": np.full_like(param, initial_accumulator_value)}


def adagrad_update(
    param: Array,
    grad: Array,
    state: State,
    *,
    lr: Array,
    lr_decay: Array,
    weight_decay: Array,
    eps: Array,
    maximize: bool,
) -> tuple[Array, State]:
    """Adagrad (Duchi et al.) with learning-rate decay lr / (1 + (step - 1) * lr_decay).

    state: {"step", "sum"}. Run-time: lr, lr_decay, weight_decay, eps.
    Structural: maximize.
    """
    if maximize:
        grad = -grad
    step = state["step"] + 1
    grad = grad + weight_decay * param
    clr = (lr / (1 + (step - 1) * lr_decay)).astype(param.dtype)
    state_sum = state["sum"] + grad * grad
    std = np.sqrt(state_sum) + eps
    return param - clr * (grad / std), {"step": step, "sum": state_sum}
