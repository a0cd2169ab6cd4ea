"""Reading request bodies and parameters, writing JSON responses."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from ingest.errors import BadRequest, UnsupportedMediaType
from schemas.talon import BIGINT_MAX

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
# A \u0000 escape, not an escaped backslash followed by "u0000".
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")

JSON = "application/json"
# aiohttp's HTTP parser refuses a longer request line with a plain-text 400 before any route.
# Its default, 8190 bytes, is shorter than a valid path: a 1000-character profile id of 4-byte
# UTF-8 characters is 12,000 bytes percent-encoded. Every runner of the edge passes this.
MAX_REQUEST_LINE_BYTES = 16384


def has_nul(body: bytes) -> bool:
    """Whether a JSON text holds a NUL in a string (a raw NUL byte is invalid JSON anyway)."""
    # The substring test is one C scan; the regex only runs when it hits.
    return b"\\u0000" in body and _NUL_ESCAPE.search(body) is not None


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(value), status=status, content_type=JSON)


async def read_json(request: web.Request, decoder: msgspec.json.Decoder[T]) -> T:
    """The request's JSON body decoded and validated; 415 for another content type, 413 past
    the size limit, 400 for anything the decoder or Postgres would refuse."""
    if request.content_type != JSON:
        raise UnsupportedMediaType(
            "Unsupported content type",
            f"Expected {JSON}, got {request.content_type}",
            parameter="Content-Type",
        )
    body = await request.read()
    # Postgres text and jsonb cannot hold NUL; refuse it here rather than fail later.
    if has_nul(body):
        raise BadRequest(
            "Invalid request body", "Strings must not contain NUL (\\u0000)", pointer=""
        )
    try:
        return decoder.decode(body)
    except UnicodeDecodeError as e:
        raise BadRequest("Malformed JSON", "Request body is not valid UTF-8", pointer="") from e


def path_id(request: web.Request, name: str) -> int:
    """A positive integer id from the path, else 400 naming the parameter."""
    raw = request.match_info[name]
    value = _int(raw)
    if value is None or not 1 <= value <= BIGINT_MAX:
        raise BadRequest(
            "Invalid path parameter", f"{name} must be a positive integer", parameter=name
        )
    return value


def path_text(request: web.Request, name: str) -> str:
    """A 1 to 1000 character id from the path (a profile's or a third party's), else 400."""
    value = request.match_info[name]
    if not 1 <= len(value) <= 1000 or "\x00" in value:
        raise BadRequest(
            "Invalid path parameter",
            f"{name} must be 1 to 1000 characters, without NUL",
            parameter=name,
        )
    return value


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high], else 400 naming it."""
    raw = request.query.get(name)
    if raw is None:
        return default
    value = _int(raw)
    if value is None or not low <= value <= high:
        raise BadRequest(
            "Invalid query parameter",
            f"{name} must be an integer from {low} to {high}",
            parameter=name,
        )
    return value


def _int(raw: str) -> int | None:
    # int() would also take " 7", "+7" and "1_000"; ids and counts are plain digits.
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        return None
    return int(raw)
