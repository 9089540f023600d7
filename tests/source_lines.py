"""Line numbers of marked lines in a test file, for errors that must name the user's line."""

from __future__ import annotations


def marked_line(path: str, marker: str) -> int:
    """The number of the line of `path` that ends with `# marker`."""
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.rstrip().endswith(f"# {marker}") and "line_of" not in line:
                return number
    raise AssertionError(marker)
