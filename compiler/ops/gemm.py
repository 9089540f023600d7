"""Products on BLAS: a batched matrix product as calls of the gemm intrinsic, read in place.

A product `out[batch..., m..., n...] = sum over k... of a[...] * b[...]` (a matmul, a
contraction of `einsum`) gives each axis of its operands a *role*: a batch axis of the
result (the kernel loops over those, one gemm per element), or a row (`m`), contracted (`k`)
or column (`n`) axis of the matrices. The generated code reads each operand where it lies:
an array, or a view that only relabels an array's axes (a transpose, a size-1 reshape), is
indexed at the batch position and, where a role spans several axes that lie next to each
other in memory, reshaped, which is free for a C-contiguous array:

    # (N, 32, 64) @ (64, 192): one gemm over N * 32 rows
    blas.matmul(h.reshape((N * 32, 64)), W_qkv, qkv.reshape((N * 32, 192)))
    # (N, 4, 32, 16) @ (N, 4, 16, 32), q and k transposes of (N, 32, 4, 16) arrays
    for i0 in range(N):
        for i1 in range(4):
            blas.matmul(q[i0, :, i1, :], k[i0, :, i1, :].T, att[i0, i1])

The intrinsic (compiler/codegen/blas.py) takes any 1-D or 2-D slice with one unit-stride
axis, so transposed and strided matrices need no copy. An operand that cannot be read so
(a slice, a broadcast, axes in another order) is first copied into an array of its own,
in its own axis order, which always can: the call's `operand_ok` says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compiler.ir import Shape, Sym
from compiler.ops.lowering import View, lowering_of

Role = tuple[str, int]  # ("batch", j): the result's batch axis j; ("m" | "k" | "n", position)

# Products of fewer multiply-adds than this, with no symbolic dimension, are loops in the
# consumer's nest rather than BLAS calls (the measurements are in compiler/ops/linalg.py).
LOOP_MAX_FLOPS = 8192
LOOP_MAX_INNER = 4  # products that sum at most this many terms per element are loops


@dataclass(frozen=True)
class Gemm:
    """A product's axes: the result is `batch + m + n` (its shape), each operand's axes have
    the roles `a` and `b`, and the matrices are (m, k) @ (k, n), each role's axes merged."""

    batch: Shape
    m: Shape
    k: Shape
    n: Shape
    a: tuple[Role, ...]
    b: tuple[Role, ...]

    def worth_blas(self) -> bool:
        """BLAS for products with a symbolic or large matrix; loops for small ones, for those
        that sum a handful of products per element (the loop reads its operands where they
        lie, where BLAS would need them copied: a convolution's 3 channels) and for those
        with neither rows nor columns (dot products)."""
        inner = _static_product(self.k)
        if inner is not None and inner <= LOOP_MAX_INNER or _static_product(self.m + self.n) == 1:
            return False
        dims = self.m + self.k + self.n
        if any(isinstance(d, Sym) for d in dims):
            return True
        return math.prod(dims) > LOOP_MAX_FLOPS


def _static_product(dims: Shape) -> int | None:
    """The product of `dims`, or None when one is symbolic (then it is not known to be 1)."""
    if any(isinstance(d, Sym) for d in dims):
        return None
    return math.prod(dims)


def roles(batch: int, first: str, first_n: int, second: str, second_n: int,
          batch_of: tuple[int, ...] | None = None) -> tuple[Role, ...]:
    """`batch` leading batch axes (the result's batch axes `batch_of`, by default the first
    ones), then `first_n` axes of role `first` and `second_n` of role `second`."""
    batch_of = tuple(range(batch)) if batch_of is None else batch_of
    return (tuple(("batch", j) for j in batch_of) + tuple((first, i) for i in range(first_n))
            + tuple((second, i) for i in range(second_n)))


# --- where an operand's elements lie ----------------------------------------------------------
@dataclass(frozen=True)
class Matrix:
    """An operand as the intrinsic takes it: `array` indexed by `index` (per array axis: a
    batch axis of the result to index by, a literal "0", or ":"), then `reshape`d to two dims
    when a role spans several axes, then transposed if its columns come first in memory.
    `ndim` is 1 when the slice is a vector (a row of `a`, a column of `b`)."""

    array: object  # the Node whose array is read
    index: tuple[int | str, ...]
    reshape: tuple[Shape, Shape] | None
    transposed: bool
    ndim: int


def through_views(x, is_array):
    """(the array that `x` reads, for each axis of `x` the array's axis or None) through views
    that only relabel axes; None when `x` reads an array any other way."""
    axes: tuple[int | None, ...] = tuple(range(len(x.shape)))
    while not is_array(x):
        lowering = lowering_of(x)
        if not (isinstance(lowering, View) and lowering.axes is not None):
            return None
        inner = lowering.axes(x)
        axes = tuple(None if a is None else inner[a] for a in axes)
        x = x.inputs[0]
    return x, axes


def matrix(x, operand_roles: tuple[Role, ...], groups: tuple[str, str], is_array):
    """How the gemm reads operand `x` whose axes have `operand_roles`; `groups` are its
    (row, column) roles: ("m", "k") for `a`, ("k", "n") for `b`. None: not in place."""
    found = through_views(x, is_array)
    if found is None:
        return None
    array, axes = found
    role_of: list[Role | None] = [None] * len(array.shape)
    for axis, role in zip(axes, operand_roles):
        if axis is not None:
            role_of[axis] = role
    return _strided(array, role_of, groups) or _reshaped(array, role_of, groups)


