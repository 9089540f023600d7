"""`@compile_grad` on a method: `instance.loss` is a compiled function of the arguments after
`self`, one per instance.

`self` is not traced and not differentiated: like a closure's variables, what the method
reads from it (sizes, flags, constant arrays) is read when the function is traced and baked
into the kernels, so each instance gets its own compiled function (its own traces and
kernels); rebinding an attribute after the first call makes it trace again
(compiler/captured.py watches `self.x`). Arrays that change or that need gradients are
passed in as arguments; a runtime `Parameter` read from `self` is an error that says so
(compiler/tracer.py). `wrt` counts the arguments after `self`.
"""

from __future__ import annotations

import copy
import functools
import inspect
import weakref
from typing import Any

from compiler.api import CompiledFunction


class BoundMethod:
    """`instance.f` for a compiled method `f`: the instance's compiled function, holding the
    instance while it is held, like a Python bound method; every attribute of a compiled
    function (`grad`, `value_and_grad`, `source`, ...) is the instance's."""

    __slots__ = ("instance", "compiled", "method")

    def __init__(self, instance: Any, compiled: CompiledFunction,
                 method: CompiledFunction) -> None:
        self.instance = instance
        self.compiled = compiled
        self.method = method  # the class's compiled function this one was bound from

    # Copied and pickled as a Python bound method is (not through __getattr__, which would
    # hand these to the compiled function, bound for good to the old instance).
    def __copy__(self) -> BoundMethod:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> BoundMethod:
        return bind_method(self.method, copy.deepcopy(self.instance, memo))

    def __reduce__(self) -> tuple:
        return getattr, (self.instance, self.method.__name__)

    def __call__(self, *args, **kwargs):
        return self.compiled(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.compiled, name)

    def __repr__(self) -> str:
        return f"<compiled method {self.compiled.__qualname__} of {self.instance!r}>"


def bind_method(compiled: CompiledFunction, instance: Any) -> BoundMethod:
    """`instance`'s compiled method: its compiled function is made on first use and kept
    while the instance lives (for the function's whole life where the instance cannot be
    weakly referenced)."""
    bound = compiled.__dict__.setdefault("_bound_methods", {})
    key = id(instance)
    with compiled._lock:
        entry = bound.get(key)
        if entry is None or entry[0]() is not instance:
            try:
                reference = weakref.ref(instance, lambda _, key=key: bound.pop(key, None))
            except TypeError:  # no weak references (__slots__): keep the instance
                reference = (lambda kept: lambda: kept)(instance)
            method = CompiledFunction(_method_of(compiled.fn, reference), wrt=compiled.wrt,
                                      has_aux=compiled.has_aux, backend=compiled.backend.name,
                                      check_finite=compiled.check_finite)
            entry = bound[key] = (reference, method)
    return BoundMethod(instance, entry[1], compiled)


def _method_of(fn, instance):
    """`fn` with `instance()` as its first argument, signed as the arguments after it (a
    weak reference: the compiled function does not keep its instance alive; the
    `BoundMethod` that calls it does)."""
    @functools.wraps(fn)
    def method(*args, **kwargs):
        return fn(instance(), *args, **kwargs)

    signature = inspect.signature(fn)
    parameters = list(signature.parameters.values())
    if not parameters or parameters[0].kind not in (inspect.Parameter.POSITIONAL_ONLY,
                                                    inspect.Parameter.POSITIONAL_OR_KEYWORD):
        raise TypeError(f"@compile_grad on {fn.__qualname__}: a method needs `self` as its "
                        "first positional parameter")
    method.__signature__ = signature.replace(parameters=parameters[1:])
    method.__self_ref__ = instance  # what compiler/captured.py watches `self.x` on
    return method
