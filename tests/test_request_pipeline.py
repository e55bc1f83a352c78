"""What every request goes through before and around GraphQL: the media type of its body,
a client leaving mid-body, the cache of parsed documents, and error messages that keep
the schema to themselves when introspection is off."""

import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bank_graphql.api.limits import QueryLimits
from bank_graphql.api.schema import BankSchema
from bank_graphql.edge.app import create_app
from bank_graphql.edge.settings import Settings
from bank_graphql.ledger import ClockMode
from tests.conftest import GraphQLClient, MakeClient, admin_headers
from tests.servers import Serve

# --- media type of the body --------------------------------------------------------------

QUERY = json.dumps({"query": "{ __typename }"}).encode()

JSON_MEDIA_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json;charset=UTF-8",
    "APPLICATION/JSON",
    "Application/Json ; charset=utf-8",
]
OTHER_MEDIA_TYPES = [
    "application/jsonx",
    "application/json-patch+json",
    "xapplication/json",
    "text/json",
    "application/graphql",
    "application/graphql-response+json",  # a response media type, for Accept
    "text/plain; note=application/json",
    "multipart/form-data; boundary=application/json",
    "",
]


async def test_a_json_body_is_accepted_in_any_spelling_and_nothing_else(
    gql: GraphQLClient,
) -> None:
    for media_type in JSON_MEDIA_TYPES:
        headers = {"Content-Type": media_type}
        response = await gql.http.post("/graphql", content=QUERY, headers=headers)
        assert response.status_code == 200, (media_type, response.text)
        assert response.json() == {"data": {"__typename": "Query"}}
    for media_type in OTHER_MEDIA_TYPES:
        headers = {"Content-Type": media_type} if media_type else {}
        response = await gql.http.post("/graphql", content=QUERY, headers=headers)
        assert response.status_code == 415, (media_type, response.text)
        body = response.json()
        assert body["data"] is None
        assert [e["extensions"]["code"] for e in body["errors"]] == ["UNSUPPORTED_MEDIA_TYPE"]


# --- a client leaving mid-body -----------------------------------------------------------


def _log_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def test_a_client_leaving_mid_body_is_logged_once_without_an_error(
    serve: Serve, database_url: str
) -> None:
    server = serve("--database-url", database_url, "--no-graphiql")
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /graphql HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"query": "'
        )
        time.sleep(0.2)  # let the server start reading the body before the client leaves
    deadline = time.monotonic() + 10
    while "client disconnected" not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    # And the server still answers.
    assert httpx.post(f"{server.base}/graphql", json={"query": "{ __typename }"}).status_code == 200
    log = server.log.read_text()
    assert "Traceback" not in log, log
    lines = _log_lines(log)
    assert not [line for line in lines if line.get("level") in {"ERROR", "CRITICAL"}], log
    left = [line for line in lines if line.get("message") == "client disconnected"]
    assert len(left) == 1, log
    assert left[0]["outcome"] == "disconnected"
    assert left[0]["level"] == "INFO"


# --- the document cache ------------------------------------------------------------------


@pytest.fixture
async def app_schema(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, BankSchema]]:
    """An HTTP client of the app, and the schema that app serves."""
    app = create_app(
        Settings(database_url=database_url, clock=ClockMode.CLIENT, sweeper_enabled=False)
    )
    endpoint = next(r.endpoint for r in app.routes if getattr(r, "path", "") == "/graphql")
    schema = endpoint.schema  # type: ignore[attr-defined]
    assert isinstance(schema, BankSchema)
    headers = await admin_headers(database_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=headers
        ) as http:
            yield http, schema