def _is_unit(d) -> bool:
    return d == 1


def _strided(array, role_of, groups) -> Matrix | None:
    """Each role on one axis: integer indices on the others, no reshape. A role whose axes
    all have size 1 keeps one of them (a (K, 1) matrix stays one), unless it has none."""
    sliced_axis: dict[str, int] = {}
    for axis, (d, role) in enumerate(zip(array.shape, role_of)):
        if role is None or role[0] == "batch":
            continue
        if not _is_unit(d):
            if role[0] in sliced_axis and not _is_unit(array.shape[sliced_axis[role[0]]]):
                return None  # two axes of one role need a reshape
            sliced_axis[role[0]] = axis
        else:
            sliced_axis.setdefault(role[0], axis)
    if "k" not in sliced_axis:
        return None
    index: list[int | str] = []
    for axis, (d, role) in enumerate(zip(array.shape, role_of)):
        if role is not None and role[0] == "batch":
            index.append("0" if _is_unit(d) else role[1])
        else:
            index.append(":" if axis in sliced_axis.values() else "0")
    last = max(sliced_axis.values())
    if not all(_is_unit(d) for d in array.shape[last + 1:]):
        return None  # the innermost axis is indexed: neither sliced axis has unit stride
    order = sorted(sliced_axis, key=sliced_axis.get)
    return Matrix(array, tuple(index), None, len(order) == 2 and order[0] != groups[0],
                  len(order))


def _reshaped(array, role_of, groups) -> Matrix | None:
    """Integer indices on leading axes, then every role's axes adjacent and in order in
    memory: the rest of the array is reshaped to a matrix (a C-contiguous slice)."""
    index: list[int | str] = []
    axis = 0
    for d, role in zip(array.shape, role_of):  # the leading batch and size-1 axes
        if role is not None and role[0] == "batch":
            index.append("0" if _is_unit(d) else role[1])
        elif role is None or _is_unit(d):
            index.append("0")
        else:
            break
        axis += 1
    runs: list[str] = []
    positions: dict[str, list[int]] = {g: [] for g in groups}
    for d, role in zip(array.shape[axis:], role_of[axis:]):
        if _is_unit(d):
            continue
        if role is None or role[0] == "batch":
            return None
        if not runs or runs[-1] != role[0]:
            runs.append(role[0])
        positions[role[0]].append(role[1])
    if len(runs) > 2 or len(set(runs)) != len(runs) or "k" not in runs \
            or any(p != sorted(p) for p in positions.values()):
        return None
    dims = {g: tuple(d for d, role in zip(array.shape[axis:], role_of[axis:])
                     if not _is_unit(d) and role[0] == g) for g in groups}
    first = runs[0] if len(runs) == 2 else groups[0]  # a lone k: a row of a, a column of b
    second = groups[1] if first == groups[0] else groups[0]
    return Matrix(array, tuple(index), (dims[first], dims[second]), first != groups[0], 2)


# --- generated code ---------------------------------------------------------------------------
def emit(k, node, gemm: Gemm, a: Matrix, b: Matrix) -> None:
    """The node's array, then one `blas.matmul` per element of the batch axes."""
    k.alloc(node)
    with k.loops(gemm.batch) as at:
        a_text, b_text = _operand_text(k, a, at), _operand_text(k, b, at)
        out_text = _result_text(k, node, gemm, at, a.ndim, b.ndim)
        k.line(f"{k.helpers.blas_matmul()}({a_text}, {b_text}, {out_text})", k.comment(node))


def _product_text(dims: Shape) -> str:
    from compiler.codegen.reading import dim_text

    static = math.prod(d for d in dims if isinstance(d, int))
    names = [dim_text(d) for d in dims if isinstance(d, Sym)]
    return " * ".join(names + ([str(static)] if static != 1 or not names else []))


def _sliced(name: str, index) -> str:
    """`name[index]`, without trailing full slices."""
    index = list(index)
    while index and index[-1] == ":":
        index.pop()
    return f"{name}[{', '.join(index)}]" if index else name


def _operand_text(k, matrix_: Matrix, at) -> str:
    index = [at[i] if isinstance(i, int) else i for i in matrix_.index]
    text = _sliced(k.names[matrix_.array.id], index)
    if matrix_.reshape is not None:
        rows, cols = (_product_text(dims) for dims in matrix_.reshape)
        text += f".reshape(({rows}, {cols}))"
    return text + (".T" if matrix_.transposed else "")


def _result_text(k, node, gemm: Gemm, at, a_ndim: int, b_ndim: int) -> str:
    """The result's rows and columns at the batch element `at` (a C-contiguous slice),
    reshaped to the product's (rows, columns), or to a vector where an operand is one."""
    text = _sliced(k.names[node.id], at)
    if a_ndim == 2 and b_ndim == 2:
        if len(gemm.m) == 1 and len(gemm.n) == 1:
            return text
        return text + f".reshape(({_product_text(gemm.m)}, {_product_text(gemm.n)}))"
    dims, others = (gemm.n, gemm.m) if a_ndim == 1 else (gemm.m, gemm.n)
    if len(dims) == 1 and not others:
        return text
    return text + f".reshape(({_product_text(dims)},))"
