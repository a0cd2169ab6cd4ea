"""Property-based fuzz of every operation: schemathesis generates valid and invalid requests from
our own ``/openapi.json`` and from Talon.One's reference specifications, and sends them to the
edge on a real port with real Redis and Postgres.

Against our document every check applies, including that invalid data is refused and that each
status is documented. Against the references (the contract, which this edge departs from where
``/openapi.json`` says so) the checks that hold whatever the departures: no 5xx, responses in
the documented schema for the statuses both list, rejections in the contract's error shape,
nothing enqueued by a rejection.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from ingest import openapi
from schemas.settings import Settings
from tests.ingest import reference_specs
from tests.ingest.fuzz_support import EXAMPLES, TIMEOUT_S, Edge, fuzzed_edge

pytestmark = pytest.mark.timeout(TIMEOUT_S)

# Destructive operations last, so the audiences seeded below serve the others first.
_LAST = ("delete",)


def refuses_invalid_data(ctx: Any, response: Any, case: schemathesis.Case[Any]) -> bool | None:
    """schemathesis's ``negative_data_rejection``, but for query parameters the operation does
    not declare: the edge ignores those, as most APIs do (the document says so)."""
    declared = {p.name for p in case.operation.query}
    if set(case.query or {}) - declared:
        return None
    result: bool | None = negative_data_rejection(ctx, response, case)
    return result


OWN_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    refuses_invalid_data,
    ignored_auth,
]
REFERENCE_CHECKS = [
    not_a_server_error,
    content_type_conformance,
    response_schema_conformance,
    refuses_invalid_data,
]


@pytest.fixture
def edge(settings: Settings, key: str, redis: Any, redis_url: str) -> Iterator[Edge]:
    with fuzzed_edge(settings, key, redis_url) as found:
        yield found


def _fuzz(edge: Edge, schema: schemathesis.BaseSchema, checks: list[Any], label: str) -> int:
    """Run every operation of ``schema`` in both modes; the number of requests sent."""
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    operations.sort(key=lambda op: op.method.lower() in _LAST)
    sent = 0
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            name = f"{label} {mode.value} {operation.method.upper()} {operation.path}"
            try:
                sent += _fuzz_operation(edge, operation, mode, checks, name)
            except Unsatisfiable:
                # Nothing to make invalid: the operation takes no parameters and no body.
                assert mode is GenerationMode.NEGATIVE, name
            except Exception as e:
                edge.problems.append(f"{name}: {e}")
    return sent


def _fuzz_operation(
    edge: Edge, operation: Any, mode: GenerationMode, checks: list[Any], name: str
) -> int:
    sent = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case[Any]) -> None:
        nonlocal sent
        with edge.judged(name) as answered:
            # The key sent explicitly: it overrides any Authorization value generated.
            response = case.call(base_url=edge.url, session=edge.session, headers=edge.auth)
            answered.append(response)
            sent += 1
        case.validate_response(response, checks=checks)

    run()
    return sent


def _report(edge: Edge, sent: int, started: float) -> str:
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(edge.statuses.items()))
    return f"{sent} requests in {time.monotonic() - started:.1f} s; statuses {statuses}"


def test_fuzz_against_our_document(edge: Edge, settings: Settings) -> None:
    started = time.monotonic()
    schema = schemathesis.openapi.from_dict(openapi.build(settings))
    sent = _fuzz(edge, schema, OWN_CHECKS, "ours")
    print(_report(edge, sent, started))
    assert not edge.problems, "\n\n".join(edge.problems)
    assert sent >= EXAMPLES
    assert not any(status >= 500 for status in edge.statuses)


@pytest.mark.parametrize(
    "load", [reference_specs.integration_api, reference_specs.cdp_api], ids=["integration", "cdp"]
)
def test_fuzz_against_the_reference(edge: Edge, load: Any) -> None:
    started = time.monotonic()
    schema = schemathesis.openapi.from_dict(load())
    sent = _fuzz(edge, schema, REFERENCE_CHECKS, "reference")
    print(_report(edge, sent, started))
    assert not edge.problems, "\n\n".join(edge.problems)
    assert not any(status >= 500 for status in edge.statuses)
