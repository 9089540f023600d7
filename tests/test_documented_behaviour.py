"""What README.md, docs/*.md and examples/ say a user can do, where no other test checked it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gradfuse_output_piped_into_a_reader_that_stops_early_is_no_traceback():
    # `gradfuse ir examples/mlp.gf | head -5`: head closes the pipe, the command's next
    # write fails; it printed a BrokenPipeError traceback from compiler/cli's main
    proc = subprocess.Popen([sys.executable, "-m", "compiler.cli", "ir",
                             str(ROOT / "examples" / "mlp.gf")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()  # before the command writes anything: it starts in about a second
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert err == ""
