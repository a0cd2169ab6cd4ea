"""Tests of worker/: the arq worker in-process against real Postgres and Redis."""
