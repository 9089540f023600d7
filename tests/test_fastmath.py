"""GRADFUSE_FASTMATH=0: kernels compiled without fast-math flags keep NumPy's order of rounding,
which code such as `(x + c) - c` or Kahan summation relies on (run in a fresh process: the flag
is read when the code generator is imported)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent("""
    import numpy as np
    from compiler import compile_grad

    def round_to_integers(x):
        big = 2.0 ** 52
        return np.sum(((x + big) - big) * x)

    f = compile_grad(round_to_integers)
    x = np.array([0.3, 1.7, 2.5, -1.2])
    value, grad = f.value_and_grad(x)
    assert value == round_to_integers(x), (value, round_to_integers(x))
    assert "fastmath=False" in f.source("value_and_grad")
    assert "reassoc" not in f.source("value_and_grad")
    print("exact", value)
""")


def test_kernels_without_fast_math_round_as_numpy_does(tmp_path):
    env = {**os.environ, "GRADFUSE_FASTMATH": "0", "GRADFUSE_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # rounded to 0, 2, 2 (half to even) and -1: 0 * 0.3 + 2 * 1.7 + 2 * 2.5 - 1 * -1.2
    assert done.stdout.split() == ["exact", "9.6"]
