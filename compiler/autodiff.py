"""Reverse mode as an IR-to-IR pass, and the split of its result into forward and backward graphs.

`vjp_graph` walks the forward graph in reverse topological order, calling each
op's VJP rule on traced values, so the backward pass is ordinary IR (and can
itself be differentiated). Invariants, asserted as it goes:

- each input of a node gets at most one cotangent per use, summed back to the
  input's exact shape (undoing broadcasting) and cast to its dtype;
- cotangents of a node used several times are added (fan-out);
- nothing is computed for nodes that no requested input flows into, and
  integer or boolean values never get cotangents.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from compiler import ops
from compiler.builder import Builder
from compiler.custom import check_closed_over, gradient_free_inputs
from compiler.ir import Graph, Node, Sym, TensorType, TupleType, rebuild, toposort
from compiler.names import is_generated
from compiler.ops.reduce import sum_to_shape
from compiler.reverse_loop import with_residuals
from compiler.tracer import Tracer, building


def float_valued(node: Node) -> bool:
    """Whether a gradient can be carried by the node's value (a float, or a scan with a
    float result): PyTorch's graph stops at bools and integers."""
    if isinstance(node.type, TupleType):  # a scan: through the results that are floats
        return any(t.is_float for t in node.type.items)
    return node.type.is_float


def reachable(nodes: list[Node], sources: set[int], zero_gradients: bool = False) -> set[int]:
    """Ids of the float nodes through which a gradient can flow from `sources` (`nodes` in
    topological order). With `zero_gradients`, also those of float ops whose gradient is
    zero (np.sign, np.floor, np.round, ...): PyTorch's graph holds them (SignBackward), so a
    Tensor reached only through them is in the graph, with a zero gradient."""
    reached = set(sources)
    for node in nodes:
        if node.op in ("input", "const") or not float_valued(node):
            continue
        if zero_gradients:
            if any(x.id in reached for x in carrying_inputs(node)):
                reached.add(node.id)
        elif ops.get(node.op).vjp is not None and any(x.id in reached for x in node.inputs):
            reached.add(node.id)
    return reached


def carrying_inputs(node: Node) -> list[Node]:
    """The inputs through which PyTorch's graph connects `node` to what it is made from: all,
    but those a custom_vjp rule gives None (a Function's backward returning None)."""
    if node.op != "custom_call":
        return list(node.inputs)
    free = gradient_free_inputs(node)
    return [x for k, x in enumerate(node.inputs) if k not in free]


def connected_inputs(graph: Graph, wrt: list[int], n_differentiated: int | None = None,
                     outputs: list[int] | None = None) -> list[int]:
    """The entries of `wrt` that the first `n_differentiated` outputs (or those at `outputs`)
    depend on through float values, as PyTorch's graph does: through ops with a gradient, or
    with a zero one (np.sign(w): a `.grad` of zeros, and an optimizer steps w). The others are
    not in PyTorch's graph at all (reached only through comparisons, integers, custom_vjp
    rules returning None for them, or not at all), so their `.grad` stays None."""
    nodes = graph.nodes()
    needs = reachable(nodes, {graph.inputs[i].id for i in wrt}, zero_gradients=True)
    roots = graph.outputs[:n_differentiated] if outputs is None \
        else [graph.outputs[k] for k in outputs]
    reached = {out.id for out in roots if out.id in needs}
    for node in reversed(nodes):
        if node.id in reached and node.op not in ("input", "const"):
            reached.update(x.id for x in carrying_inputs(node) if x.id in needs)
    return [i for i in wrt if graph.inputs[i].id in reached]


def _prepare_loops(graph: Graph, wrt: list[int]) -> Graph:
    """`graph` with every scan that a gradient flows through made to stack its residuals
    (compiler/reverse_loop.py), so that its VJP can run backward over them."""
    nodes = graph.nodes()
    if not any(n.op == "scan" for n in nodes):
        return graph
    needs = reachable(nodes, {graph.inputs[i].id for i in wrt})
    memo: dict[int, Node] = {}
    for node in nodes:
        inputs = tuple(memo.get(x.id, x) for x in node.inputs)
        if node.op == "scan" and node.id in needs:
            loop = node.attrs["loop"]
            # A scan that reverse mode prepared already (`f.grad` traced inside another
            # function: a second derivative) is differentiated again as a plain scan whose
            # results include its residual stacks: the reverse scan built for the first
            # derivative reads them, so a gradient flows into them too, and its LoopGrad knows
            # only the cotangents of the first results and the inputs it was asked for.
            attrs = {**node.attrs, "loop": dataclasses.replace(loop, grad=None)} \
                if loop.grad is not None else node.attrs
            moved = Node(node.op, inputs, attrs, node.type, node.name, node.loc, node.grad_of)
            memo[node.id] = with_residuals(moved, [x.id in needs for x in node.inputs])
        elif any(a is not b for a, b in zip(inputs, node.inputs)):
            memo[node.id] = Node(node.op, inputs, node.attrs, node.type, node.name, node.loc,
                                 node.grad_of)
    return Graph(list(graph.inputs), [memo.get(o.id, o) for o in graph.outputs], graph.name)


