"""Schema fuzzing (issue 21, "Must have" 2): schemathesis against the live /openapi.json.

Every operation the schema declares gets requests generated from it — valid ones
(positive) and, where it has parameters or a body, invalid ones (negative) — sent to a
real `python -m service` on 127.0.0.1, and every answer goes through all of
schemathesis's checks: no 5xx, a status code the schema declares, a declared content
type, a body that matches the declared schema (errors in the contract's shape), invalid
requests refused with 4xx, valid ones accepted.

Bounded: a fixed number of examples per operation and mode, derandomized (the same
requests every run), no shrinking, no database of past failures. `make soak` sends more.

Driven through schemathesis's Hypothesis strategies (`APIOperation.as_strategy`):
its pytest loader for a fixture (`schemathesis.pytest.from_fixture`, needed since the
server's URL is known only at run time) fails on pytest 9.2 (schemathesis 4.32.5 reads
and rewrites `Function._nodeid`, which pytest no longer has).

Not fuzzed: `GET /` (the web page; not in the schema) and `/static` (its files), which
are not part of the API.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from e2e_server import Server
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

# What the schema promises does not depend on the engine: make test fuzzes on SQLite,
# make soak on PostgreSQL too (and with more examples).
pytestmark = pytest.mark.postgres_in_soak
SOAK = os.environ.get("MMV_TEST_SOAK") == "1"
MAX_EXAMPLES = 40 if SOAK else 6

# What the schema can say about a request is its form. What the form cannot say is
# decided when the request is read, and answered with the documented 4xx codes: whether
# an uploaded file is media ffmpeg reads and within the caps (413, 415, 422), whether a
# vector has the active model's dimension, or a moment lies within its item (422),
# whether a cursor is one the server gave out (422), whether a text is within the
# configured length (413), whether a `filter` string is a JSON object (422). Valid
# requests may get those, and only on these operations.
REFUSED_BY_CONTENT: dict[str, list[str]] = {
    "POST /v1/items": ["413", "415", "422"],
    "POST /v1/search/upload": ["413", "415", "422"],
    "POST /v1/search": ["413", "422"],
    "GET /v1/search": ["413", "422"],
    "POST /v1/items/text": ["413"],
    "GET /v1/items": ["422"],
}
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # schemathesis's default
# A multipart form's fields are all text: the type violations schemathesis makes of the
# upload's optional `transcript` (null, a number) arrive as the text "null" or "5", which
# is a valid transcript. Its other checks (no 5xx, declared answers) still run on them.
TEXT_FORMS = ["POST /v1/items"]

# Operations with no parameter and no body: nothing about them can be invalid.
NO_INPUT = {"GET /healthz", "GET /readyz", "GET /metrics", "GET /v1/models"}
OPERATIONS = [
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /v1/search",
    "POST /v1/search",
    "POST /v1/search/upload",
    "GET /v1/items",
    "POST /v1/items",
    "POST /v1/items/text",
    "GET /v1/items/{item_id}",
    "GET /v1/items/{item_id}/media",
    "GET /v1/items/{item_id}/media-link",
    "DELETE /v1/items/{item_id}",
    "GET /v1/training/jobs",
    "POST /v1/training/jobs",
    "GET /v1/training/jobs/{job_id}",
    "POST /v1/training/jobs/{job_id}/cancel",
    "GET /v1/models",
    "POST /v1/models/{version}/activate",
    "DELETE /v1/models/{version}",
]
# Path parameters that name something that exists (else every request finds nothing).
EXISTING = {"item_id", "job_id", "version"}


@pytest.fixture(scope="module")
def api_schema(server: Server) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(
        {
            "seed": 21,
            "operations": [
                {
                    "include-name": name,
                    "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED + extra}},
                }
                for name, extra in REFUSED_BY_CONTENT.items()
            ]
            + [
                {"include-name": name, "checks": {"negative_data_rejection": {"enabled": False}}}
                for name in TEXT_FORMS
            ],
        }
    )
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)


@pytest.fixture(scope="module")
def existing(server: Server, media: dict[str, Path]) -> dict[str, str]:
    """An item with media, a queued training job (no worker runs here) and the active
    model version, for the operations that name one."""
    with httpx.Client(base_url=server.url, timeout=120) as c:
        clip = media["clip"].read_bytes()
        item = c.post("/v1/items", params={"asr": "false"}, files={"file": ("c.mp4", clip)})
        assert item.status_code in (200, 201), item.text
        job = c.post("/v1/training/jobs", json={})
        assert job.status_code == 202, job.text
        version = c.get("/readyz").json()["model_version"]
    return {"item_id": item.json()["id"], "job_id": job.json()["id"], "version": version}


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def test_every_operation_of_the_schema_is_fuzzed(api_schema: schemathesis.BaseSchema) -> None:
    labels = []
    for result in api_schema.get_all_operations():
        labels.append(result.ok().label)  # ok(): a broken definition fails here
    assert sorted(labels) == sorted(OPERATIONS)


def cases() -> list[Any]:
    out = []
    for label in OPERATIONS:
        modes = ["positive"] if label in NO_INPUT else ["positive", "negative"]
        for mode in modes:
            # Named paths fixed to what exists: valid requests only (a fixed path leaves
            # nothing of it to make invalid).
            variants = ["any"] + (["existing"] if "{" in label and mode == "positive" else [])
            for variant in variants:
                out.append(pytest.param(label, mode, variant, id=f"{label}-{mode}-{variant}"))
    return out


@pytest.mark.parametrize(("label", "mode", "variant"), cases())
def test_fuzz(
    api_schema: schemathesis.BaseSchema,
    existing: dict[str, str],
    session: requests.Session,
    label: str,
    mode: str,
    variant: str,
) -> None:
    method, path = label.split(" ", 1)
    operation = api_schema[path][method]
    fixed = None
    if variant == "existing":
        fixed = {name: existing[name] for name in EXISTING if "{" + name + "}" in path}
    strategy = operation.as_strategy(generation_mode=GenerationMode(mode), path_parameters=fixed)

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(session=session, timeout=60)

    fuzz()
