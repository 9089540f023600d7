"""The kernel cache on disk: a private directory, files checked against their names, repairs.

Generated modules live in `<cache dir>/gf_<key>.py`, where the key hashes the text
(compiler/jit.py's `module_key`). What is on disk is never trusted:

- The directory is `$GRADFUSE_CACHE_DIR`, else `$XDG_CACHE_HOME/gradfuse`, else
  `~/.cache/gradfuse`; when it cannot be written, `<tmp>/gradfuse-<uid>`. gradfuse
  creates them with mode 0700 and refuses one that another user owns or may write
  (`CacheDirectoryError`): numba's cache files in it are pickles, which run code when
  loaded. A fallback directory that fails the check is not used: kernels then go to a
  fresh private directory for this process.
- A module is executed from the text gradfuse generated, after the file has been
  checked to hold exactly that text (`cached_file`); a truncated or edited file is
  rewritten, so the machine code numba caches for it is rebuilt too (its index
  records the file's modification time).
- numba's own files for a function (index `.nbi`, data `.nbc`) that fail to load are
  deleted and the function compiled again (`discard_numba_cache`).

Each repair is reported once per process, as a `KernelCacheWarning`.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import glob
import hashlib
import importlib
import importlib.util
import os
import stat
import sys
import tempfile
import threading
import warnings
from pathlib import Path


class CacheDirectoryError(OSError):
    """The kernel cache directory is not private to the user: gradfuse will not load from it."""


class KernelCacheWarning(UserWarning):
    """gradfuse found a damaged kernel cache file and rebuilt it."""


def cache_dir() -> Path:
    explicit = os.environ.get("GRADFUSE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gradfuse"


def _fallback_cache_dir() -> Path:
    """Where kernels go when the cache directory cannot be written (a read-only home)."""
    return Path(tempfile.gettempdir()) / f"gradfuse-{os.getuid() if hasattr(os, 'getuid') else 0}"


# --- private directories -----------------------------------------------------------------
_checked: set[Path] = set()  # directories found private in this process
_private_fallback: Path | None = None
_lock = threading.Lock()


def private_directory(path: Path, *, shared_parent: bool = False) -> Path:
    """`path`, created with mode 0700 if absent, once it is known to be the user's alone.

    `shared_parent`: the directory lies in a directory that others may write (the
    system's temporary directory), so it must not be a symbolic link either: another
    user could point it elsewhere at any time.
    """
    if path in _checked:
        return path
    with _lock:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        problem = _not_private(path, follow=not shared_parent)
        if problem is not None:
            raise CacheDirectoryError(
                f"gradfuse's kernel cache directory {path} {problem}; gradfuse imports and "
                "runs the files in it, so it must be yours alone: use another directory "
                "(GRADFUSE_CACHE_DIR) or fix its owner and mode (chmod 700)")
        _checked.add(path)
    return path


def _not_private(path: Path, follow: bool) -> str | None:
    """Why `path` is not private to this user, or None."""
    if not hasattr(os, "getuid"):  # no POSIX owners and modes here
        return None
    info = os.stat(path) if follow else os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link in a directory other users can write"
    if info.st_uid != os.getuid():
        return f"is owned by user id {info.st_uid}, not by you ({os.getuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"can be written by other users (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def fallback_directory() -> Path:
    """`<tmp>/gradfuse-<uid>` if it is private, else a new private directory for this process
    (another user may have made that path first, to plant modules for us to run)."""
    global _private_fallback
    try:
        return private_directory(_fallback_cache_dir(), shared_parent=True)
    except CacheDirectoryError as refused:
        with _lock:
            if _private_fallback is None:
                _private_fallback = Path(tempfile.mkdtemp(prefix="gradfuse-"))  # mode 0700
                _warn(f"{refused.args[0]}. Kernels go to {_private_fallback} instead, for "
                      "this process only")
        return _private_fallback


# --- module files --------------------------------------------------------------------------
def cached_file(name: str, source: str) -> Path:
    """The path of `name` (`gf_<key>.py`) holding exactly `source`, in the cache directory or,
    if that cannot be written, the fallback one: written if absent, rewritten if damaged."""
    try:
        return _verified(private_directory(cache_dir()) / name, source)
    except CacheDirectoryError:
        raise
    except OSError:  # cannot create or write the directory (a read-only home)
        return _verified(fallback_directory() / name, source)


def _verified(path: Path, source: str) -> Path:
    try:
        found = path.read_bytes()
    except FileNotFoundError:
        _write_once(path, source)
        return path
    if found != source.encode("utf-8"):
        _replace(path, source)
        _warn(f"the kernel cache file {path} did not hold the code its name stands for "
              f"({len(found)} bytes instead of {len(source.encode('utf-8'))}: truncated or "
              "edited); gradfuse wrote it again and recompiles what depends on it")
    return path


def _temporary(path: Path, source: str) -> str:
    fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(source)
    return tmp


def _write_once(path: Path, source: str) -> None:
    """Write atomically and never replace an existing file: numba's cache index records the
    file's modification time, so rewriting it would invalidate every cached kernel."""
    tmp = _temporary(path, source)
    try:
        try:
            os.link(tmp, path)  # fails if another process got there first, which is fine
        except FileExistsError:
            pass
        except OSError:  # no hard links on this file system
            if not path.exists():
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _replace(path: Path, source: str) -> None:
    """Replace a damaged file atomically (readers see the old file or the new one)."""
    tmp = _temporary(path, source)
    try:
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


# --- what generated code imports ------------------------------------------------------------
def imported_sources(source: str) -> str:
    """A digest of the gradfuse modules that `source` imports (helpers such as
    compiler.codegen.blas, vecmath, stack), so that changing one of them changes the cache
    key: numba's cached machine code has their code compiled in."""
    modules = sorted(_imported_modules(source))
    return hashlib.sha256("".join(f"{m} {_module_digest(m)}\n" for m in modules).encode()
                          ).hexdigest()


def _imported_modules(source: str) -> set[str]:
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from compiler.codegen import vecmath`: the submodule, if that is what it is
            names |= {f"{node.module}.{alias.name}" for alias in node.names
                      if _is_module(f"{node.module}.{alias.name}")}
    return {n for n in names if n == "compiler" or n.startswith("compiler.")}


@functools.cache
def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@functools.cache
def _module_digest(name: str) -> str:
    """The digest of a module's source file (read once per process: an upgrade restarts it)."""
    module = sys.modules.get(name) or importlib.import_module(name)
    path = getattr(module, "__file__", None)
    if path is None:  # a namespace package: nothing of its own
        return "-"
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- numba's files -----------------------------------------------------------------------
def discard_numba_cache(dispatcher) -> bool:
    """Delete numba's cache files (index and data) of `dispatcher`'s function; whether there
    were any. Done when loading them failed: the function then compiles from its source."""
    cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
    index = getattr(cache_file, "_index_path", None)
    if index is None:
        return False
    base = index[: -len(".nbi")]
    removed = False
    for path in [index, *glob.glob(glob.escape(base) + ".*.nbc")]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            removed = True
    return removed


def report_discarded(where: Path | None, error: BaseException) -> None:
    _warn(f"numba's cache files for {where} could not be loaded ({type(error).__name__}: "
          f"{error}); gradfuse deleted them and compiled the kernel again")


_warned = False


def _warn(message: str) -> None:
    """One warning per process: a damaged cache usually has many damaged files."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(message, KernelCacheWarning, stacklevel=4)
