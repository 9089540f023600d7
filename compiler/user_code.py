"""The user's code behind a trace: the line that made each node, and the names of variables.

`user_loc` finds the innermost frame outside gradfuse and NumPy (the user's line, and the
runtime helper it is inside of); `UserFrames` keeps the user's frames a trace runs in and,
once it is over, reads the names their local variables give the traced values. No profile
or trace hook is installed, so the user's profiler and debugger keep working.
"""

from __future__ import annotations

import functools
import linecache
import os
import sys
from typing import Any

import numpy as np

import runtime
from compiler.ir import SourceLoc


def _package_dir(module) -> str:
    return os.path.dirname(os.path.realpath(module.__file__)) + os.sep


_COMPILER_DIR = _package_dir(sys.modules["compiler"])
_RUNTIME_DIR = _package_dir(runtime)
_OTHER_LIBRARY_DIRS = (_RUNTIME_DIR, _package_dir(np))


@functools.cache
def origin(filename: str) -> str:
    """Who wrote the code in `filename`: "compiler", "library" (runtime, NumPy) or "user".

    Paths are compared after `realpath`, because a code object keeps the path its module
    was imported under (`tests/../compiler/tracer.py` when sys.path holds `tests/..`).
    """
    path = os.path.realpath(filename)
    if path.startswith(_COMPILER_DIR):
        return "compiler"
    return "library" if path.startswith(_OTHER_LIBRARY_DIRS) else "user"


def user_loc() -> SourceLoc | None:
    """The innermost frame outside gradfuse and NumPy: the user's line that made a node, with
    the runtime helper it is inside of, if any (`runtime.functional.softmax`)."""
    frame = sys._getframe(1)
    fallback = helper = None
    while frame is not None:
        written_by = origin(frame.f_code.co_filename)
        if written_by == "user":
            return _loc(frame, helper)
        if written_by == "library":
            fallback = fallback or frame
            if helper is None and _is_runtime(frame.f_code.co_filename):
                helper = frame
        frame = frame.f_back
    return _loc(fallback) if fallback is not None else None


def _loc(frame, helper=None) -> SourceLoc:
    filename, lineno = frame.f_code.co_filename, frame.f_lineno
    inside = ""
    if helper is not None:
        where = os.path.basename(helper.f_code.co_filename)
        inside = f"{helper.f_code.co_name} ({where}:{helper.f_lineno})"
    return SourceLoc(filename, lineno, linecache.getline(filename, lineno).rstrip(),
                     helper=inside)


@functools.cache
def _is_runtime(filename: str) -> bool:
    return os.path.realpath(filename).startswith(_RUNTIME_DIR)



class UserFrames:
    """The user's frames that a trace runs in, read for the names of their local variables.

    Every node the user's code creates goes through `Builder.emit`; from there, the
    frames between it and the trace's entry are the user's functions that are running,
    and `see` keeps them. CPython keeps a finished frame's local variables while its frame
    object is referenced, so once the trace is over `names` reads each frame's final
    locals, as they were when it returned. A node keeps the name from the outermost frame
    that bound it, so `h` in the user's model wins over `x` inside a helper the model called.
    """

    def __init__(self, entry) -> None:
        self.entry = entry  # the frame of `trace`: where the user's code starts, outward
        self.depths: dict[Any, int] = {}  # frame -> calls between it and the entry

    def see(self, frame) -> None:
        chain = []
        while frame is not None and frame is not self.entry:
            chain.append(frame)
            frame = frame.f_back
        if frame is None:  # not below this trace's entry (another trace's builder)
            return
        for depth, f in enumerate(reversed(chain)):
            if f not in self.depths and origin(f.f_code.co_filename) == "user":
                self.depths[f] = depth

    def names(self, traced: type) -> dict[int, str]:
        """node id -> the user's variable name for it (the values that are `traced`)."""
        names: dict[int, str] = {}
        # Outermost first; among frames as deep, the one seen first (called first) wins.
        for frame in sorted(self.depths, key=self.depths.__getitem__):
            for name, value in frame.f_locals.items():
                if isinstance(value, traced) and not name.startswith("_"):
                    names.setdefault(value.node.id, name)
        self.depths.clear()  # the frames hold the user's values: let them go
        return names
