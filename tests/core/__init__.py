"""Tests of core/: what both processes share."""
