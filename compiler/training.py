"""Fused training steps: zero-grad, forward, backward, clipping and the optimizer's update in one
kernel, traced from the loss and the optimizer's NumPy update rule.

    step = train_step(loss_fn, params, optimizer, max_norm=1.0)
    loss = step(X, y)          # params and optimizer state updated in place

The step function below is ordinary traceable NumPy: it inlines the loss's
value-and-gradient graph, clips, and applies `optimizer.rule` per parameter.
Numeric hyper-parameters (lr, momentum, betas, ...) are one float64 kernel
argument read fresh from `optimizer.param_groups` on every call, so a
learning-rate schedule never recompiles; structural flags (nesterov, amsgrad,
...) are baked into the trace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler import pytree
from compiler.api import CompiledFunction, compile_grad
from runtime import Parameter
from runtime.optim import Optimizer

CLIP_EPS = 1e-6  # PyTorch's clip_grad_norm_: scale = max_norm / (total_norm + 1e-6)


@dataclass
class _Slot:
    """One parameter in the step: its optimizer group, static options, and hyper indices."""

    param: Parameter
    group: dict
    flags: dict[str, bool]
    hyper_index: dict[str, int]  # option name -> position in the packed hyper vector


class TrainStep:
    """One optimizer step of `loss_fn(params, *data)` as one kernel call."""

    def __init__(self, loss_fn: Callable | CompiledFunction, params: Any, optimizer: Optimizer,
                 *, max_norm: float | None = None, norm_type: float = 2.0,
                 keep_grads: bool = False) -> None:
        if not isinstance(loss_fn, CompiledFunction):
            loss_fn = compile_grad(loss_fn)
        self.loss_fn = loss_fn
        self.params = params
        self.optimizer = optimizer
        self.max_norm = max_norm
        self.norm_type = float(norm_type)
        self.keep_grads = keep_grads
        leaves, self._tree = pytree.flatten(params)
        self._slots = self._plan(leaves)
        self._hypers = np.zeros(sum(len(s.hyper_index) for s in self._slots) + 1)
        self._kernel = CompiledFunction(self._step_function, wrt=(0, 1, 2),
                                        backend=loss_fn.backend.name)
        self._kernel.__name__ = f"{loss_fn.__name__}_step"
        self._kernel._graph_name = f"{loss_fn._graph_name}_step"

    # --- planning ----------------------------------------------------------------------
    def _plan(self, leaves: list) -> list[_Slot]:
        groups = {id(p): g for g in self.optimizer.param_groups for p in g["params"]}
        slots, k = [], 0
        for leaf in leaves:
            if not isinstance(leaf, Parameter) or id(leaf) not in groups:
                raise TypeError("train_step needs every leaf of params to be a Parameter that "
                                f"the optimizer updates; got a {type(leaf).__name__}")
            group = groups[id(leaf)]
            options = self.optimizer.rule_options(group)
            flags = {name: v for name, v in options.items() if isinstance(v, bool)}
            numeric = [name for name, v in options.items() if not isinstance(v, bool)]
            slots.append(_Slot(leaf, group, flags, {n: k + i for i, n in enumerate(numeric)}))
            k += len(numeric)
        return slots

    def _state(self, slot: _Slot) -> dict[str, np.ndarray]:
        state = self.optimizer.state.get(slot.param)
        if state is None:
            state = self.optimizer.state[slot.param] = self.optimizer.init_state(slot.param,
                                                                                 slot.group)
        return state

    def _pack_hypers(self) -> np.ndarray:
        for slot in self._slots:
            options = self.optimizer.rule_options(slot.group)
            for name, i in slot.hyper_index.items():
                self._hypers[i] = options[name]
        self._hypers[-1] = -1.0 if self.max_norm is None else self.max_norm
        return self._hypers

    # --- the traced step -----------------------------------------------------------------
    def _step_function(self, params: list, states: list, hypers, *data):
        loss, grads = self.loss_fn.value_and_grad(pytree.unflatten(self._tree, params), *data)
        grads = pytree.flatten(grads)[0]
        if self.max_norm is not None:
            grads = _clip_by_total_norm(grads, hypers[-1], self.norm_type)
        new_params, new_states = [], []
        for slot, p, g, state in zip(self._slots, params, grads, states):
            numeric = {name: hypers[i].astype(p.dtype) for name, i in slot.hyper_index.items()}
            new_p, new_state = self.optimizer.rule(p, g, state, **numeric, **slot.flags)
            new_params.append(new_p)
            new_states.append({key: new_state[key] for key in state})
        return (loss, new_params, new_states, grads if self.keep_grads else [])

    # --- calling -------------------------------------------------------------------------
    def __call__(self, *data) -> float:
        params = [s.param.data for s in self._slots]
        states = [self._state(s) for s in self._slots]
        loss, new_params, new_states, grads = self._kernel(params, states, self._pack_hypers(),
                                                           *data)
        for slot, new_p, state, new_state in zip(self._slots, new_params, states, new_states):
            slot.param.data[...] = new_p
            for key, value in new_state.items():
                state[key][...] = value
        for slot, g in zip(self._slots, grads):
            slot.param.grad = np.array(g, copy=True)
        return loss

    def source(self, kind: str = "forward") -> str:
        return self._kernel.source(kind)


def _clip_by_total_norm(grads: list, max_norm, norm_type: float) -> list:
    """clip_grad_norm_ as traceable NumPy: scale every gradient by max_norm / (norm + 1e-6)."""
    if norm_type == float("inf"):
        total = grads[0].__abs__().max()
        for g in grads[1:]:
            total = np.maximum(total, np.abs(g).max())
    else:
        total = sum(np.sum(np.abs(g) ** norm_type) for g in grads) ** (1.0 / norm_type)
    scale = np.minimum(max_norm / (total + CLIP_EPS), 1.0)
    return [g * scale.astype(g.dtype) for g in grads]


def train_step(loss_fn: Callable | CompiledFunction, params: Any, optimizer: Optimizer,
               **options) -> TrainStep:
    """A `TrainStep` for `loss_fn(params, *data)`; see TrainStep for the options."""
    return TrainStep(loss_fn, params, optimizer, **options)
