"""The primitive ops, one definition each; importing this package fills the op table.

Every module of this package is imported here, so an op in a new module is in the table
without a line anywhere else (docs/adding_an_op.md).
"""

import importlib
import pkgutil

from compiler.ops.registry import REGISTRY, DimConflict, OpDef, ShapeError, bind, get

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
del _module

__all__ = ["REGISTRY", "DimConflict", "OpDef", "ShapeError", "bind", "get"]
