"""Talon.One's reference specifications (copied into tests/reference/) as OpenAPI documents,
and the fields a schema in them or in ours describes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
INTEGRATION = REFERENCE / "talon-one-integration-api"
CDP = REFERENCE / "talon-one-cdp-api" / "cdp-openapi.yaml"
AMPLITUDE = REFERENCE / "amplitude"
_PATH_COMMENT = re.compile(r"^# path: (\S+)$", re.MULTILINE)


def integration_api() -> dict[str, Any]:
    """The Integration API's per-path fragments (each starts ``# path: /v2/...``) as one
    OpenAPI 3.0 document."""
    paths = {}
    for fragment in sorted(INTEGRATION.glob("*.yaml")):
        text = fragment.read_text()
        match = _PATH_COMMENT.search(text)
        assert match, f"{fragment.name} names no path"
        paths[match.group(1)] = yaml.safe_load(text)
    return {
        "openapi": "3.0.3",
        "info": {"title": "Talon.One Integration API, audience endpoints", "version": ""},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "api_key_v1": {"type": "apiKey", "in": "header", "name": "Authorization"}
            }
        },
    }


def cdp_api() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CDP.read_text())
    return document


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, method, operation) for every operation of ``document``."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in {"get", "put", "post", "delete", "patch"}:
                yield path, method, operation


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def fields(document: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> set[str]:
    """Every property path a schema describes (``errors[].source.pointer``), through $ref,
    allOf and anyOf; null alternatives add nothing."""
    schema = _resolve(document, schema)
    found: set[str] = set()
    for part in (*schema.get("allOf", ()), *schema.get("anyOf", ())):
        found |= fields(document, part, prefix)
    if schema.get("type") == "array" and "items" in schema:
        found |= fields(document, schema["items"], prefix + "[]")
    for name, sub in schema.get("properties", {}).items():
        found.add(prefix + "." + name)
        found |= fields(document, sub, prefix + "." + name)
    return found


def body_schema(content: dict[str, Any] | None) -> dict[str, Any] | None:
    if not content or "application/json" not in content:
        return None
    schema: dict[str, Any] = content["application/json"]["schema"]
    return schema


def response_content(document: dict[str, Any], response: dict[str, Any]) -> dict[str, Any] | None:
    """A response's ``content``, through a ``$ref`` to ``components/responses``."""
    content: dict[str, Any] | None = _resolve(document, response).get("content")
    return content
