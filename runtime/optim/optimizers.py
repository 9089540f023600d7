"""SGD, Adam, AdamW, RMSprop and Adagrad: PyTorch's defaults and checks over the rules.

Each class validates its hyper-parameters like PyTorch, names its update rule
from `rules`, and maps a parameter group to that rule's options. The math lives
only in `rules`. PyTorch's `foreach=` is accepted and changes nothing: there is one
implementation, whose results do not depend on how parameters share calls.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tensor import Tensor
from . import rules
from .optimizer import Optimizer, ParamsArg


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""

    rule = staticmethod(rules.sgd_update)
    elementwise = True
    every_entry = {"momentum": 1.0}  # the momentum buffer (and its step count)

    def __init__(
        self,
        params: ParamsArg,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        _check(lr >= 0.0, f"Invalid learning rate: {lr}")
        _check(momentum >= 0.0, f"Invalid momentum value: {momentum}")
        _check(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
        _check(
            not nesterov or (momentum > 0 and dampening == 0),
            "Nesterov momentum requires a momentum and zero dampening",
        )
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def rule_options(self, group: dict[str, Any]) -> dict[str, Any]:
        return dict(
            lr=group["lr"],
            momentum=group["momentum"],
            dampening=group["dampening"],
            weight_decay=group["weight_decay"],
            nesterov=bool(group["nesterov"]),
            maximize=bool(group["maximize"]),
            use_momentum=bool(group["momentum"] != 0),
        )

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, np.ndarray]:
        return rules.sgd_init_state(param.data, use_momentum=group["momentum"] != 0)

    def adopt_state(self, saved: dict[str, Any]) -> dict[str, Any]:
        # PyTorch's SGD keeps the momentum buffer alone (None before the first step); the rule
        # counts steps to start the buffer at the first one, so a buffer means steps were taken.
        if "momentum_buffer" in saved and "step" not in saved:
            saved["step"] = np.ones((), np.float64)
        return saved


class Adam(Optimizer):
    """Adam with L2 weight decay (added to the gradient) and optional AMSGrad."""

    rule = staticmethod(rules.adam_update)
    elementwise = True
    every_entry = {"amsgrad": True}  # max_exp_avg_sq
    decoupled_weight_decay = False

    def __init__(
        self,
        params: ParamsArg,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        _check(lr >= 0.0, f"Invalid learning rate: {lr}")
        _check(eps >= 0.0, f"Invalid epsilon value: {eps}")
        _check(0.0 <= betas[0] < 1.0, f"Invalid beta parameter at index 0: {betas[0]}")
        _check(0.0 <= betas[1] < 1.0, f"Invalid beta parameter at index 1: {betas[1]}")
        _check(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            # AdamW's rule (as PyTorch's keyword makes Adam AdamW); AdamW sets it
            decoupled_weight_decay=bool(decoupled_weight_decay or self.decoupled_weight_decay),
        )
        super().__init__(params, defaults)

    def rule_options(self, group: dict[str, Any]) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        return dict(
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            amsgrad=bool(group["amsgrad"]),
            maximize=bool(group["maximize"]),
            decoupled_weight_decay=bool(group.get("decoupled_weight_decay",
                                                  self.decoupled_weight_decay)),
        )

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, np.ndarray]:
        return rules.adam_init_state(param.data, amsgrad=group["amsgrad"])


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): param *= 1 - lr * weight_decay."""

    decoupled_weight_decay = True

    def __init__(
        self,
        params: ParamsArg,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         foreach=foreach)


class RMSprop(Optimizer):
    """RMSprop with optional centering, momentum and weight decay."""

    rule = staticmethod(rules.rmsprop_update)
    elementwise = True
    every_entry = {"centered": True, "momentum": 1.0}  # grad_avg, momentum_buffer

    def __init__(
        self,
        params: ParamsArg,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        _check(lr >= 0.0, f"Invalid learning rate: {lr}")
        _check(eps >= 0.0, f"Invalid epsilon value: {eps}")
        _check(momentum >= 0.0, f"Invalid momentum value: {momentum}")
        _check(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
        _check(alpha >= 0.0, f"Invalid alpha value: {alpha}")
        defaults = dict(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def rule_options(self, group: dict[str, Any]) -> dict[str, Any]:
        return dict(
            lr=group["lr"],
            alpha=group["alpha"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            centered=bool(group["centered"]),
            maximize=bool(group["maximize"]),
            use_momentum=bool(group["momentum"] > 0),
        )

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, np.ndarray]:
        return rules.rmsprop_init_state(
            param.data, centered=group["centered"], use_momentum=group["momentum"] > 0
        )


class Adagrad(Optimizer):
    """Adagrad with learning-rate decay, weight decay and an initial accumulator value."""

    rule = staticmethod(rules.adagrad_update)
    elementwise = True

    def __init__(
        self,
        params: ParamsArg,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        _check(lr >= 0.0, f"Invalid learning rate: {lr}")
        _check(lr_decay >= 0.0, f"Invalid lr_decay value: {lr_decay}")
        _check(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
        _check(
            initial_accumulator_value >= 0.0,
            f"Invalid initial_accumulator_value value: {initial_accumulator_value}",
        )
        _check(eps >= 0.0, f"Invalid epsilon value: {eps}")
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            maximize=maximize,
        )
        super().__init__(params, defaults)
        # PyTorch creates Adagrad's state up front, so state_dict() shows it before any step.
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p] = self.init_state(p, group)

    def rule_options(self, group: dict[str, Any]) -> dict[str, Any]:
        return dict(
            lr=group["lr"],
            lr_decay=group["lr_decay"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=bool(group["maximize"]),
        )

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, np.ndarray]:
        return rules.adagrad_init_state(
            param.data, initial_accumulator_value=group["initial_accumulator_value"]
        )
