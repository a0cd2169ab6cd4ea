"""Settings are described once, on their fields: README's table and --help are made from that."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import msgspec
import pytest

import ingest.main
import worker.main
from schemas import settings
from schemas.settings import Settings, descriptions, markdown_table, variable

README = Path(__file__).resolve().parents[2] / "README.md"
PROCESSES = {"cohortsync-edge": ingest.main, "cohortsync-worker": worker.main}


def _words(text: str) -> str:
    return " ".join(text.replace("`", "").split())


def _readme_table() -> str:
    lines = README.read_text().splitlines(keepends=True)
    start = lines.index("| variable | default | meaning |\n")
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "".join(lines[start:end])


def test_every_setting_has_a_description() -> None:
    texts = descriptions()
    assert list(texts) == [f.name for f in msgspec.structs.fields(Settings)]
    undescribed = [name for name, text in texts.items() if not text.strip()]
    assert undescribed == [], "describe them with Meta(description=...)"
    for name, text in texts.items():
        assert "|" not in text, f"{name}: breaks the README table"
        assert "\n" not in text, f"{name}: breaks the README table"


def test_a_field_without_a_description_is_found() -> None:
    class Partly(msgspec.Struct):
        described: Annotated[int, msgspec.Meta(ge=0, description="counted")] = 0
        bare: Annotated[int, msgspec.Meta(ge=0)] = 0

    assert descriptions(Partly) == {"described": "counted", "bare": ""}


def test_constraints_survive_the_descriptions() -> None:
    with pytest.raises(settings.SettingsError, match="COHORTSYNC_HTTP_PORT"):
        Settings.from_env({"COHORTSYNC_HTTP_PORT": "70000"})
    with pytest.raises(settings.SettingsError, match="COHORTSYNC_SHUTDOWN_GRACE_S"):
        Settings.from_env({"COHORTSYNC_SHUTDOWN_GRACE_S": "-1"})


def test_readme_table_is_the_generated_one() -> None:
    assert _readme_table() == markdown_table(), (
        "README.md's configuration table differs from the field descriptions; "
        "regenerate it with: python -m schemas.settings --markdown"
    )


def test_the_module_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    settings.main(["--markdown"])
    out = capsys.readouterr().out
    assert out == markdown_table()
    rows = out.splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == [
        f"| `{variable(name)}`" for name in descriptions()
    ]
    assert "| `COHORTSYNC_MAX_BACKLOG` | `50000000` | queued changes" in out


@pytest.mark.parametrize("prog", sorted(PROCESSES))
def test_help_lists_the_process_settings_with_their_descriptions(prog: str) -> None:
    module = PROCESSES[prog]
    text = module._parser().format_help()
    listed = re.findall(r"^  (COHORTSYNC_[A-Z0-9_]+) \(default: ", text, re.MULTILINE)
    assert listed == [variable(name) for name in module.USED_SETTINGS]
    for name in module.USED_SETTINGS:
        assert _words(descriptions()[name]) in _words(text), name


def test_every_setting_is_listed_by_a_process() -> None:
    listed = {name for module in PROCESSES.values() for name in module.USED_SETTINGS}
    assert listed == set(descriptions())
