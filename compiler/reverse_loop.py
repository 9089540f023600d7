"""Reverse mode through a scan: a forward scan that stacks residuals, and a reverse scan.

The body of a scan is differentiated once, as an ordinary graph, and split like a
whole function (compiler/autodiff.py): its forward half computes the body's results
plus the residuals its backward half needs. Before the reverse pass runs,
`with_residuals` replaces each scan that a gradient flows through by one whose body
is that forward half, so every step's residuals come out stacked, as extra results.
Its VJP (`scan_vjp`) is then a second scan, running the other way over those stacks:

    reverse scan body: (residual consts..., carry cotangents..., const gradient sums...,
                        residuals_t..., xs_t..., ys cotangents_t...)
                    -> (carry cotangents..., const gradient sums..., xs cotangents_t...)

Cotangents of the carries travel backward through the loop as its carries; gradients of
the consts (weights the body closes over) are summed over the steps as carries too; the
cotangents of `xs` come out stacked, one per step. A residual that is a carry's value at
the start of a step is stacked by the forward scan (its body returns the carry as an extra
result); residuals that are consts or slices of `xs` are read from the scan's own inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler import ops
from compiler.ir import Graph, Node, TensorType, rebuild
from compiler.ops.control import Loop

# Where a residual of the body's backward half comes from, per step.
CONST, XS, STACKED = "const", "xs", "stacked"


@dataclass(frozen=True, eq=False)
class LoopGrad:
    """What the reverse scan of a forward scan needs (held by the forward scan's `Loop`)."""

    backward: Graph  # (residuals..., one cotangent per body result...) -> gradients of `wrt`
    wrt: tuple[int, ...]  # the body inputs differentiated, in order
    # Per residual input of `backward`: (CONST, i) the scan's const i; (XS, j) step t of its
    # xs j; (STACKED, k) step t of the scan's result k (a stack the forward scan made).
    residuals: tuple[tuple[str, int], ...]
    n_results: int  # the scan's own results (carries, ys), before the residual stacks


def loop_wrt(loop: Loop, input_needs: list[bool]) -> list[int]:
    """The body inputs to differentiate: consts and xs whose scan input needs a gradient, and
    every float carry that a gradient flows through (it may start from a constant and still
    depend on a weight after one step: found by iterating to a fixed point)."""
    from compiler.autodiff import reachable

    body, nc, nk = loop.body, loop.n_consts, loop.n_carries
    fixed = {i for i, needed in enumerate(input_needs)
             if needed and not nc <= i < nc + nk and body.inputs[i].type.is_float}
    carries = {k for k in range(nk) if input_needs[nc + k] and body.inputs[nc + k].type.is_float}
    nodes = body.nodes()
    while True:
        sources = {body.inputs[i].id for i in fixed} | {body.inputs[nc + k].id for k in carries}
        reached = reachable(nodes, sources)
        grown = carries | {k for k in range(nk) if body.outputs[k].id in reached
                           and body.inputs[nc + k].type.is_float}
        if grown == carries:
            return sorted(fixed | {nc + k for k in carries})
        carries = grown


def with_residuals(node: Node, input_needs: list[bool]) -> Node:
    """The scan `node`, its body replaced by the forward half of the body's reverse mode, so that
    it also returns every step's residuals (its first results are unchanged)."""
    from compiler.autodiff import split, vjp_graph
    from compiler.passes import optimize

    loop: Loop = node.attrs["loop"]
    body, nc, nk = loop.body, loop.n_consts, loop.n_carries
    wrt = loop_wrt(loop, input_needs)
    joint = optimize(vjp_graph(body, wrt, seed="input"))
    parts = split(joint, len(body.inputs), len(body.outputs))
    n_results = len(body.outputs)
    forward_outputs = list(parts.forward.outputs)
    residuals = []
    for where, i in parts.residual_sources:
        if where == "output":
            residuals.append((STACKED, i))
        elif i < nc:
            residuals.append((CONST, i))
        elif i < nc + nk:  # the carry as a step starts: the body hands it out to be stacked
            forward_outputs.append(parts.forward.inputs[i])
            residuals.append((STACKED, len(forward_outputs) - 1))
        else:
            residuals.append((XS, i - nc - nk))
    forward = Graph(list(parts.forward.inputs), forward_outputs, name=body.name)
    grad = LoopGrad(parts.backward, tuple(wrt), tuple(residuals), n_results)
    new_loop = Loop(forward, nc, nk, loop.length, loop.reverse, grad, loop.name)
    out_type = ops.get("scan").infer(*(x.type for x in node.inputs), loop=new_loop)
    return Node("scan", node.inputs, {"loop": new_loop}, out_type, node.name, node.loc,
                node.grad_of)


def scan_vjp(cotangents: list, out, *inputs, loop: Loop) -> tuple:
    """Cotangents of a scan's inputs: one reverse scan over the residuals (see the module doc).

    `cotangents` holds one traced cotangent (or None) per result of the scan `out`.
    """
    from compiler.ops import bind
    from compiler.passes import optimize

    grad = loop.grad
    assert grad is not None, "reverse mode differentiates scans that with_residuals prepared"
    body, nc, nk = loop.body, loop.n_consts, loop.n_carries
    carry_wrt = [k for k in range(nk) if nc + k in grad.wrt]
    const_wrt = [i for i in grad.wrt if i < nc]
    xs_wrt = [i - nc - nk for i in grad.wrt if i >= nc + nk]
    y_cotangents = [j for j in range(loop.n_ys) if cotangents[nk + j] is not None]
    const_residuals = sorted({i for kind, i in grad.residuals if kind == CONST})
    stepped = list(dict.fromkeys((kind, i) for kind, i in grad.residuals if kind != CONST))

    def zeros(t: TensorType):
        return bind("broadcast_to", np.zeros((), t.dtype), shape=t.shape)

    reverse_body = _reverse_body(loop, carry_wrt, const_wrt, xs_wrt, y_cotangents,
                                 const_residuals, stepped)
    reverse = Loop(optimize(reverse_body), len(const_residuals), len(carry_wrt) + len(const_wrt),
                   loop.length, not loop.reverse, name=f"{loop.name}_grad")
    body_inputs = body.inputs
    scan_inputs = [inputs[i] for i in const_residuals]
    scan_inputs += [cotangents[k] if cotangents[k] is not None else zeros(body_inputs[nc + k].type)
                    for k in carry_wrt]
    scan_inputs += [zeros(body_inputs[i].type) for i in const_wrt]
    scan_inputs += [bind("tuple_get", out, index=i) if kind == STACKED else inputs[nc + nk + i]
                    for kind, i in stepped]
    scan_inputs += [cotangents[nk + j] for j in y_cotangents]
    results = bind("scan", *scan_inputs, loop=reverse)
    found: list = [None] * len(inputs)
    for k, carry in enumerate(carry_wrt):
        found[nc + carry] = bind("tuple_get", results, index=k)
    for k, i in enumerate(const_wrt):
        found[i] = bind("tuple_get", results, index=len(carry_wrt) + k)
    for k, j in enumerate(xs_wrt):
        found[nc + nk + j] = bind("tuple_get", results, index=len(carry_wrt) + len(const_wrt) + k)
    return tuple(found)


def _reverse_body(loop: Loop, carry_wrt: list[int], const_wrt: list[int], xs_wrt: list[int],
                  y_cotangents: list[int], const_residuals: list[int],
                  stepped: list[tuple[str, int]]) -> Graph:
    """The reverse scan's body: one step of the forward body's backward half, with the
    gradients of consts added to their running sums."""
    grad = loop.grad
    body, nc, nk = loop.body, loop.n_consts, loop.n_carries
    backward = grad.backward
    inputs: list[Node] = []

    def new_input(t: TensorType, name: str | None) -> Node:
        node = Node("input", (), {"index": len(inputs), "type": t}, t, name=name)
        inputs.append(node)
        return node

    consts = {i: new_input(body.inputs[i].type, body.inputs[i].name) for i in const_residuals}
    carry_cts = {k: new_input(body.inputs[nc + k].type, _grad_name(body.inputs[nc + k]))
                 for k in carry_wrt}
    sums = {i: new_input(body.inputs[i].type, _grad_name(body.inputs[i])) for i in const_wrt}
    residual_inputs = backward.inputs[:len(grad.residuals)]
    steps = {key: new_input(residual_inputs[grad.residuals.index(key)].type,
                            residual_inputs[grad.residuals.index(key)].name)
             for key in stepped}
    y_cts = {j: new_input(body.outputs[nk + j].type, _grad_name(body.outputs[nk + j]))
             for j in y_cotangents}

    replace: dict[int, Node] = {}
    for residual, key in zip(residual_inputs, grad.residuals):
        replace[residual.id] = consts[key[1]] if key[0] == CONST else steps[key]
    seeds = backward.inputs[len(grad.residuals):]
    for o, seed in enumerate(seeds):
        if o < nk:
            replace[seed.id] = carry_cts.get(o) or _zeros(seed.type)
        else:
            replace[seed.id] = y_cts.get(o - nk) or _zeros(seed.type)
    grads = dict(zip(grad.wrt, rebuild(backward.outputs, replace)))
    outputs = [grads[nc + k] for k in carry_wrt]
    for i in const_wrt:
        total = sums[i]
        outputs.append(Node("add", (total, grads[i]), {}, total.type, total.name))
    outputs += [grads[nc + nk + j] for j in xs_wrt]
    return Graph(inputs, outputs, name=f"{body.name}_grad")


def _zeros(t: TensorType) -> Node:
    zero = Node("const", (), {"value": np.zeros((), t.dtype)}, TensorType(t.dtype, ()))
    if t.shape == ():
        return zero
    return Node("broadcast_to", (zero,), {"shape": t.shape}, t)


def _grad_name(node: Node) -> str | None:
    return f"{node.name}_grad" if node.name else None
