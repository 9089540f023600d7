"""Matrix products: `@`, np.matmul and np.dot."""

from __future__ import annotations

import numpy as np

from compiler.errors import UnsupportedError
from compiler.numpy_api.dispatch import implements, no_out, traced
from compiler.ops import bind
from compiler.tracer import user_loc


def matmul(a, b):
    return bind("matmul", a, b)


@implements(np.dot)
def dot(a, b, out=None):
    no_out("dot", out)
    a, b = traced(a), traced(b)
    if a.ndim == 0 or b.ndim == 0:
        return a * b
    if a.ndim > 2 or b.ndim > 2:
        raise UnsupportedError("np.dot of arrays with more than two dimensions is not "
                               "supported; use np.matmul (@) for batched products", user_loc())
    return bind("matmul", a, b)
