"""One row per measurement, printed as a single table."""

from __future__ import annotations

from dataclasses import dataclass

HEADER = ("what", "measured", "baseline", "ratio", "target", "result")


@dataclass(frozen=True)
class Row:
    what: str
    measured: str
    baseline: str
    ratio: str
    target: str
    passed: bool
    # The measurement could not be made; ``measured`` says why.
    error: bool = False

    def cells(self) -> tuple[str, ...]:
        return (
            self.what,
            self.measured,
            self.baseline,
            self.ratio,
            self.target,
            "PASS" if self.passed else "MISS",
        )


def failed(what: str, target: str, error: BaseException) -> Row:
    """A row whose measurement could not be made: the table still has every row."""
    reason = f"error: {type(error).__name__}: {error}".splitlines()[0][:120]
    return Row(what, reason, "-", "-", target, passed=False, error=True)


def render(rows: list[Row]) -> str:
    """A Markdown table, readable in a terminal and pasted as it is into the README."""
    lines = [HEADER, *(r.cells() for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]

    def fmt(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(HEADER), rule, *(fmt(c) for c in lines[1:])])


def rate(per_s: float, unit: str) -> str:
    return f"{per_s:,.0f} {unit}/s"


def times(ratio: float) -> str:
    return f"{ratio:,.2f}x" if ratio < 10 else f"{ratio:,.0f}x"
