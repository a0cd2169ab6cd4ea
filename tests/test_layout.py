"""The tests mirror the packages; only tests/system starts processes, and all of it is marked."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
# Not the tests of one package: make test-deploy's, the benchmarks, shared helpers, API specs.
APART = {"system", "deploy_real", "bench", "support", "reference"}
# Helpers that start a process of ours.
PROCESS_HELPERS = {
    "tests.support.process": {"spawn"},
    "tests.support.admin": {"run_console_script"},
}


def packages() -> set[str]:
    return {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}


def package_tests() -> list[Path]:
    """Test modules under tests/<package>/ (the top level's are about the whole tree)."""
    return sorted(
        path
        for path in TESTS.rglob("test_*.py")
        if path.parent != TESTS and path.relative_to(TESTS).parts[0] not in APART
    )


def entry_modules() -> set[str]:
    """Modules whose run is a process of ours: the console scripts, make run, make bench."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return {target.partition(":")[0] for target in scripts.values()} | {
        "deploy.local",
        "tests.bench",
    }


def starts_processes(path: Path, entries: set[str]) -> list[str]:
    """What in ``path`` runs a process of ours: an entry module named, a process helper imported."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Constant) and node.value in entries:
            found.append(f"line {node.lineno}: runs {node.value}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = {alias.name for alias in node.names}
            if node.module.startswith(("tests.system", "tests.bench")) or (
                names & PROCESS_HELPERS.get(node.module, set())
            ):
                found.append(f"line {node.lineno}: imports {node.module}")
    return found


def test_every_test_module_sits_under_its_package() -> None:
    mirrors = packages()
    misplaced = [
        str(path.relative_to(TESTS))
        for path in package_tests()
        if path.relative_to(TESTS).parts[0] not in mirrors
    ]
    assert not misplaced, f"not under tests/<package>/ nor tests/system/: {misplaced}"
    assert [p for p in mirrors if not (TESTS / p / "__init__.py").exists()] == []


def test_only_tests_system_starts_processes() -> None:
    entries = entry_modules()
    offenders = {
        str(path.relative_to(TESTS)): found
        for path in package_tests()
        if (found := starts_processes(path, entries))
    }
    assert not offenders, f"move these to tests/system/: {offenders}"


def test_the_check_sees_a_process_started(tmp_path: Path) -> None:
    module = tmp_path / "test_x.py"
    module.write_text(
        "from tests.support.process import free_port, spawn\n"
        "from tests.support.admin import Admin, run_console_script\n"
        "from tests.bench.processes import children\n"
        "ARGS = ['-m', 'worker.main']\n"
    )
    assert len(starts_processes(module, entry_modules())) == 4


def collected(*args: str) -> str:
    """pytest's last line collecting ``args``: how many tests, how many deselected."""
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return run.stdout.strip().splitlines()[-1]


def test_not_system_leaves_tests_system_out() -> None:
    everything = collected("tests/system")
    assert "tests collected" in everything
    assert "deselected" not in everything
    assert "no tests collected" in collected("-m", "not system", "tests/system")
