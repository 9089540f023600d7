"""The optimizer's update of a train step's parameters, as traceable NumPy: which slots it
skips (frozen ones, and those the loss does not depend on), clipping by the total norm, and
the optimizer's rule on each of the others with its numeric settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from compiler.autodiff import carrying_inputs, float_valued
from compiler.passes import const_value
from compiler.tracer import weak

CLIP_EPS = 1e-6  # PyTorch's clip_grad_norm_: scale = max_norm / (total_norm + 1e-6)


def outside_graph(grad: Any) -> bool:
    """Whether a traced gradient is an exact zero constant: the loss does not depend on the
    parameter at all (compiler/autodiff.py gives such a parameter zeros)."""
    node = getattr(grad, "node", None)
    return node is not None and const_value(node) == 0


def unreached(loss: Any, params: list) -> list[bool]:
    """For each traced parameter, whether the traced `loss` does not depend on it through
    float values (by the trace's structure, as compiler/autodiff.connected_inputs decides for
    the runtime): PyTorch's graph would not reach it (it stops at comparisons, argmax and
    integers: `np.where(p > 0, x, 0)`, and at a custom_vjp rule returning None for it), so
    its `.grad` stays None and the optimizer skips it.
    One the loss reaches is stepped even where its gradient is exactly zero (`0 * p.sum()`
    folds to a zero constant, np.sign(p)), as PyTorch steps it with zeros (momentum, weight
    decay)."""
    node = getattr(loss, "node", None)
    if node is None:  # a constant loss depends on nothing
        return [True] * len(params)
    wanted = {p.node.id for p in params if getattr(p, "node", None) is not None}
    seen: set[int] = set()
    reached: set[int] = set()
    stack = [node]
    while stack:
        node = stack.pop()
        if node.id in seen:
            continue
        seen.add(node.id)
        if node.id in wanted:
            reached.add(node.id)
        elif node.op not in ("input", "const"):
            stack.extend(x for x in carrying_inputs(node) if float_valued(x))
    return [getattr(p, "node", None) is not None and p.node.id not in reached for p in params]


def clip_by_total_norm(grads: list, max_norm, norm_type: float) -> list:
    """clip_grad_norm_ as traceable NumPy: scale every gradient by max_norm / (norm + 1e-6)."""
    if norm_type == float("inf"):
        total = np.max(np.abs(grads[0]))
        for g in grads[1:]:
            total = np.maximum(total, np.max(np.abs(g)))
    else:
        total = sum(np.sum(np.abs(g) ** norm_type) for g in grads) ** (1.0 / norm_type)
    scale = np.minimum(max_norm / (total + CLIP_EPS), 1.0)
    return [g * scale.astype(g.dtype) for g in grads]


def update_slots(slots: Sequence, rule: Callable, params: list, states: list, hypers,
                 grads: list, unused: list[bool] | None, clip: float | None
                 ) -> tuple[list, list, list]:
    """(new parameters, new states, the gradients as clipped) after the optimizer's `rule`
    on every slot but the frozen ones (PyTorch's optimizers skip a parameter without a
    gradient, and clipping does not count it). A parameter the loss does not depend on (its
    gradient an exact zero constant, or `unused` says so) is skipped too: PyTorch's graph
    would not reach it, so its `.grad` stays None after zero_grad(). With `clip` (the norm
    type), the gradients are first clipped to the total norm in `hypers[-1]`."""
    if unused is None:
        unused = [outside_graph(g) for g in grads]
    if clip is not None:
        live = [k for k, slot in enumerate(slots) if not slot.frozen]
        clipped = clip_by_total_norm([grads[k] for k in live], hypers[-1], clip) if live else []
        grads = list(grads)
        for k, g in zip(live, clipped):
            grads[k] = g
    new_params, new_states = [], []
    for slot, p, g, state, outside in zip(slots, params, grads, states, unused):
        if slot.frozen or outside:
            new_params.append(p)
            new_states.append(dict(state))
            continue
        # Python floats to the NumPy rules and to PyTorch: weak, not cast to float32 first
        numeric = {name: weak(hypers[i]) for name, i in slot.hyper_index.items()}
        new_p, new_state = rule(p, g, state, **numeric, **slot.flags)
        new_params.append(new_p)
        # an entry the rule no longer uses (momentum turned off) stays as it is
        new_states.append({key: new_state.get(key, state[key]) for key in state})
    return new_params, new_states, grads
