"""W7's programs, each as users write it: gradfuse (a Python loop, and `compiler.scan`), JAX (a
Python loop, and `lax.scan`), and the float64 NumPy reference with gradients derived by hand.

- deep net: L tanh layers 32 wide, `h = np.tanh(h @ W + b)`, batch 32, MSE to a target;
  params a list of per-layer dicts. Gradients w.r.t. the params (and a train step, SGD).
- GRU: input 8, hidden 32, batch 16, T steps over `xs` (T, 16, 8), MSE of the last hidden
  state to a target. Gradients w.r.t. the params (a dict of the three gates' arrays).
- Euler: a chain of 16 unit masses joined by springs to their neighbours, damped, explicit
  Euler for `steps` steps, loss the squared distance of the final positions to a target.
  Gradient w.r.t. the initial velocity.

`compiler.scan(step_fn, carry, xs, length=None)` has JAX's `lax.scan` semantics:
`step_fn(carry, x) -> (new_carry, y)`, returning `(final_carry, stacked_ys)`. Where
it does not exist yet, `SCAN_MISSING` says so and its variants are not run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime import functional as F

try:
    from compiler import scan
except ImportError:
    scan = None
    SCAN_MISSING: str | None = "compiler.scan does not exist yet"
else:
    SCAN_MISSING = None

WIDTH, BATCH = 32, 32  # deep net
GRU_INPUT, GRU_HIDDEN, GRU_BATCH = 8, 32, 16
MASSES, STIFFNESS, DAMPING, DT, REST = 16, 10.0, 0.5, 0.01, 1.0  # Euler; unit masses
LEARNING_RATE = 0.01  # the deep net's train step (SGD)
PROGRAMS = ("deep", "gru", "euler")


@dataclass
class Problem:
    """One program at one size: its float64 arguments (the differentiated one first) and
    the hand-written reference."""

    program: str
    size: int
    args: tuple
    reference: Callable[..., tuple[float, Any]]  # args -> (loss, gradient like args[0])

    def expected(self) -> dict[str, np.ndarray]:
        loss, grads = self.reference(*self.args)
        return outcome(loss, grads)


def problem(program: str, size: int, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    if program == "deep":
        params = [{"W": rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH),
                   "b": 0.1 * rng.standard_normal(WIDTH)} for _ in range(size)]
        X = rng.standard_normal((BATCH, WIDTH))
        return Problem(program, size, (params, X, 0.5 * rng.standard_normal((BATCH, WIDTH))),
                       deep_net_reference)
    if program == "gru":
        params = {}
        for gate in "zrn":
            params[f"W{gate}"] = rng.standard_normal((GRU_INPUT, GRU_HIDDEN)) / np.sqrt(GRU_INPUT)
            params[f"U{gate}"] = rng.standard_normal((GRU_HIDDEN, GRU_HIDDEN)) / np.sqrt(GRU_HIDDEN)
            params[f"b{gate}"] = 0.1 * rng.standard_normal(GRU_HIDDEN)
        xs = rng.standard_normal((size, GRU_BATCH, GRU_INPUT))
        h0 = 0.1 * rng.standard_normal((GRU_BATCH, GRU_HIDDEN))
        target = 0.5 * rng.standard_normal((GRU_BATCH, GRU_HIDDEN))
        return Problem(program, size, (params, xs, h0, target), gru_reference)
    if program == "euler":
        x0 = np.arange(MASSES) * REST + 0.1 * rng.standard_normal(MASSES)
        v0 = rng.standard_normal(MASSES)
        target = x0 + 0.5
        return Problem(program, size, (v0, x0, target),
                       lambda v0, x0, target: euler_reference(v0, x0, target, size))
    raise ValueError(f"unknown W7 program {program!r}: one of {PROGRAMS}")


def outcome(loss, grads) -> dict[str, np.ndarray]:
    """{"loss", "grad <path>"} for the agreement check; paths name list indices and dict keys
    (JAX returns dicts with sorted keys, so order cannot be relied on)."""
    found = {"loss": np.asarray(loss, np.float64)}

    def walk(tree, path: str) -> None:
        if isinstance(tree, dict):
            for key, value in tree.items():
                walk(value, f"{path}.{key}")
        elif isinstance(tree, (list, tuple)):
            for i, value in enumerate(tree):
                walk(value, f"{path}.{i}")
        else:
            found[f"grad{path}"] = np.asarray(tree, np.float64)

    walk(grads, "")
    return found


# --- gradfuse (plain NumPy) ------------------------------------------------------------------
def deep_net(params, X, y):
    h = X
    for layer in params:
        h = np.tanh(h @ layer["W"] + layer["b"])
    return np.mean((h - y) ** 2)


def gru_cell(p, h, x):
    z = F.sigmoid(x @ p["Wz"] + h @ p["Uz"] + p["bz"])
    r = F.sigmoid(x @ p["Wr"] + h @ p["Ur"] + p["br"])
    n = np.tanh(x @ p["Wn"] + (r * h) @ p["Un"] + p["bn"])
    return (1 - z) * n + z * h


def gru(params, xs, h0, target):
    h = h0
    for t in range(xs.shape[0]):
        h = gru_cell(params, h, xs[t])
    return np.mean((h - target) ** 2)


def gru_scan(params, xs, h0, target):
    def step(h, x):
        return gru_cell(params, h, x), None

    h, _ = scan(step, h0, xs)
    return np.mean((h - target) ** 2)


def spring_forces(x):
    tension = STIFFNESS * (x[1:] - x[:-1] - REST)  # spring i joins masses i and i + 1
    zero = np.zeros(1)
    return np.concatenate([tension, zero]) - np.concatenate([zero, tension])


def euler_step(x, v):
    return x + DT * v, v + DT * (spring_forces(x) - DAMPING * v)


def euler(steps: int) -> Callable:
    def euler_loss(v0, x0, target):
        x, v = x0, v0
        for _ in range(steps):
            x, v = euler_step(x, v)
        return np.sum((x - target) ** 2)

    return euler_loss


def euler_scan(steps: int) -> Callable:
    def euler_loss(v0, x0, target):
        def step(state, _):
            return euler_step(*state), None

        (x, _), _ = scan(step, (x0, v0), None, length=steps)
        return np.sum((x - target) ** 2)

    return euler_loss


def gradfuse_function(program: str, size: int, variant: str) -> Callable:
    """The plain function to give compile_grad (differentiated w.r.t. its first argument)."""
    loops = {"deep": deep_net, "gru": gru, "euler": euler(size)}
    scans = {"gru": gru_scan, "euler": euler_scan(size)}
    return loops[program] if variant == "loop" else scans[program]


# --- JAX ------------------------------------------------------------------------------------
def jax_function(program: str, size: int, variant: str) -> Callable:
    """The same program in jax.numpy (JAX must be loaded, with float64 enabled)."""
    import jax
    import jax.numpy as jnp

    def deep(params, X, y):
        h = X
        for layer in params:
            h = jnp.tanh(h @ layer["W"] + layer["b"])
        return jnp.mean((h - y) ** 2)

    def cell(p, h, x):
        z = jax.nn.sigmoid(x @ p["Wz"] + h @ p["Uz"] + p["bz"])
        r = jax.nn.sigmoid(x @ p["Wr"] + h @ p["Ur"] + p["br"])
        n = jnp.tanh(x @ p["Wn"] + (r * h) @ p["Un"] + p["bn"])
        return (1 - z) * n + z * h

    def gru_loop(params, xs, h0, target):
        h = h0
        for t in range(xs.shape[0]):
            h = cell(params, h, xs[t])
        return jnp.mean((h - target) ** 2)

    def gru_lax_scan(params, xs, h0, target):
        h, _ = jax.lax.scan(lambda h, x: (cell(params, h, x), None), h0, xs)
        return jnp.mean((h - target) ** 2)

    def step(x, v):
        tension = STIFFNESS * (x[1:] - x[:-1] - REST)
        zero = jnp.zeros(1)
        forces = jnp.concatenate([tension, zero]) - jnp.concatenate([zero, tension])
        return x + DT * v, v + DT * (forces - DAMPING * v)

    def euler_loop(v0, x0, target):
        x, v = x0, v0
        for _ in range(size):
            x, v = step(x, v)
        return jnp.sum((x - target) ** 2)

    def euler_lax_scan(v0, x0, target):
        (x, _), _ = jax.lax.scan(lambda s, _: (step(*s), None), (x0, v0), None, length=size)
        return jnp.sum((x - target) ** 2)

    loops = {"deep": deep, "gru": gru_loop, "euler": euler_loop}
    scans = {"gru": gru_lax_scan, "euler": euler_lax_scan}
    return loops[program] if variant == "loop" else scans[program]


# --- NumPy references: gradients derived by hand ---------------------------------------------
def deep_net_reference(params, X, y):
    hs = [X]
    for layer in params:
        hs.append(np.tanh(hs[-1] @ layer["W"] + layer["b"]))
    residual = hs[-1] - y
    d = 2 * residual / residual.size
    grads = [{} for _ in params]
    for i in reversed(range(len(params))):
        dz = d * (1 - hs[i + 1] ** 2)
        grads[i] = {"W": hs[i].T @ dz, "b": dz.sum(axis=0)}
        d = dz @ params[i]["W"].T
    return np.mean(residual ** 2), grads


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def gru_reference(p, xs, h0, target):
    saved, h = [], h0
    for x in xs:
        z = _sigmoid(x @ p["Wz"] + h @ p["Uz"] + p["bz"])
        r = _sigmoid(x @ p["Wr"] + h @ p["Ur"] + p["br"])
        n = np.tanh(x @ p["Wn"] + (r * h) @ p["Un"] + p["bn"])
        saved.append((x, h, z, r, n))
        h = (1 - z) * n + z * h
    residual = h - target
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    dh = 2 * residual / residual.size
    for x, h, z, r, n in reversed(saved):
        dn, dz, dh_next = dh * (1 - z), dh * (h - n), dh * z
        dan = dn * (1 - n ** 2)
        grads["Wn"] += x.T @ dan
        grads["Un"] += (r * h).T @ dan
        grads["bn"] += dan.sum(axis=0)
        drh = dan @ p["Un"].T
        dar = drh * h * r * (1 - r)
        daz = dz * z * (1 - z)
        for gate, da in (("r", dar), ("z", daz)):
            grads[f"W{gate}"] += x.T @ da
            grads[f"U{gate}"] += h.T @ da
            grads[f"b{gate}"] += da.sum(axis=0)
        dh = dh_next + drh * r + dar @ p["Ur"].T + daz @ p["Uz"].T
    return np.mean(residual ** 2), grads


def euler_reference(v0, x0, target, steps):
    """The dynamics are linear, so the adjoint needs no saved states: (gx, gv) runs backward
    through x' = x + dt v, v' = v + dt (forces(x) - c v)."""
    x, v = x0, v0
    for _ in range(steps):
        x, v = euler_step(x, v)
    gx, gv = 2 * (x - target), np.zeros_like(v0)
    for _ in range(steps):
        gforces = DT * gv
        gtension = STIFFNESS * (gforces[:-1] - gforces[1:])
        gx_prev = gx.copy()
        gx_prev[1:] += gtension
        gx_prev[:-1] -= gtension
        gv = DT * gx + (1 - DT * DAMPING) * gv
        gx = gx_prev
    return np.sum((x - target) ** 2), gv
