"""The arq worker: dispatch from backlogs, shared rate limit, group-committed upserts."""
