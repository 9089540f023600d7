"""One run's results as tables: aligned text for the terminal, Markdown for RESULTS.md.

Every case is a small table, one row per implementation: the median and best
time, the ratio to the hand-written numba kernel (time / numba's), and how
many times faster gradfuse is than that row (its time / gradfuse's).
"""

from __future__ import annotations

from benchmarks.goals import Verdict
from benchmarks.harness import GRADFUSE, NUMBA, UNITS, Case, WorkloadResult, format_number

HEADER = ["implementation", "median", "best", "÷ numba", "gradfuse speed-up"]


def case_table(case: Case) -> list[list[str]]:
    """Header and one row per implementation."""
    scale = UNITS[case.unit]
    numba = case.seconds(NUMBA)
    mine = case.seconds(GRADFUSE)
    extra_keys = sorted({k for extra in case.extra.values() for k in extra})
    rows = [HEADER + extra_keys]
    for name, timing in case.times.items():
        label = name + (" (partial work)" if name in case.unchecked else "")
        rows.append([
            label,
            f"{format_number(timing.median * scale)} {case.unit}",
            f"{format_number(timing.best * scale)} {case.unit}",
            f"{timing.median / numba:.2f}x" if numba else "",
            f"{timing.median / mine:.2f}x" if mine else "",
            *_extras(case, name, extra_keys),
        ])
    for name, unfinished in case.unfinished.items():  # no figure: why, in its place
        rows.append([name, unfinished.reason, "", "", "", *_extras(case, name, extra_keys)])
    return rows


def _extras(case: Case, name: str, keys: list[str]) -> list[str]:
    found = case.extra.get(name, {})
    return [format_number(found[k]) if k in found else "" for k in keys]


def _aligned(rows: list[list[str]], indent: str, numeric: bool = True) -> list[str]:
    """Columns padded to their widest cell; all but the first right-aligned when `numeric`."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [c.rjust(w) if numeric and i else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        lines.append(indent + "  ".join(cells).rstrip())
    return lines


def text(results: list[WorkloadResult], verdicts: list[Verdict], header: str) -> str:
    lines = [header, ""]
    for result in results:
        lines.append(f"{result.id}  {result.title}")
        for case in result.cases:
            lines.append(f"  {case.label}")
            lines += _aligned(case_table(case), "    ")
        for key, value in result.info.items():
            lines.append(f"  {key}: {format_number(value) if isinstance(value, float) else value}")
        lines += [f"  note: {note}" for note in result.notes]
        lines.append("")
    lines.append("Goals (BENCHMARKS.md)")
    lines += _aligned([["", "status", "goal", "figures"]] + [
        [v.id, v.status, v.goal, v.figures] for v in verdicts], "  ", numeric=False)
    return "\n".join(lines)


def _markdown_table(rows: list[list[str]], numeric: bool = True) -> list[str]:
    lines = ["| " + " | ".join(rows[0]) + " |",
             "|" + "|".join("---:" if numeric and i else "---" for i in range(len(rows[0])))
             + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return lines


def markdown(results: list[WorkloadResult], verdicts: list[Verdict], header: str) -> str:
    lines = [header, ""]
    if verdicts:
        lines += ["### Goals", ""]
        lines += _markdown_table([["", "goal", "status", "figures"]] + [
            [v.id, v.goal, f"**{v.status}**" if v.status == "MISSED" else v.status, v.figures]
            for v in verdicts], numeric=False)
        lines.append("")
    for result in results:
        lines += [f"### {result.id}: {result.title}", ""]
        for case in result.cases:
            lines += [f"**{case.label}**", ""] + _markdown_table(case_table(case)) + [""]
        for key, value in result.info.items():
            shown = format_number(value) if isinstance(value, float) else value
            lines.append(f"- {key}: {shown}")
        lines += [f"- {note}" for note in result.notes]
        if lines[-1]:
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
