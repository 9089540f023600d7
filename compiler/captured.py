"""What a compiled function reads from outside its arguments, and whether it has changed.

A trace bakes in what the function reads from its globals, its closure and `self` (a learning
rate, a mask, a flag, a helper function): kernels built from it would go on computing with
the old value after the user rebinds the name, silently. `Captured` finds, from the code
objects, the names the function (and the user's functions and methods it calls, and the
functions defined inside it) loads: globals, closure cells, and one attribute of what those
hold (`cfg.lr`, `self.scale`, `model.W`). `take()` notes what they hold when a trace is made;
`changed()` says which one holds something else now: a number, string or tuple of them
compared by value, anything else (an array, a function) by identity, so rebinding
`mask = new_mask` is seen and `mask[...] = 0` is not (an array that changes belongs in the
arguments). Library modules (NumPy, gradfuse, the standard library) are not followed: their
values do not change under the user; nor are the names of functions read from another module
(`layers.dense`: only monkeypatching rebinds them), though what those functions read is.
The code and defaults of every function followed are watched too (by identity): IPython's
autoreload replaces them in the function object when its module is edited.
`unchanged` is the check of every call: one expression (a function's `__code__` is read as an
attribute, the rest through a call each); `watcher` makes it, with the call to make on a
change, the one function a compiled function runs before its fast paths.
"""

from __future__ import annotations

import dis
import functools
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

MISSING = object()
_LIBRARIES = {"numpy", "scipy", "numba", "compiler", "runtime", "torch", "jax", "llvmlite"}
_SCALARS = (bool, int, float, complex, str, bytes, np.generic, type(None))
_ATTRIBUTE_OPS = {"LOAD_ATTR", "LOAD_METHOD"}


def _is_library(module_name: str | None) -> bool:
    root = (module_name or "").split(".")[0]
    return root in _LIBRARIES or root in sys.stdlib_module_names


def same(a: Any, b: Any) -> bool:
    """Whether a trace that read `b` holds for `a`: numbers and strings (and tuples of them)
    by value and class, anything else by identity."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, _SCALARS):
        return bool(a == b)
    return False


def _static_attribute(obj: Any, name: str) -> Any:
    """obj.name as stored, without running a property or `__getattr__`: the instance's own
    dict (or slot) first, then its class's (a method as its function)."""
    try:
        own = object.__getattribute__(obj, "__dict__")
    except AttributeError:  # __slots__
        own = None
    if isinstance(own, dict) and name in own:
        return own[name]
    if isinstance(obj, type):  # a class as a namespace (Config.lr) or a classmethod's cls
        return _class_attribute(obj, name)
    if isinstance(obj, types.ModuleType):
        return MISSING
    for klass in type(obj).__mro__:
        if name in klass.__dict__:
            held = klass.__dict__[name]
            if isinstance(held, types.MemberDescriptorType):  # a slot: its value
                try:
                    return held.__get__(obj, type(obj))
                except AttributeError:  # not set
                    return MISSING
            return held
    return MISSING


def _class_attribute(klass: type, name: str) -> Any:
    return next((k.__dict__[name] for k in klass.__mro__ if name in k.__dict__), MISSING)


