"""Graph simplification: algebraic rewrites, constant folding, CSE and DCE, run to a fixed point.

Every rewrite keeps the node's exact type (shape and dtype) and keeps IEEE
semantics: `x * 0 -> 0` is deliberately absent, because it is wrong for inf and
NaN; the reverse pass avoids making such products in the first place.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compiler import ops
from compiler.ir import Graph, Node, TensorType, is_static, toposort

FOLD_LIMIT = 1024  # largest constant (in elements) that folding may create


def const_value(node: Node):
    """The scalar a node is known to hold everywhere (a constant, or one broadcast), else None."""
    while node.op == "broadcast_to" or (node.op == "reshape" and node.inputs[0].op == "const"):
        node = node.inputs[0]
    if node.op != "const":
        return None
    value = np.asarray(node.attrs["value"])
    if value.size == 0:
        return None
    first = value.flat[0]
    return first.item() if np.all(value == first) else None


def _is(node: Node, value) -> bool:
    v = const_value(node)
    return v is not None and not isinstance(v, bool) and v == value


def _new(op: str, inputs: tuple[Node, ...], attrs: dict, like: Node, **name) -> Node:
    out_type = ops.get(op).infer(*(x.type for x in inputs), **attrs)
    return Node(op, inputs, attrs, out_type, name.get("name", like.name), like.loc, like.grad_of)


# Each rule maps a node to a replacement or None; a replacement of a different
# type is discarded, so rules need not re-check broadcasting.
def _rules() -> dict[str, list[Callable[[Node], Node | None]]]:
    def arg(i):
        return lambda n: n.inputs[i]

    return {
        "add": [
            lambda n: n.inputs[0] if _is(n.inputs[1], 0) else None,  # x + 0 -> x
            lambda n: n.inputs[1] if _is(n.inputs[0], 0) else None,  # 0 + x -> x
            _joined_pads,  # pad(x, [0:64]) + pad(y, [64:128]) -> pad(concatenate(x, y), [0:128])
        ],
        "sub": [
            lambda n: n.inputs[0] if _is(n.inputs[1], 0) else None,  # x - 0 -> x
            lambda n: _new("neg", (n.inputs[1],), {}, n) if _is(n.inputs[0], 0) else None,  # 0 - x
        ],
        "mul": [
            lambda n: n.inputs[0] if _is(n.inputs[1], 1) else None,  # x * 1 -> x
            lambda n: n.inputs[1] if _is(n.inputs[0], 1) else None,  # 1 * x -> x
            lambda n: _new("neg", (n.inputs[0],), {}, n) if _is(n.inputs[1], -1) else None,
        ],
        "div": [lambda n: n.inputs[0] if _is(n.inputs[1], 1) else None],  # x / 1 -> x
        "pow": [
            lambda n: n.inputs[0] if _is(n.inputs[1], 1) else None,  # x ** 1 -> x
            lambda n: (_new("mul", (n.inputs[0], n.inputs[0]), {}, n)  # x ** 2 -> x * x
                       if _is(n.inputs[1], 2) else None),
            lambda n: (_new("mul", (_new("mul", (n.inputs[0], n.inputs[0]), {}, n, name=None),
                                    n.inputs[0]), {}, n)  # x ** 3 -> x * x * x (pow is slow)
                       if _is(n.inputs[1], 3) else None),
        ],
        "neg": [lambda n: n.inputs[0].inputs[0] if n.inputs[0].op == "neg" else None],  # --x
        "reshape": [
            lambda n: n.inputs[0] if n.inputs[0].type == n.type else None,  # no-op reshape
            lambda n: (_new("reshape", n.inputs[0].inputs, n.attrs, n)  # reshape of reshape
                       if n.inputs[0].op == "reshape" else None),
        ],
        "transpose": [
            lambda n: arg(0)(n) if n.attrs["perm"] == tuple(range(n.type.ndim)) else None,
            lambda n: (_new("transpose", n.inputs[0].inputs,  # transpose of transpose
                            {"perm": tuple(n.inputs[0].attrs["perm"][p] for p in n.attrs["perm"])},
                            n) if n.inputs[0].op == "transpose" else None),
        ],
        "broadcast_to": [lambda n: n.inputs[0] if n.inputs[0].type == n.type else None],
        "cast": [lambda n: n.inputs[0] if n.inputs[0].type == n.type else None],
        "sum": [lambda n: n.inputs[0] if not n.attrs["axes"] else None],  # sum over no axes
        "where": [
            lambda n: n.inputs[1] if n.inputs[1] is n.inputs[2] else None,  # where(c, x, x) -> x
            lambda n: n.inputs[1] if const_value(n.inputs[0]) is True else None,  # where(T, x, y)
            lambda n: n.inputs[2] if const_value(n.inputs[0]) is False else None,  # where(F, x, y)
        ],
        "slice": [lambda n: n.inputs[0] if n.inputs[0].type == n.type and all(
            s == (0, d, 1) for s, d in zip(n.attrs["index"], n.inputs[0].type.shape)) else None,
                  _slice_through],
        # concatenate(x[i:j], x[j:k], ...) along one axis -> x[i:k]: rows of a stack stacked back
        "concatenate": [_joined_slices, _flattened_concatenate],
        "pad_slice": [lambda n: n.inputs[0] if all(  # a pad that covers the whole shape
            s == (0, d, 1) for s, d in zip(n.attrs["index"], n.attrs["shape"])) else None],
    }


def _joined_pads(node: Node) -> Node | None:
    """The gradients of adjacent slices (q, k, v = qkv[..., :C], ...) summed: one concatenation
    padded once, instead of a zero-filled array per slice and their sum."""
    a, b = node.inputs
    if a.op != "pad_slice" or b.op != "pad_slice" or a.attrs["shape"] != b.attrs["shape"]:
        return None
    first, second = a.attrs["index"], b.attrs["index"]
    differ = [k for k, (x, y) in enumerate(zip(first, second)) if x != y]
    if len(differ) != 1 or first[differ[0]][2] != 1 or second[differ[0]][2] != 1:
        return None
    axis = differ[0]
    if first[axis][1] == second[axis][0]:
        parts, span = (a, b), (first[axis][0], second[axis][1], 1)
    elif second[axis][1] == first[axis][0]:
        parts, span = (b, a), (second[axis][0], first[axis][1], 1)
    else:
        return None
    joined = _new("concatenate", tuple(p.inputs[0] for p in parts), {"axis": axis}, node,
                  name=None)
    index = first[:axis] + (span,) + first[axis + 1:]
    return _new("pad_slice", (joined,), {"shape": a.attrs["shape"], "index": index}, node)


def _flattened_concatenate(node: Node) -> Node | None:
    """concatenate(concatenate(x, y), z) along one axis -> concatenate(x, y, z): one copy."""
    axis = node.attrs["axis"]
    if not any(x.op == "concatenate" and x.attrs["axis"] == axis for x in node.inputs):
        return None
    parts = tuple(p for x in node.inputs for p in (
        x.inputs if x.op == "concatenate" and x.attrs["axis"] == axis else (x,)))
    return _new("concatenate", parts, {"axis": axis}, node)


def _joined_slices(node: Node) -> Node | None:
    axis = node.attrs["axis"]
    parts = [x.inputs[0] if x.op == "reshape" and x.inputs[0].op == "slice"
             and x.inputs[0].type.shape == x.type.shape else x for x in node.inputs]
    if any(p.op != "slice" for p in parts) or len({p.inputs[0].id for p in parts}) != 1:
        return None
    base = parts[0].inputs[0]
    index = [p.attrs["index"] for p in parts]
    for k, spec in enumerate(index):
        others = [s for a, s in enumerate(spec) if a != axis]
        if others != [s for a, s in enumerate(index[0]) if a != axis] or spec[axis][2] != 1:
            return None
        if k and spec[axis][0] != index[k - 1][axis][1]:
            return None
    joined = list(index[0])
    joined[axis] = (index[0][axis][0], index[-1][axis][1], 1)
    return _new("slice", (base,), {"index": tuple(joined)}, node)


# A region read back after an assignment into a copy (compiler/numpy_api/assignment.py:
# `where(region, pad_slice(v), y)`), in forward and in the adjoints, reads what was written
# there, not the whole array: a loop that fills y row by row stays row-sized.
def _slice_through(node: Node) -> Node | None:
    x, region = node.inputs[0], node.attrs["index"]
    if not is_static(x.type.shape):
        return None
    if x.op == "pad_slice":
        if x.attrs["index"] == region:  # pad_slice(v, R)[R] -> v
            return x.inputs[0]
        if _disjoint(x.attrs["index"], region):  # pad_slice(v, R)[elsewhere] -> 0
            return _uniform(np.zeros(1, x.dtype), node)
        return None
    if x.op == "where":
        # where(c, a, b)[R] -> a[R] where c holds everywhere in R, b[R] where nowhere; at
        # once through a chain of them (y filled row by row in a loop of 100 steps is 100
        # of them deep, more than _rewrite's steps)
        branch = _branch_at(x, region)
        while branch is not None and branch.op == "where" and branch.type == x.type:
            deeper = _branch_at(branch, region)
            if deeper is None:
                break
            branch = deeper
        return None if branch is None else _sliced(branch, x.type.shape, node)
    if x.op in ("add", "sub") and all(y.type.shape == x.type.shape for y in x.inputs) and any(
            _region_known(y) for y in x.inputs):  # (a + b)[R] -> a[R] + b[R]
        return _new(x.op, tuple(_sliced(y, x.type.shape, node) for y in x.inputs), {}, node)
    return None


def _branch_at(x: Node, region) -> Node | None:
    """The branch of `where` node x that all of `region` reads, if its mask is a constant."""
    mask = constant_array(x.inputs[0])
    if mask is None:
        return None
    inside = np.broadcast_to(mask, x.type.shape)[_slices(region)]
    if inside.all():
        return x.inputs[1]
    if not inside.any():
        return x.inputs[2]
    return None


def _region_known(x: Node) -> bool:
    """Whether a slice of `x` may reduce to one of its inputs (the rules above)."""
    return x.op == "pad_slice" or (x.op == "where" and constant_array(x.inputs[0]) is not None)


def _sliced(x: Node, shape, like: Node) -> Node:
    """x, broadcast to `shape`, read at `like`'s region (a uniform x: its scalar)."""
    value = const_value(x)
    if value is not None:
        return _uniform(np.asarray([value], x.dtype), like)
    if x.type.shape != shape:
        x = _new("broadcast_to", (x,), {"shape": shape}, like)
    return _new("slice", (x,), {"index": like.attrs["index"]}, like)


