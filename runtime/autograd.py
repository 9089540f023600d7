"""The backward engine: graph nodes over opaque backward callables, grad mode, and `record`.

The compiler runs a forward kernel and calls `record(outputs, inputs, backward,
name)`; that makes one `Node` (PyTorch's grad_fn) holding the kernel's backward
callable and one `Edge` per input telling where that input's gradient goes.
`backward()` then walks the nodes like PyTorch's engine:

1. Seed: one cotangent per root, checked against the root's shape.
2. Order: nodes reachable from the roots, every node after all of its consumers
   (reverse topological order), so a node's output cotangents are complete --
   summed over every use -- when it runs, and each node runs once per pass.
3. Run: each node gets one cotangent per output (zeros where none arrived) and
   returns one gradient per input, each of that input's shape (checked); they
   are summed into the producers' buffers. Buffers are never updated in place,
   so no array handed out by a backward callable or a hook is ever modified.
4. Leaves last: tensor hooks, then accumulation into `.grad` (a fresh array the
   first time, in place after that, like PyTorch).

A node without `retain_graph=True` drops its callable after it runs, which
frees the residual arrays the callable closed over; a later pass through it
raises before any node runs.

Backward callables read their inputs' arrays as they are when backward runs
(the forward kernel does not copy them). So each node also remembers the
version counter (`Tensor._version`) of every input Tensor at forward time, and
a pass whose inputs have since been updated in place (an optimizer step,
`utils.load`) raises PyTorch's "modified by an inplace operation" error before
any node runs, instead of silently using the new values. Like PyTorch's, the
check is per input, not per value backward actually reads, and writes the user
makes through `.data` are not counted.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .tensor import Hook, Tensor

BackwardFn = Callable[[list[np.ndarray]], Sequence["np.ndarray | None"]]

# -- grad mode ---------------------------------------------------------------------


class _GradMode(threading.local):
    enabled = True  # thread-local like PyTorch's, so one thread's no_grad leaves others alone


_mode = _GradMode()


def is_grad_enabled() -> bool:
    """Whether `record` currently builds graph nodes."""
    return _mode.enabled


class _GradModeContext:
    """Base of no_grad/enable_grad: a context manager that also works as a decorator."""

    enabled: bool

    def __new__(cls, func: Callable | None = None):
        # Bare `@no_grad` (no parentheses) passes the function straight in.
        if func is not None:
            return cls()(func)
        return super().__new__(cls)

    def __enter__(self) -> None:
        self._previous = _mode.enabled
        _mode.enabled = self.enabled

    def __exit__(self, *exc: object) -> None:
        _mode.enabled = self._previous

    def __call__(self, func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with type(self)():
                return func(*args, **kwargs)

        return wrapper


class no_grad(_GradModeContext):  # PyTorch's lower-case name
    """Within this block `record` saves nothing for backward and results don't require grad."""

    enabled = False


class enable_grad(_GradModeContext):  # PyTorch's lower-case name
    """Turn graph building back on inside a `no_grad` block."""

    enabled = True


class set_grad_enabled:  # PyTorch's lower-case name
    """Set grad mode now; used as a context manager, restore the previous mode on exit."""

    def __init__(self, mode: bool) -> None:
        self._previous = _mode.enabled
        _mode.enabled = bool(mode)

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        _mode.enabled = self._previous


# -- the graph ---------------------------------------------------------------------


class Node:
    """One recorded call (PyTorch's grad_fn): its backward callable and its input edges."""

    def __init__(
        self,
        name: str,
        backward: BackwardFn,
        edges: list[Edge | None],
        outputs: list[np.ndarray],
        watched: Sequence[tuple[str, Tensor]] = (),
    ) -> None:
        self.name = name
        self._backward: BackwardFn | None = backward
        self.edges = edges  # one per input position; None where no gradient flows
        # (what the Tensor is to this node, the Tensor, its version at forward time). Weak:
        # the graph must not keep an input alive, and a Tensor nobody holds cannot be updated.
        self._saved_versions = [(label, weakref.ref(t), t._version) for label, t in watched]
        # Shape and dtype of each output, for the zero cotangents of unused outputs.
        self.output_meta = [(out.shape, out.dtype) for out in outputs]
        self.tensor_hooks: list[dict[int, Hook]] = [{} for _ in outputs]
        self._retained: dict[int, weakref.ref[Tensor]] = {}

    @property
    def released(self) -> bool:
        return self._backward is None

    def release(self) -> None:
        """Drop the backward callable and, with it, the residuals it holds."""
        self._backward = None

    def retain(self, output_nr: int, tensor: Tensor) -> None:
        # A weak reference: the graph must not keep an intermediate result alive.
        self._retained[output_nr] = weakref.ref(tensor)

    def retained_tensor(self, output_nr: int) -> Tensor | None:
        ref = self._retained.get(output_nr)
        return None if ref is None else ref()

    def check_versions(self) -> None:
        """Raise if an input Tensor was updated in place since the forward call."""
        for label, ref, version in self._saved_versions:
            tensor = ref()
            if tensor is not None and tensor._version != version:
                raise RuntimeError(_modified_message(self, label, tensor, version))

    def producers(self) -> list[Node]:
        """The nodes whose outputs are inputs here (the next nodes of the backward pass)."""
        return [edge.node for edge in self.edges if edge is not None and edge.node is not None]

    def apply(self, cotangents: list[np.ndarray]) -> list[np.ndarray | None]:
        """Run the backward callable and check one gradient per input, of its shape."""
        if self._backward is None:
            raise RuntimeError(_freed_message(self))
        grads = list(self._backward(cotangents))
        if len(grads) != len(self.edges):
            raise RuntimeError(
                f"function {self.name} returned {len(grads)} gradients, "
                f"expected {len(self.edges)} (one per input)"
            )
        checked: list[np.ndarray | None] = []
        for i, (edge, grad) in enumerate(zip(self.edges, grads, strict=True)):
            if edge is None or grad is None:
                checked.append(None)
                continue
            grad = np.asarray(grad)
            if grad.shape != edge.shape:
                raise RuntimeError(
                    f"function {self.name} returned an invalid gradient at index {i} - "
                    f"got shape {grad.shape} but expected shape {edge.shape}"
                )
            checked.append(grad.astype(edge.dtype, copy=False))
        return checked

    def __repr__(self) -> str:
        return f"<{self.name}>"


