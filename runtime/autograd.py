"""The backward engine: `backward()` over the graph that `record` builds (runtime/graph.py),
and `grad()` (torch.autograd.grad), the same pass returning the gradients.

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

The most common graph, one node over leaves (one compiled call on Parameters),
takes a shorter path through the same steps; `record` and the pass are on the
hot path of every training step, so both avoid work they can prove unneeded.

A node without `retain_graph=True` drops its callable after it runs, which
frees the residual arrays the callable closed over; a later pass through it
raises before any node runs.

Backward callables read their input Tensors' arrays as they are when backward
runs (the forward kernel does not copy them; the compiler keeps copies of the
plain arrays backward needs, which have no version counter). So each node also remembers the
version counter (`Tensor._version`) of every input Tensor at forward time, and
a pass whose inputs have since been updated in place (an optimizer step,
`utils.load`) raises PyTorch's "modified by an inplace operation" error before
any node runs, instead of silently using the new values. Like PyTorch's, the
check is per input, not per value backward actually reads, and writes the user
makes through `.data` are not counted.

Grad mode (`no_grad` and the rest) lives in `grad_mode` and is importable from here too.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from .grad_mode import _mode, enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .graph import (
    CallSite,
    Edge,
    Node,
    _freed_message,
    _requires_grad_of,
    _version_of,
    record,
    unreached_edges,
)
from .tensor import Hook, Tensor

__all__ = ["CallSite", "Edge", "Node", "backward", "enable_grad", "grad", "is_grad_enabled",
           "no_grad", "record", "set_grad_enabled"]

# -- the backward pass ---------------------------------------------------------------


def backward(
    tensors: Tensor | Sequence[Tensor],
    grad_tensors: Any = None,
    retain_graph: bool = False,
    inputs: Sequence[Tensor] | None = None,
    create_graph: bool = False,
) -> None:
    """Accumulate into leaf `.grad`s the gradients of `tensors` (one Tensor or a sequence)
    weighted by `grad_tensors` (one gradient per Tensor, or one gradient for one Tensor);
    with `inputs`, into the `.grad`s of those Tensors only (leaves or results, as PyTorch)."""
    _no_create_graph(create_graph, "backward")
    # One Tensor, as PyTorch takes it: iterating it would give its rows (or fail on a loss).
    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    if grad_tensors is None:
        grad_tensors = [None] * len(tensors)
    elif isinstance(grad_tensors, Tensor | np.ndarray | int | float | np.generic):
        grad_tensors = [grad_tensors]  # one gradient: a list of one, checked below
    else:
        grad_tensors = list(grad_tensors)
    if len(grad_tensors) != len(tensors):
        raise RuntimeError(f"grad_tensors has {len(grad_tensors)} entries, but there are "
                           f"{len(tensors)} tensors")
    only = None if inputs is None else _only(inputs)
    seeds = [_seed(t, g, i) for i, (t, g) in enumerate(zip(tensors, grad_tensors, strict=True))]
    root = tensors[0] if len(tensors) == 1 else None  # `tensor.backward()`
    if only is None and root is not None and root.grad_fn is not None \
            and not root.grad_fn._producers:
        _backward_one_node(root, seeds[0], retain_graph)
        return
    _backward_graph(tensors, seeds, retain_graph, only)


def grad(
    outputs: Tensor | Sequence[Tensor],
    inputs: Tensor | Sequence[Tensor],
    grad_outputs: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool | None = None,
    materialize_grads: bool = False,
) -> tuple[np.ndarray | None, ...]:
    """torch.autograd.grad: the gradients of `outputs` (weighted by `grad_outputs`) with respect
    to `inputs` (leaves or results), returned as arrays and accumulated into no `.grad`.

    As in PyTorch, the graph is freed unless `retain_graph`, the inputs' hooks run, an input
    the outputs do not reach is an error unless `allow_unused` (its gradient None, or zeros
    with `materialize_grads`), and one that does not require grad is an error. Higher-order
    gradients (`create_graph=True`) are the compiler's: differentiate `f.grad` inside another
    compiled function."""
    _no_create_graph(create_graph, "grad")
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    single = isinstance(inputs, Tensor)
    inputs = [inputs] if single else list(inputs)
    if grad_outputs is None or isinstance(grad_outputs, Tensor | np.ndarray):
        grad_outputs = [grad_outputs] * len(outputs) if grad_outputs is None \
            else [grad_outputs]
    grad_outputs = list(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise RuntimeError(f"grad_outputs has {len(grad_outputs)} entries, but there are "
                           f"{len(outputs)} outputs")
    if allow_unused is None:
        allow_unused = materialize_grads
    elif materialize_grads and not allow_unused:
        raise ValueError("materialize_grads=True needs allow_unused=True (or None)")
    only = _only(inputs)
    seeds = [_seed(t, g, i) for i, (t, g) in enumerate(zip(outputs, grad_outputs))]
    captured: dict[Any, np.ndarray] = {}
    _backward_graph(outputs, seeds, bool(retain_graph), only, captured)
    grads: list[np.ndarray | None] = []
    for t in inputs:
        found = captured.get(id(t) if t.is_leaf else (t.grad_fn, t.output_nr))
        if found is None:
            if not allow_unused:
                raise RuntimeError(
                    "One of the differentiated Tensors appears to not have been used in the "
                    "graph. Set allow_unused=True if this is the desired behavior.")
            if materialize_grads:
                found = np.zeros(t.shape, t.dtype)
        else:  # a fresh array: never the seed, a hook's array or a kernel's twice
            found = np.array(found, t.dtype)
        grads.append(found)
    return tuple(grads)


def _no_create_graph(create_graph: bool, caller: str) -> None:
    if create_graph:
        raise RuntimeError(
            f"{caller}(create_graph=True): the runtime's backward builds no graph of its own, "
            "so its gradients cannot be differentiated again; for higher-order gradients call "
            "f.grad(...) inside another compiled function and differentiate that")


def _only(inputs: Sequence[Tensor]) -> dict[Any, Tensor]:
    """`backward(inputs=...)`'s Tensors by where their gradient shows up: a leaf by its id, a
    result by (its node, its output number)."""
    if isinstance(inputs, Tensor):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise RuntimeError("`inputs` argument to `backward()` cannot be empty.")
    only: dict[Any, Tensor] = {}
    for position, t in enumerate(inputs):
        if not isinstance(t, Tensor):
            raise TypeError(f"backward(inputs=...) takes Tensors, got {type(t).__name__}")
        if not t._requires_grad:  # PyTorch refuses it too: it could never get a gradient
            raise RuntimeError(
                f"backward(inputs=...): inputs[{position}] (shape {t.shape}) does not require "
                "grad, so no gradient can be accumulated into it")
        only[id(t) if t.is_leaf else (t.grad_fn, t.output_nr)] = t
    return only


def _backward_graph(tensors: list[Tensor], seeds: list[np.ndarray], retain_graph: bool,
                    only: dict[Any, Tensor] | None = None,
                    captured: dict[Any, np.ndarray] | None = None) -> None:
    """The pass over any graph, steps 1-4 of the module docstring; with `only`, the gradients
    go into those Tensors' `.grad`s alone (`backward(inputs=...)`), or into `captured`, by
    the keys of `only`, where that is given (`grad`)."""
    node_cotangents: dict[Node, list[np.ndarray | None]] = {}
    leaf_grads: dict[int, tuple[Tensor, np.ndarray]] = {}
    for root, seed in zip(tensors, seeds, strict=True):
        if root.is_leaf:
            _add_to_leaf(leaf_grads, root, seed)
        else:
            _add_to_node(node_cotangents, root.grad_fn, root.output_nr, seed)

    order = _topological_order([t.grad_fn for t in tensors if not t.is_leaf])
    for node in order:  # fail before any side effect, not halfway through the pass
        _check_runnable(node)

    finished: set[Node] = set()
    previous = _mode.enabled
    _mode.enabled = False  # no_grad, without a context object
    try:
        for node in order:
            finished.add(node)
            cotangents = node_cotangents.pop(node, None)
            if cotangents is not None:  # a node nothing flowed into contributes only zeros
                unreached = unreached_edges(node, cotangents)
                cotangents = _complete(node, cotangents)
                if only is not None:
                    _store_into_results(node, cotangents, only, captured)
                grads = node.apply(cotangents)
                for i in unreached:
                    grads[i] = None
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
        if only is not None:
            leaf_grads = {key: found for key, found in leaf_grads.items() if key in only}
        if captured is None:
            _accumulate_into_leaves(leaf_grads)
        else:  # the leaves' hooks run, as for accumulation; their .grad stays as it is
            for key, (leaf, grad) in leaf_grads.items():
                captured[key] = _run_hooks(leaf._hooks, grad) if leaf._hooks else grad
    finally:
        _mode.enabled = previous


def _store_into_results(node: Node, cotangents: list[np.ndarray], only: dict,
                        captured: dict | None = None) -> None:
    """A result named in `backward(inputs=...)` gets its gradient in `.grad`, as PyTorch does
    (in `captured` instead, for `grad`)."""
    for k, grad in enumerate(cotangents):
        result = only.get((node, k))
        if result is None:
            continue
        if captured is not None:
            captured[(node, k)] = grad
        else:
            result._grad = grad.copy() if result._grad is None else _summed(result._grad, grad)


def _backward_one_node(root: Tensor, seed: np.ndarray, retain_graph: bool) -> None:
    """`_backward_graph` for its most common graph, one node whose inputs are all leaves (one
    compiled call on Parameters): the same checks, hooks and order, without the walk. The
    seed may be `unit_seed`'s shared array (a 0-d root's implicit gradient)."""
    node, output_nr = root.grad_fn, root.output_nr
    if node._backward is None or list(map(_version_of, node.tensors)) != node.versions:
        _check_runnable(node)  # raises, with the message
    if node.backward_into is not None and node._tensor_hooks is None \
            and node._retained is None and len(node.output_meta) == 1:
        # A training loop's backward(): no hook to run (so nothing to run under no_grad),
        # no cotangent to complete, the kernel storing into `.grad`. A shared seed is safe
        # there: only the kernel reads it, and nothing writes it.
        if _stored_into_leaves(node, [seed]):
            if not retain_graph:
                node._backward = node.backward_into = None  # node.release()
            return
        tried_into = True
    else:
        tried_into = False
    if seed is _UNIT_SEEDS.get(seed.dtype):  # a fresh one: the usual path hands it to hooks
        seed = np.array(1, seed.dtype)
    previous = _mode.enabled
    _mode.enabled = False  # hooks and backward callables run under no_grad
    try:
        if len(node.output_meta) == 1 and node._tensor_hooks is None and node._retained is None:
            cotangents = [seed]  # nothing for _complete to do
            unreached = []
        else:
            cotangents = [None] * len(node.output_meta)
            cotangents[output_nr] = seed
            unreached = unreached_edges(node, cotangents)
            cotangents = _complete(node, cotangents)
        if node.backward_into is not None and not tried_into and not unreached \
                and _stored_into_leaves(node, cotangents):
            if not retain_graph:
                node.release()
            return
        grads = node.apply(cotangents)
        for i in unreached:
            grads[i] = None
        if not retain_graph:
            node.release()
        leaf_grads: dict[int, tuple[Tensor, np.ndarray]] = {}
        for edge, grad in zip(node.edges, grads):
            if grad is None:
                continue
            leaf = edge.leaf  # every edge goes to a leaf: the node has no producers
            key = id(leaf)
            if key in leaf_grads:  # the same leaf in two positions: as _add_to_leaf
                grad = _summed(leaf_grads[key][1], grad)
            leaf_grads[key] = (leaf, grad)
        _accumulate_into_leaves(leaf_grads)
    finally:
        _mode.enabled = previous


# One 0-d array of ones per dtype: the seed of the backward_into path, which only its kernel
# reads (a fresh one would cost an allocation per backward()).
_UNIT_SEEDS: dict[np.dtype, np.ndarray] = {}


def unit_seed(dtype: np.dtype) -> np.ndarray:
    """The shared 0-d one of `dtype` that `Tensor.backward` seeds `_backward_one_node` with."""
    seed = _UNIT_SEEDS.get(dtype)
    return _UNIT_SEEDS.setdefault(dtype, np.array(1, dtype)) if seed is None else seed


def _stored_into_leaves(node: Node, cotangents: list[np.ndarray]) -> bool:
    """Step 4 done by the node's kernel: `backward_into` stores each input's gradient into the
    array that becomes its leaf's `.grad` (adding it to the leaf's `.grad` where there is
    one), so no gradient is returned, checked or copied. Returns False, having done nothing,
    unless that gives what the usual path gives: every edge goes to a leaf of its own that
    still requires grad and has no hooks, and whose `.grad`, if any, is its `_own_grad`
    (nobody can see it change, and the kernel cannot be reading it through an alias)."""
    site = node.site
    if not site.into_ready:
        return False
    # the site's inputs: one leaf per edge, in order
    leaves = node.tensors if site.only_leaves else node.tensors[:len(node.edges)]
    if site.leaves_checked != Tensor._leaf_changes:  # else they still require grad, hookless
        changes = Tensor._leaf_changes
        if any(map(_hooks_of, leaves)) or not all(map(_requires_grad_of, leaves)):
            return False
        site.leaves_checked = changes
    owns = list(map(_own_grad_of, leaves))
    if all(map(operator.is_, map(_grad_of, leaves), site.no_grads)):
        grads = ()  # no leaf has a `.grad` (zero_grad() ran): backward_into's usual case
    else:
        grads = list(map(_grad_of, leaves))
        if not all(map(operator.is_, grads, owns)) \
                and any(g is not None and g is not own for g, own in zip(grads, owns)):
            return False  # a `.grad` handed out: the usual path adds to it, in place
    stored = node.backward_into(cotangents, grads, owns)
    if stored is None:  # the node cannot now (anomaly mode's checked kernels): the usual path
        return False
    for leaf, grad in zip(leaves, stored):
        leaf._grad = leaf._own_grad = grad
    return True


_hooks_of = operator.attrgetter("_hooks")
_grad_of = operator.attrgetter("_grad")
_own_grad_of = operator.attrgetter("_own_grad")


def _check_runnable(node: Node) -> None:
    if node._backward is None:
        raise RuntimeError(_freed_message(node))
    node.check_versions()


def _accumulate_into_leaves(leaf_grads: dict[int, tuple[Tensor, np.ndarray]]) -> None:
    """Leaves last: each leaf's hooks on its total gradient, then accumulation into `.grad`."""
    for leaf, grad in leaf_grads.values():
        if leaf._hooks:
            grad = _run_hooks(leaf._hooks, grad)
        if leaf._requires_grad:
            _accumulate(leaf, grad)


