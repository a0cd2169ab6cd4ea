"""The fault suite's report: one row per scenario, printed and written at the end of the run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Row:
    """One scenario's line in the report."""

    scenario: str
    faults: int = 0
    sent: int = 0
    acknowledged: int = 0
    applied: int = 0
    lost: int = 0
    duplicated: int = 0
    dead: int = 0
    longest_stall_s: float = 0.0
    fuzzed: int = 0
    answers_5xx: int = 0
    drained: bool = True
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


REPORT: list[Row] = []


def render(rows: Sequence[Row]) -> str:
    """The report: one line per scenario and a total."""
    head = (
        "scenario",
        "faults",
        "sent",
        "acked",
        "applied",
        "lost",
        "dup",
        "dead",
        "stall s",
        "fuzzed",
        "5xx",
        "result",
    )
    lines = [head]
    for r in rows:
        lines.append(
            (
                r.scenario,
                str(r.faults),
                f"{r.sent:,}",
                f"{r.acknowledged:,}",
                f"{r.applied:,}",
                str(r.lost) if r.drained else "?",
                str(r.duplicated),
                str(r.dead),
                f"{r.longest_stall_s:.1f}",
                str(r.fuzzed),
                str(r.answers_5xx),
                "FAIL" if r.problems else "PASS",
            )
        )
    if rows:
        lines.append(
            (
                "total",
                str(sum(r.faults for r in rows)),
                f"{sum(r.sent for r in rows):,}",
                f"{sum(r.acknowledged for r in rows):,}",
                f"{sum(r.applied for r in rows):,}",
                str(sum(r.lost for r in rows)) if all(r.drained for r in rows) else "?",
                str(sum(r.duplicated for r in rows)),
                str(sum(r.dead for r in rows)),
                f"{max(r.longest_stall_s for r in rows):.1f}",
                str(sum(r.fuzzed for r in rows)),
                str(sum(r.answers_5xx for r in rows)),
                "FAIL" if any(r.problems for r in rows) else "PASS",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    text.insert(1, "-" * len(text[0]))
    if not all(r.drained for r in rows):
        text.append("lost ?: not drained, so what is missing may be late rather than lost")
    for r in rows:
        text.extend(f"{r.scenario}: {n}" for n in r.notes)
        text.extend(f"{r.scenario}: PROBLEM {p}" for p in r.problems)
    return "\n".join(text)
