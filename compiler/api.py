"""`compile_grad`: the user's entry point, from a NumPy function to value, gradient and source.

A `CompiledFunction` keeps one `Specialization` per argument signature (tree
structure, dtypes, static shapes; batch dims symbolic). Each specialization
traces the function once and builds kernels lazily, per kind:

- "forward": outputs only;
- "value_and_grad": outputs and gradients in one fused kernel (seeded with 1);
- "forward_save" / "backward": the split used by the runtime's `backward()`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compiler import backend as backends
from compiler import pytree
from compiler.arguments import CallArguments
from compiler.autodiff import split, vjp_graph
from compiler.errors import ArgumentError
from compiler.ir import Graph, rebuild
from compiler.passes import optimize
from compiler.specialize import Signature, positions_of, signature_of
from compiler.tracer import Concretize, current_builder, trace
from compiler.verify import verify

KINDS = ("forward", "value_and_grad", "forward_save", "backward")


@dataclass
class Specialization:
    """The traced graph of one signature and the kernels built from it so far."""

    signature: Signature
    graph: Graph  # optimized forward graph
    out_tree: pytree.TreeDef
    wrt_leaves: list[int]
    backend: backends.Backend
    graphs: dict[str, Graph] = field(default_factory=dict)
    kernels: dict[str, backends.Kernel] = field(default_factory=dict)

    def graph_of(self, kind: str) -> Graph:
        if kind not in self.graphs:
            self.graphs[kind] = self._build(kind)
        return self.graphs[kind]

    def _build(self, kind: str) -> Graph:
        if kind == "forward":
            return self.graph
        if kind == "value_and_grad":
            return _checked(optimize(vjp_graph(self.graph, self.wrt_leaves, seed="ones")))
        joint = optimize(vjp_graph(self.graph, self.wrt_leaves, seed="input"))
        parts = split(joint, len(self.graph.inputs), len(self.graph.outputs))
        self.graphs["forward_save"] = _checked(parts.forward)
        self.graphs["backward"] = _checked(optimize(parts.backward))
        self.n_residuals = parts.n_residuals
        return self.graphs[kind]

    def kernel(self, kind: str) -> backends.Kernel:
        if kind not in self.kernels:
            graph = self.graph_of(kind)
            self.kernels[kind] = self.backend.compile(graph, kind)
        return self.kernels[kind]


def _checked(graph: Graph) -> Graph:
    verify(graph)
    return graph


class CompiledFunction:
    """A NumPy function compiled to forward and backward kernels; see `compile_grad`."""

    def __init__(self, fn: Callable, wrt: int | str | tuple = 0, backend: str = "numba") -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.wrt = wrt
        self.backend = backends.get(backend)
        self._signature = inspect.signature(fn)
        self._specs: dict[tuple, Specialization] = {}
        self._static_positions: set[tuple[int, int]] = set()
        self._last: Specialization | None = None

    # --- public API --------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        if current_builder() is not None:  # called while tracing another function: inline it
            return self.fn(*args, **kwargs)
        call, spec = self._prepare(args, kwargs)
        outputs = spec.kernel("forward")(call.leaves)
        return pytree.unflatten(spec.out_tree, [_plain(o) for o in outputs])

    def value_and_grad(self, *args, **kwargs):
        """(value, gradient) with the gradient shaped like the `wrt` argument(s)."""
        if current_builder() is not None:
            return self._inline_value_and_grad(args, kwargs)
        call, spec = self._prepare(args, kwargs)
        self._require_scalar(spec.graph)
        results = [_plain(r) for r in spec.kernel("value_and_grad")(call.leaves)]
        value = pytree.unflatten(spec.out_tree, results[: len(spec.graph.outputs)])
        return value, self._unflatten_grads(call, results[len(spec.graph.outputs):])

    def grad(self, *args, **kwargs):
        """The gradient of the (scalar) result with respect to the `wrt` argument(s)."""
        return self.value_and_grad(*args, **kwargs)[1]

    def source(self, kind: str = "backward") -> str:
        """Generated source of a kernel of the last specialization called ("forward", "backward",
        "value_and_grad", "forward_save")."""
        return self._kernel_of_last(kind).source

    def ir(self, kind: str = "forward") -> str:
        """The IR of the last specialization called, as text."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return str(self._require_last().graph_of(kind))

    def specialize(self, *args, **kwargs) -> Specialization:
        """Trace (or find) the specialization for these arguments without running anything."""
        return self._prepare(args, kwargs)[1]

    # --- internals ---------------------------------------------------------------------
    def _kernel_of_last(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return self._require_last().kernel(kind)

    def _require_last(self) -> Specialization:
        if self._last is None:
            raise RuntimeError(f"{self.__name__} has not been called yet: call it (or .grad) "
                               "once so that there is a specialization to show")
        return self._last

    def _prepare(self, args, kwargs) -> tuple[CallArguments, Specialization]:
        call = CallArguments(self.__name__, self._signature, args, kwargs)
        wrt_leaves = self._wrt_leaf_indices(call)
        leaves = call.leaves
        while True:
            signature = signature_of(leaves, set(wrt_leaves), self._static_positions)
            key = (call.treedef, tuple(call.names), signature)
            spec = self._specs.get(key)
            if spec is not None:
                break
            try:
                spec = self._trace(call, signature, wrt_leaves)
            except Concretize as c:
                self._static_positions |= positions_of(signature, c.sym)
                continue
            self._specs[key] = spec
            break
        self._last = spec
        return call, spec

    def _wrt_items(self) -> tuple:
        return self.wrt if isinstance(self.wrt, tuple) else (self.wrt,)

    def _wrt_leaf_indices(self, call: CallArguments) -> list[int]:
        indices = []
        for item in self._wrt_items():
            slot = call.slot(item)
            for i in call.leaf_range(slot):
                if not np.issubdtype(call.leaves[i].dtype, np.floating):
                    raise ArgumentError(
                        f"cannot differentiate {self.__name__} with respect to "
                        f"'{call.names[slot]}': it holds {call.leaves[i].dtype} values, and only "
                        "float arrays and scalars have gradients (pass floats, or choose "
                        "another argument with wrt=)")
                indices.append(i)
        return indices

    def _trace(self, call: CallArguments, signature: Signature, wrt_leaves) -> Specialization:
        graph, out_tree = trace(self.fn, list(signature.types), call.leaf_names(), call.rebuild,
                                signature.sym_sizes(call.leaves), name=self.__name__)
        graph = _checked(optimize(graph))
        return Specialization(signature, graph, out_tree, wrt_leaves, self.backend)

    def _inline_value_and_grad(self, args, kwargs):
        """value_and_grad inside another trace: the joint graph is spliced into it, so it can
        be differentiated again (a second derivative is the gradient of a gradient)."""
        outer = current_builder()
        call = CallArguments(self.__name__, self._signature, args, kwargs)
        leaves = [outer.wrap(outer.lift(leaf, [])) for leaf in call.leaves]
        wrt_leaves = self._wrt_leaf_indices(call)
        graph, out_tree = trace(self.fn, [t.type for t in leaves], call.leaf_names(),
                                call.rebuild, outer.sym_hints, name=self.__name__)
        self._require_scalar(graph)
        joint = optimize(vjp_graph(graph, wrt_leaves, seed="ones"))
        spliced = rebuild(joint.outputs, {i.id: t.node for i, t in zip(graph.inputs, leaves)})
        results = [outer.wrap(node) for node in spliced]
        n_out = len(graph.outputs)
        return (pytree.unflatten(out_tree, results[:n_out]),
                self._unflatten_grads(call, results[n_out:]))

    def _require_scalar(self, graph: Graph) -> None:
        outs = graph.outputs
        if len(outs) != 1 or outs[0].type.shape != ():
            shapes = ", ".join(str(o.type) for o in outs)
            raise ArgumentError(
                f"grad needs {self.fn.__name__} to return one scalar, but it returned {shapes}; "
                "reduce it (e.g. with .sum()) or use the runtime's backward(gradient=...)")

    def _unflatten_grads(self, call: CallArguments, grads: list[Any]):
        structured, k = [], 0
        for item in self._wrt_items():
            tree = call.treedef.children[call.slot(item)]
            structured.append(pytree.unflatten(tree, grads[k:k + tree.num_leaves]))
            k += tree.num_leaves
        return tuple(structured) if isinstance(self.wrt, tuple) else structured[0]


def _plain(value: np.ndarray):
    """0-d results become NumPy scalars, as NumPy's own reductions return them."""
    return value[()] if isinstance(value, np.ndarray) and value.ndim == 0 else value


def compile_grad(fn: Callable | None = None, *, wrt: int | str | tuple = 0,
                 backend: str = "numba"):
    """Compile `fn` (a NumPy function) into fused forward and backward kernels.

    `wrt` picks the argument(s) `.grad` differentiates: an index, a parameter
    name, or a tuple of them. `backend="interpreter"` runs the IR with NumPy
    and compiles nothing. Usable as `@compile_grad` or `@compile_grad(wrt=...)`.
    """
    if fn is None:
        return lambda f: CompiledFunction(f, wrt=wrt, backend=backend)
    return CompiledFunction(fn, wrt=wrt, backend=backend)

