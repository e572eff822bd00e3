"""Schemathesis fuzzes every operation of the app's own OpenAPI schema, valid and invalid inputs alike: no 5xx,
and every status the server answers is one its schema documents (a 400, never an undocumented 422)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, status_code_conformance

FUZZ_KEY = "fuzz-key"


@pytest.fixture(scope="module")
def fuzz_server(serve):
    # A shallow queue: a generated n in the thousands is refused at once instead of generating for minutes.
    return serve(api_key=FUZZ_KEY, max_queue=4)


@pytest.fixture
def api_schema(fuzz_server):
    headers = {"Authorization": f"Bearer {FUZZ_KEY}"}
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json", headers=headers)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_server_error_or_an_undocumented_status(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {FUZZ_KEY}"}, checks=[not_a_server_error, status_code_conformance], timeout=60)
