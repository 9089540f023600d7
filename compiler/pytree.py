"""Nested arguments (dicts, lists, tuples of arrays) flattened to leaves and rebuilt.

A `TreeDef` is hashable, so it can be part of a specialization key; `paths`
gives each leaf a readable name (`params["W1"]` -> `W1`) for generated code;
`leaves_if_shaped` flattens a tree only if it has a given structure (fast paths).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TreeDef:
    kind: str  # "leaf", "dict", "list", "tuple", "none"
    keys: tuple = ()  # dict keys, in insertion order
    children: tuple[TreeDef, ...] = ()

    @property
    def num_leaves(self) -> int:
        if self.kind == "leaf":
            return 1
        return sum(c.num_leaves for c in self.children)


LEAF = TreeDef("leaf")


def flatten(tree: Any) -> tuple[list[Any], TreeDef]:
    leaves: list[Any] = []
    return leaves, _flatten(tree, leaves)


def _flatten(tree: Any, leaves: list[Any]) -> TreeDef:
    if isinstance(tree, dict):
        keys = tuple(tree)
        return TreeDef("dict", keys, tuple(_flatten(tree[k], leaves) for k in keys))
    if isinstance(tree, (list, tuple)) and not hasattr(tree, "_fields"):
        kind = "list" if isinstance(tree, list) else "tuple"
        return TreeDef(kind, (), tuple(_flatten(x, leaves) for x in tree))
    if tree is None:
        return TreeDef("none")
    leaves.append(tree)
    return LEAF


def leaves_if_shaped(treedef: TreeDef, tree: Any) -> list[Any] | None:
    """The leaves of `tree` if it has exactly the structure of `treedef` (the same container
    types, not subclasses; dict keys in the same order), else None. Leaves are not checked:
    a container where `treedef` has a leaf comes back as a leaf, for the caller to refuse."""
    leaves: list[Any] = []
    return leaves if _shaped(treedef, tree, leaves) else None


_CONTAINER_TYPES = {"dict": dict, "list": list, "tuple": tuple}


def _shaped(treedef: TreeDef, tree: Any, leaves: list[Any]) -> bool:
    kind = treedef.kind
    if kind == "leaf":
        leaves.append(tree)
        return True
    if kind == "none":
        return tree is None
    if type(tree) is not _CONTAINER_TYPES[kind] or len(tree) != len(treedef.children):
        return False
    if kind == "dict":
        if tuple(tree) != treedef.keys:  # key order decides which leaf is which
            return False
        tree = tree.values()
    for child, subtree in zip(treedef.children, tree):
        if child.kind == "leaf":  # most children are leaves: no call for them
            leaves.append(subtree)
        elif not _shaped(child, subtree, leaves):
            return False
    return True


def unflatten(treedef: TreeDef, leaves: list[Any]) -> Any:
    it = iter(leaves)
    result = _unflatten(treedef, it)
    return result


def _unflatten(treedef: TreeDef, it) -> Any:
    if treedef.kind == "leaf":
        return next(it)
    if treedef.kind == "none":
        return None
    children = [_unflatten(c, it) for c in treedef.children]
    if treedef.kind == "dict":
        return dict(zip(treedef.keys, children))
    return children if treedef.kind == "list" else tuple(children)


def paths(treedef: TreeDef, prefix: str) -> list[str]:
    """A readable name for each leaf: the innermost dict key, or prefix_index for sequences."""
    out: list[str] = []
    _paths(treedef, prefix, out)
    return out


def _paths(treedef: TreeDef, name: str, out: list[str]) -> None:
    if treedef.kind == "leaf":
        out.append(name)
    elif treedef.kind == "dict":
        for key, child in zip(treedef.keys, treedef.children):
            _paths(child, str(key), out)
    else:
        for i, child in enumerate(treedef.children):
            _paths(child, f"{name}_{i}", out)
