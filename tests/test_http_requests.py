"""GraphQL requests over HTTP at their edges: every reason a request may not run is told,
405s name the methods that are allowed, and GET parameters are judged as parameters."""

import asyncio
import time
from typing import Any

import pytest

from tests.conftest import GraphQLClient
from tests.servers import Serve


def codes(answer: dict[str, Any]) -> list[str]:
    return sorted(e["extensions"]["code"] for e in answer.get("errors", []))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # Two anonymous operations: invalid twice, and no operation named.
        (
            "{ __typename } { viewer { role } }",
            ["BAD_REQUEST", "GRAPHQL_VALIDATION_FAILED", "GRAPHQL_VALIDATION_FAILED"],
        ),
        # An invalid subscription, over HTTP.
        ("subscription { ledgerEntries { bogus } }", ["BAD_REQUEST", "GRAPHQL_VALIDATION_FAILED"]),
        # Several operations unnamed, one of them a subscription.
        (
            "query A { __typename } subscription S { ledgerEntries { cursor } }",
            ["BAD_REQUEST", "BAD_REQUEST"],
        ),
    ],
)
async def test_every_reason_a_request_cannot_run_is_told(
    gql: GraphQLClient, query: str, expected: list[str]
) -> None:
    response = await gql.http.post("/graphql", json={"query": query})
    assert response.status_code == 200
    answer = response.json()
    assert answer["data"] is None
    assert codes(answer) == expected, answer


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_a_405_names_get_and_post(gql: GraphQLClient, method: str) -> None:
    response = await gql.http.request(method, "/graphql", json={"query": "{ __typename }"})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert codes(response.json()) == ["METHOD_NOT_ALLOWED"]


async def test_a_mutation_by_get_is_told_to_post(gql: GraphQLClient) -> None:
    query = 'mutation { createAccount(input: {id: "x"}) { errors { code } } }'
    response = await gql.http.get("/graphql", params={"query": query})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


async def test_get_parameters_are_judged_as_parameters(gql: GraphQLClient) -> None:
    query = "query Q($id: ID!) { account(id: $id) { id } }"
    response = await gql.http.get("/graphql", params={"query": query, "variables": "{bad"})
    assert response.status_code == 400
    assert "`variables` parameter" in response.json()["errors"][0]["message"]
    response = await gql.http.get("/graphql", params={"query": query, "variables": "[1]"})
    assert response.status_code == 400
    assert "must be an object or null" in response.json()["errors"][0]["message"]
    # null is no variables, as in a POST body.
    response = await gql.http.get(
        "/graphql", params={"query": "{ __typename }", "variables": "null"}
    )
    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize("name", [["A"], 5, {"a": 1}])
async def test_an_operation_name_must_be_a_string(gql: GraphQLClient, name: object) -> None:
    body = {"query": "query A { __typename }", "operationName": name}
    response = await gql.http.post("/graphql", json=body)
    assert response.status_code == 400
    message = response.json()["errors"][0]["message"]
    assert "`operationName` must be a string or null" in message
    assert "['A']" not in message


async def test_a_body_over_the_limit_sent_whole_is_refused_at_once(
    serve: Serve, database_url: str
) -> None:
    """Chunked, over the limit, its last chunk sent with the rest: 413 at once, not at the
    body's deadline (the server waited for more that would never come)."""
    server = serve("--database-url", database_url)
    body = b'{"query": "' + b"x" * (1_100_000) + b'"}'
    head = (
        b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    request = head + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = time.monotonic()
    writer.write(request)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    assert time.monotonic() - started < 5
    writer.close()