def vjp_graph(graph: Graph, wrt: list[int], seed: str = "input",
              n_differentiated: int | None = None) -> Graph:
    """The joint forward+backward graph of `graph` with respect to inputs `wrt`.

    Only the first `n_differentiated` outputs (default: all) are differentiated;
    the rest are auxiliary. Its inputs are `graph`'s inputs followed, when
    `seed == "input"`, by one cotangent per differentiated output; with
    `seed == "ones"` those outputs must be scalars and are seeded with 1. Its
    outputs are `graph`'s outputs followed by one gradient per entry of `wrt`,
    each of its input's shape and dtype.
    """
    for i in wrt:
        if not float_valued(graph.inputs[i]):
            raise TypeError(f"input {i} ({graph.inputs[i].type}) is not a float array")
    graph = _prepare_loops(graph, wrt)
    nodes = graph.nodes()
    needs = reachable(nodes, {graph.inputs[i].id for i in wrt})
    builder = Builder()
    inputs = list(graph.inputs)
    adjoints: dict[int, Tracer] = {}
    # A node with several results (a scan) gets one cotangent per result, from its tuple_gets.
    result_adjoints: dict[int, list[Tracer | None]] = {}

    def accumulate(node: Node, ct: Tracer) -> None:
        assert ct.type.shape == node.type.shape, (node, ct.type)
        if ct.dtype != node.dtype:
            ct = ct.astype(node.dtype)
        adjoints[node.id] = adjoints[node.id] + ct if node.id in adjoints else ct

    def accumulate_result(node: Node, index: int, ct: Tracer) -> None:
        slots = result_adjoints.setdefault(node.id, [None] * len(node.type.items))
        slots[index] = ct if slots[index] is None else slots[index] + ct

    with building(builder):
        for out in graph.outputs[:n_differentiated]:
            name = f"{out.name or 'out'}_grad"
            if seed == "input":
                seed_type = TensorType(out.dtype, out.type.shape)
                node = Node("input", (), {"index": len(inputs), "type": seed_type}, seed_type,
                            name=name)
                inputs.append(node)
                g = builder.wrap(node)
            else:
                assert out.type.shape == (), "a seed of ones needs scalar outputs"
                g = builder.wrap(builder.lift(np.ones((), out.dtype), []))
            if out.id in needs:
                accumulate(out, g)

        for node in reversed(nodes):
            if node.op == "tuple_get" and node.id in adjoints:
                if node.inputs[0].id in needs:
                    accumulate_result(node.inputs[0], node.attrs["index"], adjoints[node.id])
                continue
            ct = result_adjoints.get(node.id) if isinstance(node.type, TupleType) \
                else adjoints.get(node.id)
            if ct is None or node.op in ("input", "const"):
                continue
            opdef = ops.get(node.op)
            builder.grad_of, builder.loc_override = node, node.loc
            if node.op == "custom_call":
                check_closed_over(node, needs)
            cts = opdef.vjp(ct, builder.wrap(node),
                            *(builder.wrap(x) for x in node.inputs), **node.attrs)
            assert len(cts) == len(node.inputs), f"{node.op} VJP returned {len(cts)} cotangents"
            for x, ct in zip(node.inputs, cts):
                if ct is not None and x.id in needs:
                    accumulate(x, sum_to_shape(ct, x.type.shape))
        builder.grad_of = builder.loc_override = None

        grads = []
        for i in wrt:
            x = graph.inputs[i]
            if x.id in adjoints:
                grads.append(adjoints[x.id].node)
            else:  # the output does not depend on x: an exact zero gradient
                zero = builder.lift(np.zeros((), x.dtype), [])
                grads.append(builder.emit("broadcast_to", (builder.wrap(zero),),
                                          {"shape": x.type.shape}).node)

    # A cotangent passed on unchanged (through +, -, a reshape) is the gradient of several
    # values: it is named after the first of them that the user named (`pred_grad`).
    named_by: dict[int, str] = {}
    for node in nodes:
        adjoint = adjoints.get(node.id)
        if adjoint is None or adjoint.node.name is not None or node.name is None:
            continue
        known = named_by.get(adjoint.node.id)
        if known is None or (is_generated(known) and not is_generated(node.name)):
            named_by[adjoint.node.id] = node.name
    for node in nodes:
        adjoint = adjoints.get(node.id)
        if adjoint is not None and adjoint.node.id in named_by:
            adjoint.node.name = f"{named_by.pop(adjoint.node.id)}_grad"
    return Graph(inputs, list(graph.outputs) + grads, name=f"{graph.name}_vjp")


VIEWS = ("transpose", "reshape", "broadcast_to")


