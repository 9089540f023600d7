"""Source ops: graph inputs and constants (Python scalars, or arrays the function closed over)."""

from __future__ import annotations

import numpy as np

from compiler.ir import TensorType
from compiler.ops.lowering import Source
from compiler.ops.registry import OpDef, register


def _input_impl(*args, **attrs):
    raise AssertionError("inputs are bound by the interpreter, never evaluated")


def _scalar(node):
    """A scalar constant's value: generated code spells it as a literal of its dtype."""
    return node.attrs["value"] if node.shape == () else None


register(OpDef("input", "source", lambda *, index, type: type, _input_impl, None,
               doc="argument `index` of the graph", lowering=Source()))
register(OpDef(
    "const", "source",
    lambda *, value: TensorType(np.asarray(value).dtype, np.shape(value)),
    lambda *, value: np.asarray(value), None,
    doc="a constant; scalars are inlined in generated code, arrays become kernel arguments",
    lowering=Source(value=_scalar),
))
