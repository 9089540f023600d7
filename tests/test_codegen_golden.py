"""Golden files: the generated source of three models, compared as text.

The source is part of the product (people read it), so any change to it shows
up here as a diff to review. `UPDATE_GOLDEN=1 pytest tests/test_codegen_golden.py`
rewrites the files. Models live in tests/golden/examples.py, so their file:line
comments do not move when this file changes.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from compiler import compile_grad
from compiler.codegen import generate

GOLDEN = Path(__file__).parent / "golden"
_spec = importlib.util.spec_from_file_location("golden_examples", GOLDEN / "examples.py")
examples = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(examples)

rng = np.random.default_rng(0)
MODELS = {
    "mlp": (examples.mlp_loss, (
        {"W1": rng.normal(size=(10, 5)), "b1": np.zeros(5), "W2": rng.normal(size=(5, 1)),
         "b2": np.zeros(1)},
        rng.normal(size=(20, 10)), rng.normal(size=(20, 1)))),
    "mae": (examples.mean_absolute_error, (
        rng.normal(size=10), rng.normal(size=(1000, 10)), rng.normal(size=1000))),
    "cross_entropy": (examples.softmax_cross_entropy, (
        {"W": rng.normal(size=(8, 4)), "b": np.zeros(4)},
        rng.normal(size=(32, 8)), rng.integers(0, 4, 32))),
}
KINDS = ("forward", "backward", "value_and_grad")


def generated_source(model: str, kind: str, dtype=np.float32) -> str:
    fn, args = MODELS[model]
    args = [{k: v.astype(dtype) for k, v in a.items()} if isinstance(a, dict)
            else a.astype(dtype) if a.dtype.kind == "f" else a for a in args]
    spec = compile_grad(fn, backend="interpreter").specialize(*args)
    return generate(spec.graph_of(kind), kind).source


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("model", MODELS)
def test_generated_source_matches_golden_file(model, kind):
    source = generated_source(model, kind)
    path = GOLDEN / f"{model}.{kind}.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(source)
    assert path.exists(), f"no golden file {path.name}: run with UPDATE_GOLDEN=1 to create it"
    assert source == path.read_text(), (
        f"generated {kind} source of {model} changed; review the diff and rerun with "
        "UPDATE_GOLDEN=1 if it is intended")


@pytest.mark.parametrize("model", MODELS)
def test_generated_source_is_deterministic_and_has_no_paths(model):
    first = generated_source(model, "value_and_grad")
    again = generated_source(model, "value_and_grad")  # a fresh trace: new node ids
    assert first == again
    assert str(GOLDEN.parent) not in first and "/" not in "".join(
        line.split("#", 1)[1] for line in first.splitlines() if "#" in line)
