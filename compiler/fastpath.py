"""The hot path of repeated calls: the last plain-array call's kernel, tried first.

Small kernels run in microseconds, so the general path (binding the signature,
flattening nested arguments, computing the shape pattern) would dominate them.
A `FastCall` remembers the specialization of a call whose arguments were all
arrays passed positionally, and a later call with as many arguments runs that
kernel at once. Nothing is checked in Python: numba's dispatcher refuses arrays
of another dtype, rank or layout (the kernel compiles for one signature only),
and the kernel itself checks the shapes before it touches memory. Either refusal
sends the call down the general path, which finds or builds the right kernel or
explains what is wrong. Only kernels that check their arguments this way
(`checks_arguments`: the numba backend's) get a fast path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from compiler.errors import KernelShapeError

REFUSED = object()  # what `run` returns when the arguments do not fit the kernel


class FastCall:
    """`run(args)`: `pack(kernel results)` for arguments that fit the kernel, else REFUSED."""

    def __init__(self, spec, kernel, pack: Callable[[tuple], Any]) -> None:
        self.spec = spec
        self.kernel = kernel
        self.pack = pack
        self.arity = len(spec.signature.types)
        self._call = kernel.call

    @staticmethod
    def eligible(args: tuple, kwargs: dict, kernel) -> bool:
        return getattr(kernel, "checks_arguments", False) and not kwargs \
            and all(type(a) is np.ndarray for a in args)

    def run(self, args: tuple) -> Any:
        if len(args) != self.arity:
            return REFUSED
        try:
            results = self._call(*args)
        except (TypeError, KernelShapeError):
            return REFUSED
        return self.pack(results)
