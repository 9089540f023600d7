"""The hot paths of repeated calls: the last call's kernel, tried before the general path.

Small kernels run in microseconds, so the general path (binding the signature,
flattening nested arguments, computing the shape pattern) would dominate them.
A `FastCall` remembers the specialization of a call whose arguments were all
arrays passed positionally, and a later call with as many arguments runs that
kernel at once. A `TensorCall` does the same for calls with runtime Tensors
(Parameters in a dict, say) that were recorded for backward: a later call
whose arguments have the same tree, with a Tensor of the same class, requiring
grad or not as before, wherever there was one, runs the forward kernel and
records it without the general path.

Nothing else is checked in Python: numba's dispatcher refuses arrays of another
dtype, rank or layout (the kernel compiles for one signature only), and the
kernel itself checks the shapes before it touches memory. So a Parameter whose
`.data` was replaced by an array of another dtype or shape is refused too (its
array is read afresh on every call). Any refusal sends the call down the
general path, which finds or builds the right kernel or explains what is wrong.
Only kernels that check their arguments this way (`checks_arguments`: the numba
backend's) get a fast path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from compiler import pytree
from compiler.errors import KernelShapeError
from runtime import Tensor, is_grad_enabled

REFUSED = object()  # what `run` returns when the arguments do not fit the kernel


class FastCall:
    """`run(args)`: `pack(kernel results)` for arguments that fit the kernel, else REFUSED."""

    def __init__(self, spec, kernel, pack: Callable[[tuple], Any]) -> None:
        self.spec = spec
        self.kernel = kernel
        self.pack = pack
        self._types = (np.ndarray,) * len(spec.signature.types)
        self._call = kernel.call

    @staticmethod
    def eligible(args: tuple, kwargs: dict, kernel) -> bool:
        return getattr(kernel, "checks_arguments", False) and not kwargs \
            and all(type(a) is np.ndarray for a in args)

    def run(self, args: tuple) -> Any:
        # One C-level comparison (0.1 us) for the count and the classes: numba would refuse a
        # Parameter too, but only after 100 us of looking for a type to give it.
        if tuple(map(type, args)) != self._types:
            return REFUSED
        try:
            results = self._call(*args)
        except (TypeError, KernelShapeError):
            return REFUSED
        return self.pack(results)


def _tensor_call_leaf(leaf: Any) -> bool:
    """Whether a TensorCall can pass this leaf to a kernel the way the general path does."""
    return isinstance(leaf, Tensor) or type(leaf) is np.ndarray \
        or type(leaf) in (bool, int, float) or isinstance(leaf, np.generic)


class TensorCall:
    """`run(args)`: the result of a recorded call for arguments with the tree and Tensor
    pattern of the call it was made from whose arrays fit its forward kernel, else REFUSED.

    `forward(*arrays)` is the numba forward kernel, which raises TypeError or
    KernelShapeError on arrays that do not fit it; `link(arrays, results, leaves)` turns its
    results into the Tensors the user gets, recorded for backward."""

    def __init__(self, spec, treedef: pytree.TreeDef, raw_leaves: list, forward, link) -> None:
        self.spec = spec
        self.treedef = treedef
        # Each leaf must have the exact class it had: Tensors pass their .data, plain arrays
        # go as they are (numba refuses other layouts than the kernel's), and scalars through
        # np.asarray, as in the general path.
        self._types = tuple(map(type, raw_leaves))
        self._tensors = [i for i, leaf in enumerate(raw_leaves) if isinstance(leaf, Tensor)]
        self._scalars = [i for i, leaf in enumerate(raw_leaves)
                         if not isinstance(leaf, Tensor | np.ndarray)]
        # Whether each Tensor requires grad decides what backward differentiates.
        self._requires_grad = [raw_leaves[i].requires_grad for i in self._tensors]
        self._forward = forward
        self._link = link

    @staticmethod
    def eligible(kernel, raw_leaves: list) -> bool:
        """For a call with positional arguments only (keywords take the general path)."""
        return getattr(kernel, "checks_arguments", False) \
            and all(map(_tensor_call_leaf, raw_leaves))

    def run(self, args: tuple) -> Any:
        if not is_grad_enabled():  # under no_grad nothing is recorded: another kernel
            return REFUSED
        leaves = pytree.leaves_if_shaped(self.treedef, args)
        if leaves is None or tuple(map(type, leaves)) != self._types:
            return REFUSED
        arrays = list(leaves)
        for i, requires_grad in zip(self._tensors, self._requires_grad):
            tensor = leaves[i]
            if tensor._requires_grad is not requires_grad:
                return REFUSED
            arrays[i] = tensor.data
        for i in self._scalars:
            arrays[i] = np.asarray(leaves[i])
        try:
            results = self._forward(*arrays)
        except (TypeError, KernelShapeError):
            return REFUSED
        return self._link(arrays, results, leaves)
