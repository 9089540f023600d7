"""Copies and pickles of Tensors and Parameters, as PyTorch's.

`pickle` and `copy.copy` make a leaf of the same class over the data (shared by `copy.copy`,
written out by `pickle`), requiring grad as the original does, with the attributes a user
set; without `.grad`, hooks or `grad_fn`, as in PyTorch (the graph is not data, and a hook
may be a lambda no pickle holds). `copy.deepcopy` makes an independent leaf with a copy of
the data (and of `.grad` for a Tensor; a Parameter's is left behind, as PyTorch's Parameter
does); a result of a recorded call is refused, as in PyTorch, since its graph cannot be
copied.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .tensor import Parameter, Tensor, _Detached


def reduced(tensor: Tensor) -> tuple:
    """`Tensor.__reduce_ex__`: what `pickle` and `copy.copy` rebuild."""
    return (_rebuilt, (_copied_class(tensor), tensor.data, tensor._requires_grad),
            _own_attributes(tensor) or None)


def deep_copy(tensor: Tensor, memo: dict[int, Any]) -> Tensor:
    """`Tensor.__deepcopy__`."""
    if tensor.grad_fn is not None:
        raise RuntimeError(
            "Only Tensors created explicitly by the user (graph leaves) support the "
            "deepcopy protocol: this Tensor is the result of a recorded call; deepcopy "
            "t.detach() for its values")
    if id(tensor) in memo:
        return memo[id(tensor)]
    copied = _rebuilt(_copied_class(tensor), copy.deepcopy(tensor.data, memo),
                      tensor._requires_grad)
    memo[id(tensor)] = copied
    if tensor._grad is not None and not isinstance(tensor, Parameter):
        copied._grad = copy.deepcopy(tensor._grad, memo)
    for name, value in _own_attributes(tensor).items():
        copied.__dict__[name] = copy.deepcopy(value, memo)
    return copied


# What a Tensor's __dict__ holds for the runtime (the rest is a user's, copied with it).
_RUNTIME_FIELDS = frozenset({"data", "_data", "_requires_grad", "grad_fn", "output_nr", "_grad",
                             "_own_grad", "_hooks", "_retains_grad", "_version", "_base"})


def _own_attributes(tensor: Tensor) -> dict[str, Any]:
    return {k: v for k, v in tensor.__dict__.items() if k not in _RUNTIME_FIELDS}


def _copied_class(tensor: Tensor) -> type:
    """A copy of a detached Tensor is a Tensor of its own (sharing no version counter)."""
    return Tensor if type(tensor) is _Detached else type(tensor)


def _rebuilt(cls: type, data: np.ndarray, requires_grad: bool) -> Tensor:
    """A leaf of class `cls` over `data` as it is (what a copy or an unpickling makes)."""
    tensor = cls.__new__(cls)
    tensor.data = data
    tensor._requires_grad = requires_grad
    return tensor
