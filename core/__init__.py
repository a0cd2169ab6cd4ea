"""Runtime both processes share and schemas/ may not hold: script registry, queue snapshot, metrics, migrations, errors."""
