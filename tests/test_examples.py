"""The documents gradfuse started from, as examples with exact values (through numba kernels)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
sys.path.insert(0, EXAMPLES)


def run(name: str) -> dict:
    return importlib.import_module(name).main()


def test_autograd_basics():
    r = run("autograd_basics")
    assert (r["z"], r["x.grad"], r["y.grad"]) == (31.0, 4.0, 27.0)
    assert r["after x**2"] == 4.0 and r["after x**3"] == 16.0 and r["after zero_grad"] is None
    assert r["retained"] == 12.0 and r["again"] == 12.0
    assert "retain_graph=True" in r["third"]


def test_vector_jacobian():
    r = run("vector_jacobian")
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(r["vjp"], [4.0, 6.0])
    np.testing.assert_array_equal(r["column"], 24 * x**2 * [[0, 1], [0, 1]])
    np.testing.assert_array_equal(r["row"], 24 * x**2 * [[1, 1], [0, 0]])
    np.testing.assert_allclose(r["mean"], 24 * x**2 / 4)
    assert "(2, 2)" in r["error"] and "()" in r["error"]


def test_mean_absolute_error():
    r = run("mean_absolute_error")
    assert r["loss"] == 3.0
    np.testing.assert_array_equal(r["grad"], [-2.0, -3.0])


def test_linear_sgd_step():
    r = run("linear_sgd_step")
    # y = 1*2 + 3 = 5; loss = 9; dloss/dy = 6: dx = 6w = 12, dw = 6x = 6, db = 6
    assert r["loss"] == 9.0
    assert (r["grads"]["x"], r["grads"]["w"], r["grads"]["b"]) == (12.0, 6.0, 6.0)
    for name in "xwb":
        moved = r["after"][name] - r["before"][name]
        assert moved == pytest.approx(-0.01 * r["grads"][name])


def test_training_loop():
    r = run("training_loop")
    losses = r["losses"]
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert r["after"] < r["before"]


def test_gradient_clipping_and_accumulation():
    r = run("gradient_clipping")
    assert r["clipped"] == pytest.approx(1.0, rel=1e-6)
    assert r["total"] > 1e6 and max(r["norms"]) > 1e6, "20 layers of std 1.0 explode"
    np.testing.assert_allclose(r["accumulated"], r["full"], rtol=1e-12)


def test_quickstart_prints_value_gradient_and_backward_source():
    out = subprocess.run([sys.executable, os.path.join(EXAMPLES, "quickstart.py")],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    assert "loss = " in out and "d loss / d W1" in out
    assert "def loss_backward(" in out and "W1_grad" in out