def constant_array(node: Node):
    """The array a constant holds, through broadcasts and reshapes of it; else None."""
    if node.op in ("broadcast_to", "reshape"):
        value = constant_array(node.inputs[0])
        return None if value is None else ops.get(node.op).impl(value, **node.attrs)
    return node.attrs["value"] if node.op == "const" else None


def _slices(region) -> tuple:
    return tuple(slice(start, None if stop < 0 else stop, step) for start, stop, step in region)


def _disjoint(a, b) -> bool:
    """Whether two static regions share no element: they are apart along some axis."""
    return any(not set(range(*sa)) & set(range(*sb)) for sa, sb in zip(a, b))


RULES = _rules()


def _uniform(value: np.ndarray, like: Node) -> Node:
    """A value that is one scalar everywhere, as broadcast_to(scalar): generated code inlines
    the scalar instead of passing an array."""
    scalar = Node("const", (), {"value": np.asarray(value.flat[0], value.dtype)},
                  TensorType(value.dtype, ()), None, like.loc, like.grad_of)
    if like.type.shape == ():
        scalar.name = like.name
        return scalar
    return Node("broadcast_to", (scalar,), {"shape": like.type.shape}, like.type, like.name,
                like.loc, like.grad_of)


def _fold(node: Node) -> Node | None:
    """Evaluate a node whose inputs are constants: elementwise ops of uniform values at any
    shape (as a broadcast scalar), anything else if the result is small."""
    if node.op == "const":
        value = node.attrs["value"]
        if value.ndim and value.size and np.all(value == value.flat[0]):
            return _uniform(value, node)
        return None
    if node.op in ("input", "broadcast_to") or not node.inputs:
        return None
    if ops.get(node.op).kind == "elementwise":
        scalars = [const_value(x) for x in node.inputs]
        if all(v is not None for v in scalars):
            args = [np.asarray(v, x.dtype) for v, x in zip(scalars, node.inputs)]
            with np.errstate(all="ignore"):
                value = np.asarray(ops.get(node.op).impl(*args, **node.attrs), node.dtype)
            return _uniform(value.reshape(1), node)
    if not isinstance(node.type, TensorType):  # several results (a loop of constants only)
        return None
    if not all(x.op == "const" for x in node.inputs) or not is_static(node.type.shape):
        return None
    if int(np.prod(node.type.shape)) > FOLD_LIMIT:
        return None
    with np.errstate(all="ignore"):
        value = ops.get(node.op).impl(*(x.attrs["value"] for x in node.inputs), **node.attrs)
    value = np.asarray(value).astype(node.dtype)
    return Node("const", (), {"value": value}, TensorType(value.dtype, value.shape), node.name,
                node.loc, node.grad_of)