def _seed(tensor: Tensor, gradient: Any, position: int) -> np.ndarray:
    """The cotangent a root starts with: ones for a scalar, else the given gradient."""
    if not tensor._requires_grad:
        raise RuntimeError(
            f"element {position} of tensors does not require grad and does not have a grad_fn"
        )
    data = tensor.data
    if gradient is None:
        if data.size != 1:
            raise RuntimeError(
                "grad can be implicitly created only for scalar outputs; this output has "
                f"shape {data.shape}, so pass gradient= an array of shape {data.shape}"
            )
        # np.ones of shape () costs five times np.array(1): this runs once per backward().
        return np.array(1, data.dtype) if data.ndim == 0 else np.ones(data.shape, data.dtype)
    grad = np.asarray(gradient.data if isinstance(gradient, Tensor) else gradient)
    if grad.shape != tensor.shape:
        raise RuntimeError(
            f"Mismatch in shape: gradient has a shape of {grad.shape} and output[{position}] "
            f"has a shape of {tensor.shape}; gradient= must have the output's shape"
        )
    return grad.astype(tensor.dtype, copy=False)


def _topological_order(roots: list[Node]) -> list[Node]:
    """Nodes reachable from `roots`, each one after every node that consumes its outputs."""
    if len(roots) == 1 and not roots[0]._producers:  # one call's result: nothing to walk
        return list(roots)
    post_order: list[Node] = []  # producers before consumers
    visited: set[Node] = set()
    for root in roots:
        if root in visited:
            continue
        visited.add(root)
        stack = [(root, iter(root._producers))]
        while stack:  # iterative DFS: deep graphs must not hit the recursion limit
            node, producers = stack[-1]
            for producer in producers:
                if producer not in visited:
                    visited.add(producer)
                    stack.append((producer, iter(producer._producers)))
                    break
            else:
                stack.pop()
                post_order.append(node)
    return post_order[::-1]


