"""`check_finite`: a value passed on unchanged once it is known to hold no NaN or Inf.

Anomaly mode (compiler/checks.py) puts one after every op of a kernel's graph. Its
second operand is an int64 constant, the *site*: which op of the graph is checked,
which the error message looks up. Being elementwise, it fuses into the loop that
computes its value: a comparison per element, and no new code generation.
"""

from __future__ import annotations

import numpy as np

from compiler.ir import TensorType
from compiler.ops.lowering import Elementwise
from compiler.ops.registry import OpDef, ShapeError, register


def _infer(x: TensorType, site: TensorType) -> TensorType:
    if site.shape != () or site.dtype.kind not in "iu":
        raise ShapeError(f"check_finite's site must be an integer scalar, got {site}")
    return x


def _impl(x, site):
    x = np.asarray(x)
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        bad = x[~np.isfinite(x)].flat[0]
        raise FloatingPointError(int(site), bad)  # what the compiled check raises, too
    return x


register(OpDef(
    "check_finite", "elementwise", _infer, _impl,
    lambda g, out, x, site: (g, None),
    "_check_finite({0}, {1})",
    "x itself, after raising FloatingPointError(site, value) where x is NaN or +-Inf",
    lowering=Elementwise("_check_finite({0}, {1})", lambda n: [n.dtype, None]),  # site: an int
))
