"""`python -m benchmarks`: run the workloads, print the tables and the goals, write results.json.

    python -m benchmarks                      # W1-W6, W8, W9 and W10 (several minutes)
    python -m benchmarks W1 W3 --quick        # some workloads, shorter timing, smaller sizes
    python -m benchmarks W7                   # compile scaling: a process per configuration,
                                              # each stopped at 120 s (today ~20 minutes)
    python -m benchmarks W7 --quick --compile-timeout 30   # smaller programs, shorter limit
    python -m benchmarks --peers jax,torch    # only these optional rows (or --peers none)
    python -m benchmarks --markdown benchmarks/RESULTS.md   # also refresh the tables there

A workload whose implementations disagree (or that fails) is reported loudly,
the others still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

from benchmarks import threads
from benchmarks.harness import JAX, NUMPY, TORCH, TORCH_COMPILE, Config, WorkloadResult

WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9", "W10")
# W7 compiles programs in a fresh process each, beside JAX's: asked for by name.
DEFAULT_WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W8", "W9", "W10")
MODULES = {"W1": "w1_mlp_step", "W2": "w2_mae", "W3": "w3_elementwise", "W4": "w4_mlp_large",
           "W5": "w5_logreg_loop", "W6": "w6_first_call", "W7": "w7_compile_scaling",
           "W8": "w8_transformer_cnn", "W9": "w9_runtime_step", "W10": "w10_data_parallel"}
PEER_NAMES = {"numpy": NUMPY, "torch": TORCH, "torch.compile": TORCH_COMPILE, "jax": JAX}
HERE = Path(__file__).resolve().parent
MARKERS = ("<!-- results:begin (written by python -m benchmarks --markdown) -->",
           "<!-- results:end -->")


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def blas_versions() -> dict[str, str]:
    """NumPy's BLAS (NumPy rows, the W4 floor; gradfuse and the hand-written kernels call it
    too) and SciPy's, where SciPy is installed."""
    found = {}
    for name in ("numpy", "scipy"):
        try:
            module = importlib.import_module(name)
            blas = module.show_config(mode="dicts")["Build Dependencies"]["blas"]
            found[f"{name} BLAS"] = f"{blas['name']} {blas['version']}"
        except (ImportError, KeyError, TypeError):
            pass
    return found


def environment() -> dict:
    from benchmarks import peers

    found = {"python": platform.python_version()}
    for package in ("numpy", "numba", "llvmlite", "gradfuse"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    found.update(peers.versions())
    found.update(blas_versions())
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads per library": threads.THREADS,
            "versions": found, "thread variables": threads.cap_threads(),
            "glibc malloc": "gradfuse's tune_malloc, process-wide (every row shares it)"}


def run_workload(workload: str, config: Config) -> WorkloadResult:
    module = importlib.import_module(f"benchmarks.{MODULES[workload]}")
    return module.run(config)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", metavar="W",
                        help=f"any of {WORKLOADS} (default: {' '.join(DEFAULT_WORKLOADS)})")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes")
    parser.add_argument("--compile-timeout", type=float, metavar="SECONDS",
                        help="W7: stop a configuration's process after this long (default: "
                             f"{Config.compile_timeout:g}, with --quick "
                             f"{Config.quick_mode().compile_timeout:g})")
    parser.add_argument("--compile-memory", type=float, metavar="GB",
                        help="W7: stop a configuration's process at this much resident memory "
                             f"(default: {Config.compile_memory_gb:g})")
    parser.add_argument("--peers", default=",".join(PEER_NAMES),
                        help=f"optional rows, comma-separated from {sorted(PEER_NAMES)}, "
                             "or 'none' (gradfuse and hand-written numba always run)")
    parser.add_argument("--output", type=Path,
                        help="where the JSON goes (default: benchmarks/results.json, or "
                             "results-W7.json and so on for other workloads than the default)")
    parser.add_argument("--markdown", type=Path, help="refresh the tables in this Markdown file")
    parser.add_argument("--no-print-json", action="store_true", help="do not echo the JSON")
    args = parser.parse_args(argv)
    args.workloads = [w.upper() for w in args.workloads] or list(DEFAULT_WORKLOADS)
    if args.output is None:
        args.output = HERE / f"results{_suffix(args.workloads)}.json"
    unknown = sorted(set(args.workloads) - set(WORKLOADS))
    chosen = [] if args.peers == "none" else [p.strip() for p in args.peers.split(",") if p]
    unknown += sorted(set(chosen) - set(PEER_NAMES))
    if unknown:
        parser.error(f"unknown workload or peer: {', '.join(unknown)}")
    args.peer_rows = frozenset(PEER_NAMES[p] for p in chosen)
    return args


