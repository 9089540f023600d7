"""Compiled functions are thread-safe: concurrent first calls trace and compile once, and a
trace in one thread never leaks into another's calls."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from compiler import compile_grad
from runtime import Parameter

THREADS = 8


def run_together(task, n=THREADS):
    """task(i) in n threads released at once; their results in order."""
    barrier = threading.Barrier(n)

    def released(i):
        barrier.wait()
        return task(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(released, range(n)))


def counting_compiles(f):
    """Count the kernels `f`'s backend builds."""
    built = []
    compile_kernel = f.backend.compile

    def compile_counted(graph, kind):
        built.append(kind)
        return compile_kernel(graph, kind)

    f.backend.compile = compile_counted
    return built


def slow_square(x):
    total = x * 0.0
    for _ in range(200):  # a long trace, so that traces overlap
        total = total + x * x
    return np.sum(total) / 200


def test_concurrent_first_calls_compile_once_and_all_get_values():
    f = compile_grad(slow_square)
    built = counting_compiles(f)
    x = np.array([1.0, 2.0, 3.0])
    results = run_together(lambda i: (f(x * i), f.grad(x * i)))
    for i, (value, grad) in enumerate(results):
        assert value == np.sum((x * i) ** 2)
        np.testing.assert_allclose(grad, 2 * x * i)
    assert sorted(built) == ["forward", "value_and_grad"]
    assert len(f._specs) == 1


def test_concurrent_recorded_calls_and_backward():
    f = compile_grad(slow_square, backend="interpreter")

    def task(i):
        p = Parameter(np.array([1.0, 2.0]) * i)
        f(p).backward()
        return p.grad

    for i, grad in enumerate(run_together(task)):
        np.testing.assert_allclose(grad, 2 * np.array([1.0, 2.0]) * i)


def test_a_trace_in_one_thread_does_not_leak_into_calls_in_another():
    """While some threads trace, the others call a function that is traced already: they must
    run it, not inline it into another thread's trace."""
    quick = compile_grad(lambda x: np.sum(np.tanh(x)), backend="interpreter")
    x = np.linspace(-1, 1, 5)
    expected = 1 - np.tanh(x) ** 2
    quick.grad(x)  # traced
    tracing = [compile_grad(slow_square, backend="interpreter") for _ in range(THREADS // 2)]
    finished = []

    def task(i):
        if i % 2:  # calls (the general path: the interpreter has no fast path) until all traced
            grads = [quick.grad(x)]
            while len(finished) < len(tracing) or len(grads) < 20:
                grads.append(quick.grad(x))
            return grads
        try:
            return tracing[i // 2](x)
        finally:
            finished.append(i)

    results = run_together(task)
    for i, result in enumerate(results):
        if i % 2:
            for grad in result:
                np.testing.assert_allclose(grad, expected, rtol=1e-15)
        else:
            assert result == np.sum(x * x)
