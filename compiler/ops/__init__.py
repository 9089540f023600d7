"""The primitive ops, one definition each; importing this package fills the op table."""

from compiler.ops import (  # noqa: F401
    checks,
    control,
    elementwise,
    index,
    layout,
    linalg,
    reduce,
    source,
)
from compiler.ops.registry import REGISTRY, DimConflict, OpDef, ShapeError, bind, get

__all__ = ["REGISTRY", "DimConflict", "OpDef", "ShapeError", "bind", "get"]