async def test_the_document_cache_stays_within_its_byte_budget(
    app_schema: tuple[httpx.AsyncClient, BankSchema],
) -> None:
    from bank_graphql.api.documents import (
        CACHED_DOCUMENT_BYTES_MAX,
        DOCUMENT_CACHE_BYTES_MAX,
        DocumentCache,
    )

    http, schema = app_schema
    assert schema.documents.bytes_max == DOCUMENT_CACHE_BYTES_MAX
    assert schema.documents.document_bytes_max == CACHED_DOCUMENT_BYTES_MAX
    assert CACHED_DOCUMENT_BYTES_MAX < DOCUMENT_CACHE_BYTES_MAX <= 64 * 2**20
    # The same rules with a budget small enough to overrun in a test.
    budget = 2 * 2**20
    cache = schema.documents = DocumentCache(bytes_max=budget, document_bytes_max=budget // 4)
    small = '{ account(id: "alice") { id balance } }'
    for _ in range(2):
        response = await http.post("/graphql", json={"query": small})
        assert response.json() == {"data": {"account": None}}
    assert cache.get(small) is not None
    # Distinct documents of 100 kB each (a long string, few tokens): past the budget the
    # least recently used go, and the total stays within it.
    padding = "x" * 100_000
    count = budget // 100_000 + 10
    for i in range(count):
        query = f'{{ account(id: "{i}{padding}") {{ id }} }}'
        response = await http.post("/graphql", json={"query": query})
        assert response.status_code == 200, response.text
        assert 0 < cache.size_bytes <= budget
    assert len(cache) < count
    assert cache.get(small) is None  # the oldest went first
    # A document over its share of the budget (by its syntax tree) is not kept at all.
    many_tokens = "{ " + "__typename " * 1_000 + "}"
    response = await http.post("/graphql", json={"query": many_tokens})
    assert response.status_code == 200, response.text
    assert cache.get(many_tokens) is None
    assert cache.size_bytes <= budget


async def test_a_cached_document_answers_as_a_fresh_one(gql: GraphQLClient) -> None:
    """Parse and validation errors come from the cache exactly as they did the first time."""
    for query in ("{ account(id: ) { id ", '{ account(id: "a") { password } }', "{ __typename }"):
        first = (await gql.http.post("/graphql", json={"query": query})).json()
        again = (await gql.http.post("/graphql", json={"query": query})).json()
        assert first == again


# --- no suggestions without introspection -------------------------------------------------

# Misspelt names of the schema: graphql-core would suggest the right ones ("Did you mean").
MISSPELT: list[tuple[str, str, dict[str, Any] | None]] = [
    ("field", '{ acount(id: "x") { id } }', None),
    ("nested field", '{ account(id: "x") { balanc } }', None),
    ("argument", '{ account(idd: "x") { id } }', None),
    ("nested argument", '{ account(id: "x") { transactions(frist: 1) { nodes { id } } } }', None),
    ("fragment type", "{ ...F } fragment F on Qery { __typename }", None),
    ("inline fragment type", "{ ... on Qery { __typename } }", None),
    ("variable type", "query($x: Strin) { account(id: $x) { id } }", None),
    ("input field", 'mutation { createAccount(input: {idd: "x"}) { errors { code } } }', None),
    (
        "input field of a variable",
        "mutation($i: CreateAccountInput!) { createAccount(input: $i) { errors { code } } }",
        {"i": {"idd": "x"}},
    ),
    (
        "input field in a list",
        "mutation($i: TransferBatchInput!) { transferBatch(input: $i) { errors { code } } }",
        {"i": {"transfers": [{"sourceAcountId": "a", "targetAccountId": "b", "amount": 1}]}},
    ),
    ("enum value", "query($k: EntryKind = DEPOST) { account(id: $k) { id } }", None),
]


def suggestion_free(errors: list[dict[str, Any]]) -> bool:
    return not any("did you mean" in e["message"].lower() for e in errors)


async def test_without_introspection_no_error_suggests_a_name(make_client: MakeClient) -> None:
    hidden = await make_client(queries=QueryLimits(introspection=False))
    shown = await make_client()
    for name, query, variables in MISSPELT:
        request = {"query": query, "variables": variables}
        body = (await hidden.http.post("/graphql", json=request)).json()
        assert body.get("data") is None, (name, body)
        assert body["errors"], (name, body)
        assert all(e["extensions"]["code"] for e in body["errors"]), (name, body)
        assert suggestion_free(body["errors"]), (name, body)
        # With introspection on, the same request still gets its suggestion.
        body = (await shown.http.post("/graphql", json=request)).json()
        assert not suggestion_free(body["errors"]), (name, body)
