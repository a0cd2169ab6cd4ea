"""The read API's page cursors (``/v1`` lists and ``/v1/status``): opaque to clients, the key of
the last item of a page."""

from __future__ import annotations

import base64
import binascii

import msgspec

from schemas.talon import Id, ProfileIntegrationId


class AudiencesAfter(msgspec.Struct, array_like=True, frozen=True, tag="a"):
    """``GET /v1/audiences``: the live audiences with a greater id."""

    audience_id: Id


class MembersAfter(msgspec.Struct, array_like=True, frozen=True, tag="m"):
    """``GET /v1/audiences/{audienceId}/memberships``: that audience's members whose profile id
    sorts after this one."""

    audience_id: Id
    profile_id: ProfileIntegrationId


class BusyAfter(msgspec.Struct, array_like=True, frozen=True, tag="w"):
    """``GET /v1/status``: the audiences with work after this one, busiest first."""

    pending: int
    audience_id: Id


class IdleAfter(msgspec.Struct, array_like=True, frozen=True, tag="i"):
    """``GET /v1/status``: the idle audiences with a greater id."""

    audience_id: Id


Cursor = AudiencesAfter | MembersAfter | BusyAfter | IdleAfter

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Cursor)


class BadCursor(ValueError):
    """A cursor that this API did not hand out."""


def encode(cursor: Cursor) -> str:
    return base64.urlsafe_b64encode(_encoder.encode(cursor)).rstrip(b"=").decode()


def decode(text: str) -> Cursor:
    """The cursor ``encode`` gave; ``BadCursor`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return _decoder.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError) as e:
        raise BadCursor(str(e)) from e
