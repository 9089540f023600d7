"""The kernel cache: a new batch size compiles nothing, and a second process loads every kernel
from numba's on-disk cache instead of compiling it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from compiler import compile_grad

SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    from compiler import compile_grad

    def loss(params, X, y):
        h = np.tanh(X @ params["W"] + params["b"])
        return np.mean((h.sum(axis=1) - y) ** 2)

    rng = np.random.default_rng(0)
    params = {"W": rng.normal(size=(4, 3)), "b": np.zeros(3)}
    f = compile_grad(loss)
    value, grads = f.value_and_grad(params, rng.normal(size=(8, 4)), rng.normal(size=8))
    kernel = f.specialize(params, np.ones((8, 4)), np.ones(8)).kernel("value_and_grad")
    stats = kernel.dispatcher.stats
    print(json.dumps({"hits": sum(stats.cache_hits.values()),
                      "misses": sum(stats.cache_misses.values()),
                      "value": float(value), "path": str(kernel.path)}))
''')


def run_in_new_process(script: Path, cache: Path) -> dict:
    env = {"GRADFUSE_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin"}
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, str(script)], env={**env, "PYTHONPATH": str(root)},
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def two_processes(text: str, tmp_path: Path) -> tuple[dict, dict, Path]:
    """What `text` (a script printing JSON) reports in two new processes sharing one cache."""
    script = tmp_path / "model.py"
    script.write_text(text)
    cache = tmp_path / "cache"
    return run_in_new_process(script, cache), run_in_new_process(script, cache), cache


def test_a_second_process_loads_kernels_from_the_disk_cache(tmp_path):
    first, second, cache = two_processes(SCRIPT, tmp_path)
    assert first["misses"] == 1 and first["hits"] == 0  # compiled once, then saved
    assert second["hits"] == 1 and second["misses"] == 0  # loaded, nothing compiled
    # Rounding only (OpenBLAS may split a product by threads; see the next test).
    assert math.isclose(second["value"], first["value"], rel_tol=1e-12)
    assert second["path"] == first["path"] and Path(first["path"]).parent == cache
    assert len(list(cache.glob("gf_*.py"))) == 1


PARALLEL_SCRIPT = textwrap.dedent('''
    import json
    import numpy as np
    from compiler import compile_grad

    def loss(x, w):
        return np.mean(np.log(1 + np.exp(-np.tanh(w * x))))

    x = np.linspace(-2.0, 2.0, 1 << 16)
    f = compile_grad(loss, wrt=1)
    value, grad = f.value_and_grad(x, np.ones_like(x))
    kernel = f.specialize(x, x).kernel("value_and_grad")
    stats = kernel.dispatcher.stats
    print(json.dumps({"hits": sum(stats.cache_hits.values()),
                      "misses": sum(stats.cache_misses.values()),
                      "parallel": "numba.prange" in kernel.source,
                      "value": float(value), "grad": float(grad.sum())}))
''')


def test_parallel_kernels_load_from_the_disk_cache_too(tmp_path):
    first, second, _ = two_processes(PARALLEL_SCRIPT, tmp_path)
    assert first["parallel"] and first["misses"] == 1 and first["hits"] == 0
    assert second["hits"] == 1 and second["misses"] == 0
    # The same kernel, but not bit for bit: a parallel reduction's partial sums meet in the
    # order the threads finish, and OpenBLAS may split work by the threads it has; the values
    # agree to the rounding of a 65536-term sum, far below any change in what is computed.
    assert math.isclose(second["value"], first["value"], rel_tol=1e-12)
    assert math.isclose(second["grad"], first["grad"], rel_tol=1e-12)


def test_a_new_batch_size_compiles_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADFUSE_CACHE_DIR", str(tmp_path))

    def loss(w, X):
        return np.sum(np.exp(X * w) - X)

    f = compile_grad(loss)
    w = np.array([0.5, -0.25, 1.0])
    before = f.grad(w, np.ones((4, 3)))
    kernel = f.specialize(w, np.ones((4, 3))).kernel("value_and_grad")
    modules = {name for name in sys.modules if name.startswith("gradfuse_kernels.")}
    files = sorted(tmp_path.glob("gf_*.py"))
    for n in (2, 9, 1000):  # (a batch of 1 is traced apart: size-1 axes broadcast)
        grad = f.grad(w, np.ones((n, 3)))
        np.testing.assert_allclose(grad, before / 4 * n)
        assert f.specialize(w, np.ones((n, 3))).kernel("value_and_grad") is kernel
    assert len(kernel.dispatcher.signatures) == 1
    assert {name for name in sys.modules if name.startswith("gradfuse_kernels.")} == modules
    assert sorted(tmp_path.glob("gf_*.py")) == files


def test_cache_files_are_named_by_their_content(tmp_path, monkeypatch):
    from compiler import jit

    monkeypatch.setenv("GRADFUSE_CACHE_DIR", str(tmp_path))
    source = '"""A module."""\n\nX = 1\n'
    module, path = jit.load_module(source)
    again, same_path = jit.load_module(source)
    assert again is module and same_path == path
    assert path.parent == tmp_path and path.name == f"gf_{jit.module_key(source)}.py"
    assert path.read_text() == source
    assert sys.modules[module.__name__] is module
    assert module.__name__ == f"gradfuse_kernels.gf_{jit.module_key(source)}"


@pytest.mark.parametrize("setting, expected", [("0", "none"), ("1", None)])
def test_the_vector_math_library_can_be_switched_off(setting, expected):
    code = "from compiler import jit; print(jit.vector_library())"
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"GRADFUSE_LIBMVEC": setting, "PYTHONPATH": str(root),
                                 "PATH": "/usr/bin:/bin"}, timeout=120, check=True)
    library = result.stdout.strip()
    assert library == expected if expected else library in ("libmvec", "none")
