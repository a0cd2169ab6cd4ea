"""Pending per audience: from the counters, bounded by what is really still queued."""

from __future__ import annotations

from schemas.status import AudienceCounts


def test_pending_is_accepted_minus_applied_and_dropped() -> None:
    counts = AudienceCounts(1, backlog=40, accepted=100, applied=30, dropped=5, arq_jobs=200)
    assert counts.pending == 65


def test_counts_trailing_commits_never_hide_the_backlog() -> None:
    counts = AudienceCounts(1, backlog=40, accepted=100, applied=90, dropped=0, arq_jobs=0)
    assert counts.pending == 40


def test_counts_a_killed_worker_never_wrote_do_not_stay_pending() -> None:
    # 3000 accepted, 2992 counted as applied before a SIGKILL; nothing is queued any more.
    drained = AudienceCounts(1, backlog=0, accepted=3000, applied=2992, dropped=0, arq_jobs=0)
    assert drained.pending == 0
    busy = AudienceCounts(1, backlog=0, accepted=3000, applied=2992, dropped=0, arq_jobs=3)
    assert busy.pending == 3
