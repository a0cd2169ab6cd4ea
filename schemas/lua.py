"""The Lua scripts that make multi-step Redis changes atomic, loaded by name."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

# A script line ``--#include <lib>`` stands for ``lua/lib/<lib>.lua``: what several scripts
# share (the backlog entry format) is written once.
_INCLUDE = re.compile(r"^--#include (\w+)$", re.MULTILINE)


@cache
def source(name: str) -> str:
    """The text of ``schemas/lua/<name>.lua``, its includes filled in."""
    return _INCLUDE.sub(lambda m: _read(f"lib/{m[1]}.lua"), _read(f"{name}.lua"))


def _read(path: str) -> str:
    return resources.files(__package__).joinpath("lua", path).read_text()
