"""The DSL examples in examples/ and the Python functions they mean (shared by the DSL tests),
and a check that every example has one."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from compiler import fori_loop, scan
from runtime import functional as F

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


# --- the Python equivalent of each examples/*.gf -------------------------------------------
def mlp_loss(W1, b1, W2, b2, X, y):
    h = F.relu(X @ W1 + b1)
    pred = h @ W2 + b2
    return np.mean((pred - y) ** 2)


def logits(w, b, X):
    return X @ w + b


def logistic_loss(w, b, X, y):
    z = logits(w, b, X)
    per_sample = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    return np.mean(per_sample)


def mae(params, inputs, targets):
    preds = np.sum(inputs * params, axis=1)
    return np.mean(np.abs(preds - targets))


def dense(x, W, b):
    return x @ W + b


def forward(W1, b1, W2, b2, X):
    h = np.tanh(dense(X, W1, b1))
    logits = dense(h, W2, b2)
    penalty = np.sum(W1**2) + np.sum(W2**2)
    return logits, penalty


def classifier_loss(W1, b1, W2, b2, X, labels):
    logits, penalty = forward(W1, b1, W2, b2, X)
    data_loss = F.cross_entropy(logits, labels, reduction="mean")
    return data_loss + 1e-3 * penalty


def spring_force(x, k):
    return k * np.concatenate([x[1:2] - x[:1], x[2:] - 2 * x[1:-1] + x[:-2], x[-2:-1] - x[-1:]])


def spring_chain_loss(v0, x0, target):
    k = 4.0
    damping = 0.2
    dt = 0.02

    def step(i, state):
        x, v = state
        a = spring_force(x, k) - damping * v
        x = x + dt * v
        v = v + dt * a
        return x, v

    x, v = fori_loop(0, 100, step, (x0, v0))
    return np.sum((x - target) ** 2) + np.sum(v * v)


def rnn_loss(W, U, b, h0, V, xs, y):
    def step(h, x):
        return np.tanh(x @ W + h @ U + b), None

    h, _ = scan(step, h0, xs)
    return np.mean((h @ V - y) ** 2)


# file name -> (its Python equivalent, the parameters that are differentiated)
EQUIVALENTS = {
    "mlp.gf": (mlp_loss, ("W1", "b1", "W2", "b2")),
    "logistic_regression.gf": (logistic_loss, ("w", "b")),
    "mean_absolute_error.gf": (mae, ("params",)),
    "classifier.gf": (classifier_loss, ("W1", "b1", "W2", "b2")),
    "spring_chain.gf": (spring_chain_loss, ("v0",)),
    "rnn.gf": (rnn_loss, ("W", "U", "b", "h0", "V")),
}


def example_paths() -> list[Path]:
    return sorted(EXAMPLES.glob("*.gf"))


def random_inputs(dsl_params: dict, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Arguments for a DSL function's annotations, with every symbolic dim of size n."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for name, (dtype, dims) in dsl_params.items():
        shape = tuple(d if isinstance(d, int) else n for d in dims)
        if dtype.kind == "f":
            inputs[name] = rng.standard_normal(shape).astype(dtype)
        else:
            inputs[name] = rng.integers(0, 2, shape).astype(dtype)
    return inputs


def without_locations(ir_text: str) -> str:
    """IR text without the `# file:line` comments (and the padding before them)."""
    return "\n".join(line.split("#")[0].rstrip() for line in ir_text.splitlines())


def without_names(ir_text: str) -> str:
    """IR text with the values of each graph (the function's, and each loop body's: a scope
    of its own) renamed v0, v1, ... in order of definition; locations dropped, and the
    function called f."""
    lines: list[str] = []
    scopes: list[tuple[int, dict[str, str]]] = []  # (indentation of the def, renaming)
    for number, line in enumerate(without_locations(ir_text).splitlines()):
        indent = len(line) - len(line.lstrip())
        while scopes and indent <= scopes[-1][0]:
            scopes.pop()
        code = line.strip()
        if code.startswith("def "):
            name, rest = code[4:].split("(", 1)
            params = re.findall(r"(%?\w+): ", rest.split("->")[0])
            renaming = {p: f"v{i}" for i, p in enumerate(params)}
            scopes.append((indent, renaming))
            name = "f" if number == 0 else name
            lines.append(" " * indent + f"def {name}(" + _renamed(rest, renaming))
            continue
        renaming = scopes[-1][1]
        target = re.match(r"(%?\w+): ", code)
        if target is not None:
            renaming[target.group(1)] = f"v{len(renaming)}"
        lines.append(" " * indent + _renamed(code, renaming))
    return "\n".join(lines)


def _renamed(code: str, renaming: dict[str, str]) -> str:
    """Value names replaced; not op names (before "("), attribute names (before "="), or
    what <...> holds (constants, loop descriptions)."""
    parts = re.split(r"(<[^>]*>)", code)
    return "".join(part if part.startswith("<") else re.sub(
        r"%?\b\w+\b(?![(=])", lambda m: renaming.get(m.group(0), m.group(0)), part)
        for part in parts)


def test_every_dsl_example_has_a_python_equivalent():
    names = {path.name for path in example_paths()}
    assert names == set(EQUIVALENTS), "add the Python equivalent of a new example to EQUIVALENTS"
