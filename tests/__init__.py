"""cohortsync test suite: real Redis, real Postgres."""
