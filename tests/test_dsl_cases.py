"""The DSL examples in examples/ and the Python functions they mean (shared by the DSL tests),
and a check that every example has one."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

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


# file name -> (its Python equivalent, the parameters that are differentiated)
EQUIVALENTS = {
    "mlp.gf": (mlp_loss, ("W1", "b1", "W2", "b2")),
    "logistic_regression.gf": (logistic_loss, ("w", "b")),
    "mean_absolute_error.gf": (mae, ("params",)),
    "classifier.gf": (classifier_loss, ("W1", "b1", "W2", "b2")),
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
    """IR text with every value renamed v0, v1, ... in order of definition, locations dropped."""
    text = without_locations(ir_text)
    header, *body = text.splitlines()
    defined = re.findall(r"(%?\w+): \w+\[", header.split("->")[0].split("(", 1)[1])
    defined += [line.split(":")[0].strip() for line in body if ":" in line]
    renamed = {name: f"v{i}" for i, name in enumerate(defined)}
    text = re.sub(r"^def \w+", "def f", text)
    return re.sub(r"%?\b\w+\b|%\d+", lambda m: renamed.get(m.group(0), m.group(0)), text)


def test_every_dsl_example_has_a_python_equivalent():
    names = {path.name for path in example_paths()}
    assert names == set(EQUIVALENTS), "add the Python equivalent of a new example to EQUIVALENTS"
