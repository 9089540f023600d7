"""Ctrl-C held back while a train step writes its results, so that parameters, optimizer state
and version counters never disagree.

Compiled kernels update everything in one call, which a signal cannot split. Steps that
write back from Python (the interpreter backend, gradient accumulation) write one array at a
time; `held_interrupts` defers SIGINT until the writes are done and then delivers it to
whichever handler was installed before, so the user's Ctrl-C still stops the program, one
whole step later at most.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def held_interrupts() -> Iterator[None]:
    """Defer SIGINT for the duration of the block (only the main thread can receive it)."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is None:  # a handler not set from Python
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)  # now to the handler the user had
