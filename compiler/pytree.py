"""Nested arguments (dicts, lists, tuples and namedtuples of arrays) flattened to leaves and
rebuilt; a string in them is part of the structure (static), not a leaf.

A `TreeDef` is hashable, so it can be part of a specialization key; `key_paths`
gives each leaf its full path (`("enc", "W")`), which is what identifies it; `paths`
gives each leaf a readable name that no other leaf of the tree has
(`params["W1"]` -> `W1`, but `enc_W` and `dec_W` where two layers share the key `W`)
for generated code; `leaves_if_shaped` flattens a tree only if it has a given
structure, and `flattener` / `unflattener` make functions that flatten and rebuild trees of
one known structure in a few C-level steps per container (the fast paths of repeated calls).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any


@dataclass(frozen=True)
class TreeDef:
    kind: str  # "leaf", "dict", "list", "tuple", "namedtuple", "none", "str"
    # dict keys, in insertion order; a namedtuple's fields; a string's value (a string is
    # part of the structure, not a leaf: `mode="train"` is static, one trace per value)
    keys: tuple = ()
    children: tuple[TreeDef, ...] = ()
    cls: type | None = None  # a namedtuple's class

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
    if isinstance(tree, tuple):  # a namedtuple: its fields in order, rebuilt as its class
        return TreeDef("namedtuple", tuple(tree._fields),
                       tuple(_flatten(x, leaves) for x in tree), type(tree))
    if tree is None:
        return TreeDef("none")
    if type(tree) is str:
        return TreeDef("str", (tree,))
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
    if kind == "str":
        return type(tree) is str and tree == treedef.keys[0]
    if kind == "namedtuple":
        if type(tree) is not treedef.cls:
            return False
    elif type(tree) is not _CONTAINER_TYPES[kind] or len(tree) != len(treedef.children):
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


# --- one known structure, many calls ---------------------------------------------------------
Flatten = Callable[[Any, list], bool]  # (tree, leaves so far) -> whether tree had the structure


def flattener(treedef: TreeDef) -> Callable[[Any], list | None]:
    """A function giving the leaves of a tree with exactly `treedef`'s structure (as
    `leaves_if_shaped`), else None. It is built once per structure: each container costs a
    type check, a length or key comparison (keys by identity first: a repeated call passes
    the same key strings) and one `extend`, so flattening costs well under a microsecond per
    leaf."""
    collect = collector(treedef)

    def flatten(tree: Any) -> list | None:
        leaves: list = []
        return leaves if collect(tree, leaves) else None

    return flatten


def collector(treedef: TreeDef) -> Flatten:
    """`collect(tree, leaves)`: append the leaves of a tree of `treedef`'s structure to
    `leaves` and return True, or return False (what `flattener` wraps)."""
    return _collector(treedef)


def _collector(treedef: TreeDef) -> Flatten:
    """The collector as one generated function: each container's checks and its leaves'
    appends written out (a loop for a long run of alike children, such as a list of
    layers), so a call runs no Python function but this one."""
    lines, constants = collector_body(treedef, "tree", "return False")
    source = "def collect(tree, leaves):\n" + "\n".join(lines) + "\n    return True\n"
    namespace = dict(constants)
    exec(compile(source, f"<collector of {_describe(treedef)}>", "exec"), namespace)  # noqa: S102
    collect = namespace["collect"]
    collect.source = source  # for people reading a profile
    return collect


def collector_body(treedef: TreeDef, tree: str, fail: str) -> tuple[list[str], dict]:
    """The statements of a collector (at one indent) that check `tree`, a variable, against
    `treedef`, running `fail` where it differs, and append its leaves to `leaves`; and the
    constants they read (dict keys), for a generated function to hold."""
    lines: list[str] = []
    constants: dict[str, Any] = {}
    _emit_collect(treedef, tree, lines, constants, "    ", fail)
    return lines, constants


def unpacking_body(treedef: TreeDef, tree: str, fail: str) -> tuple[list[str], dict, list[str]]:
    """Like `collector_body`, for a small tree: statements that check `tree` and unpack each
    leaf into a variable of its own (no list, no loop), the constants they read, and the
    leaves' variable names in order."""
    lines: list[str] = []
    constants: dict[str, Any] = {}
    names: list[str] = []
    _emit_unpack(treedef, tree, lines, constants, fail, names, [0])
    return lines, constants, names


def _emit_unpack(treedef: TreeDef, expr: str, lines: list[str], constants: dict, fail: str,
                 names: list[str], counter: list[int]) -> None:
    kind = treedef.kind
    if kind == "leaf":
        names.append(expr)
        return
    if kind in ("none", "str"):
        lines.append(f"    if {_differs(treedef, expr, constants)}:\n        {fail}")
        return
    n = len(treedef.children)
    values = _checked_container(treedef, expr, lines, constants, "    ", fail)
    if n == 0:
        return
    variables = [f"v{counter[0] + k}" for k in range(n)]
    counter[0] += n
    lines.append(f"    {', '.join(variables)}, = {values}")
    for child, variable in zip(treedef.children, variables):
        _emit_unpack(child, variable, lines, constants, fail, names, counter)


