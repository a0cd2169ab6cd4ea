"""Tests of schemas/: settings, shapes, log lines."""