@dataclass(frozen=True, eq=False)
class Edge:
    """Where one input's gradient goes: output `output_nr` of `node`, or the leaf itself."""

    node: Node | None
    output_nr: int
    leaf: Tensor | None
    shape: tuple[int, ...]
    dtype: np.dtype

    @staticmethod
    def to(tensor: Tensor) -> Edge:
        if tensor.is_leaf:
            return Edge(None, 0, tensor, tensor.shape, tensor.dtype)
        return Edge(tensor.grad_fn, tensor.output_nr, None, tensor.shape, tensor.dtype)


def _freed_message(node: Node) -> str:
    return (
        f"Trying to backward through the graph a second time (node {node.name}): the values "
        "saved for backward were freed when you called .backward(). Specify "
        "retain_graph=True if you need to backward through the graph a second time."
    )


def _modified_message(node: Node, label: str, tensor: Tensor, version: int) -> str:
    return (
        "one of the variables needed for gradient computation has been modified by an "
        f"inplace operation: [{type(tensor).__name__} of dtype {tensor.dtype} and shape "
        f"{tensor.shape}], {label} of {node.name}, is at version {tensor._version}; "
        f"expected version {version} instead. Hint: backward reads the inputs' arrays, so "
        "call backward() before the optimizer step (or utils.load) that updates them, "
        "or compute the forward again after it."
    )


