"""np.einsum on traced arrays: any subscripts NumPy accepts, as products, sums and diagonals.

The subscripts are read as NumPy reads them (`...` broadcasting, implicit output in
alphabetical order, the interleaved `einsum(x, [0, 1], y, [1, 2])` form), then evaluated
with the ops gradfuse has, so the derivative comes for free:

1. a label repeated within an operand (`ii`, a diagonal or trace) keeps the entries where
   its axes agree: the operand times a 0/1 mask, summed over the repeats;
2. an axis of length 1 that another operand gives a length broadcasts: it is dropped;
3. a label that only one operand has and the output does not is summed out at once;
4. operands are multiplied left to right: labels both have and later operands or the output
   need are batch axes, the others they share are summed. A product that sums something is a
   `contract` (the transposes put its operands in (batch, kept, summed) order: BLAS reads
   them in place when it can); one that sums nothing is a broadcast multiplication;
5. what remains is summed to the output's labels and transposed into their order.
"""

from __future__ import annotations

import string

import numpy as np

from compiler.errors import TraceError, UnsupportedError
from compiler.ir import Sym
from compiler.numpy_api.dispatch import implements, no_out, traced
from compiler.numpy_api.elementwise import astype
from compiler.ops import bind
from compiler.ops.linalg import product
from compiler.symdim import Concretize
from compiler.user_code import user_loc

Labels = tuple[str, ...]  # one label per axis: a letter, or "...0", "...1" for ellipsis axes


@implements(np.einsum)
def einsum(*operands, out=None, dtype=None, order="K", casting="safe", optimize=False):
    no_out("np.einsum", out)
    subscripts, arrays = _subscripts_and_operands(operands)
    arrays = [traced(a) for a in arrays]
    if dtype is not None:  # NumPy computes in it (np.einsum("i->", ints, dtype=float): no overflow)
        arrays = [astype(a, dtype) if a.dtype != np.dtype(dtype) else a for a in arrays]
    numbers = [a.dtype for a in arrays if a.dtype != np.bool_]
    if numbers:  # a mask beside numbers is computed in their dtype, as NumPy does
        common = np.result_type(*numbers)
        arrays = [astype(a, common) if a.dtype == np.bool_ else a for a in arrays]
    if any(a.dtype == np.bool_ for a in arrays):
        raise UnsupportedError("np.einsum of boolean arrays is not supported: cast them to a "
                               "number type first (x.astype(np.float32))", user_loc())
    inputs, output = parse(subscripts, [a.ndim for a in arrays])
    dims = _label_dims(arrays, inputs)
    result = _evaluate(list(zip(arrays, inputs)), output, dims)
    return astype(result, dtype) if dtype is not None else result


def _subscripts_and_operands(args) -> tuple[str, list]:
    """The subscripts string and the operands, from either of einsum's calling forms."""
    if not args:
        raise TraceError("np.einsum needs subscripts and operands", user_loc())
    if isinstance(args[0], str):
        return args[0], list(args[1:])
    # einsum(op0, sublist0, op1, sublist1, ..., [sublistout]): labels 0-51 are A-Z, a-z
    letters = string.ascii_uppercase + string.ascii_lowercase
    pairs, rest = list(args), None
    if len(pairs) % 2:
        rest = pairs.pop()

    def term(sublist) -> str:
        text = ""
        for label in sublist:
            if label is Ellipsis:
                text += "..."
            elif isinstance(label, (int, np.integer)) and 0 <= label < len(letters):
                text += letters[label]
            else:
                raise TraceError(f"np.einsum: subscript {label!r} is not an int in [0, 52) "
                                 "or Ellipsis", user_loc())
        return text

    terms = ",".join(term(pairs[k]) for k in range(1, len(pairs), 2))
    return terms + ("" if rest is None else "->" + term(rest)), pairs[0::2]