class _Sources:
    """Which saved values recomputing a forward value in backward would read.

    A view is recomputed from what it views; an elementwise op is recomputed when
    everything it reads comes down to one saved value, counting each value once: relu's
    `where(x > 0, x, 0)` reads `x` twice (through the mask and directly), so saving `x`
    is enough, where saving the result and its mask would cost two arrays. Anything else
    (a matmul, a reduction) is saved itself.
    """

    def __init__(self) -> None:
        self._memo: dict[int, frozenset[int]] = {}

    def of(self, node: Node) -> frozenset[int]:
        """The ids of the saved values `node` would be recomputed from (itself if none)."""
        found = self._memo.get(node.id)
        if found is None:
            found = frozenset() if node.op == "const" else \
                self._through_inputs(node) if self.recomputable(node) else frozenset((node.id,))
            self._memo[node.id] = found
        return found

    def recomputable(self, node: Node) -> bool:
        if node.op in VIEWS:
            return True
        if node.op in ("input", "const") or ops.get(node.op).kind != "elementwise":
            return False
        return len(self._through_inputs(node)) <= 1

    def _through_inputs(self, node: Node) -> frozenset[int]:
        return frozenset().union(*(self.of(x) for x in node.inputs))


def _shape_syms(types) -> set[Sym]:
    return {d for t in types for d in t.shape if isinstance(d, Sym)}


def _size_from_shape(node: Node) -> Node:
    """`size(x)` of a symbolic shape, measured on a broadcast zero of x's shape instead of x:
    backward reads the dims from its own arguments' shapes and need not save the number."""
    x = node.inputs[0]
    zero = Node("const", (), {"value": np.zeros((), x.dtype)}, TensorType(x.dtype, ()))
    shaped = Node("broadcast_to", (zero,), {"shape": x.type.shape}, x.type)
    return Node("size", (shaped,), node.attrs, node.type, node.name, node.loc, node.grad_of)


@dataclass
class Split:
    """Forward and backward graphs from one joint graph, joined by the residuals."""

    forward: Graph  # primal inputs -> outputs + computed residuals
    backward: Graph  # residuals + output cotangents -> gradients
    n_outputs: int
    n_residuals: int
    # Where each backward residual comes from: ("input", i) is primal input i itself,
    # passed by the caller rather than copied out of the forward kernel; ("output", j) is
    # the forward graph's output j.
    residual_sources: list[tuple[str, int]]


def split(joint: Graph, n_primal: int, n_outputs: int) -> Split:
    """Cut a joint graph (seeded with cotangent inputs) where backward begins.

    Backward nodes are those that depend on a cotangent input; forward values
    they use become residuals: extra outputs of the forward graph and inputs
    of the backward graph. Constants are shared, cheap forward values are
    recomputed in backward from residuals rather than saved (`_Sources`), and so are
    sizes of symbolic shapes whose dims backward's arguments carry.
    """
    seeds = joint.inputs[n_primal:]
    grads = joint.outputs[n_outputs:]
    nodes = toposort(grads, seeds)
    backward_ids = {s.id for s in seeds}
    for node in nodes:
        if any(x.id in backward_ids for x in node.inputs):
            backward_ids.add(node.id)

    residuals: list[Node] = []
    sizes: list[Node] = []  # sizes of symbolic shapes: recomputed if backward knows the dims
    visited: set[int] = set()
    sources = _Sources()

    def provide(x: Node) -> None:
        """Make forward value `x` available to backward: share, recompute or save it."""
        if x.id in backward_ids or x.id in visited or x.op == "const":
            return
        visited.add(x.id)
        if x.op == "size":
            sizes.append(x)
        elif sources.recomputable(x):
            for y in x.inputs:
                provide(y)
        else:
            residuals.append(x)

    for node in nodes:
        if node.id in backward_ids:
            for x in node.inputs:
                provide(x)
    for g in grads:  # a gradient that does not depend on the seed is computed forward
        provide(g)
    known = _shape_syms([r.type for r in residuals] + [s.type for s in seeds])
    replace: dict[int, Node] = {}
    for size in sizes:
        measured = {size.inputs[0].type.shape[a] for a in size.attrs["axes"]}
        if {d for d in measured if isinstance(d, Sym)} <= known:
            replace[size.id] = _size_from_shape(size)
        else:
            residuals.append(size)

    input_index = {x.id: i for i, x in enumerate(joint.inputs[:n_primal])}
    computed = [r for r in residuals if r.id not in input_index]
    sources, k = [], n_outputs
    for r in residuals:
        if r.id in input_index:
            sources.append(("input", input_index[r.id]))
        else:
            sources.append(("output", k))
            k += 1
    forward = Graph(list(joint.inputs[:n_primal]), list(joint.outputs[:n_outputs]) + computed,
                    name=joint.name.removesuffix("_vjp") + "_forward")
    residual_inputs = [
        Node("input", (), {"index": k, "type": r.type}, r.type, name=r.name or f"saved{k}")
        for k, r in enumerate(residuals)
    ]
    seed_inputs = [
        Node("input", (), {"index": len(residuals) + k, "type": s.type}, s.type, name=s.name)
        for k, s in enumerate(seeds)
    ]
    replace.update({r.id: ri for r, ri in zip(residuals, residual_inputs)})
    replace.update({s.id: si for s, si in zip(seeds, seed_inputs)})
    backward_outputs = rebuild(grads, replace)
    backward = Graph(residual_inputs + seed_inputs, backward_outputs,
                     name=joint.name.removesuffix("_vjp") + "_backward")
    return Split(forward, backward, n_outputs, len(residuals), sources)