def record(
    outputs: list[np.ndarray],
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
    one has changed since.
    """
    arrays = [np.asarray(out) for out in outputs]
    needs_grad = any(t is not None and t.requires_grad for t in inputs)
    if not (needs_grad and is_grad_enabled()):
        return [Tensor(out) for out in arrays]
    edges = [Edge.to(t) if t is not None and t.requires_grad else None for t in inputs]
    watched = [(f"input {i}", t) for i, t in enumerate(inputs) if t is not None]
    watched += [("an input saved for backward", t) for t in saved]
    node = Node(name, backward, edges, arrays, watched)
    return [
        Tensor._from_node(out, node, k) if np.issubdtype(out.dtype, np.floating) else Tensor(out)
        for k, out in enumerate(arrays)
    ]


# -- the backward pass ---------------------------------------------------------------


def backward(
    tensors: Sequence[Tensor],
    grad_tensors: Sequence[Any] | None = None,
    retain_graph: bool = False,
) -> None:
    """Accumulate into leaf `.grad`s the gradients of `tensors` weighted by `grad_tensors`."""
    tensors = list(tensors)
    grad_tensors = [None] * len(tensors) if grad_tensors is None else list(grad_tensors)
    seeds = [_seed(t, g, i) for i, (t, g) in enumerate(zip(tensors, grad_tensors, strict=True))]

    node_cotangents: dict[Node, list[np.ndarray | None]] = {}
    leaf_grads: dict[int, tuple[Tensor, np.ndarray]] = {}
    for root, seed in zip(tensors, seeds, strict=True):
        if root.is_leaf:
            _add_to_leaf(leaf_grads, root, seed)
        else:
            _add_to_node(node_cotangents, root.grad_fn, root.output_nr, seed)

    order = _topological_order([t.grad_fn for t in tensors if not t.is_leaf])
    for node in order:  # fail before any side effect, not halfway through the pass
        if node.released:
            raise RuntimeError(_freed_message(node))
        node.check_versions()

    finished: set[Node] = set()
    with no_grad():
        for node in order:
            finished.add(node)
            cotangents = node_cotangents.pop(node, None)
            if cotangents is not None:  # a node nothing flowed into contributes only zeros
                grads = node.apply(_complete(node, cotangents))
                for edge, grad in zip(node.edges, grads, strict=True):
                    if grad is None:
                        continue
                    if edge.leaf is not None:
                        _add_to_leaf(leaf_grads, edge.leaf, grad)
                    else:
                        # Invariant of the order: a producer has not run before its consumers.
                        assert edge.node not in finished, f"{edge.node} ran before {node}"
                        _add_to_node(node_cotangents, edge.node, edge.output_nr, grad)
            if not retain_graph:
                node.release()
        for leaf, grad in leaf_grads.values():
            grad = _run_hooks(leaf._hooks, grad)
            if leaf.requires_grad:
                _accumulate(leaf, grad)


def _seed(tensor: Tensor, gradient: Any, position: int) -> np.ndarray:
    """The cotangent a root starts with: ones for a scalar, else the given gradient."""
    if not tensor.requires_grad:
        raise RuntimeError(
            f"element {position} of tensors does not require grad and does not have a grad_fn"
        )
    if gradient is None:
        if tensor.size != 1:
            raise RuntimeError(
                "grad can be implicitly created only for scalar outputs; this output has "
                f"shape {tensor.shape}, so pass gradient= an array of shape {tensor.shape}"
            )
        return np.ones_like(tensor.data)
    grad = np.asarray(gradient.data if isinstance(gradient, Tensor) else gradient)
    if grad.shape != tensor.shape:
        raise RuntimeError(
            f"Mismatch in shape: gradient has a shape of {grad.shape} and output[{position}] "
            f"has a shape of {tensor.shape}; gradient= must have the output's shape"
        )
    return grad.astype(tensor.dtype, copy=False)


def _topological_order(roots: list[Node]) -> list[Node]:
    """Nodes reachable from `roots`, each one after every node that consumes its outputs."""
    post_order: list[Node] = []  # producers before consumers
    visited: set[Node] = set()
    for root in roots:
        if root in visited:
            continue
        visited.add(root)
        stack = [(root, iter(root.producers()))]
        while stack:  # iterative DFS: deep graphs must not hit the recursion limit
            node, producers = stack[-1]
            for producer in producers:
                if producer not in visited:
                    visited.add(producer)
                    stack.append((producer, iter(producer.producers())))
                    break
            else:
                stack.pop()
                post_order.append(node)
    return post_order[::-1]


def _add_to_node(
    buffers: dict[Node, list[np.ndarray | None]], node: Node, output_nr: int, grad: np.ndarray
) -> None:
    slots = buffers.setdefault(node, [None] * len(node.output_meta))
    # Out of place: `grad` may be an array the user or a backward callable still holds.
    slots[output_nr] = grad if slots[output_nr] is None else slots[output_nr] + grad


def _add_to_leaf(buffers: dict[int, tuple[Tensor, np.ndarray]], leaf: Tensor, grad: np.ndarray):
    # Summed before hooks, so a leaf's hooks see its total gradient once per pass.
    if id(leaf) in buffers:
        grad = buffers[id(leaf)][1] + grad
    buffers[id(leaf)] = (leaf, grad)


def _complete(node: Node, cotangents: list[np.ndarray | None]) -> list[np.ndarray]:
    """Run the hooks and retain_grad of each output, and fill the missing ones with zeros."""
    complete = []
    for k, (grad, (shape, dtype)) in enumerate(zip(cotangents, node.output_meta, strict=True)):
        if grad is None:
            complete.append(np.zeros(shape, dtype))
            continue
        grad = _run_hooks(node.tensor_hooks[k], grad)
        retained = node.retained_tensor(k)
        if retained is not None:  # runs after the hooks, like PyTorch's retains_grad hook
            retained._grad = grad.copy() if retained._grad is None else retained._grad + grad
        complete.append(grad)
    return complete


def _run_hooks(hooks: dict[int, Hook], grad: np.ndarray) -> np.ndarray:
    for hook in list(hooks.values()):  # a hook may remove itself while running
        replacement = hook(grad)
        if replacement is None:
            continue
        if isinstance(replacement, Tensor):
            replacement = replacement.data
        replacement = np.asarray(replacement)
        if replacement.shape != grad.shape:
            raise RuntimeError(
                f"hook {getattr(hook, '__name__', hook)!r} returned a gradient of shape "
                f"{replacement.shape}, expected shape {grad.shape}"
            )
        grad = replacement.astype(grad.dtype, copy=False)
    return grad


def _accumulate(leaf: Tensor, grad: np.ndarray) -> None:
    if leaf._grad is None:
        # A fresh array: never alias the seed or an array a backward callable returned.
        leaf._grad = np.array(grad, dtype=leaf.dtype, copy=True)
    elif leaf._grad.flags.writeable and leaf._grad.dtype == leaf.dtype:
        np.add(leaf._grad, grad, out=leaf._grad)  # in place, so optimizers see stable arrays
    else:
        leaf._grad = leaf._grad + grad
