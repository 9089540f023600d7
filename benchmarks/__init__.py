"""gradfuse's benchmarks: workloads W1-W8 and W10 of BENCHMARKS.md, against hand-written numba
and peers.

Run it with `python -m benchmarks` (see run.py for the options). The thread caps
are set on import, before numba, BLAS, torch or jax can load.
"""

from benchmarks import threads  # noqa: F401  (first: sets the thread caps)
