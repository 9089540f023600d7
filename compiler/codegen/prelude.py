"""Helper functions that generated modules define before their kernel, and which of them it uses.

Each helper is a small `@numba.njit(inline="always")` function, so it costs
nothing at run time and keeps the kernel readable. Helpers that need float
constants come in one variant per dtype (`_tanh_f32`, `_tanh_f64`), because
numba types a bare `0.5` as float64 and would widen float32 code.
"""

from __future__ import annotations

import numpy as np

_DECORATOR = '@numba.njit(inline="always")'

# Generic helpers: the same source serves every dtype.
_GENERIC = {
    "_maximum": '''
def _maximum(a, b):
    # np.maximum's rule: a NaN in either argument wins (the builtin max() would drop it).
    return a if a > b or a != a else b
''',
    "_minimum": '''
def _minimum(a, b):
    # np.minimum's rule: a NaN in either argument wins (the builtin min() would drop it).
    return a if a < b or a != a else b
''',
    "_wrap": '''
def _wrap(index, n):
    # NumPy's negative indices count from the end.
    return index + n if index < 0 else index
''',
    "_checked_wrap": '''
def _checked_wrap(index, n, site):
    # a position the kernel computed (xs[i + 1]) is checked where it is read: numba reads
    # out of bounds silently
    if index < -n or index >= n:
        raise IndexOutOfBounds(site, index, n)
    return index + n if index < 0 else index
''',
    "_check_finite": '''
def _check_finite(x, site):
    # anomaly mode (compiler/checks.py): the first NaN or Inf stops the kernel, naming `site`
    if not np.isfinite(x):
        raise FloatingPointError(site, x)
    return x
''',
    "_check_index": '''
def _check_index(indices, n, site):
    for index in indices.flat:
        if index < -n or index >= n:
            raise IndexOutOfBounds(site, index, n)
''',
    "_check_scalar_index": '''
def _check_scalar_index(index, n, site):
    # a scalar: a loop body's 0-d index (fori_loop's i), a position computed before a loop
    if index < -n or index >= n:
        raise IndexOutOfBounds(site, index, n)
''',
}

# Per-dtype helpers: functions of `c`, which spells a float constant in the helper's dtype.
TANH_TAYLOR_BELOW = 0.1


def _tanh(c) -> str:
    return f"""
def _tanh(x):
    # exp(-2|x|) <= 1 cannot overflow, so large |x| gives +-1, never inf/inf = NaN.
    a = abs(x)
    e = vm.exp({c(-2)} * a)
    far = np.copysign(({c(1)} - e) / ({c(1)} + e), x)
    # Near 0, 1 - e cancels; there the series x - x^3/3 + 2x^5/15 - ... is exact to rounding.
    x2 = x * x
    tail = {c(-929569 / 638512875)}
    tail = {c(21844 / 6081075)} + x2 * tail
    tail = {c(-1382 / 155925)} + x2 * tail
    tail = {c(62 / 2835)} + x2 * tail
    tail = {c(-17 / 315)} + x2 * tail
    tail = {c(2 / 15)} + x2 * tail
    near = x + x * x2 * ({c(-1 / 3)} + x2 * tail)
    return near if a < {c(TANH_TAYLOR_BELOW)} else far
"""


_PER_DTYPE = {"_tanh": _tanh}
_USES_VECTOR_MATH = {"_tanh"}
VECTOR_MATH_IMPORT = "from compiler.codegen import vecmath as vm"
_SUFFIX = {"float32": "f32", "float64": "f64"}


def _per_dtype_source(name: str, dtype: np.dtype) -> str:
    from compiler.codegen.scalars import literal

    source = _PER_DTYPE[name](lambda value: literal(value, dtype))
    return source.replace(f"def {name}(", f"def {name}_{_SUFFIX[dtype.name]}(", 1)


