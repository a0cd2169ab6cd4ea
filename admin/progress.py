"""Progress bars for command-line tools: redrawn in place on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from typing import TextIO

BAR_WIDTH = 30
# A terminal bar is redrawn at most this often; a plain stream gets a line per tenth.
REDRAW_INTERVAL_S = 0.1
PLAIN_STEPS = 10


def duration(seconds: float) -> str:
    """``42 s``, ``100 minutes``, ``3 h 05 min``: precise enough for an estimate."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"{minutes} minutes"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class Progress:
    """How far ``done`` is towards ``total``, with the throughput and time left so far."""

    def __init__(self, label: str, total: int, stream: TextIO, unit: str = "users") -> None:
        self.label = label
        self.total = max(total, 1)
        self.unit = unit
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self.done = 0
        self._drawn_at = 0.0
        self._steps_shown = -1

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if self.tty:
            if now - self._drawn_at >= REDRAW_INTERVAL_S:
                self._drawn_at = now
                self.stream.write("\r" + self._line(now))
                self.stream.flush()
            return
        steps = min(done, self.total) * PLAIN_STEPS // self.total
        if steps > self._steps_shown:
            self._steps_shown = steps
            print(self._line(now), file=self.stream, flush=True)

    def finish(self) -> None:
        """Draw the final state and end the line."""
        line = self._line(time.monotonic())
        if self.tty:
            self.stream.write("\r" + line + "\n")
            self.stream.flush()
        elif self._steps_shown < PLAIN_STEPS:
            print(line, file=self.stream, flush=True)

    def _line(self, now: float) -> str:
        fraction = min(max(self.done / self.total, 0.0), 1.0)
        filled = round(fraction * BAR_WIDTH)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        elapsed_s = now - self.started
        text = (
            f"{self.label} [{bar}] {fraction:4.0%} {self.done:,}/{self.total:,} {self.unit}"
            f" in {duration(elapsed_s)}"
        )
        if 0 < self.done < self.total and elapsed_s > 0:
            rate = self.done / elapsed_s
            text += f", {rate:,.0f}/s, about {duration((self.total - self.done) / rate)} left"
        return text
