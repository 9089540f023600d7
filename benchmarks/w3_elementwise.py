"""W3: mean(log(1+exp(-y*tanh(w*x+b))) + 0.01*(w*x)**2) over float32 vectors: value and d/dw, d/db.

Memory-bound at large N, so besides times it reports effective bandwidth: the
bytes of x, y, w, b read plus the two gradients written, per second, next to
the machine's copy bandwidth (NumPy copying a 128 MiB array, read + write).
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks import handwritten, peers, reference
from benchmarks.gradients import Function
from benchmarks.harness import Config, Impl, WorkloadResult, run_case
from compiler import compile_grad

ID = "W3"
TITLE = "elementwise loss over N float32 elements: value and gradients (w, b)"
SIZES = (100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (100_000, 1_000_000)
NUMBA_LIBMVEC = "numba + libmvec (hand-written)"
BYTES_PER_ELEMENT = 6 * 4  # x, y, w, b read; d/dw, d/db written; float32


@compile_grad(wrt=(0, 1))
def elementwise(w, b, x, y):
    return np.mean(np.log(1 + np.exp(-y * np.tanh(w * x + b))) + 0.01 * (w * x) ** 2)


FUNCTION = Function(("w", "b"), elementwise, handwritten.elementwise_value_and_grad,
                    reference.elementwise, peers.torch_elementwise, peers.jax_elementwise)


def arguments(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(n)
    w = rng.normal(0, 0.5, n).astype(np.float32)
    b = rng.normal(0, 0.1, n).astype(np.float32)
    x = rng.normal(size=n).astype(np.float32)
    y = rng.choice(np.array([-1.0, 1.0], np.float32), n)
    return [w, b, x, y]


def copy_bandwidth(megabytes: int = 128, repeats: int = 7) -> float:
    """GB/s of np.copyto between two large float32 arrays, counting bytes read and written."""
    src = np.ones(megabytes * 2**20 // 4, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        samples.append(time.perf_counter() - start)
    return 2 * src.nbytes / float(np.median(samples)) / 1e9


def _label(n: int) -> str:
    return f"N=1e{len(str(n)) - 1}"


def run(config: Config) -> WorkloadResult:
    result = WorkloadResult(ID, TITLE)
    result.info["copy bandwidth GB/s"] = copy_bandwidth()
    result.info["bytes per element"] = BYTES_PER_ELEMENT
    for n in QUICK_SIZES if config.quick else SIZES:
        args = arguments(n)
        rows = FUNCTION.rows(args, config, result.notes)
        if handwritten.elementwise_libmvec is not None:
            rows.insert(2, Impl(NUMBA_LIBMVEC, lambda a=args: handwritten.elementwise_libmvec(*a),
                                lambda r: FUNCTION.outcome(r[0], r[1:])))
        case = run_case(result, _label(n), "ms", rows, FUNCTION.reference(args), config,
                        max_number=200)
        for name, timing in case.times.items():
            case.extra[name] = {"GB/s": BYTES_PER_ELEMENT * n / timing.median / 1e9}
    if handwritten.elementwise_libmvec is None:
        result.notes.append(f"{NUMBA_LIBMVEC} skipped: compiler.codegen.vecmath is missing")
    return result
