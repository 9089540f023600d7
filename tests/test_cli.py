"""The `gradfuse` command, run as a subprocess: output and exit status of every subcommand."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compiler.cli import main

ROOT = Path(__file__).resolve().parent.parent
MODEL = str(ROOT / "examples" / "mlp.gf")  # the DSL file every command is tried on
SPRINGS = str(ROOT / "examples" / "spring_chain.gf")  # a counted loop (fori_loop)
RNN = str(ROOT / "examples" / "rnn.gf")  # a loop over the rows of an array (scan)

PYTHON_MODELS = '''
import numpy as np
from compiler import compile_grad, custom_vjp


@custom_vjp
def wrong_square(x):
    return x * x


@wrong_square.defvjp
def wrong_square_vjp(g, out, x):
    return (3.0 * x * g,)  # the derivative of x * x is 2x, not 3x


def broken(w, x):
    return np.sum(wrong_square(x @ w))


@compile_grad
def fine(w, x):
    h = np.tanh(x @ w)
    return np.mean(h ** 2)


def xent(W, X, labels):
    logits = X @ W
    logp = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
    return -np.mean(logp[np.arange(X.shape[0]), labels])
'''


def gradfuse(*args: str, backend: str | None = "interpreter", path: str | None = None,
             environment: dict[str, str] | None = None):
    """Run `python -m compiler.cli *args`; the interpreter backend keeps it quick."""
    env = {**os.environ, **(environment or {})}
    if backend is None:
        env.pop("GRADFUSE_BACKEND", None)
    else:
        env["GRADFUSE_BACKEND"] = backend
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, "-m", "compiler.cli", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, check=False)


@pytest.fixture(scope="module")
def python_models(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "models.py"
    path.write_text(PYTHON_MODELS)
    return path


# --- usage -------------------------------------------------------------------------------
@pytest.mark.parametrize(("command", "options"), [
    ((), ("ir", "source", "graph", "check", "time", "exit status")),
    (("ir",), ("--kind", "--function", "--dim", "--shape", "--dtype", "--wrt", "--backend")),
    (("source",), ("--kind", "--dim", "generated source")),
    (("graph",), ("--format", "--output", "svg", "png")),
    (("check",), ("--tol", "--eps", "--samples", "--seed")),
    (("time",), ("--repeat", "--dim", "--compile")),
])
def test_help_describes_every_option(command, options):
    result = gradfuse(*command, "--help")
    assert result.returncode == 0
    for option in options:
        assert option in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    ((), "the following arguments are required: COMMAND"),
    (("ir", MODEL, "--kind", "sideways"), "invalid choice: 'sideways'"),
    (("ir", "no/such/model.gf"), "no such file: no/such/model.gf"),
    (("ir", MODEL, "--dim", "N=zero"), "expected NAME=SIZE"),
    (("ir", MODEL, "--wrt", "W_1"), "'W_1' is not an argument of loss; did you mean 'W1'?"),
    (("ir", MODEL, "--wrt", "X,b3"), "'b3' is not an argument of loss"),
    (("ir", MODEL, "--shape", "Z=3"), "loss has no argument 'Z'"),
])
def test_bad_usage_exits_with_status_2(args, message):
    result = gradfuse(*args)
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    # each ran and failed with a traceback (StatisticsError, ValueError, ZeroDivisionError),
    # or ran and reported nothing true (a check of no samples, a negative tolerance)
    (("time", MODEL, "--repeat", "0"), "argument --repeat: expected a positive int, got '0'"),
    (("check", MODEL, "--samples", "-2"), "argument --samples: expected a positive int"),
    (("check", MODEL, "--samples", "0"), "argument --samples: expected a positive int"),
    (("check", MODEL, "--eps", "0"), "argument --eps: expected a positive float, got '0'"),
    (("check", MODEL, "--tol", "-1"), "argument --tol: expected a positive float, got '-1'"),
    (("check", MODEL, "--tol", "nan"), "argument --tol: expected a positive float"),
    # a dimension no argument has was ignored
    (("ir", MODEL, "--dim", "M=3"), "--dim M=...: no argument of loss has a dimension named M "
                                    "(its dimensions: N)"),
])
def test_bad_numbers_and_unknown_dimensions_are_usage_errors(args, message, capsys):
    try:
        status = main(list(args))
    except SystemExit as exit_:  # argparse's own checks
        status = exit_.code
    assert status == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("text", "message"), [
    ("def f(w:\n    return w\n", "cannot import {path}: '(' was never closed at line 1"),
    ("import numpy as np\nraise RuntimeError('boom')\n",
     "cannot import {path} (line 2): RuntimeError: boom"),
])
def test_a_python_file_that_fails_to_import_exits_with_status_1(tmp_path, text, message,
                                                                  capsys):
    path = tmp_path / "broken_model.py"  # was a traceback of the CLI's own import code
    path.write_text(text)
    assert main(["ir", f"{path}:f", "--shape", "w=3"]) == 1
    err = capsys.readouterr().err
    assert message.format(path=path) in err and "Traceback" not in err


def test_an_output_file_that_cannot_be_written_exits_with_status_1(tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "dir" / "mlp.dot"
    assert main(["graph", MODEL, "--backend", "interpreter", "-o", str(missing)]) == 1
    assert f"gradfuse graph: cannot write {missing}: No such file or directory" in \
        capsys.readouterr().err


def test_a_python_function_needs_shapes(python_models):
    result = gradfuse("ir", f"{python_models}:fine", "--shape", "w=3")
    assert result.returncode == 2
    assert "no shape for argument 'x' of fine: give --shape x=D1,D2,..." in result.stderr


def test_an_error_in_the_program_exits_with_status_1(tmp_path):
    path = tmp_path / "typo.gf"
    path.write_text("def loss(x: f32[N, 3]):\n    return mean(sofmax(x))\n")
    result = gradfuse("ir", str(path))
    assert result.returncode == 1
    assert f"{path}:2:17: unknown function 'sofmax'; did you mean 'softmax'?" in result.stderr
    assert "return mean(sofmax(x))\n                ^" in result.stderr


# --- ir, source, graph ---------------------------------------------------------------------
def test_ir_shows_the_forward_graph_with_names_and_lines():
    result = gradfuse("ir", MODEL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("def loss(W1: f32[10,5], b1: f32[5], W2: f32[5,1], b2: "
                                    "f32[1], X: f32[N,10], y: f32[N,1]) -> (f32[]):")
    assert "h: f32[N,5] = where" in result.stdout and "mlp.gf:3" in result.stdout


def test_ir_of_the_backward_graph_with_chosen_wrt_and_dims():
    result = gradfuse("ir", MODEL, "--kind", "backward", "--wrt", "W2,X", "--dim", "N=4")
    assert result.returncode == 0, result.stderr
    assert "-> (f32[5,1], f32[4,10]):" in result.stdout  # differentiated inputs are static
    assert "return W2_grad, X_grad" in result.stdout


def test_ir_of_a_python_function(python_models):
    result = gradfuse("ir", f"{python_models}:fine", "--shape", "w=3", "--shape", "x=N,3",
                      "--dtype", "float32", "--kind", "value_and_grad")
    assert result.returncode == 0, result.stderr
    assert "def fine_vjp(w: f32[3], x: f32[N,3])" in result.stdout
    assert "w_grad" in result.stdout and "models.py:" in result.stdout


def test_graph_as_dot_text():
    result = gradfuse("graph", MODEL)
    assert result.returncode == 0, result.stderr
    dot = result.stdout
    assert dot.startswith('digraph "loss_vjp" {') and dot.rstrip().endswith("}")
    assert 'label="h = where\\nf32[N,5]"' in dot
    assert 'label="X\\nf32[N,10]", shape=ellipse' in dot
    assert 'label="W1_grad = matmul\\nf32[10,5]", style="rounded,filled,dashed"' in dot
    assert " -> " in dot


def test_graph_to_a_file(tmp_path):
    out = tmp_path / "forward.dot"
    result = gradfuse("graph", MODEL, "--kind", "forward", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text().startswith('digraph "loss" {')
    assert "dashed" not in out.read_text(), "a forward graph has no backward nodes"


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize(("suffix", "magic"), [(".svg", b"<?xml"), (".png", b"\x89PNG")])
def test_graph_drawn_by_graphviz(tmp_path, suffix, magic):
    out = tmp_path / f"mlp{suffix}"
    result = gradfuse("graph", MODEL, "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes().startswith(magic)


def test_graph_without_graphviz_says_how_to_get_it(tmp_path):
    result = gradfuse("graph", MODEL, "--format", "svg", path=str(tmp_path))
    assert result.returncode == 1
    assert "needs the 'dot' program of Graphviz, which is not installed" in result.stderr


def test_source_of_a_numba_kernel():
    result = gradfuse("source", MODEL, backend=None)
    assert result.returncode == 0, result.stderr
    assert "def " in result.stdout and "mlp.gf:3" in result.stdout


@pytest.mark.parametrize(("kind", "defined", "absent", "comment"), [
    ("forward", "def loss(W1, b1, W2, b2, X, y):", "_grad", "(mlp.gf:3)"),
    ("backward", "def loss_backward(", "def loss(", "# d @ (mlp.gf:3)"),
])
def test_source_of_the_forward_and_backward_kernels(kind, defined, absent, comment):
    result = gradfuse("source", MODEL, "--kind", kind, backend=None)
    assert result.returncode == 0, result.stderr
    source = result.stdout
    assert source.startswith(f'"""loss{"_backward" if kind == "backward" else ""}: the {kind} '
                             "kernel, generated by gradfuse")
    assert defined in source and absent not in source
    assert "@numba.njit" in source and comment in source  # the user's line
    if kind == "backward":  # gradients of the parameters, the default wrt
        assert all(f"{name}_grad" in source for name in ("W1", "b1", "W2", "b2"))
        assert "X_grad" not in source