def _summed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b as an array: NumPy adds two 0-d arrays into a scalar, which kernels refuse and
    `.grad` must not be (clipping and zero_grad write into it)."""
    total = a + b
    return total if type(total) is np.ndarray else np.asarray(total)


def _add_to_node(
    buffers: dict[Node, list[np.ndarray | None]], node: Node, output_nr: int, grad: np.ndarray
) -> None:
    slots = buffers.setdefault(node, [None] * len(node.output_meta))
    # Out of place: `grad` may be an array the user or a backward callable still holds.
    slots[output_nr] = grad if slots[output_nr] is None else _summed(slots[output_nr], grad)


def _add_to_leaf(buffers: dict[int, tuple[Tensor, np.ndarray]], leaf: Tensor, grad: np.ndarray):
    # Summed before hooks, so a leaf's hooks see its total gradient once per pass.
    key = id(leaf)
    if key in buffers:
        grad = _summed(buffers[key][1], grad)
    buffers[key] = (leaf, grad)


def _complete(node: Node, cotangents: list[np.ndarray | None]) -> list[np.ndarray]:
    """Run the hooks and retain_grad of each output, and fill the missing ones with zeros."""
    if node._tensor_hooks is None and node._retained is None \
            and all(grad is not None for grad in cotangents):
        return cotangents  # nothing to run and nothing missing: the usual case
    complete = []
    for k, (grad, (shape, dtype)) in enumerate(zip(cotangents, node.output_meta, strict=True)):
        if grad is None:
            complete.append(np.zeros(shape, dtype))
            continue
        if node._tensor_hooks is not None:
            grad = _run_hooks(node._tensor_hooks[k], grad)
        retained = node.retained_tensor(k) if node._retained is not None else None
        if retained is not None:  # runs after the hooks, like PyTorch's retains_grad hook
            retained._grad = grad.copy() if retained._grad is None \
                else _summed(retained._grad, grad)
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
    dtype = leaf.data.dtype
    if leaf._grad is None:
        # A copy: never alias the seed or an array a backward callable returned. Into the
        # array of the last backward() if nobody was handed it (zero_grad() ran since): a
        # training loop's `.grad`s keep their arrays, as the compiled optimizer steps want.
        own = leaf._own_grad
        if own is not None and own.shape == grad.shape and own.dtype == dtype:
            np.copyto(own, grad)
            leaf._grad = own
        else:
            leaf._grad = leaf._own_grad = np.array(grad, dtype)  # 0-d stays an array
    elif leaf._grad.flags.writeable and leaf._grad.dtype == dtype:
        np.add(leaf._grad, grad, out=leaf._grad)  # in place, so optimizers see stable arrays
    else:
        leaf._grad = leaf._own_grad = _summed(leaf._grad, grad)
