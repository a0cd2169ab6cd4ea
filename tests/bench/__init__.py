"""``make bench``: the performance targets of SPEC §5, each measured beside a baseline."""
