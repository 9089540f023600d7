"""The autograd graph: `Node`s over opaque backward callables, their `Edge`s, the call sites
that record the same Tensors call after call, and `record`.

The compiler runs a forward kernel and calls `record(outputs, inputs, backward, name)`;
that makes one `Node` (PyTorch's grad_fn) holding the kernel's backward callable and one
`Edge` per input telling where that input's gradient goes. Each node remembers the version
counter (`Tensor._version`) of every input Tensor at forward time, so that a backward pass
through inputs updated in place since raises PyTorch's "modified by an inplace operation"
error (runtime/autograd.py runs the pass).
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable, Sequence

import numpy as np

from .grad_mode import _mode
from .tensor import Hook, Tensor

BackwardFn = Callable[[list[np.ndarray]], Sequence["np.ndarray | None"]]
# backward_into(cotangents, accumulate, reuse) -> the arrays now holding each input's total
# gradient, or None if it cannot run now; see `_stored_into_leaves`. `accumulate` is each
# leaf's `.grad` (None where it has none), or empty when no leaf has one.
BackwardInto = Callable[[list[np.ndarray], list, list], "list[np.ndarray] | None"]

# -- the graph ---------------------------------------------------------------------


class Node:
    """One recorded call (PyTorch's grad_fn): its backward callable and its input edges.

    The edges, and which Tensors' versions it checks, come from its `CallSite` (shared by
    the calls of one compiled function with the same Tensors); the node itself holds the
    versions stamped at forward time. A `trusted` node's backward returns one gradient per
    input of the input's shape and dtype (the compiler proved it), so `apply` checks none.
    `backward_into`, where a node has it, stores the gradients straight into arrays that
    become the leaves' `.grad` (see `_backward_one_node`).
    """

    # What every call at a site shares (its name, edges and producers) is read from the site:
    # a node stores only what is its own, as a training loop makes one per step.
    __slots__ = ("_backward", "site", "tensors", "versions", "output_meta", "trusted",
                 "backward_into", "_tensor_hooks", "_retained", "__weakref__")

    def __init__(
        self,
        backward: BackwardFn,
        site: CallSite,
        tensors: Sequence[Tensor],
        output_meta: list[tuple[tuple[int, ...], np.dtype]],
        trusted: bool = False,
        backward_into: BackwardInto | None = None,
    ) -> None:
        self._backward: BackwardFn | None = backward
        self.site = site
        # The input Tensors (as in the site: inputs, then saved ones), held while the graph
        # lives as PyTorch's graph holds them, and their versions at forward time.
        self.tensors = tensors
        self.versions = list(map(_version_of, tensors))
        # Shape and dtype of each output, for the zero cotangents of unused outputs.
        self.output_meta = output_meta
        self.trusted = trusted
        self.backward_into = backward_into
        # Made on first use: most nodes never get a hook or a retained output.
        self._tensor_hooks: list[dict[int, Hook]] | None = None
        self._retained: dict[int, weakref.ref[Tensor]] | None = None

    @property
    def name(self) -> str:
        return self.site.name

    @property
    def edges(self) -> list[Edge | None]:
        """One per input position; None where no gradient flows."""
        return self.site.edges

    @property
    def _producers(self) -> list[Node]:
        """The nodes whose outputs are inputs here: every backward pass walks through these."""
        return self.site.producers

    @property
    def released(self) -> bool:
        return self._backward is None

    def release(self) -> None:
        """Drop the backward callable and, with it, the residuals it holds."""
        self._backward = None
        self.backward_into = None

    @property
    def tensor_hooks(self) -> list[dict[int, Hook]]:
        """Per output: the hooks registered on that output's Tensor, by handle id."""
        if self._tensor_hooks is None:
            self._tensor_hooks = [{} for _ in self.output_meta]
        return self._tensor_hooks

    def retain(self, output_nr: int, tensor: Tensor) -> None:
        # A weak reference: the graph must not keep an intermediate result alive.
        if self._retained is None:
            self._retained = {}
        self._retained[output_nr] = weakref.ref(tensor)

    def retained_tensor(self, output_nr: int) -> Tensor | None:
        ref = None if self._retained is None else self._retained.get(output_nr)
        return None if ref is None else ref()

    def check_versions(self) -> None:
        """Raise if an input Tensor was updated in place since the forward call."""
        if list(map(_version_of, self.tensors)) == self.versions:
            return
        for label, tensor, version in zip(self.site.labels, self.tensors, self.versions):
            if tensor._version != version:
                raise RuntimeError(_modified_message(self, label, tensor, version))

    def producers(self) -> list[Node]:
        """The nodes whose outputs are inputs here (the next nodes of the backward pass)."""
        return list(self._producers)

    def apply(self, cotangents: list[np.ndarray]) -> list[np.ndarray | None]:
        """Run the backward callable and check one gradient per input, of its shape."""
        if self._backward is None:
            raise RuntimeError(_freed_message(self))
        grads = list(self._backward(cotangents))
        if self.trusted:
            return grads
        if len(grads) != len(self.edges):
            raise RuntimeError(
                f"function {self.name} returned {len(grads)} gradients, "
                f"expected {len(self.edges)} (one per input)"
            )
        checked: list[np.ndarray | None] = []
        for i, edge in enumerate(self.edges):
            grad = grads[i]
            if edge is None or grad is None:
                checked.append(None)
                continue
            grad = np.asarray(grad)
            if grad.shape != edge.shape:
                raise RuntimeError(
                    f"function {self.name} returned an invalid gradient at index {i} - "
                    f"got shape {grad.shape} but expected shape {edge.shape}"
                )
            checked.append(grad if grad.dtype == edge.dtype else grad.astype(edge.dtype))
        return checked

    def __repr__(self) -> str:
        return f"<{self.name}>"


