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

import numpy as np

from compiler.errors import KernelShapeError


class FastCall:
    def __init__(self, spec, kernel) -> None:
        self.spec = spec
        self.kernel = kernel
        self.arity = len(spec.signature.types)

    @staticmethod
    def eligible(args: tuple, kwargs: dict, kernel) -> bool:
        return getattr(kernel, "checks_arguments", False) and not kwargs \
            and all(type(a) is np.ndarray for a in args)

    def run(self, args: tuple) -> list | None:
        """The kernel's results for `args`, or None when they do not fit it."""
        if len(args) != self.arity:
            return None
        try:
            return self.kernel(args)
        except (TypeError, KernelShapeError):
            return None
