"""The kernel cache is checked before use: damaged files are rebuilt (with one warning), keys
follow the helper modules that kernels import, and only a private directory is used."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from compiler import cachefiles, jit

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Each test sees the once-per-process warning afresh."""
    monkeypatch.setattr(cachefiles, "_warned", False)
    monkeypatch.setattr(cachefiles, "_private_fallback", None)


def forget(source: str) -> None:
    sys.modules.pop(f"{jit.PACKAGE}.gf_{jit.module_key(source)}", None)


def test_an_edited_cache_file_is_rewritten_not_run(tmp_path, monkeypatch, fresh_warnings):
    monkeypatch.setenv("GRADFUSE_CACHE_DIR", str(tmp_path))
    source = f'"""A module."""\n\nVALUE = {os.getpid()}\n'
    _, path = jit.load_module(source)
    forget(source)
    path.write_text('raise SystemExit("planted")\n')  # same name, other code
    with pytest.warns(cachefiles.KernelCacheWarning, match="did not hold the code"):
        module, again = jit.load_module(source)
    assert module.VALUE == os.getpid() and again == path
    assert path.read_text() == source
    forget(source)
    path.write_text(source[:10])  # truncated
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning per process: not again
        module, _ = jit.load_module(source)
    assert module.VALUE == os.getpid() and path.read_text() == source


DAMAGED = textwrap.dedent('''
    import json
    import numpy as np
    from compiler import compile_grad

    f = compile_grad(lambda w, x: np.sum(np.tanh(x @ w)))
    w, x = np.linspace(-1, 1, 3), np.linspace(0, 1, 6).reshape(2, 3)
    value, grad = f.value_and_grad(w, x)
    print(json.dumps({"value": float(value), "grad": grad.tolist()}))
''')


def run(script: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {"GRADFUSE_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    return result


def test_damaged_cache_files_are_rebuilt_in_the_next_process(tmp_path):
    script, cache = tmp_path / "model.py", tmp_path / "cache"
    script.write_text(DAMAGED)
    expected = run(script, cache).stdout
    for damaged in ("gf_*.py", "__pycache__/gf_*.nbi", "__pycache__/gf_*.nbc"):
        files = sorted(cache.glob(damaged))
        assert files, damaged
        for path in files:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])  # truncated
        repaired = run(script, cache)
        assert repaired.stdout == expected, damaged
        assert "KernelCacheWarning" in repaired.stderr, damaged
        assert repaired.stderr.count("Warning:") == 1, repaired.stderr
    assert run(script, cache).stderr == "", "repaired for good"


def test_the_key_follows_the_helper_modules_that_kernels_import(monkeypatch):
    source = textwrap.dedent('''
        import numba
        import numpy as np
        from compiler.codegen import blas
        from compiler.codegen import vecmath as vm
        from compiler.codegen.stack import zeros as _stack_zeros
        from compiler.errors import KernelShapeError
    ''')
    assert cachefiles._imported_modules(source) == {
        "compiler.codegen", "compiler.codegen.blas", "compiler.codegen.vecmath",
        "compiler.codegen.stack", "compiler.errors"}
    key = jit.module_key(source)
    digest = cachefiles._module_digest
    monkeypatch.setattr(cachefiles, "_module_digest",
                        lambda name: "upgraded" if name == "compiler.codegen.stack"
                        else digest(name))
    assert jit.module_key(source) != key, "a new stack.py is a new key"
    assert jit.module_key("X = 1\n") == jit.module_key("X = 1\n")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_cache_directories_are_created_private(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADFUSE_CACHE_DIR", str(tmp_path / "new" / "kernels"))
    jit.load_module('"""private"""\n')
    assert mode(tmp_path / "new" / "kernels") == 0o700


def test_a_directory_others_may_write_is_refused(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("GRADFUSE_CACHE_DIR", str(shared))
    with pytest.raises(cachefiles.CacheDirectoryError, match="written by other users"):
        jit.load_module('"""refused"""\n')
    assert list(shared.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="making a directory that another user owns needs root")
def test_a_directory_another_user_owns_is_refused(tmp_path, monkeypatch):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 4242, 4242)
    monkeypatch.setenv("GRADFUSE_CACHE_DIR", str(theirs))
    with pytest.raises(cachefiles.CacheDirectoryError, match="owned by user id 4242"):
        jit.load_module('"""refused"""\n')


def test_a_fallback_directory_planted_by_another_user_is_not_used(tmp_path, monkeypatch,
                                                                   fresh_warnings):
    """The cache directory cannot be written, and someone made <tmp>/gradfuse-<uid> first,
    writable by all, with a module under the name of ours: it must not run."""
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("GRADFUSE_CACHE_DIR", str(blocker / "cache"))  # cannot be created
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    planted = tmp_path / f"gradfuse-{os.getuid()}"
    planted.mkdir()
    planted.chmod(0o777)
    source = f'"""fallback"""\n\nVALUE = {os.getpid() + 1}\n'
    (planted / f"gf_{jit.module_key(source)}.py").write_text("VALUE = 'planted'\n")
    with pytest.warns(cachefiles.KernelCacheWarning, match="for this process only"):
        module, path = jit.load_module(source)
    assert module.VALUE == os.getpid() + 1
    assert path.parent != planted and mode(path.parent) == 0o700
    forget(source)
