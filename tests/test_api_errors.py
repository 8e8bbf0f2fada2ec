"""Every error the API answers is in the product's bilingual shape and in the
OpenAPI document for the route that answers it (issue 10, item 12); a request
without credentials is told so (401) before its body is looked at."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from sync.protocol import MAX_BODY_BYTES, ErrorBody
from tests.test_server_api import Server, Window, _serve, open_window
from tests.test_server_api import cheap_password_hashing as cheap_password_hashing  # autouse


@pytest.fixture
async def server(sqlite_url: str) -> AsyncIterator[Server]:
    async for s in _serve(sqlite_url):
        yield s


# What each route can answer besides success, read from the code: the
# document must say at least this. Every route: 413 (body limit), 422 (a
# malformed request, NUL in its URL or headers), 503 (database unavailable).
EVERY = {413, 422, 503}
AUTH = {401}
BODY = {415}  # a body that is not JSON
EXPECTED: dict[tuple[str, str], set[int]] = {
    ("get", "/health"): EVERY,
    ("post", "/devices/enroll"): EVERY | BODY | {403},
    ("post", "/auth/login"): EVERY | BODY | AUTH | {423},
    ("post", "/auth/logout"): EVERY | AUTH,
    ("post", "/leases"): EVERY | BODY | AUTH | {409, 501},
    ("post", "/leases/held"): EVERY | BODY | AUTH,
    ("post", "/leases/numbers"): EVERY | BODY | AUTH | {409},
    ("post", "/sync/push"): EVERY | BODY | AUTH | {409},
    ("get", "/sync/pull"): EVERY | AUTH | {409},
    ("get", "/sync/snapshot"): EVERY | AUTH,
    ("get", "/sync/snapshot/image"): EVERY | AUTH | {409},
}
PUBLIC = {"/health", "/devices/enroll"}


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    return document["components"]["schemas"][ref.rsplit("/", 1)[-1]]


def assert_bilingual(response: httpx.Response, status: int | set[int]) -> dict[str, Any]:
    allowed = {status} if isinstance(status, int) else status
    assert response.status_code in allowed, (response.status_code, response.text[:300])
    body = ErrorBody.model_validate(response.json())
    assert body.code and body.message_zh and body.message_en
    assert body.message_zh != body.message_en
    return response.json()


async def test_the_openapi_document_lists_every_error_each_route_answers(server: Server) -> None:
    """Before: no route listed 401, 413 or 503; the push's 409 was missing;
    422 was FastAPI's HTTPValidationError, not the body the server sends."""
    document = (await server.http.get("/openapi.json")).json()
    found = operations(document)
    assert set(EXPECTED) <= set(found)
    missing = {
        route: sorted(statuses - {int(s) for s in found[route]["responses"]})
        for route, statuses in EXPECTED.items()
        if statuses - {int(s) for s in found[route]["responses"]}
    }
    assert missing == {}
    error_body = document["components"]["schemas"]["ErrorBody"]
    assert set(error_body["required"]) >= {"code", "message_zh", "message_en"}
    for route, operation in found.items():
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            schema = response["content"]["application/json"]["schema"]
            assert resolve(document, schema) == error_body, (route, status)
            assert response["description"], (route, status)


async def test_every_route_answers_what_its_document_says(server: Server) -> None:
    """Walks the document: each route without credentials, with a body that
    is not JSON, too large, or with NUL in its query, answers a status its
    document lists, in the bilingual shape."""
    document = (await server.http.get("/openapi.json")).json()
    window = await open_window(server)
    for (method, path), operation in operations(document).items():
        listed = {int(s) for s in operation["responses"]}
        sends_body = "requestBody" in operation
        probes: list[tuple[str, dict[str, Any], set[int]]] = [
            ("nul", {"params": {"x": "\x00"}, "headers": window.headers}, {422}),
            ("too large", {"content": b"x" * (MAX_BODY_BYTES + 1)}, {413}),
        ]
        if path not in PUBLIC:
            probes.append(("no credentials", {"content": b"{not json"}, {401}))
        if sends_body:
            probes += [
                (
                    "broken json",
                    {"content": b"{not json", "headers": window.headers | _json},
                    {422},
                ),
                (
                    "not utf-8",
                    {"content": b'{"a": "\xff\xfe"}', "headers": window.headers | _json},
                    {422},
                ),
                (
                    "not json",
                    {"content": b"a=1", "headers": window.headers | _form},
                    {415},
                ),
            ]
        for probe, kwargs, expected in probes:
            response = await server.http.request(method.upper(), path, **kwargs)
            assert response.status_code in listed, (method, path, probe, response.status_code)
            assert_bilingual(response, expected)


_json = {"Content-Type": "application/json"}
_form = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/leases", {}),
        ("/leases/held", {}),
        ("/auth/login", {}),
        ("/sync/push", {}),
        # a push's replica headers are read after its credentials
        ("/sync/push", {"X-Replica-Epoch": "e", "X-Replica-Cursor": "not a number"}),
    ],
)
async def test_a_request_without_credentials_gets_401_before_its_body_is_read(
    server: Server, path: str, headers: dict[str, str]
) -> None:
    """Before: invalid JSON (or a push's malformed replica headers) without
    credentials answered 422, telling a stranger what the body should be."""
    response = await server.http.post(path, content=b"{not json", headers=_json | headers)
    body = assert_bilingual(response, 401)
    assert body["code"] == "device_token_missing"


async def test_errors_outside_any_route_are_bilingual(server: Server) -> None:
    """Before: FastAPI's {"detail": "Not Found"}, in English only."""
    assert_bilingual(await server.http.get("/no-such-route"), 404)
    assert_bilingual(await server.http.delete("/sync/push"), 405)


async def test_a_push_that_is_not_json_is_refused_415(server: Server) -> None:
    """Before: a push sent as a form or plain text was parsed as JSON anyway."""
    window: Window = await open_window(server)
    response = await server.http.post(
        "/sync/push",
        content=b'{"device_time": "2026-01-01T00:00:00+08:00", "ops": []}',
        headers=window.headers | {"Content-Type": "text/plain"},
    )
    assert assert_bilingual(response, 415)["code"] == "request_not_json"
