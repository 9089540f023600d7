"""The hot path of repeated calls: plain positional arrays checked against the last
specialization in a few attribute reads, skipping argument binding and tree flattening.

Small kernels run in microseconds, so the general path (binding the signature,
flattening nested arguments, computing the shape pattern) would dominate them.
A `FastCall` remembers the specialization of a call whose arguments were all
plain C-contiguous arrays passed positionally; a later call fits it when each
array has the same dtype and static dims and the symbolic dims are consistent.
"""

from __future__ import annotations

import numpy as np

from compiler.ir import Sym


class FastCall:
    def __init__(self, spec, kernel) -> None:
        self.spec = spec
        self.kernel = kernel
        self.checks = [(t.dtype, t.shape) for t in spec.signature.types]

    @staticmethod
    def eligible(args: tuple, kwargs: dict) -> bool:
        return not kwargs and all(type(a) is np.ndarray for a in args)

    def fits(self, args: tuple) -> bool:
        if len(args) != len(self.checks):
            return False
        sizes: dict[Sym, int] = {}
        for a, (dtype, shape) in zip(args, self.checks):
            if type(a) is not np.ndarray or a.dtype != dtype or a.ndim != len(shape) \
                    or not a.flags.c_contiguous:
                return False
            for d, n in zip(shape, a.shape):
                if type(d) is int:
                    if d != n:
                        return False
                elif n < 2 or sizes.setdefault(d, n) != n:  # size 1 broadcasts: never symbolic
                    return False
        return True
