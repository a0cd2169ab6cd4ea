"""The house's import rules, read from the source: dependencies point one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {p.parent.name for p in ROOT.glob("*/__init__.py")}
# What each package may import of ours (ARCHITECTURE.md's table): ingest, worker and admin never
# import each other. Libraries are free except where THIRD_PARTY_BANNED says.
ALLOWED: dict[str, set[str]] = {
    "schemas": set(),
    "core": {"schemas"},
    "ingest": {"core", "schemas"},
    "worker": {"core", "schemas"},
    "admin": {"core", "schemas"},
    "deploy": {"admin", "core", "schemas"},
}
# schemas/ is shapes only: a process boundary's types must not pull in a client library.
THIRD_PARTY_BANNED: dict[str, set[str]] = {
    "schemas": {"redis", "asyncpg", "aiohttp", "arq", "prometheus_client", "hiredis"},
}


def imports_of(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, wherever the import statement stands."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_rules_cover_every_package() -> None:
    assert OURS - {"tests"} <= set(ALLOWED), OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    allowed = ALLOWED[package] | {package}
    banned = THIRD_PARTY_BANNED.get(package, set())
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        names = imports_of(path)
        ours = (names & OURS) - allowed
        libraries = names & banned
        if ours or libraries:
            wrong.append(f"{path.relative_to(ROOT)}: {sorted(ours | libraries)}")
    assert not wrong, f"{package} may import only {sorted(allowed)} of ours:\n" + "\n".join(wrong)


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    from worker.app import create_worker\n    import redis.asyncio\n"
    )
    assert imports_of(module) == {"worker", "redis"}


def test_admin_stands_on_core_and_schemas() -> None:
    """What admin/ shares with the edge it reads through core/ and schemas/, never ingest/."""
    used = set().union(*(imports_of(path) for path in (ROOT / "admin").rglob("*.py")))
    assert used & OURS >= {"admin", "core", "schemas"}
