"""Two threads for every library: environment set before numba, BLAS, torch or jax load.

numba, OpenBLAS, MKL and OpenMP read their thread counts from the environment
once, when they are first imported, so this module must run before them: the
package imports it first. torch also gets `set_num_threads` when a peer loads it
(see peers.py). XLA's CPU client has no flag that caps its pool at N > 1 threads;
it sizes the pool from the CPUs the process may use, which here are the 2 cores.
"""

from __future__ import annotations

import os

THREADS = 2

_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def cap_threads(threads: int = THREADS) -> dict[str, str]:
    """Set every thread-count variable, overriding the caller's: figures compare like with like."""
    for name in _VARIABLES:
        os.environ[name] = str(threads)
    return {name: os.environ[name] for name in _VARIABLES}


cap_threads()
