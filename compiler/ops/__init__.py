"""The primitive ops, one definition each; importing this package fills the op table."""

from compiler.ops import checks, elementwise, index, layout, linalg, reduce, source  # noqa: F401
from compiler.ops.registry import REGISTRY, DimConflict, OpDef, ShapeError, bind, get

__all__ = ["REGISTRY", "DimConflict", "OpDef", "ShapeError", "bind", "get"]
