"""Grad mode: whether `record` builds graph nodes, and no_grad / enable_grad / set_grad_enabled.

Thread-local, like PyTorch's, so one thread's no_grad leaves the others alone.
The backward engine (`autograd`) reads `_mode.enabled` directly: it is checked on
every recorded call and set around every backward pass.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any


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
        mode = type(self)
        if inspect.isgeneratorfunction(func):
            return _generator_in_mode(func, mode)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with mode():
                return func(*args, **kwargs)

        return wrapper


def _generator_in_mode(func: Callable, mode: type) -> Callable:
    """A decorated generator function, as PyTorch wraps it: each resumption of the generator
    runs in the mode, and the caller's code between them in its own (a wrapper that only
    made the generator would leave its whole body in the caller's mode)."""

    @functools.wraps(func)
    def generator(*args: Any, **kwargs: Any) -> Any:
        gen = func(*args, **kwargs)
        try:
            with mode():
                response = gen.send(None)
            while True:
                try:
                    request = yield response
                except GeneratorExit:
                    with mode():
                        gen.close()
                    raise
                except BaseException as error:  # thrown in by the caller: pass it on
                    with mode():
                        response = gen.throw(error)
                else:
                    with mode():
                        response = gen.send(request)
        except StopIteration as stop:
            return stop.value

    return generator


class no_grad(_GradModeContext):  # PyTorch's lower-case name
    """Within this block `record` saves nothing for backward and results don't require grad."""

    enabled = False


class enable_grad(_GradModeContext):  # PyTorch's lower-case name
    """Turn graph building back on inside a `no_grad` block."""

    enabled = True


class set_grad_enabled:  # PyTorch's lower-case name
    """Set grad mode now; used as a context manager, restore the previous mode on exit; used
    as a decorator (`@set_grad_enabled(False)`), set it only while the function runs."""

    def __init__(self, mode: bool) -> None:
        self._previous = _mode.enabled
        self._enabled = bool(mode)
        _mode.enabled = self._enabled

    def __call__(self, func: Callable) -> Callable:
        # The decorator's construction set the mode for the code that follows it: undo that,
        # as PyTorch does, so the mode holds inside `func` alone.
        _mode.enabled = self._previous
        return (enable_grad if self._enabled else no_grad)()(func)

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        _mode.enabled = self._previous
