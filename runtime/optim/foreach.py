"""Several parameters through one call of an elementwise update rule (PyTorch's "foreach").

Each NumPy operation costs about a microsecond however small its arrays, and an
update rule makes a dozen of them, so for small parameters an optimizer step is
mostly that fixed cost, paid once per parameter. A rule made only of elementwise
operations gives every element the same result whether it runs on one parameter
or on several concatenated into one flat array: IEEE arithmetic rounds each
element alone. So `update` runs the rule once per batch of parameters that can
share a call and writes each parameter's slice of the results back in place.

Parameters share a call when their data and gradients have the same dtypes and
their states the same entries, each entry either 0-d and equal in value across
the batch (the step count, which the rule uses as a scalar) or of its
parameter's shape (moments, concatenated like the parameters). Anything else is
updated on its own: 0-d parameters (their moments are 0-d too), and parameters
without state, whose rule is too short for sharing to pay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..tensor import Tensor

Rule = Callable[..., tuple[Any, dict[str, Any]]]
Item = tuple[Tensor, np.ndarray, dict[str, np.ndarray]]  # (parameter, gradient, state)


def update(rule: Rule, options: dict[str, Any], items: list[Item]) -> None:
    """Update every (parameter, gradient, state) of `items` in place, batching what can be."""
    batches: dict[tuple, list[Item]] = {}
    for item in items:
        key = _batch_key(*item)
        if key is None:
            update_one(rule, options, *item)
        else:
            batches.setdefault(key, []).append(item)
    for batch in batches.values():
        if len(batch) == 1:
            update_one(rule, options, *batch[0])
        else:
            _update_batch(rule, options, batch)


def update_one(rule: Rule, options: dict[str, Any], p: Tensor, grad: np.ndarray,
               state: dict[str, np.ndarray]) -> None:
    """One parameter: the rule on its arrays, the results written back in place."""
    data = p.data
    new_param, new_state = rule(data, grad, state, **options)
    # In place: the caller's Parameters, their arrays and the state arrays keep their
    # identity across steps.
    data[...] = new_param
    p._version += 1  # backward of an earlier forward must not read the new values
    for key, value in new_state.items():
        state[key][...] = value


def _batch_key(p: Tensor, grad: np.ndarray, state: dict[str, np.ndarray]) -> tuple | None:
    """What parameters sharing a call must agree on, or None if this one cannot share."""
    data = p.data
    if data.ndim == 0 or not state:
        # Without state (SGD without momentum) a rule is about as many operations as the
        # concatenations and write-backs a shared call needs: measured, no faster.
        return None
    if grad.shape != data.shape:  # `.data` replaced since backward: the rule's own business
        return None
    entries = []
    for name, value in state.items():
        if value.ndim == 0:  # shared by the batch: its exact bits, not just an equal value
            entries.append((name, value.dtype, value.tobytes()))
        elif value.shape == data.shape:
            entries.append((name, value.dtype))
        else:
            return None
    return (data.dtype, grad.dtype, *entries)


def _update_batch(rule: Rule, options: dict[str, Any], batch: list[Item]) -> None:
    first_state = batch[0][2]
    flat_state = {
        name: value if value.ndim == 0 else _concatenate([s[name] for _, _, s in batch])
        for name, value in first_state.items()
    }
    new_param, new_state = rule(_concatenate([p.data for p, _, _ in batch]),
                                _concatenate([g for _, g, _ in batch]), flat_state, **options)
    start = 0
    for p, _, state in batch:
        data = p.data
        stop = start + data.size
        data.flat = new_param[start:stop]  # in C order, whatever the array's own layout
        p._version += 1  # as in update_one
        for name, value in new_state.items():
            target = state[name]
            if target.ndim == 0:
                target[...] = value
            else:
                target.flat = value[start:stop]
        start = stop


def _concatenate(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays, axis=None)  # flattened, in C order