def _implicit_broadcast(x: Node) -> Node:
    """What an elementwise op may read instead of `x`, since it broadcasts by itself:
    broadcast_to(y) -> y, and reshape(y) that only prepends 1s -> y."""
    if x.op == "broadcast_to":
        return x.inputs[0]
    if x.op == "reshape":
        y = x.inputs[0]
        lead = x.type.ndim - y.type.ndim
        if lead >= 0 and x.type.shape == (1,) * lead + y.type.shape:
            return y
    return x


def _strip_broadcasts(node: Node) -> Node | None:
    """op(broadcast_to(y), z) -> op(y, z) when z still gives the shape: the loop reads y."""
    if ops.get(node.op).kind != "elementwise":
        return None
    inputs = tuple(_implicit_broadcast(x) for x in node.inputs)
    if all(a is b for a, b in zip(inputs, node.inputs)):
        return None
    try:
        return _new(node.op, inputs, node.attrs, node)
    except (ops.ShapeError, ops.DimConflict):
        return None


def _rewrite(node: Node) -> Node:
    for _ in range(100):
        replacement = _fold(node)
        if replacement is None and node.op in ops.REGISTRY and node.inputs:
            candidate = _strip_broadcasts(node)
            if candidate is not None and candidate.type == node.type:
                replacement = candidate
        if replacement is None:
            for rule in RULES.get(node.op, ()):
                candidate = rule(node)
                if candidate is not None and candidate.type == node.type:
                    replacement = candidate
                    break
        if replacement is None:
            return node
        if replacement.name is None:
            replacement.name = node.name
        node = replacement
    raise AssertionError(f"rewrites of {node} did not reach a fixed point")


def simplify(graph: Graph) -> Graph:
    """Rewrite, fold and deduplicate every node once, in topological order."""
    memo: dict[int, Node] = {n.id: n for n in graph.inputs}
    seen: dict[tuple, Node] = {}
    for node in toposort(graph.outputs, graph.inputs):
        if node.id in memo:
            continue
        inputs = tuple(memo[x.id] for x in node.inputs)
        if any(a is not b for a, b in zip(inputs, node.inputs)):
            node_ = Node(node.op, inputs, node.attrs, node.type, node.name, node.loc,
                         node.grad_of)
        else:
            node_ = node
        node_ = _rewrite(node_)
        key = (node_.op, tuple(x.id for x in node_.inputs), node_.attrs_key(), node_.type)
        if node_.op != "input":
            node_ = seen.setdefault(key, node_)  # CSE: the first equal node wins
        memo[node.id] = node_
    return Graph(list(graph.inputs), [memo[o.id] for o in graph.outputs], graph.name)


def optimize(graph: Graph) -> Graph:
    """simplify() to a fixed point; dead code goes because only reachable nodes remain."""
    for _ in range(10):
        before = len(graph.nodes())
        graph = simplify(graph)
        if len(graph.nodes()) == before:
            return graph
    return graph
