"""Reductions over axes (sum, max, min, prod) and `size`, the run-time element count of axes.

Float reductions accumulate in float64 and round once to the input dtype, in the
reference impl and in generated code alike. `mean`, `var` and `std` are
composites (compiler/numpy_api/reductions.py) built from `sum` and `size`, so they need no
rules of their own and work over symbolic (batch) axes.
"""

from __future__ import annotations

import math

import numpy as np

from compiler.ir import Sym, TensorType
from compiler.ops.lowering import Reduction, Source
from compiler.ops.registry import OpDef, bind, register
from compiler.ops.shapes import reduced_shape


def _infer(x: TensorType, *, axes: tuple[int, ...], keepdims: bool,
           nonempty: bool = False) -> TensorType:
    return TensorType(x.dtype, reduced_shape(x.shape, axes, keepdims))


def _widening_infer(x: TensorType, *, axes, keepdims) -> TensorType:
    # NumPy sums and multiplies booleans and small ints as the platform integer (int32 would
    # overflow where NumPy's int64 does not).
    dtype = x.dtype if x.is_float else np.sum(np.ones(1, x.dtype)).dtype
    return TensorType(dtype, reduced_shape(x.shape, axes, keepdims))


def _accumulating(np_reduce):
    def impl(x, *, axes, keepdims):
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.floating):
            r = np_reduce(x, axis=axes, keepdims=keepdims, dtype=np.float64)
            return np.asarray(r).astype(x.dtype)
        return np.asarray(np_reduce(x, axis=axes, keepdims=keepdims))

    return impl


def keepdims_of(g, x, axes, keepdims):
    """`g` (a reduction's cotangent) reshaped so it broadcasts against the reduced input `x`."""
    if keepdims:
        return g
    return bind("reshape", g, shape=reduced_shape(x.type.shape, axes, True))


def _sum_vjp(g, out, x, *, axes, keepdims):
    return (bind("broadcast_to", keepdims_of(g, x, axes, keepdims), shape=x.type.shape),)


def _chooser_vjp(g, out, x, *, axes, keepdims, nonempty=False):
    # Ties share the gradient evenly, as in JAX and PyTorch's amax/amin. A lane whose result
    # is NaN has no hit: its gradient is 0, not 0/0 (a zero cotangent stays 0), at the cost of
    # one maximum per lane rather than a NaN test per element.
    hit = np.where(x == keepdims_of(out, x, axes, keepdims), 1, 0).astype(x.dtype)
    count = np.maximum(bind("sum", hit, axes=axes, keepdims=True), 1)
    return (keepdims_of(g, x, axes, keepdims) * hit / count,)


def _prod_vjp(g, out, x, *, axes, keepdims):
    # out / x fails at zeros; instead use the product of the non-zero entries and
    # the count of zeros: one zero gets that product, any other entry gets 0. Those zeros are
    # written as the zero entries' values (`zero_sum`, 0 with a derivative of 1 to each zero
    # entry), not as constants, so that a second derivative sees them: at one zero the
    # others' partials are zero_sum * nonzero_prod / x (d/dx_z of them is the product of the
    # rest), at two zeros each zero's partial is the other zero's value times nonzero_prod.
    is_zero = x == 0
    nonzero_prod = bind("prod", np.where(is_zero, 1, x), axes=axes, keepdims=True)
    zeros = bind("sum", np.where(is_zero, 1, 0).astype(x.dtype), axes=axes, keepdims=True)
    zero_sum = bind("sum", np.where(is_zero, x, 0), axes=axes, keepdims=True)
    others = nonzero_prod / np.where(is_zero, 1, x)
    partial = np.where(
        zeros == 0,
        others,
        np.where(zeros == 1, np.where(is_zero, nonzero_prod, zero_sum * others),
                 np.where(is_zero & (zeros == 2), (zero_sum - x) * nonzero_prod, 0)),
    )
    return (keepdims_of(g, x, axes, keepdims) * partial,)