def _suffix(workloads: list[str]) -> str:
    """The results file's suffix: none for the default workloads, else "-W7" and so on, so a
    run of W7 alone keeps the default run's file (and, see `markers`, its Markdown block)."""
    return "" if tuple(workloads) == DEFAULT_WORKLOADS else "-" + "-".join(workloads)


def markers(workloads: list[str]) -> tuple[str, str]:
    """The Markdown block of a run: one for the default workloads, one per other selection."""
    if not _suffix(workloads):
        return MARKERS
    key = " ".join(workloads)
    return (f"<!-- results {key}:begin (written by python -m benchmarks {key} --markdown) -->",
            f"<!-- results {key}:end -->")


def write_markdown(path: Path, body: str, block_markers: tuple[str, str] = MARKERS) -> None:
    """Replace the text between the markers, keeping the rest of the file (the analysis);
    a file without them gets the block appended."""
    begin, end = block_markers
    block = f"{begin}\n{body}{end}\n"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        path.write_text(head + block + ("\n" + tail if tail else ""), encoding="utf-8")
    else:
        path.write_text(old + ("\n" if old else "") + block, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from benchmarks import goals, report
    from compiler.jit import tune_malloc

    # gradfuse raises glibc's mmap threshold when its first kernel loads; doing it now gives
    # every row, whichever runs first, the same allocator.
    tune_malloc()
    config = (Config.quick_mode(args.peer_rows) if args.quick else Config(peers=args.peer_rows))
    if args.compile_timeout is not None:
        config = dataclasses.replace(config, compile_timeout=args.compile_timeout)
    if args.compile_memory is not None:
        config = dataclasses.replace(config, compile_memory_gb=args.compile_memory)
    started = time.perf_counter()
    results, errors = [], {}
    for workload in args.workloads:
        print(f"running {workload} ...", file=sys.stderr, flush=True)
        try:
            results.append(run_workload(workload, config))
        except Exception as err:  # noqa: BLE001 -- reported loudly below, the rest still runs
            errors[workload] = f"{type(err).__name__}: {err}"
            print(f"\n!!! {workload} FAILED: {errors[workload]}\n{traceback.format_exc()}",
                  file=sys.stderr, flush=True)
    by_id = {r.id: r for r in results}
    verdicts = goals.evaluate(by_id)
    env = environment()
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    header = (f"gradfuse benchmarks, {date[:10]}, {env['cpu']} ({env['cores']} cores, "
              f"{env['threads per library']} threads per library)"
              + (", quick mode" if config.quick else ""))
    print(report.text(results, verdicts, header))
    for workload, error in errors.items():
        print(f"\n!!! {workload} FAILED: {error}")
    document = {
        "date": date, "quick": config.quick, "seconds": time.perf_counter() - started,
        "environment": env, "workloads": {r.id: r.to_json() for r in results},
        "goals": [v.to_json() for v in verdicts], "errors": errors,
    }
    text = json.dumps(document, indent=1, ensure_ascii=False)
    args.output.write_text(text + "\n", encoding="utf-8")
    if not args.no_print_json:
        print(text)
    if args.markdown is not None:
        versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        write_markdown(args.markdown,
                       report.markdown(results, verdicts, f"_{header}_\n\n_{versions}_"),
                       markers(args.workloads))
    return 1 if errors else 0
