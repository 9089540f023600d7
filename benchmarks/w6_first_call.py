"""W6: the first train step of W1 and of W4 in a fresh process, with a cold and a warm cache.

Each measurement is a new Python process (`python -m benchmarks.w6_first_call
--child IMPL MODEL`). The child imports its libraries (timed separately), makes
the data, then times building the step and running it once: for gradfuse that
is tracing, code generation, numba compilation (or loading from the on-disk
cache) and the step itself. Cold runs start from an empty temporary cache
directory (GRADFUSE_CACHE_DIR, NUMBA_CACHE_DIR, JAX's compilation cache,
TorchInductor's cache); warm runs reuse the directory the cold run filled.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.harness import (
    GRADFUSE,
    JAX,
    NUMBA,
    TORCH_COMPILE,
    Case,
    Config,
    Timing,
    WorkloadResult,
)

ID = "W6"
TITLE = "first train step in a fresh process (W1, W4): cold and warm on-disk cache"
MODELS = ("W1", "W4")
IMPLS = {"gradfuse": GRADFUSE, "numba": NUMBA, "jax": JAX, "torch.compile": TORCH_COMPILE}
CHILD_TIMEOUT = 600


# --- the child process -------------------------------------------------------------------
def _prepare(impl: str, cache: str) -> None:
    """Point every library's on-disk cache at `cache` (before any of them is imported)."""
    os.environ["GRADFUSE_CACHE_DIR"] = os.path.join(cache, "gradfuse")
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(cache, "numba")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(cache, "inductor")
    if impl == "jax":
        import jax

        jax.config.update("jax_compilation_cache_dir", os.path.join(cache, "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _builder(impl: str, model: str):
    """The imports of `impl` (done here), and a function building its step for `model`."""
    from benchmarks import handwritten, steps, w1_mlp_step, w4_mlp_large

    workload = w1_mlp_step if model == "W1" else w4_mlp_large
    loss_fn = workload.mlp_mse if model == "W1" else workload.mlp_cross_entropy
    kernel = (handwritten.mlp_mse_sgd_step if model == "W1"
              else handwritten.mlp3_cross_entropy_sgd_step)
    builders = {
        "gradfuse": lambda p: steps.gradfuse_step(p, loss_fn),
        "numba": lambda p: steps.numba_step(p, kernel),
        "jax": lambda p: steps.jax_step(p, workload.MODEL.jax_loss),
        "torch.compile": lambda p: steps.torch_step(p, workload.MODEL.torch_model,
                                                    workload.MODEL.torch_loss, compiled=True),
    }
    if impl in ("jax", "torch.compile"):
        from benchmarks import peers

        (peers.load_jax if impl == "jax" else peers.load_torch)()
    return workload.problem, builders[impl]


def child(impl: str, model: str, cache: str) -> dict:
    start = time.perf_counter()
    _prepare(impl, cache)
    problem_of, build = _builder(impl, model)
    imported = time.perf_counter()
    problem = problem_of()
    begin = time.perf_counter()
    row = build(problem)
    row.setup()
    row.call()
    end = time.perf_counter()
    return {"import_s": imported - start, "first_call_s": end - begin}


# --- the parent --------------------------------------------------------------------------
def _spawn(impl: str, model: str, cache: str) -> dict:
    command = [sys.executable, "-m", "benchmarks.w6_first_call", "--child", impl, model, cache]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if done.returncode != 0:
        raise RuntimeError(f"W6 child {impl} {model} failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["process_s"] = time.perf_counter() - start
    return report


def _timing(samples: list[float]) -> Timing:
    return Timing(statistics.median(samples), min(samples), 1, len(samples))


def _available(impl: str) -> str | None:
    """Why `impl` cannot run here, or None."""
    module = {"jax": "jax", "torch.compile": "torch"}.get(impl)
    if module is None:
        return None
    import importlib.util

    return None if importlib.util.find_spec(module) else f"{module} is not installed"


def plan(config: Config) -> list[tuple[str, str]]:
    """(impl, model) pairs to measure: torch.compile's cold start takes half a minute per
    model, so it runs for W1 only, and not at all in quick mode."""
    pairs = []
    for model in MODELS:
        for impl, name in IMPLS.items():
            if not config.wants(name):
                continue
            if impl == "torch.compile" and (config.quick or model != "W1"):
                continue
            pairs.append((impl, model))
    return pairs


def run(config: Config) -> WorkloadResult:
    result = WorkloadResult(ID, TITLE)
    cases = {f"{m} {kind}": Case(f"{m} {kind}", "s") for m in MODELS for kind in ("cold", "warm")}
    for impl, model in plan(config):
        name = IMPLS[impl]
        missing = _available(impl)
        if missing:
            note = f"{name} skipped: {missing}"
            if note not in result.notes:
                result.notes.append(note)
            continue
        with tempfile.TemporaryDirectory(prefix="gradfuse-w6-") as cache:
            cold = _spawn(impl, model, cache)
            warm = [_spawn(impl, model, cache) for _ in range(config.subprocess_repeats)]
        for kind, reports in (("cold", [cold]), ("warm", warm)):
            case = cases[f"{model} {kind}"]
            case.times[name] = _timing([r["first_call_s"] for r in reports])
            case.extra[name] = {
                "import s": statistics.median(r["import_s"] for r in reports),
                "process s": statistics.median(r["process_s"] for r in reports),
            }
    if config.quick or not config.wants(TORCH_COMPILE):
        result.notes.append("torch.compile's first call is measured for W1 in full runs only "
                            "(its cold start takes about half a minute)")
    elif config.wants(TORCH_COMPILE):
        result.notes.append("torch.compile's first call is measured for W1 only")
    result.cases = [c for c in cases.values() if c.times]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("IMPL", "MODEL", "CACHE"), required=True)
    args = parser.parse_args(argv)
    print(json.dumps(child(*args.child)))


if __name__ == "__main__":
    main()
