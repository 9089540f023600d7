"""Shared test set-up: compiled kernels go to one directory for the session, never the user's
default cache; and the fixtures several test files share.

The directory is GRADFUSE_CACHE_DIR when it is set (CI points it at an empty one, so every
kernel compiles from scratch), else pytest's cache (later runs reuse the kernels; a temporary
directory under `-p no:cacheprovider`). It is exported through GRADFUSE_CACHE_DIR, which
subprocesses started by tests inherit. Tests that need a cache of their own (the on-disk
cache tests) set the variable themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def kernel_cache(request, tmp_path_factory):
    chosen = os.environ.get("GRADFUSE_CACHE_DIR")
    cache = getattr(request.config, "cache", None)
    if chosen:
        directory = Path(chosen)
    elif cache:
        directory = cache.mkdir("gradfuse_kernels")
        directory.chmod(0o700)  # gradfuse refuses a cache directory that others may write
    else:
        directory = tmp_path_factory.mktemp("kernels")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADFUSE_CACHE_DIR", str(directory))
        yield directory


@pytest.fixture
def unrolled(monkeypatch):
    """value_and_grad of a function traced with the roller off (interpreted): the reference
    rolled loops are compared with (tests/test_roll.py, tests/test_loop_hunt.py)."""
    from compiler import compile_grad

    def compile_unrolled(fn):
        compiled = compile_grad(fn, backend="interpreter")

        def value_and_grad(*args):
            with monkeypatch.context() as patch:
                patch.setenv("GRADFUSE_ROLL", "0")
                return compiled.value_and_grad(*args)
        return value_and_grad
    return compile_unrolled
