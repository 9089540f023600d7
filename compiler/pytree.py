"""Nested arguments (dicts, lists, tuples of arrays) flattened to leaves and rebuilt.

A `TreeDef` is hashable, so it can be part of a specialization key; `key_paths`
gives each leaf its full path (`("enc", "W")`), which is what identifies it; `paths`
gives each leaf a readable name that no other leaf of the tree has
(`params["W1"]` -> `W1`, but `enc_W` and `dec_W` where two layers share the key `W`)
for generated code; `leaves_if_shaped` flattens a tree only if it has a given
structure (fast paths).
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


def key_paths(treedef: TreeDef) -> list[tuple]:
    """The full path of each leaf: the dict keys and sequence positions leading to it."""
    out: list[tuple] = []
    _key_paths(treedef, (), out)
    return out


def _key_paths(treedef: TreeDef, path: tuple, out: list[tuple]) -> None:
    if treedef.kind == "leaf":
        out.append(path)
    elif treedef.kind == "dict":
        for key, child in zip(treedef.keys, treedef.children):
            _key_paths(child, path + (key,), out)
    else:
        for i, child in enumerate(treedef.children):
            _key_paths(child, path + (i,), out)


def paths(treedef: TreeDef, prefix: str) -> list[str]:
    """A readable name for each leaf, unique within the tree: the innermost dict key
    (`W1`), or `prefix_index` for sequences (`args_0`, `layers_1`); where leaves share it
    (`{"enc": {"W"}, "dec": {"W"}}`), outer keys are prepended until they differ
    (`enc_W`, `dec_W`). Identity is the full path (`key_paths`); these names are for people.
    """
    # Each leaf's words, from the prefix to the leaf. A name is a suffix of them that starts
    # at a dict key or at the prefix (never at a bare position: `0_W` says too little).
    words, starts = [], []
    for path in key_paths(treedef):
        words.append([prefix, *map(str, path)])
        starts.append([0, *(k + 1 for k in range(len(path)) if _is_dict(treedef, path[:k]))])
    level = [len(s) - 1 for s in starts]  # which start each leaf uses: the innermost first

    def name(i: int) -> str:
        return "_".join(words[i][starts[i][level[i]]:])

    while True:
        names = [name(i) for i in range(len(words))]
        shared = {n for n in names if names.count(n) > 1}
        widen = [i for i, n in enumerate(names) if n in shared and level[i] > 0]
        if not widen:
            break
        for i in widen:
            level[i] -= 1
    # Full paths can still read alike ({"a": {"b_c"}} and {"a_b": {"c"}}): number the rest.
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        seen[n] = seen.get(n, 0) + 1
        if seen[n] > 1:
            names[i] = f"{n}_{seen[n]}"
    return names


def _is_dict(treedef: TreeDef, path: tuple) -> bool:
    """Whether the container that `path` leads to is a dict (so its children have keys)."""
    for key in path:
        treedef = treedef.children[treedef.keys.index(key) if treedef.kind == "dict" else key]
    return treedef.kind == "dict"