def _checked_container(treedef: TreeDef, expr: str, lines: list[str], constants: dict,
                       indent: str, fail: str) -> str:
    """A statement that does `fail` unless `expr` is a dict (list, tuple) like `treedef`'s;
    returns the expression of its values in order."""
    if treedef.kind == "dict":
        keys = f"KEYS{len(constants)}"
        constants[keys] = treedef.keys
        # Key order decides which leaf is which; equal tuples are equal lengths. A repeated
        # call passes the same key strings, which compare by identity first.
        lines.append(f"{indent}if type({expr}) is not dict or tuple({expr}) != {keys}:\n"
                     f"{indent}    {fail}")
        return f"{expr}.values()"
    if treedef.kind == "namedtuple":  # its class fixes its fields
        cls = f"CLASS{len(constants)}"
        constants[cls] = treedef.cls
        lines.append(f"{indent}if type({expr}) is not {cls}:\n{indent}    {fail}")
        return expr
    container = treedef.kind  # "list" or "tuple", the builtin's name
    lines.append(f"{indent}if type({expr}) is not {container} or len({expr}) != "
                 f"{len(treedef.children)}:\n{indent}    {fail}")
    return expr


def _differs(treedef: TreeDef, expr: str, constants: dict) -> str:
    """The condition that `expr` is not the None or the string `treedef` stands for."""
    if treedef.kind == "none":
        return f"{expr} is not None"
    value = f"STR{len(constants)}"
    constants[value] = treedef.keys[0]
    return f"type({expr}) is not str or {expr} != {value}"


def _describe(treedef: TreeDef) -> str:
    return f"{treedef.kind} of {treedef.num_leaves} leaves"


def _fresh(prefix: str, lines: list[str]) -> str:
    """A name no other container of the function uses (numbered by the lines so far)."""
    return f"{prefix}{len(lines)}"


LOOP_AFTER = 4  # alike children beyond this many are collected by a loop, not written out


def _emit_collect(treedef: TreeDef, expr: str, lines: list[str], constants: dict,
                  indent: str, fail: str) -> None:
    """Statements that check `expr` against `treedef` (`fail` where it differs) and append
    its leaves to `leaves`."""
    kind = treedef.kind
    if kind == "leaf":
        lines.append(f"{indent}leaves.append({expr})")
        return
    if kind in ("none", "str"):
        lines.append(f"{indent}if {_differs(treedef, expr, constants)}:\n{indent}    {fail}")
        return
    n, children = len(treedef.children), treedef.children
    values = _checked_container(treedef, expr, lines, constants, indent, fail)
    if all(c.kind == "leaf" for c in children):
        lines.append(f"{indent}leaves.extend({values})")
        return
    if n > LOOP_AFTER and len(set(children)) == 1:  # a list of layers alike: one loop
        item = _fresh("item", lines)
        lines.append(f"{indent}for {item} in {values}:")
        _emit_collect(children[0], item, lines, constants, indent + "    ", fail)
        return
    first = _fresh("c", lines)
    names = [f"{first}_{k}" for k in range(n)]
    lines.append(f"{indent}{', '.join(names)}, = {values}")
    for child, name in zip(children, names):
        _emit_collect(child, name, lines, constants, indent, fail)


def unflattener(treedef: TreeDef) -> Callable[[list], Any]:
    """A function rebuilding `treedef`'s structure from its leaves (as `unflatten`), built
    once per structure for the fast paths."""
    build = _builder(treedef)
    return lambda leaves: build(iter(leaves))


def _builder(treedef: TreeDef) -> Callable[[Iterator], Any]:
    kind, n, keys = treedef.kind, len(treedef.children), treedef.keys
    if kind == "leaf":
        return next
    if kind == "none":
        return lambda it: None
    if kind == "str":
        return lambda it, value=keys[0]: value
    if kind == "namedtuple":
        cls, children = treedef.cls, [_builder(c) for c in treedef.children]
        return lambda it: cls(*[build(it) for build in children])
    if all(c.kind == "leaf" for c in treedef.children):
        if kind == "dict":
            return lambda it: dict(zip(keys, it))  # zip takes a key first: n leaves exactly
        if kind == "list":
            return lambda it: list(islice(it, n))
        return lambda it: tuple(islice(it, n))
    children = [_builder(c) for c in treedef.children]
    if kind == "dict":
        return lambda it: {key: build(it) for key, build in zip(keys, children)}
    if kind == "list":
        return lambda it: [build(it) for build in children]
    return lambda it: tuple([build(it) for build in children])


def unflatten(treedef: TreeDef, leaves: list[Any]) -> Any:
    it = iter(leaves)
    result = _unflatten(treedef, it)
    return result


def _unflatten(treedef: TreeDef, it) -> Any:
    if treedef.kind == "leaf":
        return next(it)
    if treedef.kind == "none":
        return None
    if treedef.kind == "str":
        return treedef.keys[0]
    children = [_unflatten(c, it) for c in treedef.children]
    if treedef.kind == "dict":
        return dict(zip(treedef.keys, children))
    if treedef.kind == "namedtuple":
        return treedef.cls(*children)
    return children if treedef.kind == "list" else tuple(children)


def strings(treedef: TreeDef) -> list[str]:
    """The strings a tree holds (in its structure: `flatten` makes no leaf of them)."""
    if treedef.kind == "str":
        return [treedef.keys[0]]
    return [text for child in treedef.children for text in strings(child)]


def key_paths(treedef: TreeDef) -> list[tuple]:
    """The full path of each leaf: the dict keys and sequence positions leading to it."""
    out: list[tuple] = []
    _key_paths(treedef, (), out)
    return out


def _key_paths(treedef: TreeDef, path: tuple, out: list[tuple]) -> None:
    if treedef.kind == "leaf":
        out.append(path)
    elif treedef.kind in ("none", "str"):
        return
    elif treedef.kind in ("dict", "namedtuple"):  # a field is named like a key
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
        treedef = treedef.children[treedef.keys.index(key) if treedef.kind in _KEYED else key]
    return treedef.kind in _KEYED


_KEYED = ("dict", "namedtuple")  # containers whose children have names
