"""Loops that stay loops: `scan` and `fori_loop`, as in JAX's `lax`.

    def gru(params, xs, h0):
        def step(h, x):
            h = gru_cell(params, h, x)
            return h, h                       # (new carry, this step's output)
        h, hs = scan(step, h0, xs)            # hs stacks every step's h
        return np.mean((hs - targets) ** 2)

Inside a compiled function the step function is traced once, whatever the length, into
one `scan` node (compiler/ops/control.py); reverse mode makes a reverse scan of it, and
the generated code calls the step's own function in a `for` loop, forward and backward.
Values the step reads from the enclosing function (the weights above) become inputs of
the loop that every step shares. Outside a compiled function both run as plain Python
loops over NumPy values, so the same code works either way.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from compiler import pytree
from compiler.builder import Builder
from compiler.errors import TraceError
from compiler.ir import Dim, Graph, Node, Sym, TensorType
from compiler.ops.control import Loop
from compiler.symdim import Concretize
from compiler.tracer import Tracer, building, current_builder
from compiler.user_code import user_loc


def scan(f: Callable, init: Any, xs: Any = None, length: int | None = None,
         reverse: bool = False) -> tuple[Any, Any]:
    """Run `carry, y = f(carry, x)` over the leading axis of `xs`; returns the last carry and
    the `y`s stacked (JAX's `lax.scan`). `init` and `xs` may be arrays or dicts, lists and
    tuples of them; with no `xs`, `length` says how many steps (and `x` is None); `reverse`
    runs the steps last to first (the stacked `y`s keep the order of `xs`)."""
    builder = current_builder()
    if builder is None:
        return _scan_eagerly(f, init, xs, length, reverse)
    return _trace_scan(builder, f, init, xs, length, reverse)


def fori_loop(lower: int, upper: int, body: Callable, init: Any) -> Any:
    """`val = body(i, val)` for i in range(lower, upper); returns the last `val`
    (JAX's `lax.fori_loop`). `i` is an int64 scalar."""
    try:  # a symbolic size (x.shape[0]) specializes the function to it, as range() does
        lower, upper = operator.index(lower), operator.index(upper)
    except TypeError:
        raise TypeError("fori_loop's bounds must be Python or NumPy ints (known when "
                        f"tracing); got {lower!r} and {upper!r}") from None
    if current_builder() is None:
        value = init
        for i in range(lower, upper):
            value = body(np.int64(i), value)
        return value

    def step(value, i):
        return body(i, value), None

    # the loop and its errors are named after the user's function, not this wrapper
    step.__name__ = _name_of(body)
    step.shown_name = step.__name__ if step.__name__ != "step" else "fori_loop's body"
    value, _ = scan(step, init, np.arange(lower, upper, dtype=np.int64))
    return value


# --- plain NumPy -----------------------------------------------------------------------
def _scan_eagerly(f, init, xs, length, reverse):
    leaves, tree = pytree.flatten(xs)
    n = _length([np.shape(x) for x in leaves], length)
    if n == 0:
        raise ValueError("scan of no steps outside a compiled function: there is no step "
                         "to tell the shape of its outputs")
    init_leaves, init_tree = pytree.flatten(init)
    peers = _weak_peers([np.asarray(x).dtype for x in leaves], init_leaves)
    carry = pytree.unflatten(init_tree, [np.asarray(v, np.result_type(*peers, v))
                                         if _is_weak(v) and not _is_weak_integer(v) else v
                                         for v in init_leaves])
    ys = []
    for t in (range(n - 1, -1, -1) if reverse else range(n)):
        x = pytree.unflatten(tree, [leaf[t] for leaf in leaves]) if xs is not None else None
        carry, y = _pair(f(carry, x), f)
        ys.append(y)
    if reverse:
        ys.reverse()
    columns, y_tree = zip(*(pytree.flatten(y) for y in ys))
    stacked = [np.stack(column) for column in zip(*columns)]
    return carry, pytree.unflatten(y_tree[0], stacked)


# --- tracing -------------------------------------------------------------------------
class _BodyBuilder(Builder):
    """The builder of a loop body: values of enclosing traces that the body uses become
    inputs of the body (the loop's consts), each once."""

    def __init__(self, parent: Builder) -> None:
        super().__init__(parent.sym_hints)
        self.parent = parent
        self.user_frames = parent.user_frames  # the step function's names are the user's too
        self.captured: dict[int, Node] = {}  # enclosing node id -> the body's input for it
        self.enclosing: list[Node] = []  # the enclosing nodes, in order of capture

    def capture(self, value: Tracer) -> Node:
        outer = self.parent.lift(value, [])  # the enclosing trace captures it first if needed
        if outer.id not in self.captured:
            self.captured[outer.id] = self.input(-1, outer.type, outer.name).node
            self.enclosing.append(outer)
        return self.captured[outer.id]


def _trace_scan(builder: Builder, f, init, xs, length, reverse):
    loc = builder.loc_override or user_loc()  # a DSL loop sets the line it is on
    # Now, at the user's line: a traced flag is an error (or, a Python bool argument, static)
    # here, not when the loop is printed or compiled.
    reverse = bool(reverse)
    init_leaves, carry_tree = pytree.flatten(init)
    xs_leaves, xs_tree = pytree.flatten(xs)
    xs_nodes = [builder.lift(v, []) for v in xs_leaves]
    peers = _weak_peers([x.dtype for x in xs_nodes], init_leaves)
    # a Python int or bool (a step counter, a flag) stays one unless the step makes it a float
    inits = [builder.lift(v, [] if _is_weak_integer(v) else peers) for v in init_leaves]
    for x in xs_nodes:
        if x.type.ndim == 0:
            raise TraceError("scan's xs must have a leading axis to loop over; got a scalar",
                             loc)
    n = _length([x.shape for x in xs_nodes], length, loc)
    weak = [_is_weak(v) for v in init_leaves]
    carry_types = [n_.type for n_ in inits]
    for _ in range(3):  # again if a Python-scalar carry comes back as another type
        body, outputs, y_tree, result_types = _trace_body(builder, f, carry_tree, carry_types,
                                                          xs_tree, xs_nodes, loc)
        retyped = [_retyped(t, r, v, peers) if w else t
                   for t, r, v, w in zip(carry_types, result_types, init_leaves, weak)]
        if retyped == carry_types:
            break
        carry_types = retyped
    _check_carries(carry_types, result_types, carry_tree, f, loc)
    inits = [node if node.type == t else builder.lift(np.asarray(v, t.dtype), [])
             for node, v, t in zip(inits, init_leaves, carry_types)]
    consts = body.enclosing
    inputs = list(body.captured.values()) + outputs["carries"] + outputs["xs"]
    for k, node in enumerate(inputs):  # consts first: the scan's input order
        node.attrs["index"] = k
    graph = Graph(inputs, outputs["results"], name=_name_of(f))
    loop = Loop(graph, len(consts), len(inits), n, reverse, name=_name_of(f))
    traced = [builder.wrap(x) for x in (*consts, *inits, *xs_nodes)]
    previous, builder.loc_override = builder.loc_override, loc
    try:
        result = builder.emit("scan", tuple(traced), {"loop": loop})
        items = [builder.emit("tuple_get", (result,), {"index": k})
                 for k in range(len(graph.outputs))]
    finally:
        builder.loc_override = previous
    nk = len(inits)
    return pytree.unflatten(carry_tree, items[:nk]), pytree.unflatten(y_tree, items[nk:])


def _trace_body(builder, f, carry_tree, carry_types, xs_tree, xs_nodes, loc):
    body = _BodyBuilder(builder)
    carry_names = pytree.paths(carry_tree, "carry")
    carries = [body.input(-1, t, name) for t, name in zip(carry_types, carry_names)]
    x_names = pytree.paths(xs_tree, "x")
    xs = [body.input(-1, TensorType(x.dtype, x.shape[1:]), name)
          for x, name in zip(xs_nodes, x_names)]
    with building(body):
        x = pytree.unflatten(xs_tree, xs) if xs_nodes or xs_tree.kind != "none" else None
        new_carry, y = _pair(f(pytree.unflatten(carry_tree, carries), x), f, loc)
        new_leaves, new_tree = pytree.flatten(new_carry)
        if new_tree != carry_tree:
            raise TraceError(f"{_shown_name(f)} must return its carry in the structure it "
                             f"received ({_describe(carry_tree)}), but returned "
                             f"{_describe(new_tree)}", loc)
        results = [body.lift(v, [t.dtype]) for v, t in zip(new_leaves, carry_types)]
        y_leaves, y_tree = pytree.flatten(y)
        results += [body.lift(v, []) for v in y_leaves]
    nodes = {"carries": [c.node for c in carries], "xs": [x.node for x in xs],
             "results": results}
    return body, nodes, y_tree, [r.type for r in results[:len(carries)]]


def _is_weak(value) -> bool:
    return isinstance(value, (bool, int, float)) and not isinstance(value, np.generic)


def _is_weak_integer(value) -> bool:
    return _is_weak(value) and not isinstance(value, float)


def _retyped(t: TensorType, r: TensorType, value, peers: list[np.dtype]) -> TensorType:
    """The type of a Python-scalar carry that came in as `t` and went out as `r`: `r`, but a
    Python int made a float takes the float type NumPy gives it (0 + float32 is float32)."""
    if r == t or r.shape != t.shape:
        return t
    if peers and not np.issubdtype(t.dtype, np.floating) and np.issubdtype(r.dtype, np.floating):
        return TensorType(np.result_type(*peers, value), t.shape)
    return r


def _weak_peers(xs_dtypes: list[np.dtype], init_leaves: list) -> list[np.dtype]:
    """The dtypes a Python scalar in `init` adapts to, as in NumPy 2 (weak scalars): the float
    types of the arrays the loop runs over and of the other carries (a float32 sum starting
    from 0.0 stays float32)."""
    dtypes = list(xs_dtypes) + [v.dtype for v in init_leaves
                                if isinstance(v, (Tracer, np.ndarray, np.generic))]
    return [d for d in dtypes if np.issubdtype(d, np.floating)]


def _check_carries(expected: list[TensorType], got: list[TensorType], tree, f, loc) -> None:
    for name, t, r in zip(pytree.paths(tree, "carry"), expected, got):
        if t != r:
            raise TraceError(f"{_shown_name(f)} must return each carry with the type it received: "
                             f"'{name}' came in as {t} and went out as {r} (cast it, or start "
                             "the loop from a value of the type the step makes)", loc)


def _pair(result, f, loc=None):
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TraceError(f"the step function {_name_of(f)} must return a pair "
                         "(new carry, output); return (carry, None) for no output", loc)
    return result


def _length(shapes: list[tuple], length: int | None, loc=None) -> Dim:
    if length is not None:
        length = _step_count(length, loc)
    leading = list(dict.fromkeys(s[0] for s in shapes if len(s) > 0))
    if len(leading) > 1:
        raise TraceError(f"scan's xs must share their leading axis; got lengths {leading}", loc)
    if not leading:
        if length is None:
            raise TraceError("scan needs xs to loop over, or length= to say how many steps",
                             loc)
        return length
    if length is not None and isinstance(leading[0], Sym):
        raise Concretize(leading[0])  # traced again with the size known, to compare it
    if length is not None and length != leading[0]:
        raise TraceError(f"scan's length={length} does not match its xs' leading axis of "
                         f"{leading[0]}", loc)
    return leading[0]


def _step_count(length, loc) -> int:
    """scan's length= as an int of steps; a float (T / 2) or a negative count is an error, as in
    JAX, rather than a count truncated or a loop of no steps."""
    try:
        count = operator.index(length)
    except TypeError:
        raise TraceError(f"scan's length= must be an int (known when tracing); got {length!r}",
                         loc) from None
    if count < 0 or isinstance(length, (bool, np.bool_)):
        raise TraceError(f"scan's length= must be a non-negative int; got {length!r}", loc)
    return count


def _describe(tree: pytree.TreeDef) -> str:
    if tree.kind == "leaf":
        return "one array"
    if tree.kind == "none":
        return "None"
    return f"a {tree.kind} of {tree.num_leaves} arrays"


def _shown_name(f) -> str:
    return getattr(f, "shown_name", None) or _name_of(f)


def _name_of(f) -> str:
    name = getattr(f, "__name__", "step")
    return name if name.isidentifier() else "step"


__all__ = ["fori_loop", "scan"]
