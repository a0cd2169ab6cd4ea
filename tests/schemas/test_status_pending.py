"""Pending per audience: accepted less what finished (applied, dropped, dead-lettered)."""

from __future__ import annotations

from schemas.status import AudienceCounts


def test_pending_is_accepted_minus_applied_dropped_and_dead() -> None:
    counts = AudienceCounts(1, backlog=40, accepted=100, applied=30, dropped=5, dead=2)
    assert counts.pending == 63


def test_the_backlog_is_the_floor() -> None:
    counts = AudienceCounts(1, backlog=40, accepted=100, applied=90, dropped=0)
    assert counts.pending == 40


def test_drained_is_zero() -> None:
    drained = AudienceCounts(1, backlog=0, accepted=3000, applied=2990, dropped=8, dead=2)
    assert drained.pending == 0
