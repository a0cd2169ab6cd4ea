"""Helpers the tests share: a running edge, worker data, processes, waiting for a condition."""
