"""``/openapi.json`` and ``/docs``: served without a key, every route described, and the
reference specifications' paths in it with the same fields and honestly marked statuses."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest

from ingest import openapi
from ingest.app import create_app
from schemas.settings import Settings
from tests.ingest import reference_specs as ref
from tests.support.edge import Client, running_edge, served_routes

REFERENCES = {"integration": ref.integration_api(), "cdp": ref.cdp_api()}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi.build(Settings())


async def test_document_is_served_without_a_key(settings: Settings) -> None:
    async with running_edge(settings) as anonymous:
        response = await anonymous.get(openapi.PATH)
        assert response.status == 200
        assert response.content_type == "application/json"
        served = await response.json()
    assert served["openapi"] == "3.1.0"
    assert served == openapi.build(settings)


@pytest.mark.parametrize("ops_port", [0, 9091], ids=["one port", "ops port"])
def test_every_route_is_described_and_every_description_served(
    settings: Settings, ops_port: int
) -> None:
    settings = msgspec.structs.replace(settings, ops_port=ops_port)
    document = openapi.build(settings)
    described = {(m, p) for p, item in document["paths"].items() for m in item}
    assert described == served_routes(create_app(settings))
    assert (("get", "/metrics") in described) == (not ops_port)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_paths_are_ours_with_the_same_fields(document: dict[str, Any], name: str) -> None:
    reference = REFERENCES[name]
    compared = 0
    for path, method, theirs in ref.operations(reference):
        ours = document["paths"][path][method]
        their_body = ref.body_schema(theirs.get("requestBody", {}).get("content"))
        our_body = ref.body_schema(ours.get("requestBody", {}).get("content"))
        if their_body is not None:
            assert our_body is not None, f"{method} {path}: no request body"
            assert ref.fields(document, our_body) == ref.fields(reference, their_body), (
                f"{method} {path} request"
            )
        for status, answer in theirs["responses"].items():
            if status not in ours["responses"]:
                continue
            their_schema = ref.body_schema(ref.response_content(reference, answer))
            our_schema = ref.body_schema(ours["responses"][status].get("content"))
            assert (their_schema is None) == (our_schema is None), f"{method} {path} {status}"
            if their_schema is not None and our_schema is not None:
                assert ref.fields(document, our_schema) == ref.fields(reference, their_schema), (
                    f"{method} {path} {status}"
                )
                compared += 1
    assert compared >= len(reference["paths"])


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_statuses_the_reference_does_not_list_are_marked(
    document: dict[str, Any], name: str
) -> None:
    for path, method, theirs in ref.operations(REFERENCES[name]):
        ours = document["paths"][path][method]
        listed = {int(s) for s in theirs["responses"]}
        answered = {int(s) for s in ours["responses"]}
        marked = {int(s) for s, a in ours["responses"].items() if a.get(openapi.NOT_IN_REFERENCE)}
        assert marked == answered - listed, f"{method} {path}"
        assert set(ours.get(openapi.REFERENCE_ONLY, [])) == listed - answered, f"{method} {path}"


def test_errors_take_the_surface_shape(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        expected = "CdpErrorBody" if path.startswith("/cdp/") else "ErrorBody"
        for method, op in item.items():
            for status, answer in op["responses"].items():
                if int(status) >= 400:
                    ref_ = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref_.endswith("/" + expected), f"{method} {path} {status}"


async def test_docs_page_is_self_contained(settings: Settings, document: dict[str, Any]) -> None:
    async with running_edge(settings) as anonymous:
        response = await anonymous.get("/docs")
        assert response.status == 200
        assert response.content_type == "text/html"
        csp = response.headers["Content-Security-Policy"]
        page = await response.text()
    assert "default-src 'none'" in csp
    assert "<script" not in page
    # Nothing loaded from elsewhere: no src attributes, no stylesheet links, no remote URLs.
    assert not re.search(r"\bsrc=|<link|https?://", page)
    for item in document["paths"].values():
        for op in item.values():
            assert f'id="{op["operationId"]}"' in page
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in page


async def test_documented_bounds_are_enforced(client: Client) -> None:
    # The name bound the document states (the Third-party API's) holds on the Integration API.
    long_name = {"name": "n" * 1001}
    response = await client.post("/v2/audiences", json=long_name)
    assert response.status == 400
    body = await response.json()
    assert body["errors"][0]["source"]["pointer"] == "/name"
    # Absent, yes; null, no.
    response = await client.post("/v2/audiences", json={"name": "x", "lastUpdate": None})
    assert response.status == 400
    assert (await response.json())["errors"][0]["source"]["pointer"] == "/lastUpdate"
    response = await client.post("/v2/audiences", json={"name": "n" * 1000})
    assert response.status == 201
