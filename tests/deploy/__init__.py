"""Tests of deploy/: its files checked by the tools operators run."""
