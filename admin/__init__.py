"""``cohortsync-admin`` and the simulator: operating cohortsync from a terminal."""