def parse(subscripts: str, ndims: list[int]) -> tuple[list[Labels], Labels]:
    """Each operand's labels and the output's, as NumPy reads `subscripts`."""
    text = subscripts.replace(" ", "")
    explicit = "->" in text
    left, _, right = text.partition("->")
    terms = left.split(",")
    if len(terms) != len(ndims):
        _fail(f"{len(terms)} subscript terms for {len(ndims)} operands")
    for t in terms + [right]:
        bad = set(t.replace("...", "")) - set(string.ascii_letters)
        if bad or t.count("...") > 1:
            _fail(f"invalid subscript term {t!r}: use letters and at most one '...'")
    ellipsis_lengths = []
    for k, (t, ndim) in enumerate(zip(terms, ndims)):
        letters = len(t.replace("...", ""))
        if letters > ndim or ("..." not in t and letters != ndim):
            _fail(f"operand {k} has {ndim} dimensions but subscripts {t!r}")
        ellipsis_lengths.append(ndim - letters if "..." in t else 0)
    n_ellipsis = max(ellipsis_lengths, default=0)
    ellipsis = tuple(f"...{i}" for i in range(n_ellipsis))
    inputs = []
    for t, length in zip(terms, ellipsis_lengths):
        before, _, after = t.partition("...")
        inputs.append(tuple(before) + ellipsis[n_ellipsis - length:] + tuple(after))
    if explicit:
        if "..." not in right and n_ellipsis:
            _fail("the output has no '...' for the operands' broadcast dimensions")
        before, _, after = right.partition("...")
        output = tuple(before) + (ellipsis if "..." in right else ()) + tuple(after)
        letters = [c for c in output if len(c) == 1]
        if len(set(letters)) != len(letters):
            _fail(f"output subscripts {right!r} repeat a label")
        known = {c for labels in inputs for c in labels}
        missing = [c for c in letters if c not in known]
        if missing:
            _fail(f"output subscript {missing[0]!r} appears in no operand")
    else:
        counts: dict[str, int] = {}
        for labels in inputs:
            for c in labels:
                if len(c) == 1:
                    counts[c] = counts.get(c, 0) + 1
        output = ellipsis + tuple(sorted(c for c, n in counts.items() if n == 1))
    return inputs, output


def _fail(message: str):
    raise TraceError(f"np.einsum: {message}", user_loc())


def _label_dims(arrays, inputs) -> dict[str, object]:
    """Each label's length: axes of length 1 broadcast against the others."""
    dims: dict[str, object] = {}
    for a, labels in zip(arrays, inputs):
        for c, d in zip(labels, a.type.shape):
            known = dims.get(c, 1)
            if known == 1 or known == d:
                dims[c] = d
            elif d != 1:
                for sym in (known, d):  # a batch size met a number: specialize, then compare
                    if isinstance(sym, Sym):
                        raise Concretize(sym)
                what = "the '...' dimensions have" if c.startswith("...") else f"label {c!r} has"
                _fail(f"{what} lengths {known} and {d}: operands could not be broadcast together")
    return dims


def _evaluate(terms: list, output: Labels, dims: dict) -> object:
    terms = [_broadcast_ones(*_diagonal(x, labels), dims) for x, labels in terms]
    while len(terms) > 1:
        (a, a_labels), (b, b_labels) = terms[0], terms[1]
        needed = set(output).union(*(labels for _, labels in terms[2:]))
        a, a_labels = _sum_out(a, a_labels, needed | set(b_labels))
        b, b_labels = _sum_out(b, b_labels, needed | set(a_labels))
        last = len(terms) == 2
        terms = [_product(a, a_labels, b, b_labels, needed, output if last else None)] \
            + terms[2:]
    x, labels = _sum_out(*terms[0], set(output))
    if labels != output:
        x = bind("transpose", x, perm=tuple(labels.index(c) for c in output))
    return x


