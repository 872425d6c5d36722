"""Property-based tests of the HTTP API from its own OpenAPI schema (schemathesis over real
HTTP to a uvicorn server on loopback): no generated request gets a 500, and every answer's
status code, headers and body are ones the schema documents."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from rnnkit.serve.app import ServeConfig, create_app
from rnnkit.tasks import TASKS, load_task
from tests.serving import running

OPERATIONS = [
    "GET /health",
    "GET /v1/models",
    *(f"POST /v1/models/{name}/predict" for name in TASKS),
    "POST /v1/models/lm/stream",
]


@pytest.fixture(scope="module")
def api_schema(tiny_models):
    # Small limits so that generated bodies reach the 413 paths as well as the answers.
    config = ServeConfig(max_inputs=4, max_chars=64, max_body=100_000, timeout_s=20)
    models = {name: load_task(d) for name, d in tiny_models.items()}
    with running(create_app(models, config)) as base:
        yield schemathesis.openapi.from_url(f"{base}/openapi.json")


def test_the_schema_lists_every_endpoint(api_schema):
    labels = sorted(result.ok().label for result in api_schema.get_all_operations())
    assert labels == sorted(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_generated_request_fails_and_every_answer_matches_the_schema(api_schema, label):
    (operation,) = [r.ok() for r in api_schema.get_all_operations() if r.ok().label == label]
    statuses = []

    @given(case=operation.as_strategy())
    @settings(
        max_examples=30 if "predict" in label else 10,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        response = case.call_and_validate()
        statuses.append(response.status_code)

    check()
    assert statuses and max(statuses) < 500
