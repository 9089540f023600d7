"""Anomaly mode: a thread-local switch asking compiled code to stop at the first NaN or Inf.

    with runtime.detect_anomaly():
        loss = loss_fn(params, X, y)
        loss.backward()   # raises at the first op (forward or backward) that made a NaN/Inf

Like PyTorch's `torch.autograd.detect_anomaly`. The runtime only holds the switch;
the compiler reads it when a compiled function runs (and when `backward()` runs
its kernels) and then uses kernels with a finite check after every op, which name
the op and the user's line (compiler/checks.py). With the switch off, the usual
kernels run: they have no checks in them.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any


class _AnomalyMode(threading.local):
    enabled = False  # per thread, like grad mode


_anomaly = _AnomalyMode()


def is_anomaly_enabled() -> bool:
    """Whether compiled functions run with finite checks in this thread."""
    return _anomaly.enabled


class set_detect_anomaly:  # noqa: N801 -- PyTorch's name, usable as a call or a context
    """Turn anomaly mode on or off (for the rest of the thread, or for a `with` block)."""

    def __init__(self, mode: bool) -> None:
        self._previous = _anomaly.enabled
        _anomaly.enabled = bool(mode)

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        _anomaly.enabled = self._previous


class detect_anomaly:  # noqa: N801 -- PyTorch's name
    """A context manager (or decorator) running compiled code with finite checks."""

    def __enter__(self) -> None:
        self._previous = _anomaly.enabled
        _anomaly.enabled = True

    def __exit__(self, *exc: object) -> None:
        _anomaly.enabled = self._previous

    def __call__(self, func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with detect_anomaly():
                return func(*args, **kwargs)

        return wrapper