def _cell_contents(cell) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell (a variable not assigned yet)
        return MISSING


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    """`code` and the code of the functions, lambdas and comprehensions defined in it."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


class Read:
    """One name the function loads: `get()` reads what it holds now; `attribute`, if given,
    `(obj, name)` such that `obj.name` is what `get()` reads (written so in `unchanged`, an
    attribute load instead of a call)."""

    __slots__ = ("what", "get", "attribute")

    def __init__(self, what: str, get: Callable[[], Any],
                 attribute: tuple[Any, str] | None = None) -> None:
        self.what = what
        self.get = get
        self.attribute = attribute


class Captured:
    """The reads of a function from outside its arguments (see the module's docstring)."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self.reads: list[Read] = []
        self._seen: set[int] = set()  # code objects followed
        self._keys: set[tuple] = set()  # what is read: no read twice
        try:
            self._follow(fn, None)
        except Exception:  # noqa: BLE001  an object of the user's that resists inspection:
            pass  # what was found so far is watched, and the function still compiles
        del self._seen, self._keys
        self.values: list[Any] = []

    def take(self) -> None:
        """Note what every read holds now (a trace is being made), and write `unchanged`."""
        self.values = [read.get() for read in self.reads]
        terms, namespace = [], {}
        for k, (read, value) in enumerate(zip(self.reads, self.values)):
            namespace[f"v{k}"] = value
            if read.attribute is not None:  # a function's code: f.__code__ is v
                namespace[f"o{k}"], name = read.attribute
                terms.append(f"o{k}.{name} is v{k}")
            else:
                namespace[f"g{k}"] = read.get
                terms.append(f"g{k}() is v{k}")
        self._terms, self._namespace = " and ".join(terms) or "True", namespace
        exec(f"def unchanged():\n    return {self._terms}\n", namespace)  # noqa: S102
        self.unchanged = namespace["unchanged"]

    def watcher(self, on_change: Callable[[], None]) -> Callable[[], None]:
        """`unchanged`, and a call of `on_change` when it says no, as one generated function:
        the check of every call of a compiled function (valid until the next `take`)."""
        namespace = {**self._namespace, "on_change": on_change}
        exec(f"def watch():\n    if not ({self._terms}):\n        on_change()\n",  # noqa: S102
             namespace)
        return namespace["watch"]

    def unchanged(self) -> bool:
        """Whether every read holds the very object noted (a few calls and `is`, written out
        by `take`): the check of every call. False only means `changed` should look."""
        return False

    def changed(self) -> str | None:
        """The first read that holds something else than when `take` ran, described; else
        None."""
        for read, value in zip(self.reads, self.values):
            now = read.get()
            if now is not value and not same(now, value):
                return read.what
        return None

    def renewed(self) -> tuple[Captured, str | None]:
        """For when `unchanged` said no: `(self, None)` if every read still holds an equal
        value (`lr = 0.1` again; noted anew), else what changed and the reads of the function
        found afresh (a function rebound in place of another reads other names) and noted."""
        what = self.changed()
        if what is None:
            self.take()
            return self, None
        fresh = Captured(self.fn)
        fresh.take()
        return fresh, what

    # --- finding the reads ---------------------------------------------------------------
    def _follow(self, value: Any, instance: Callable[[], Any] | None) -> None:
        """Find the reads of `value` if it is the user's code: a function, a compiled
        function, a partial, a method of the user's object, a callable object."""
        while True:
            if isinstance(value, functools.partial):
                value = value.func
            elif hasattr(value, "__self_ref__") and hasattr(value, "__wrapped__"):
                instance, value = value.__self_ref__, value.__wrapped__  # compiler/methods.py
            elif type(value).__name__ in ("CompiledFunction", "BoundMethod"):
                value = getattr(value, "compiled", value).fn
            elif type(value).__name__ == "custom_vjp":  # its function, and its rule's reads
                if value.rule is not None:
                    self._follow(value.rule, None)
                value = value.fn
            elif isinstance(value, types.MethodType) and isinstance(value.__func__,
                                                                    types.FunctionType):
                instance = (lambda obj: lambda: obj)(value.__self__)
                value = value.__func__
            elif not isinstance(value, types.FunctionType | type) and isinstance(
                    _class_attribute(type(value), "__call__"), types.FunctionType):
                instance = (lambda obj: lambda: obj)(value)  # a callable object: its __call__
                value = type(value).__call__
            else:
                break
        if not isinstance(value, types.FunctionType) or _is_library(value.__module__):
            return
        if id(value.__code__) in self._seen:
            return
        self._seen.add(id(value.__code__))
        code = value.__code__
        # Its code and defaults, which IPython's autoreload replaces in the function object
        # when its module is edited: the trace ran the old ones.
        for name in ("__code__", "__defaults__", "__kwdefaults__"):
            if name != "__code__" and not getattr(value, name):
                continue  # none to change (new ones come with new code)
            self._read(f"the {name.strip('_')} of {value.__qualname__} (edited in place)",
                       functools.partial(getattr, value, name), (id(value), name),
                       (value, name))
        for name, cell in zip(code.co_freevars, value.__closure__ or ()):
            if not isinstance(_cell_contents(cell), types.ModuleType):
                self._read(f"'{name}' (read from the closure of {value.__qualname__})",
                           functools.partial(_cell_contents, cell), (id(cell),))
            self._follow(_cell_contents(cell), None)
        self_name = code.co_varnames[0] if instance is not None and code.co_argcount else None
        cells = dict(zip(code.co_freevars, value.__closure__ or ()))
        for nested in _codes(code):
            instructions = list(dis.get_instructions(nested))
            for k, ins in enumerate(instructions):
                after = instructions[k + 1] if k + 1 < len(instructions) else None
                attribute = after.argval if after is not None \
                    and after.opname in _ATTRIBUTE_OPS else None
                if ins.opname == "LOAD_GLOBAL" and ins.argval in value.__globals__:
                    namespace, name = value.__globals__, ins.argval
                    held = namespace[name]
                    if not isinstance(held, types.ModuleType):  # `np` is not rebound
                        self._read(f"the global '{name}' (read by {value.__qualname__})",
                                   functools.partial(namespace.get, name, MISSING),
                                   (id(namespace), name))
                    self._follow(held, None)
                    if attribute is not None:
                        self._attribute(held, attribute, f"{name}.{attribute}")
                elif ins.opname in ("LOAD_DEREF", "LOAD_CLOSURE") and ins.argval in cells \
                        and attribute is not None:
                    held = _cell_contents(cells[ins.argval])
                    self._attribute(held, attribute, f"{ins.argval}.{attribute}")
                elif nested is code and self_name is not None and attribute is not None \
                        and ins.opname.startswith("LOAD_FAST") and ins.argval == self_name:
                    self._self_attribute(instance, attribute, f"{self_name}.{attribute}")

    def _read(self, what: str, get: Callable[[], Any], key: tuple,
              attribute: tuple[Any, str] | None = None) -> None:
        if key not in self._keys:
            self._keys.add(key)
            self.reads.append(Read(what, get, attribute))

    def _attribute(self, obj: Any, name: str, shown: str) -> None:
        """`obj.name` read by the user's code: watched unless `obj` is a library's."""
        if obj is MISSING or isinstance(obj, _SCALARS):
            return
        if isinstance(obj, types.ModuleType):
            if _is_library(obj.__name__):
                return
        elif isinstance(obj, type):
            if _is_library(obj.__module__):
                return
        elif (getattr(type(obj), "__module__", "") or "").split(".")[0] in _LIBRARIES:
            return  # a NumPy Generator, say; an instance of SimpleNamespace is not
        held = _static_attribute(obj, name)
        if isinstance(obj, types.ModuleType) and callable(held):
            self._follow_held(held, None)  # `layers.dense(...)`: its reads, not its name,
            return  # which only monkeypatching rebinds (a call costs no check for it)
        try:
            own = object.__getattribute__(obj, "__dict__")
        except AttributeError:
            own = None
        if type(own) is dict and name in own:  # a module's or an instance's own: read fast
            get = functools.partial(own.get, name, MISSING)
        else:
            get = functools.partial(_static_attribute, obj, name)
        self._read(f"'{shown}'", get, (id(obj), name))
        self._follow_held(held, (lambda o: lambda: o)(obj))

    def _self_attribute(self, instance: Callable[[], Any], name: str, shown: str) -> None:
        """`self.name` in a compiled method: `instance` is a weak reference to self."""
        obj = instance()
        if obj is None:
            return

        def get(instance=instance, name=name):
            obj = instance()
            return MISSING if obj is None else _static_attribute(obj, name)

        self._read(f"'{shown}'", get, (id(obj), name))
        held = _static_attribute(obj, name)
        self._follow_held(held, instance)

    def _follow_held(self, held: Any, instance: Callable[[], Any]) -> None:
        """Follow what an attribute holds: a method or a property reads the object's
        attributes too (`self.forward(x)`, `self.weight` computed from `self._w`)."""
        if isinstance(held, property):
            held = held.fget
        if isinstance(held, types.FunctionType):
            self._follow(held, instance)
        else:
            self._follow(held, None)