class Edge:
    """Where one input's gradient goes: output `output_nr` of `node`, or the leaf itself.

    The leaf is held weakly: edges live in call sites (`CallSite`), which a compiled function
    keeps from call to call and which must not keep the caller's Parameters alive; each
    node holds its input Tensors itself, so a leaf is alive for as long as a graph needs it.
    """

    # A plain class with slots, not a frozen dataclass; nothing mutates an Edge.
    __slots__ = ("node", "output_nr", "_leaf", "shape", "dtype")

    def __init__(self, node: Node | None, output_nr: int, leaf: Tensor | None,
                 shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.node = node
        self.output_nr = output_nr
        self._leaf = None if leaf is None else weakref.ref(leaf)
        self.shape = shape
        self.dtype = dtype

    @property
    def leaf(self) -> Tensor | None:
        return None if self._leaf is None else self._leaf()

    @staticmethod
    def to(tensor: Tensor) -> Edge:
        data, node = tensor.data, tensor.grad_fn
        return Edge(node, tensor.output_nr, tensor if node is None else None, data.shape,
                    data.dtype)


def _freed_message(node: Node) -> str:
    return (
        f"Trying to backward through the graph a second time (node {node.name}): the values "
        "saved for backward were freed when you called .backward(). Specify "
        "retain_graph=True if you need to backward through the graph a second time."
    )


def _modified_message(node: Node, label: str | int, tensor: Tensor, version: int) -> str:
    if isinstance(label, int):
        label = f"input {label}"
    return (
        "one of the variables needed for gradient computation has been modified by an "
        f"inplace operation: [{type(tensor).__name__} of dtype {tensor.dtype} and shape "
        f"{tensor.shape}], {label} of {node.name}, is at version {tensor._version}; "
        f"expected version {version} instead. Hint: backward reads the inputs' arrays, so "
        "call backward() before the optimizer step (or utils.load) that updates them, "
        "or compute the forward again after it."
    )


class CallSite:
    """The part of a recorded call that repeats: which Tensors it takes where, its edges, and
    whose versions it checks.

    A compiled function called again and again on the same Parameters records the same
    edges every time; its call site builds them once, and `record` then only stamps the
    Tensors' current versions into a new Node. `fits(tensors)` says whether a call's
    Tensors are the site's (the same objects, requiring grad as before). The site holds
    Tensors weakly (its edges too): it must not keep the caller's Parameters alive between
    calls. A site with an input produced by another node (not a leaf) is built for one call
    only (`reusable` is False), so that it never keeps that node and its residuals alive.
    A caller that keeps a site may `watch` it, and then recognize its Tensors by their ids.
    """

    __slots__ = ("name", "edges", "producers", "refs", "labels", "positions", "needs_grad",
                 "reusable", "_requires_grad", "into_ready", "only_leaves", "no_grads",
                 "leaves_checked", "ids", "alive", "settled_backward", "edge_outputs",
                 "__weakref__")

    def __init__(self, name: str, inputs: Sequence[Tensor | None],
                 saved: Sequence[Tensor] = ()) -> None:
        self.name = name
        edges: list[Edge | None] = []
        labels: list[str | int] = []  # what each checked Tensor is to the node, for errors
        tensors: list[Tensor] = []
        for i, t in enumerate(inputs):
            if t is None:
                edges.append(None)
                continue
            tensors.append(t)
            labels.append(i)
            edges.append(Edge.to(t) if t._requires_grad else None)
        self.positions = tuple(labels)  # the input positions that hold Tensors
        tensors += saved
        labels += [SAVED_INPUT] * len(saved)
        self.edges = edges
        self.producers = [e.node for e in edges if e is not None and e.node is not None]
        self.refs = tuple(weakref.ref(t) for t in tensors)
        self.labels = tuple(labels)
        self._requires_grad = tuple(t._requires_grad for t in tensors)
        self.needs_grad = any(e is not None for e in edges)
        self.reusable = not self.producers
        # Whether every input is a leaf of its own with an edge (the backward_into path needs
        # that): then a node's first Tensors are its edges' leaves, in order.
        self.into_ready = self.reusable and len(tensors) >= len(edges) > 0 \
            and all(e is not None for e in edges) \
            and len({id(t) for t in tensors[:len(edges)]}) == len(edges)
        self.only_leaves = len(tensors) == len(edges)  # no saved Tensors after the leaves
        self.no_grads = [None] * len(edges)  # the leaves' `.grad`s after zero_grad()
        # Tensor._leaf_changes when the leaves were last found requiring grad and hookless
        self.leaves_checked = -1
        # What the compiler may offer for a site of a 0-d loss: `settled_backward(node,
        # retain_graph)` does backward() from that loss as `_backward_one_node` would, for a
        # site whose checks have passed before, and returns False, having done nothing, when
        # one fails (then the general path runs). See compiler/settled_backward.py.
        self.settled_backward: Callable[[Node, bool], bool] | None = None
        # Per edge, the outputs whose values depend on its input (None: every output). A
        # pass whose cotangents reach none of them gives that input no gradient, as PyTorch,
        # whose graph of the same computation would not reach it (`unreached_edges`).
        self.edge_outputs: list[frozenset[int]] | None = None
        # See `watch`: until it is called, `alive` says nothing.
        self.ids: tuple[int, ...] = ()
        self.alive = False

    def watch(self) -> None:
        """Keep `alive` True while every Tensor of the site lives, for a caller that calls
        again and again: then `alive and tuple(map(id, tensors)) == site.ids` says that
        `tensors` are the site's (two live objects never share an id), without calling the
        weak references. The callbacks hold the site weakly: no cycle keeps it."""
        site = weakref.ref(self)

        def died(_: weakref.ref) -> None:
            watched = site()
            if watched is not None:
                watched.alive = False

        tensors = list(map(operator.call, self.refs))
        if any(t is None for t in tensors):
            return
        self.refs = tuple(weakref.ref(t, died) for t in tensors)
        self.ids = tuple(map(id, tensors))
        self.alive = True

    def fits(self, tensors: Sequence[Tensor]) -> bool:
        """Whether a call with these Tensors (those of `inputs`, in order, then `saved`) can
        be recorded at this site: they are the site's own, requiring grad as they did."""
        return len(tensors) == len(self.refs) \
            and all(map(operator.is_, map(operator.call, self.refs), tensors)) \
            and tuple(map(_requires_grad_of, tensors)) == self._requires_grad

    def record(self, tensors: Sequence[Tensor], outputs: Sequence[np.ndarray],
               backward: BackwardFn, *, trusted: bool = False,
               backward_into: BackwardInto | None = None,
               output_meta: list | None = None) -> list[Tensor]:
        """Wrap `outputs` as Tensors linked to `backward`, for a call whose Tensors fit the
        site. A `trusted` caller passes arrays, and a backward that returns one gradient per
        input of the input's shape and dtype; `output_meta`, when the caller knows it, is
        each output's (shape, dtype)."""
        if not trusted:
            outputs = [out if type(out) is np.ndarray else np.asarray(out) for out in outputs]
        if not (_mode.enabled and self.needs_grad):
            return [Tensor(out) for out in outputs]
        node = Node(backward, self, tensors,
                    output_meta or [(out.shape, out.dtype) for out in outputs],
                    trusted, backward_into)
        from_node = Tensor._from_node
        return [from_node(out, node, k) if out.dtype.kind == "f" else Tensor(out)
                for k, out in enumerate(outputs)]

    def record_one(self, tensors: Sequence[Tensor], output: np.ndarray, backward: BackwardFn,
                   backward_into: BackwardInto | None, output_meta: list | None) -> Tensor:
        """`record(..., trusted=True)` of one output array, returning its Tensor: what a
        compiled loss records on every step of a training loop, in fewer steps."""
        if not (_mode.enabled and self.needs_grad):
            return Tensor(output)
        node = Node(backward, self, tensors,
                    output_meta or [(output.shape, output.dtype)], True, backward_into)
        if output.dtype.kind != "f":
            return Tensor(output)
        tensor = _new_tensor(Tensor)  # Tensor._from_node(output, node, 0), without the call
        tensor.data = output
        tensor._requires_grad = True
        tensor.grad_fn = node
        return tensor


_new_tensor = Tensor.__new__


def unreached_edges(node: Node, cotangents: Sequence[np.ndarray | None]) -> list[int]:
    """The edges of `node` that the outputs given a cotangent (not None) do not depend on."""
    by_edge = node.site.edge_outputs
    if by_edge is None or all(c is not None for c in cotangents):
        return []
    given = {k for k, c in enumerate(cotangents) if c is not None}
    return [i for i, outputs in enumerate(by_edge) if not outputs & given]


_version_of = operator.attrgetter("_version")
_requires_grad_of = operator.attrgetter("_requires_grad")


def record(
    outputs: Sequence[np.ndarray],
    inputs: list[Tensor | None],
    backward: BackwardFn,
    name: str,
    saved: Sequence[Tensor] = (),
) -> list[Tensor]:
    """Wrap the outputs of one compiled call as Tensors linked to its backward callable.

    `inputs` holds, per differentiable input position, the Tensor passed there
    (None for plain arrays). `backward(cotangents)` gets one array per output
    (zeros of the output's shape and dtype where no gradient arrived) and returns
    one gradient per input position (None where not needed). A node is made only
    when grad mode is on and some input requires grad; floating outputs then
    require grad, integer and bool outputs never do. The node remembers the
    `_version` of each input Tensor and of the `saved` Tensors (others whose arrays
    `backward` reads, such as inputs that need no gradient), and backward raises if
    one has changed since. (A caller that records the same Tensors again and again keeps
    a `CallSite` and records at it.)
    """
    if not _mode.enabled:
        return [Tensor(out if type(out) is np.ndarray else np.asarray(out)) for out in outputs]
    tensors = [t for t in inputs if t is not None] + list(saved)
    return CallSite(name, inputs, saved).record(tensors, outputs, backward)


SAVED_INPUT = "an input saved for backward"  # how the version error names a `saved` Tensor
