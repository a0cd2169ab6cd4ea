"""Tests of ingest/: the edge in-process, one surface at a time."""