# --- check and time ------------------------------------------------------------------------
def test_check_passes_for_the_compiled_gradients():
    result = gradfuse("check", MODEL, "--seed", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("gradient check of loss in float64 (W1: f64[10,5]")
    for name in ("W1", "b1", "W2", "b2"):
        assert any(line.split()[:3] == [name, "max", "error"] and line.endswith("ok")
                   for line in lines), result.stdout
    assert lines[-1] == "all gradients match"


def test_check_fails_for_a_wrong_gradient(python_models):
    result = gradfuse("check", f"{python_models}:broken", "--shape", "w=3", "--shape", "x=5,3")
    assert result.returncode == 1
    assert "FAILED" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("gradient check FAILED for w")


def test_check_takes_integer_labels_and_says_so_when_they_are_not(python_models):
    shapes = ("--shape", "W=5,3", "--shape", "X=N,5", "--dim", "N=7")
    result = gradfuse("check", f"{python_models}:xent", *shapes, "--shape", "labels=N:int64")
    assert result.returncode == 0, result.stderr
    assert "labels: i64[7]" in result.stdout and result.stdout.splitlines()[-1] == \
        "all gradients match"
    result = gradfuse("check", f"{python_models}:xent", *shapes, "--shape", "labels=N",
                      "--wrt", "W")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "models.py:29: indices must be integers, got float64" in result.stderr
    assert "as in --shape labels=N:int64" in result.stderr
    result = gradfuse("check", f"{python_models}:xent", *shapes, "--shape", "labels=N:int8")
    assert result.returncode == 2 and "the dtype after ':' is one of" in result.stderr


def test_time_reports_forward_and_value_and_grad():
    result = gradfuse("time", MODEL, "--repeat", "3", "--dim", "N=32", backend=None)
    assert result.returncode == 0, result.stderr
    assert "with the numba backend" in result.stdout
    for kind in ("forward", "backward", "value_and_grad"):
        assert any(line.split()[:2] == [kind, "median"] for line in result.stdout.splitlines())


def test_time_of_a_function_without_float_arguments_has_forward_only(tmp_path):
    path = tmp_path / "counts.gf"
    path.write_text("def count(k: i64[N]):\n    return sum(k)\n")
    result = gradfuse("time", str(path), "--repeat", "2")
    assert result.returncode == 0, result.stderr
    kinds = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert kinds == ["forward"]


def test_timed_backward_runs_backward_alone_and_accumulates():
    from compiler import compile_grad
    from compiler.cli import backward_alone
    from runtime import Parameter

    f = compile_grad(lambda w, x: np.sum(np.tanh(x @ w)), backend="interpreter")
    x = np.linspace(-1.0, 1.0, 6).reshape(3, 2)
    w = Parameter(np.array([0.5, -0.25]))
    call = backward_alone(f, {"w": w, "x": x})
    call()
    expected = x.T @ (1 - np.tanh(x @ w.data) ** 2)
    np.testing.assert_allclose(w.grad, expected, rtol=1e-12)
    for _ in range(3):  # later calls: backward of the same forward, accumulating
        call()
    np.testing.assert_allclose(w.grad, 4 * expected, rtol=1e-12)


def test_the_console_script_is_installed():
    script = shutil.which("gradfuse")
    if script is None:
        pytest.skip("the gradfuse script is not on PATH (pip install -e . installs it)")
    result = subprocess.run([script, "ir", MODEL, "--backend", "interpreter"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("def loss(")


# --- programs with loops ---------------------------------------------------------------------
def test_ir_of_a_loop_shows_one_scan_and_its_body():
    result = gradfuse("ir", SPRINGS, "--kind", "value_and_grad")
    assert result.returncode == 0, result.stderr
    ir = result.stdout
    assert ir.count("= scan(") == 2  # the loop, and the reverse loop of its gradient
    assert "loop=<step: 100 steps>" in ir and "loop=<step_grad: 100 steps, reverse>" in ir
    assert "def step(x: f64[8], v: f64[8], step: i64[])" in ir
    assert "# spring_chain.gf:16" in ir and "# grad of scan, spring_chain.gf:16" in ir


def test_source_of_a_loop_is_a_for_loop_forward_and_backward():
    result = gradfuse("source", RNN, "--kind", "value_and_grad", backend=None)
    assert result.returncode == 0, result.stderr
    source = result.stdout
    assert "_body(" not in source  # the steps are written into their loops
    assert "for t in range(" in source and "for t_2 in range(" in source
    assert "(rnn.gf:8)" in source and "rnn.gf:7" in source


@pytest.mark.parametrize("path", [SPRINGS, RNN], ids=["spring_chain", "rnn"])
def test_check_passes_for_the_gradients_of_loops(path):
    result = gradfuse("check", path, "--seed", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stdout.splitlines()[-1] == "all gradients match"
    assert "  v0  " in result.stdout or "  U   " in result.stdout


def test_time_of_a_loop():
    result = gradfuse("time", RNN, "--repeat", "2", "--dim", "T=5")
    assert result.returncode == 0, result.stderr
    assert "xs: f32[5,4]" in result.stdout
    kinds = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert kinds == ["forward", "backward", "value_and_grad"]


def test_a_loop_mistake_exits_with_status_1(tmp_path):
    path = tmp_path / "loop.gf"
    path.write_text("def loss(x: f64[N, 3]):\n    for row in x:\n        h = row * 2\n"
                    "    return sum(h)\n")
    result = gradfuse("check", str(path))
    assert result.returncode == 1
    assert f"{path}:2:5: this loop changes nothing" in result.stderr
    assert "    for row in x:\n    ^" in result.stderr


def compile_report_rows(stdout: str) -> dict[str, list[str]]:
    """The rows of the table that `time --compile` prints, by their first word."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("compile report of"))
    return {line.split()[0]: line.split() for line in lines[start + 2:]}


def test_time_compile_reports_phases_per_kernel():
    result = gradfuse("time", "--compile", MODEL)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("compiling loss (W1: f32[10,5]") and "interpreter backend" in first
    for kind in ("forward", "value_and_grad", "backward"):
        assert f"{kind} " in first.split("first calls:")[1]
    rows = compile_report_rows(result.stdout)
    assert list(rows) == ["trace", "forward", "value_and_grad", "forward_save", "backward",
                          "total"]
    assert rows["value_and_grad"][4:6] == ["-", "-"]  # the interpreter: no codegen, no numba


def test_time_compile_with_numba_compiles_cold_and_then_loads_from_the_cache(tmp_path):
    path = tmp_path / "square.gf"
    path.write_text("def loss(w: f64[3], x: f64[N, 3]):\n    return mean((x * w) ** 2)\n")
    cache = {"GRADFUSE_CACHE_DIR": str(tmp_path / "kernels")}  # empty: the first run is cold
    runs = [gradfuse("time", "--compile", str(path), backend="numba", environment=cache)
            for _ in range(2)]
    for result, verdict in zip(runs, ("compiled", "cached")):
        assert result.returncode == 0, result.stderr
        rows = compile_report_rows(result.stdout)
        # backward() on Parameters runs the backward that stores into .grad
        kinds = ("forward", "value_and_grad", "forward_save", "backward_into")
        for kind in kinds:
            assert rows[kind][-1] == verdict, result.stdout
            assert int(rows[kind][-2]) > 0  # generated lines
        assert int(rows["total"][-1]) == sum(int(rows[k][-2]) for k in kinds)



# --- argument trees: a dotted --shape per leaf -----------------------------------------------
TREE_MODELS = '''
import numpy as np


def mlp(params, X, y):
    h = np.maximum(X @ params["W1"] + params["b1"], 0.0)
    return np.mean((h @ params["W2"] - y) ** 2)


def deep(layers, x):
    for layer in layers:
        x = np.tanh(x @ layer["W"] + layer["b"])
    return np.sum(x ** 2)
'''
MLP_SHAPES = ("--shape", "params.W1=3,4", "--shape", "params.b1=4", "--shape", "params.W2=4,1",
              "--shape", "X=N,3", "--shape", "y=N,1")


@pytest.fixture(scope="module")
def tree_models(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trees") / "trees.py"
    path.write_text(TREE_MODELS)
    return path


@pytest.mark.parametrize(("function", "shapes", "leaves"), [
    ("mlp", MLP_SHAPES, ["params.W1", "params.b1", "params.W2"]),
    ("deep", ("--shape", "layers.1.W=3,3", "--shape", "layers.1.b=3", "--shape", "layers.0.W=3,3",
              "--shape", "layers.0.b=3", "--shape", "x=N,3"),
     ["layers.1.W", "layers.1.b", "layers.0.W", "layers.0.b"]),
])
def test_check_takes_a_dict_or_a_list_of_dicts_leaf_by_leaf(tree_models, function, shapes,
                                                           leaves, capsys, monkeypatch):
    """The README's loss(params, X, y) could not be checked: a dict argument had no --shape."""
    monkeypatch.setenv("GRADFUSE_BACKEND", "interpreter")
    assert main(["check", f"{tree_models}:{function}", *shapes]) == 0
    out = capsys.readouterr().out
    for name in leaves:
        assert f"  {name}  max error" in out
    assert out.count(" ok\n") == len(leaves) and "all gradients match" in out


def test_the_ir_of_a_function_of_a_dict_names_its_leaves(tree_models, capsys, monkeypatch):
    monkeypatch.setenv("GRADFUSE_BACKEND", "interpreter")
    assert main(["ir", f"{tree_models}:mlp", *MLP_SHAPES, "--kind", "value_and_grad"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("def mlp_vjp(W1: f64[3,4], b1: f64[4], W2: f64[4,1], X: f64[N,3]")


@pytest.mark.parametrize(("args", "message"), [
    (("--shape", "params=3", "--shape", "params.W1=3,4"), "'params' is either an array or a tree"),
    ((*MLP_SHAPES, "--wrt", "params.W1"), "--wrt params.W1: name the argument, params"),
    (("--shape", "params.W1.=3",), "expected NAME=D1,D2,..."),
    (("--shape", "X=N,3", "--shape", "y=N,1"), "or one per leaf of a dict: --shape params.W=10,5"),
])
def test_bad_tree_shapes_are_usage_errors(tree_models, args, message, capsys):
    assert main(["ir", f"{tree_models}:mlp", *args]) == 2
    assert message in capsys.readouterr().err


def test_an_error_of_the_users_function_on_the_inputs_names_its_line(tree_models, capsys):
    """A leaf left out (params.b1) was the KeyError's traceback through the CLI's own code."""
    shapes = ["--shape", "params.W1=3,4", "--shape", "params.W2=4,1", "--shape", "X=N,3",
              "--shape", "y=N,1"]
    assert main(["ir", f"{tree_models}:mlp", *shapes]) == 1
    err = capsys.readouterr().err
    assert f"{tree_models} (line 6): KeyError: 'b1'" in err and "Traceback" not in err
