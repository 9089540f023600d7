"""Shared test set-up: compiled kernels go to pytest's cache directory, never the user's.

One directory for the whole session (pytest's cache, so later runs reuse the kernels;
a temporary one under `-p no:cacheprovider`), set through GRADFUSE_CACHE_DIR, which
subprocesses started by tests inherit. Tests that need a cache of their own (the
on-disk cache tests) set the variable themselves.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def kernel_cache(request, tmp_path_factory):
    cache = getattr(request.config, "cache", None)
    directory = cache.mkdir("gradfuse_kernels") if cache else tmp_path_factory.mktemp("kernels")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADFUSE_CACHE_DIR", str(directory))
        yield directory