class HelperSet:
    """The helpers a module uses, collected while its kernel is written."""

    def __init__(self) -> None:
        self._used: dict[str, str] = {}  # generated name -> source
        self._errors: set[str] = set()
        self._blas = False
        self._lapack = False
        self._stack: set[str] = set()
        self.uses_vector_math = False
        self.uses_math = False  # an elementwise template calls Python's math module
        self._index_sites: dict[tuple[str, str, int | None], int] = {}
        self._empty_sites: dict[tuple[str, str, str], int] = {}

    def vector_math(self, name: str) -> str:
        """The call for NumPy's `name` (np.exp ...) through compiler.codegen.vecmath."""
        self.uses_vector_math = True
        return f"vm.{name}"

    def use(self, name: str, dtype) -> str:
        """The name to call for helper `name` on values of `dtype`; records the use."""
        if name in _GENERIC:
            self._used.setdefault(name, _GENERIC[name])
            return name
        if name in _PER_DTYPE:
            dtype = np.dtype(dtype)
            if dtype.name not in _SUFFIX:
                raise NotImplementedError(f"{name} on {dtype} values")
            generated = f"{name}_{_SUFFIX[dtype.name]}"
            self.uses_vector_math |= name in _USES_VECTOR_MATH
            self._used.setdefault(generated, _per_dtype_source(name, dtype))
            return generated
        raise KeyError(f"generated code calls unknown helper {name!r}")

    def index_site(self, node, axis: int | None) -> int:
        """The number that a check of `node`'s indices raises with (the module's
        `IndexOutOfBounds`, compiler.errors.KernelIndexError): the user's line and statement
        and the axis indexed, recorded for the error's text."""
        loc = node.loc
        site = (str(loc), loc.text.strip(), axis) if loc is not None else \
            (f"{node.op} in a kernel", "", axis)
        return self._index_sites.setdefault(site, len(self._index_sites))

    def empty_site(self, node, ufunc: str) -> int:
        """The number that a check that `node` (a max or min) reduces no empty axis raises
        with (the module's `EmptyReduction`, compiler.errors.KernelEmptyReductionError)."""
        loc = node.loc
        site = (str(loc), loc.text.strip(), ufunc) if loc is not None else \
            (f"{node.op} in a kernel", "", ufunc)
        return self._empty_sites.setdefault(site, len(self._empty_sites))

    def stack_array(self, name: str) -> str:
        """The name to call for compiler.codegen.stack's `name` (`zeros`, `full`): an array in
        the kernel's frame."""
        self._stack.add(name)
        return f"_stack_{name}"

    def blas_matmul(self) -> str:
        """The name to call for a BLAS matrix product into an array (compiler/codegen/blas.py)."""
        self._blas = True
        return "blas.matmul"

    def blas_matmul_add(self) -> str:
        """The name to call for a BLAS matrix product added into an array."""
        self._blas = True
        return "blas.matmul_add"

    def lapack(self, name: str) -> str:
        """The name to call for compiler.codegen.lapack's `name` (`solve`, `inv`, ...)."""
        self._lapack = True
        return f"lapack.{name}"

    def use_error(self, name: str) -> str:
        """The name of exception class `name` of compiler.errors, imported by the module."""
        self._errors.add(name)
        return name

    def imports(self) -> list[str]:
        lines = ["import math"] if self.uses_math else []
        lines += ["import numba", "import numpy as np"]
        if self._blas:
            lines.append("from compiler.codegen import blas")
        if self._lapack:
            lines.append("from compiler.codegen import lapack")
        if self.uses_vector_math:
            lines.append(VECTOR_MATH_IMPORT)
        if self._stack:
            names = ", ".join(f"{name} as _stack_{name}" for name in sorted(self._stack))
            lines.append(f"from compiler.codegen.stack import {names}")
        errors = self._errors | ({"KernelIndexError"} if self._index_sites else set()) \
            | ({"KernelEmptyReductionError"} if self._empty_sites else set())
        if errors:
            lines.append(f"from compiler.errors import {', '.join(sorted(errors))}")
        return lines

    def source(self) -> str:
        """The helpers' definitions, sorted by name so the text is deterministic, after the
        module's index and empty-reduction errors (their sites numbered as the kernels raise
        them)."""
        parts = [f"{_DECORATOR}{self._used[name].rstrip()}\n" for name in sorted(self._used)]
        if self._index_sites:
            sites = "".join(f"        {site!r},\n" for site in self._index_sites)
            parts.insert(0, "class IndexOutOfBounds(KernelIndexError):\n"
                            "    # (the user's line, its statement, the axis) per check\n"
                            f"    SITES = (\n{sites}    )\n")
        if self._empty_sites:
            sites = "".join(f"        {site!r},\n" for site in self._empty_sites)
            parts.insert(0, "class EmptyReduction(KernelEmptyReductionError):\n"
                            "    # (the user's line, its statement, the ufunc) per check\n"
                            f"    SITES = (\n{sites}    )\n")
        return "\n\n".join(parts)