def _diagonal(x, labels: Labels):
    """A label repeated within the operand: the entries where its axes agree (a 0/1 mask
    times x, summed over the repeated axes)."""
    for c in dict.fromkeys(labels):
        axes = [i for i, d in enumerate(labels) if d == c]
        if len(axes) == 1:
            continue
        n = x.type.shape[axes[0]]
        for d in (x.type.shape[a] for a in axes):
            if isinstance(d, Sym):  # the mask needs the length: specialize to it
                raise Concretize(d)
        for a in axes[1:]:
            if x.type.shape[a] != n:
                _fail(f"label {c!r} is repeated with lengths {n} and {x.type.shape[a]}")
        mask_shape = [1] * len(labels)
        for a in axes:
            mask_shape[a] = n
        grid = np.indices([n] * len(axes))
        mask = np.all(grid == grid[0], axis=0).astype(x.dtype).reshape(mask_shape)
        x = bind("sum", x * mask, axes=tuple(axes[1:]), keepdims=False)
        labels = tuple(d for i, d in enumerate(labels) if i not in axes[1:])
    return x, labels


def _broadcast_ones(x, labels: Labels, dims: dict):
    """Axes of length 1 whose label has a length elsewhere are dropped: they broadcast."""
    keep = [i for i, c in enumerate(labels) if not (x.type.shape[i] == 1 and dims[c] != 1)]
    if len(keep) == len(labels):
        return x, labels
    x = bind("reshape", x, shape=tuple(x.type.shape[i] for i in keep))
    return x, tuple(labels[i] for i in keep)


def _sum_out(x, labels: Labels, needed: set):
    """x summed over the labels no one else needs."""
    axes = tuple(i for i, c in enumerate(labels) if c not in needed)
    if not axes:
        return x, labels
    return (bind("sum", x, axes=axes, keepdims=False),
            tuple(c for i, c in enumerate(labels) if i not in axes))


def _transposed(x, labels: Labels, order: Labels):
    if labels == order:
        return x
    return bind("transpose", x, perm=tuple(labels.index(c) for c in order))


def _product(a, a_labels: Labels, b, b_labels: Labels, needed: set, output: Labels | None):
    """a * b, summed over the labels they share and no one else needs; the last product
    comes out in the `output`'s order where it can (see `_in_order`)."""
    shared = [c for c in a_labels if c in b_labels]
    summed = tuple(c for c in shared if c not in needed)
    order = _in_order(a_labels, b_labels, shared, output) if output is not None else None
    if order is None:
        batch = tuple(c for c in shared if c in needed)
        order = batch, tuple(c for c in a_labels if c not in shared), \
            tuple(c for c in b_labels if c not in shared), False
    batch, first_own, second_own, swapped = order
    (x, x_labels), (y, y_labels) = ((b, b_labels), (a, a_labels)) if swapped else \
        ((a, a_labels), (b, b_labels))
    x = _arranged(x, x_labels, batch + first_own + summed)
    y = _arranged(y, y_labels, batch + summed + second_own)
    return product(x, y, len(batch), len(summed)), batch + first_own + second_own


def _in_order(a_labels: Labels, b_labels: Labels, shared: list, output: Labels):
    """(batch, first operand's own labels, second's own, whether b goes first) such that the
    product's axes (batch, first's, second's) are the output's, if any: the output's longest
    tail that is one operand's labels then the other's, the rest batch axes (a label of one
    operand among them broadcasts against the other: 'nchw,oc->nohw' loops over n)."""
    if set(output) != (set(a_labels) | set(b_labels)) - (set(shared) - set(output)):
        return None
    for p in range(len(output) + 1):
        head, tail = output[:p], output[p:]
        if any(c in shared for c in tail):
            continue
        for first, second, swapped in ((a_labels, b_labels, False), (b_labels, a_labels, True)):
            k = 0
            while k < len(tail) and tail[k] in first:
                k += 1
            if all(c in second for c in tail[k:]):
                return head, tail[:k], tail[k:], swapped
    return None


def _arranged(x, labels: Labels, order: Labels):
    """x with its axes in `order`; labels it lacks become axes of length 1 (broadcast)."""
    own = tuple(c for c in order if c in labels)
    x = _transposed(x, labels, own)
    if len(own) != len(order):
        shape = dict(zip(own, x.type.shape))
        x = bind("reshape", x, shape=tuple(shape.get(c, 1) for c in order))
    return x