def sum_to_shape(g, shape):
    """Undo broadcasting: sum `g` over the axes that broadcasting added or stretched."""
    gshape = g.type.shape
    lead = len(gshape) - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and gshape[lead + i] != 1
    )
    if axes:
        g = bind("sum", g, axes=axes, keepdims=True)
    if g.type.shape != tuple(shape):
        g = bind("reshape", g, shape=tuple(shape))
    return g


# Generated code: an accumulator per output element, updated once per input element. Sums
# and products accumulate floats in float64 (rounded once), and numba's prange combines
# per-thread `+=`/`*=` accumulators; max/min keep NaN like np.maximum (a prelude helper).
# An empty lane of max/min is its identity (what any, all, initial= and logaddexp.reduce
# build on), unless the node is `nonempty` (the user's np.max): then it raises, as NumPy.
def _extreme_identity(op: str, dtype: np.dtype):
    if dtype == np.bool_:
        return op == "min"
    if dtype.kind == "f":
        return -np.inf if op == "max" else np.inf
    info = np.iinfo(dtype)
    return info.min if op == "max" else info.max


def _extreme(op: str):
    def update(target: str, value: str, helpers, dtype: np.dtype) -> str:
        helper = helpers.use("_maximum" if op == "max" else "_minimum", dtype)
        return f"{target} = {helper}({target}, {value})"

    return Reduction(lambda dtype: _extreme_identity(op, dtype), update,
                     no_identity="maximum" if op == "max" else "minimum")


def _extreme_impl(op: str):
    def impl(x, *, axes, keepdims, nonempty=False):
        x = np.asarray(x)
        reduce = np.max if op == "max" else np.min
        if nonempty or x.size:  # NumPy's ValueError for an empty lane of the user's max
            return reduce(x, axis=axes, keepdims=keepdims)
        return reduce(x, axis=axes, keepdims=keepdims, initial=_extreme_identity(op, x.dtype))

    return impl


SUM = Reduction(lambda dtype: 0, lambda target, value, helpers, dtype: f"{target} += {value}",
                widens=True, privatized=True)
PROD = Reduction(lambda dtype: 1, lambda target, value, helpers, dtype: f"{target} *= {value}",
                 widens=True, privatized=True)

register(OpDef("sum", "reduce", _widening_infer, _accumulating(np.sum), _sum_vjp, lowering=SUM))
register(OpDef("prod", "reduce", _widening_infer, _accumulating(np.prod), _prod_vjp, lowering=PROD))
register(OpDef("max", "reduce", _infer, _extreme_impl("max"), _chooser_vjp,
               lowering=_extreme("max")))
register(OpDef("min", "reduce", _infer, _extreme_impl("min"), _chooser_vjp,
               lowering=_extreme("min")))


def _size_infer(x: TensorType, *, axes, dtype) -> TensorType:
    return TensorType(np.dtype(dtype), ())


def _size_impl(x, *, axes, dtype):
    return np.asarray(int(np.prod([np.shape(x)[a] for a in axes])), dtype=dtype)


def _read_size(reader, node) -> str:
    """The product of the axes' lengths: static ones folded, symbolic ones (`N`) read by name."""
    from compiler.codegen.reading import atom
    from compiler.codegen.scalars import Operand, literal

    dims = [node.inputs[0].shape[a] for a in node.attrs["axes"]]
    static = math.prod(d for d in dims if isinstance(d, int))
    symbolic = sorted(d.name for d in dims if isinstance(d, Sym))
    if not symbolic:
        return literal(static, node.dtype)
    product = " * ".join(symbolic + ([str(static)] if static != 1 else []))
    if node.dtype == np.int64:
        return atom(product)
    return Operand(product, np.dtype(np.int64)).as_dtype(node.dtype)


register(OpDef("size", "meta", _size_infer, _size_impl, None,
               doc="number of elements along `axes` as a scalar of `dtype`; no gradient",
               lowering=Source(read=_read_size)))
