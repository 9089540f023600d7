"""A kernel's results as the values the user gets: the function's output structure (0-d
results as NumPy scalars, as NumPy's reductions return them) and gradients rebuilt in the
structure of each `wrt` argument; packers built once per call pattern for the fast paths."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from compiler import pytree
from compiler.arguments import CallArguments
from compiler.specialization import Specialization


def plain(value: np.ndarray):
    """0-d results become NumPy scalars, as NumPy's own reductions return them."""
    return value[()] if isinstance(value, np.ndarray) and value.ndim == 0 else value


def value_packer(spec: Specialization) -> Callable[[tuple], Any]:
    """The function's value (its output structure, NumPy scalars for 0-d outputs) from a
    kernel's results."""
    if spec.out_tree.kind == "leaf":
        return lambda results: plain(results[0])
    return lambda results: pytree.unflatten(spec.out_tree, [plain(r) for r in results])


def wrt_items(wrt: int | str | tuple) -> tuple:
    """The arguments `wrt` names, as a tuple (one, or several)."""
    return wrt if isinstance(wrt, tuple) else (wrt,)


def unflatten_grads(call: CallArguments, grads: list[Any], wrt: int | str | tuple):
    """The gradients, flat, rebuilt in the structure of each `wrt` argument of `call` (a
    tuple of them when `wrt` is a tuple)."""
    structured, k = [], 0
    for item in wrt_items(wrt):
        tree = call.treedef.children[call.slot(item)]
        structured.append(pytree.unflatten(tree, grads[k:k + tree.num_leaves]))
        k += tree.num_leaves
    return tuple(structured) if isinstance(wrt, tuple) else structured[0]


def value_and_grad_packer(spec: Specialization, call: CallArguments, wrt: int | str | tuple
                          ) -> Callable[[tuple], Any]:
    """(value, gradients) from a value_and_grad kernel's results, for calls made like
    `call`: gradients rebuilt in the structure of each `wrt` argument."""
    n_out, several = len(spec.graph.outputs), isinstance(wrt, tuple)
    trees = [call.treedef.children[call.slot(item)] for item in wrt_items(wrt)]
    if spec.out_tree.kind == "leaf" and spec.graph.outputs[0].shape == () and not several \
            and trees[0].kind == "leaf":
        return lambda results: (results[0][()], results[1])  # the common case, fast
    value = value_packer(spec)
    if not several and trees[0].kind != "leaf":  # a dict of parameters, say
        rebuild = pytree.unflattener(trees[0])
        if spec.out_tree.kind == "leaf" and spec.graph.outputs[0].shape == ():
            return lambda results: (results[0][()], rebuild(results[1:]))
        return lambda results: (value(results[:n_out]), rebuild(results[n_out:]))
    if all(tree.kind == "leaf" for tree in trees):  # one array per `wrt` item
        def pack_arrays(results: tuple):
            grads = results[n_out:]
            return value(results[:n_out]), tuple(grads) if several else grads[0]

        return pack_arrays
    rebuilds = [pytree.unflattener(tree) for tree in trees]
    counts = [tree.num_leaves for tree in trees]

    def pack(results: tuple):
        grads, k = [], n_out
        for rebuild, count in zip(rebuilds, counts):
            grads.append(rebuild(results[k:k + count]))
            k += count
        return value(results[:n_out]), tuple(grads) if several else grads[0]

    return pack
