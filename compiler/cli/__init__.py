"""`gradfuse`: the command line for looking at what the compiler makes of a function.

    gradfuse ir examples/mlp.gf --kind backward      # the IR of a graph
    gradfuse source examples/mlp.gf                  # generated source of a kernel
    gradfuse graph examples/mlp.gf -o mlp.svg        # forward and backward graph
    gradfuse check examples/mlp.gf                   # gradients vs finite differences
    gradfuse time examples/mlp.gf --dim N=1024       # forward, backward, value_and_grad times
    gradfuse time --compile examples/mlp.gf          # where the compile time goes

Each works on a DSL file or on a Python function named `path/to/file.py:function`.
Exit status: 0 on success, 1 when a check fails or the program has an error, 2 on
bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from compiler import compile_grad, pytree
from compiler.cli import dot, gradcheck, timing
from compiler.cli.targets import (
    DEFAULT_DIM,
    DTYPES,
    ProgramError,
    UsageError,
    check_dims,
    choose_wrt,
    describe_inputs,
    failing_line,
    load_target,
    make_inputs,
    parse_dim,
    parse_shape,
)
from compiler.errors import GradfuseError, IndexTypeError
from compiler.specialization import KINDS
from runtime import Parameter

_DESCRIPTION = __doc__.split("\n\n", 1)[1]
_FILE_HELP = ("a DSL file (such as examples/mlp.gf), or a Python function as "
              "path/to/file.py:function")
_EXIT_CODES = "exit status: 0 on success, 1 when a check fails or the program has an error, " \
              "2 on bad usage"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with status 2 on bad usage
    try:
        status = args.run(args)
        sys.stdout.flush()  # a reader gone early (`gradfuse ir ... | head`) shows here
        return status
    except BrokenPipeError:  # the reader has what it wanted: no traceback, as other tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the exit's flush
        return 1
    except UsageError as err:
        args.subparser.print_usage(sys.stderr)
        print(f"gradfuse {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (GradfuseError, dot.GraphvizMissing, ProgramError) as err:
        print(f"gradfuse {args.command}: {err}", file=sys.stderr)
        if isinstance(err, IndexTypeError):  # the inputs are the command line's, not the user's
            print(f"gradfuse {args.command}: arguments without a dtype are made float; give "
                  "an index argument its dtype, as in --shape labels=N:int64", file=sys.stderr)
        return 1
    except Exception as err:  # raised by the user's function on the inputs made for it
        where = failing_line(err, args.file.rpartition(":")[0])
        if not where:
            raise  # not the user's program: a bug of ours, with its traceback
        print(f"gradfuse {args.command}: {args.file.rpartition(':')[0]}{where}: "
              f"{type(err).__name__}: {err}", file=sys.stderr)
        print(f"gradfuse {args.command}: the function was called with random arrays shaped by "
              "--shape (a dict argument by one --shape per key: params.W=10,5)",
              file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradfuse", description=_DESCRIPTION, epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_options()
    for name, run, summary, details, add_options in _COMMANDS:
        sub = commands.add_parser(name, parents=[common], help=summary,
                                  description=f"{summary}\n\n{details}", epilog=_EXIT_CODES,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        add_options(sub)
        sub.set_defaults(run=run, subparser=sub)
    return parser


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("file", metavar="FILE", help=_FILE_HELP)
    inputs = common.add_argument_group("inputs (random arrays of these shapes)")
    inputs.add_argument("--function", metavar="NAME",
                        help="the DSL function to use (default: the last one in the file)")
    inputs.add_argument("--dim", metavar="NAME=SIZE", action="append", default=[],
                        help="the size of a symbolic dimension such as N (repeatable; "
                             f"default {DEFAULT_DIM})")
    inputs.add_argument("--shape", metavar="NAME=D1,D2,...", action="append", default=[],
                        help="the shape of an argument, needed for Python functions and "
                             "unannotated DSL parameters; dims are sizes or names such as N, "
                             "NAME= is a scalar, and a dtype may follow: labels=N:int64 "
                             f"({', '.join(DTYPES)}; integers are 0 or 1) (repeatable)")
    inputs.add_argument("--dtype", choices=["float32", "float64"], default="float64",
                        help="the dtype of arguments without a DSL annotation "
                             "(default: float64)")
    inputs.add_argument("--seed", type=int, default=0,
                        help="seed of the random inputs (default: 0)")
    compiling = common.add_argument_group("compilation")
    compiling.add_argument("--wrt", metavar="NAME[,NAME...]",
                           help="the arguments to differentiate (default: the float arguments "
                                "whose shapes are fully static, else all float arguments)")
    compiling.add_argument("--backend", choices=["numba", "interpreter"],
                           default=os.environ.get("GRADFUSE_BACKEND", "numba"),
                           help="numba kernels, or the NumPy interpreter of the IR "
                                "(default: $GRADFUSE_BACKEND, else numba)")
    return common


def _kind_option(default: str):
    def add(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--kind", choices=KINDS, default=default,
                         help="forward: outputs only; value_and_grad: outputs and gradients in "
                              "one graph; forward_save and backward: the split used by the "
                              f"runtime's backward() (default: {default})")
    return add


# --- commands ----------------------------------------------------------------------------
def run_ir(args) -> int:
    spec = _specialization(args)
    print(spec.graph_of(args.kind))
    return 0


def run_source(args) -> int:
    spec = _specialization(args)
    print(spec.kernel(args.kind).source)
    return 0


def run_graph(args) -> int:
    output_format = args.format or _format_of(args.output)
    if output_format == "png" and args.output is None:
        raise UsageError("PNG is binary: give an output file with -o FILE")
    spec = _specialization(args)
    text = dot.to_dot(spec.graph_of(args.kind))
    data = text.encode() if output_format == "dot" else dot.render(text, output_format)
    if args.output is None:
        sys.stdout.write(data.decode())
    else:
        try:
            with open(args.output, "wb") as f:
                f.write(data)
        except OSError as err:
            raise ProgramError(f"cannot write {args.output}: {err.strerror}") from None
        print(f"wrote {args.output}")
    return 0


def _format_of(output: str | None) -> str:
    extension = os.path.splitext(output or "")[1].lstrip(".").lower()
    return extension if extension in ("dot", "svg", "png") else "dot"


def run_check(args) -> int:
    float64 = np.dtype(np.float64)
    target, inputs, wrt = _prepare(args, float_dtype=float64)
    if not wrt:
        raise UsageError(f"{target.name} has no float argument to check")
    leaves = [spec.name for spec in target.inputs if spec.argument in wrt]
    reports = gradcheck.check_gradients(target.function, inputs, wrt, leaves, args.backend,
                                        args.eps, args.samples, args.seed)
    print(f"gradient check of {target.name} in float64 ({describe_inputs(target, inputs)}): "
          f"central differences with eps {args.eps:g}, tolerance {args.tol:g}")
    width = max(len(r.name) for r in reports)
    failed = [r for r in reports if not r.max_error <= args.tol]
    for r in reports:
        verdict = "FAILED" if r in failed else "ok"
        print(f"  {r.name:<{width}}  max error {r.max_error:.2e} over {r.checked} of {r.size} "
              f"elements  {verdict}")
    if failed:
        names = ", ".join(r.name for r in failed)
        print(f"gradient check FAILED for {names}: error above tolerance {args.tol:g}")
        return 1
    print("all gradients match")
    return 0


def run_time(args) -> int:
    if args.compile:
        return run_compile_time(args)
    target, inputs, wrt = _prepare(args)
    compiled = compile_grad(target.function, wrt=tuple(wrt), backend=args.backend)
    print(f"timing {target.name} ({describe_inputs(target, inputs)}) with the {args.backend} "
          f"backend, {args.repeat} samples")
    calls = {"forward": lambda: compiled(**inputs)}
    if wrt:
        objective = gradcheck.scalar_objective(target.function, inputs,
                                               np.random.default_rng(args.seed))
        with_grad = compile_grad(objective, wrt=tuple(wrt), backend=args.backend)
        parameters = _with_parameters(inputs, wrt)
        calls["backward"] = backward_alone(with_grad, parameters)
        calls["value_and_grad"] = lambda: with_grad.value_and_grad(**inputs)
    for kind, call in calls.items():
        t = timing.measure(call, args.repeat)
        print(f"  {kind:<15} median {timing.format_seconds(t.median):>9}   best "
              f"{timing.format_seconds(t.best):>9}   first call {timing.format_seconds(t.first)} "
              f"({t.calls_per_sample} calls per sample)")
    return 0


def run_compile_time(args) -> int:
    """The first call of each kind, then the compile report: trace, autodiff, passes, codegen
    and numba per kernel, with the generated lines. One compiled function serves every kind,
    so for a non-scalar result all kernels are those of the projected objective."""
    target, inputs, wrt = _prepare(args)
    calls = {"forward": lambda: compiled(**inputs)}
    if wrt:
        objective = gradcheck.scalar_objective(target.function, inputs,
                                               np.random.default_rng(args.seed))
        compiled = compile_grad(objective, wrt=tuple(wrt), backend=args.backend)
        parameters = _with_parameters(inputs, wrt)
        calls["value_and_grad"] = lambda: compiled.value_and_grad(**inputs)
        calls["backward"] = lambda: compiled(**parameters).backward()
    else:
        compiled = compile_grad(target.function, backend=args.backend)
    firsts = []
    for kind, call in calls.items():
        start = time.perf_counter()
        call()
        firsts.append(f"{kind} {timing.format_seconds(time.perf_counter() - start)}")
    print(f"compiling {target.name} ({describe_inputs(target, inputs)}) with the {args.backend} "
          f"backend; first calls: {', '.join(firsts)}")
    print(compiled.compile_report())
    return 0


def backward_alone(compiled, arguments: dict):
    """A call that runs `loss.backward()` of one recorded forward of `compiled(**arguments)`
    (Parameters among them), as a PyTorch user times it: the backward kernel, the runtime's
    engine and accumulation into `.grad`. The first call also runs that forward, so it
    includes tracing and compilation, as the first calls of the other kinds do."""
    recorded = []

    def call():
        if not recorded:
            recorded.append(compiled(**arguments))
        recorded[0].backward(retain_graph=True)

    return call


# --- shared steps ------------------------------------------------------------------------
def _with_parameters(inputs: dict, wrt: list[str]) -> dict:
    """The arguments with each array of the `wrt` ones (every leaf of a tree) a Parameter."""
    def parameters(tree):
        leaves, treedef = pytree.flatten(tree)
        return pytree.unflatten(treedef, [Parameter(a) for a in leaves])

    return {name: parameters(a) if name in wrt else a for name, a in inputs.items()}


def _prepare(args, float_dtype: np.dtype | None = None):
    parsed = [parse_shape(text) for text in args.shape]
    shapes = {name: dims for name, dims, _ in parsed}
    dtypes = {name: dtype for name, _, dtype in parsed if dtype is not None}
    sizes = dict(parse_dim(text) for text in args.dim)
    target = load_target(args.file, args.function, shapes, np.dtype(args.dtype), float_dtype,
                         dtypes)
    check_dims(target, sizes)
    return target, make_inputs(target, sizes, args.seed), choose_wrt(target, args.wrt)


def _specialization(args):
    target, inputs, wrt = _prepare(args)
    kind = getattr(args, "kind", "forward")
    if kind != "forward" and not wrt:
        raise UsageError(f"--kind {kind} differentiates, but {target.name} has no float "
                         "argument (choose one with --wrt)")
    compiled = compile_grad(target.function, wrt=tuple(wrt), backend=args.backend)
    spec = compiled.specialize(**inputs)
    outputs = spec.graph.outputs
    if kind == "value_and_grad" and (len(outputs) != 1 or outputs[0].type.shape != ()):
        results = ", ".join(str(o.type) for o in outputs)
        raise UsageError(f"--kind value_and_grad needs {target.name} to return one scalar, but "
                         f"it returns {results}; use --kind backward, which takes the output "
                         "cotangent as an input")
    return spec


def _graph_options(sub: argparse.ArgumentParser) -> None:
    _kind_option("value_and_grad")(sub)
    sub.add_argument("--format", choices=["dot", "svg", "png"],
                     help="DOT text, or SVG or PNG drawn by Graphviz's dot program (default: "
                          "from the extension of -o, else dot)")
    sub.add_argument("-o", "--output", metavar="OUT",
                     help="the file to write (default: standard output; PNG needs a file)")


def _positive(kind: type):
    """An argparse type: a number of `kind` above 0 (a check of no samples, a step of 0, a
    negative tolerance or no timed samples would report nothing true)."""
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    convert.__name__ = f"positive {kind.__name__}"
    return convert


def _check_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--tol", type=_positive(float), default=1e-6,
                     help="the largest error allowed, |fd - grad| / max(1, |fd|, |grad|) "
                          "(default: 1e-6)")
    sub.add_argument("--eps", type=_positive(float), default=1e-6,
                     help="the finite-difference step (default: 1e-6)")
    sub.add_argument("--samples", type=_positive(int), default=32,
                     help="elements checked per input, chosen at random (default: 32)")


def _time_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--repeat", type=_positive(int), default=20,
                     help="timed samples per kind, after a warm-up call (default: 20)")
    sub.add_argument("--compile", action="store_true",
                     help="instead, make the first call of each kind and report where the "
                          "compile time went: trace, autodiff, passes, codegen and numba per "
                          "kernel, and the lines of generated source")


_COMMANDS = [
    ("ir", run_ir, "print the IR of a graph",
     "The typed SSA graph, one equation per line, with the source line of each node.",
     _kind_option("forward")),
    ("source", run_source, "print the generated source of a kernel",
     "The Python source generated for numba (with the interpreter backend, the IR it runs).",
     _kind_option("backward")),
    ("graph", run_graph, "draw the forward and backward graph",
     "Graphviz DOT text, or SVG or PNG when the dot program is installed. Nodes show their op\n"
     "and type and the name from the user's code; backward nodes are red and dashed.",
     _graph_options),
    ("check", run_check, "check gradients against finite differences",
     "Compiled gradients at random float64 inputs against central differences of the\n"
     "function run with NumPy; prints the largest error per input and exits with status 1\n"
     "if one is above the tolerance.",
     _check_options),
    ("time", run_time, "time forward, backward and value_and_grad",
     "The median time per call after a warm-up call, and the first call's time, which\n"
     "includes tracing and compilation. backward is loss.backward() alone, on Parameters,\n"
     "after one recorded forward; a non-scalar result is reduced by a fixed random\n"
     "projection sum(w * f(x)) for backward and value_and_grad. With --compile: the\n"
     "first call of each kind, then the seconds of each compile phase (trace, autodiff,\n"
     "passes, codegen, numba) per kernel and its lines of generated source; numba's\n"
     "on-disk cache counts, so set GRADFUSE_CACHE_DIR to an empty directory for a cold\n"
     "compile.",
     _time_options),
]
