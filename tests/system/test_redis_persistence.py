"""An acknowledged change survives redis-server being SIGKILLed, with either AOF fsync mode.

``python -m tests.system.redis_persistence`` prints the same figures over longer runs (the ones
quoted in deploy/README.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system.redis_persistence import measure
from tests.system.servers import Fsync


@pytest.mark.parametrize("fsync", ["always", "everysec"])
async def test_sigkill_loses_no_acknowledged_change(fsync: Fsync, tmp_path: Path) -> None:
    outcome = await measure(fsync, tmp_path, seconds=1.5)
    assert outcome.acknowledged > 0
    # Redis write()s the AOF before it answers; the kernel keeps what a killed process wrote.
    assert outcome.missing == 0
