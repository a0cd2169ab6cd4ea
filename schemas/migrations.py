"""Versioned SQL migrations shipped with the package, in the order they apply."""

from __future__ import annotations

from importlib import resources

import msgspec


class Migration(msgspec.Struct, frozen=True):
    version: int
    name: str
    sql: str


def all_migrations() -> list[Migration]:
    """Every ``migrations/NNNN_name.sql`` file, sorted by its number."""
    found = []
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    return sorted(found, key=lambda m: m.version)
