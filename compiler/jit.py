"""The numba backend: generated source -> cache file -> imported module -> compiled kernel.

A kernel's source text names its file: `<cache dir>/gf_<hash>.py`, where the
hash covers the text, numba's version, the code generator's version, the
vector math library and the BLAS in use, and the source of the gradfuse modules
the text imports. The file is written once (atomically), checked to hold the text
before every import (compiler/cachefiles.py: the directory, checks and repairs), and
the checked text runs as the module `gradfuse_kernels.gf_<hash>`, registered in
`sys.modules` first: numba's `cache=True` keys its on-disk cache on that file
and reloads machine code from it, so a second process compiles nothing.

`GRADFUSE_LIBMVEC=0` turns off glibc's vector math
library (on by default where it loads; see compiler/codegen/vecmath.py), which
makes loops of exp/log/sin... 3-5x faster.

Kernels allocate their results with malloc. glibc serves large blocks with
fresh mmap'd pages and returns freed ones to the system, so every call pays a
page fault per 4 KiB of its results, which here cost more than the arithmetic:
two float32 arrays of 1e6 elements took 7.9 ms allocated and written, 0.6 ms
written. `tune_malloc` (called before the first kernel runs; GRADFUSE_MALLOC=0
turns it off) raises glibc's mmap and trim thresholds so that freed blocks up
to `MALLOC_KEEP_BYTES` stay in the process for the next call: 0.17 ms then.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import sys
import threading
import time
import types
from pathlib import Path

import numba
import numpy as np

from compiler import cachefiles
from compiler.cachefiles import cache_dir
from compiler.codegen import CODEGEN_VERSION, GeneratedModule, blas, generate, lapack
from compiler.errors import InternalError
from compiler.ir import Graph
from compiler.packing import Packing, pack
from compiler.timings import KernelBuild, NumbaCompile

PACKAGE = "gradfuse_kernels"


# --- vector math ---------------------------------------------------------------------------
_vector_library: str | None = None
_vector_library_decided = False


def vector_library() -> str:
    """The vector math library that compiled kernels may call ("none" if off or missing).

    It must be loaded before the first kernel compiles or loads from cache: cached
    machine code calls its functions directly.
    """
    global _vector_library, _vector_library_decided
    if not _vector_library_decided:
        _vector_library_decided = True
        if os.environ.get("GRADFUSE_LIBMVEC", "1") != "0":
            _vector_library = _load_libmvec()
    return _vector_library or "none"


def _load_libmvec() -> str | None:
    import llvmlite.binding as llvm

    if not sys.platform.startswith("linux"):
        return None
    try:
        llvm.load_library_permanently("libmvec.so.1")
    except Exception:  # noqa: BLE001 -- no libmvec here: scalar math it is
        return None
    # Up to LLVM 21 this option also vectorizes math in numba code that is not
    # ours (21 renamed its value). LLVM 22 moved the setting into TargetOptions,
    # which llvmlite does not expose; there only the calls that generated code
    # makes through compiler.codegen.vecmath vectorize.
    name = "LIBMVEC" if llvm.llvm_version_info >= (21,) else "LIBMVEC-X86"
    llvm.set_option("gradfuse", f"-vector-library={name}")
    return "libmvec"


# --- allocation ----------------------------------------------------------------------------
MALLOC_KEEP_BYTES = 1 << 29  # 512 MiB of freed memory may stay mapped for reuse
_malloc_tuned = False


def tune_malloc() -> None:
    """Keep large freed blocks in glibc's heap instead of unmapping them (see the module doc)."""
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    if os.environ.get("GRADFUSE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_trim_threshold, MALLOC_KEEP_BYTES)
    libc.mallopt(m_mmap_threshold, MALLOC_KEEP_BYTES // 2)


# --- cache files and modules -----------------------------------------------------------------
def module_key(source: str) -> str:
    """The name of `source`'s cache file: a hash of the text and of everything else its
    machine code depends on, including the source of the gradfuse modules it imports."""
    salt = (f"numba {numba.__version__}\ncodegen {CODEGEN_VERSION}\nveclib {vector_library()}\n"
            f"blas {blas.ABI}\nlapack {lapack.ABI}\n"
            f"imports {cachefiles.imported_sources(source)}\n")
    return hashlib.sha256((salt + source).encode()).hexdigest()[:16]


# Held while a module is imported or a function compiled, by whichever thread: numba compiles
# one function at a time anyway (its own global lock), and a dispatcher's compile switch
# (`disable_compile`) and a module's import must not interleave between threads.
_BUILDING = threading.RLock()


def load_module(source: str) -> tuple[types.ModuleType, Path]:
    """The module holding `source`, imported from its cache file (written if absent)."""
    with _BUILDING:
        return _load_module(source)


def _load_module(source: str) -> tuple[types.ModuleType, Path]:
    key = module_key(source)
    name = f"{PACKAGE}.gf_{key}"
    module = sys.modules.get(name)
    if module is not None:
        return module, Path(module.__file__)
    path = cachefiles.cached_file(f"gf_{key}.py", source)  # checked to hold `source`
    _ensure_package()
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before executing: numba's cache looks the module up
    try:
        # The text that was checked, not the file read again: what runs is what we generated.
        exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102
    except BaseException:
        del sys.modules[name]
        raise
    return module, path


def _ensure_package() -> None:
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE, "Kernels generated by gradfuse, one module each.")
        package.__path__ = []
        sys.modules[PACKAGE] = package


# --- kernels -------------------------------------------------------------------------------
def _array_type(dtype: np.dtype, ndim: int) -> numba.types.Array:
    return numba.types.Array(numba.from_dtype(np.dtype(dtype)), ndim, "C")


@contextlib.contextmanager
def _deep_recursion(limit: int = 20000):
    """numba's SSA pass recurses once per basic block along dominator chains, so a kernel
    with hundreds of loop nests needs more than Python's default 1000 frames."""
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


class NumbaKernel:
    """A compiled kernel: call it with one C-contiguous array per graph input.

    The module may hold more functions than the kernel (minibatch loops of a train step);
    `entry` compiles one of them. With `eager=False` nothing compiles until `entry` is
    asked for, so a module whose main function is never called costs no compilation.
    `build` records what building it cost (compiler/timings.py): the caller's code
    generation timed into it, loading the module, and numba's work per function.
    """

    checks_arguments = True  # the dispatcher checks dtypes and ranks, the kernel shapes

    def __init__(self, graph: Graph, generated: GeneratedModule, eager: bool = True,
                 packing: Packing | None = None, build: KernelBuild | None = None) -> None:
        self.source = generated.source
        self.path: Path | None = None
        self.build = build or KernelBuild()
        self.build.lines = generated.source.count("\n")
        vector_library()  # before anything compiles or loads from numba's cache
        tune_malloc()
        self._constants = generated.constants
        self.signature = tuple(_array_type(n.dtype, n.type.ndim) for n in graph.inputs) + \
            tuple(_array_type(c.dtype, c.ndim) for c in generated.constants)
        with self._reporting(generated.source), self.build.times.phase("codegen"):
            self.module, self.path = load_module(generated.source)
        self.dispatcher = getattr(self.module, generated.function_name)
        # call(*arrays): the compiled function with the constant arrays it takes last, and
        # stacks of arrays as one argument and one result where the graph was packed
        constants = self._constants
        run = (lambda *args: self.dispatcher(*args, *constants)) if constants \
            else self.dispatcher
        if packing is not None:
            self.call = lambda *args: packing.unpacked(run(*packing.arguments(args)))
        else:
            self.call = run
        if eager:
            self._compile_only(self.dispatcher, self.signature)

    def entry(self, name: str, args: tuple):
        """Function `name` of the kernel's module, compiled for the types of `args` and for
        nothing else: called with arrays of other dtypes or ranks, it raises TypeError
        instead of compiling again (fast paths rely on that to fall back)."""
        dispatcher = getattr(self.module, name)
        self._compile_only(dispatcher, tuple(numba.typeof(a) for a in args))
        return dispatcher

    def _compile_only(self, dispatcher, signature: tuple) -> None:
        """Compile `signature` (or load it from numba's cache), then refuse other types."""
        with _BUILDING:
            if signature in dispatcher.overloads:  # a module shared with an identical kernel
                self.build.compiles.setdefault(dispatcher.__name__, NumbaCompile(0.0, True))
                return
            dispatcher.disable_compile(False)  # the module may serve another caller already
            hits = sum(dispatcher.stats.cache_hits.values())
            start = time.perf_counter()
            try:
                with self._reporting(self.source), _deep_recursion():
                    self._compile_or_repair(dispatcher, signature)
            finally:  # other dtypes or ranks: TypeError, not a new compile
                if dispatcher.signatures:
                    dispatcher.disable_compile()
            self.build.compiles[dispatcher.__name__] = NumbaCompile(
                time.perf_counter() - start, sum(dispatcher.stats.cache_hits.values()) > hits)

    def _compile_or_repair(self, dispatcher, signature: tuple) -> None:
        """Compile (or load from numba's cache); if that fails and numba has cache files for
        the function, they may be what is broken: delete them and compile from source."""
        try:
            dispatcher.compile(signature)
        except Exception as err:  # noqa: BLE001 -- decided below: damaged cache, or our bug
            if not cachefiles.discard_numba_cache(dispatcher):
                raise
            dispatcher.compile(signature)  # fails again if the code is what is wrong
            cachefiles.report_discarded(self.path, err)

    @contextlib.contextmanager
    def _reporting(self, source: str):
        """Generated code that numba cannot compile is gradfuse's bug: say so, with the file."""
        try:
            yield
        except OSError:  # the cache directory's problem, not the code's
            raise
        except Exception as err:  # noqa: BLE001 -- generated code that fails is our bug
            where = self.path or cache_dir() / f"gf_{module_key(source)}.py"
            raise InternalError(
                f"gradfuse generated code that numba could not compile ({where}); "
                f"this is a bug in gradfuse, please report it with that file.\n"
                f"{type(err).__name__}: {err}") from None

    def __call__(self, args: list[np.ndarray]) -> list[np.ndarray]:
        return list(self.call(*args))


class NumbaBackend:
    name = "numba"

    def compile(self, graph: Graph, kind: str) -> NumbaKernel:
        packed, packing, _ = pack(graph)
        build = KernelBuild()
        with build.times.phase("codegen"):
            generated = generate(packed, kind)
        return NumbaKernel(packed, generated, packing=packing, build=build)
