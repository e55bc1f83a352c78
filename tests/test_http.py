"""The HTTP surface: GET queries, GraphiQL, /health, and malformed requests."""

import asyncio
import json
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from bank_graphql.ledger import PoolLimits
from tests.conftest import GraphQLClient, MakeClient
from tests.operations import BALANCE, DEPOSIT, balance, funded, transfer

STACK_TRACE_MARKERS = ("Traceback", 'File "')


def assert_no_stack_trace(response: httpx.Response) -> None:
    for marker in STACK_TRACE_MARKERS:
        assert marker not in response.text, response.text


def error_codes_of(response: httpx.Response) -> list[str]:
    body = response.json()
    assert body.get("errors"), body
    return [e["extensions"]["code"] for e in body["errors"]]


async def test_get_answers_a_query(gql: GraphQLClient) -> None:
    await funded(gql, "alice", 250)
    response = await gql.http.get(
        "/graphql", params={"query": '{ account(id: "alice") { id balance } }'}
    )
    assert response.status_code == 200
    body = response.json()
    assert "errors" not in body, body["errors"]
    assert body["data"] == {"account": {"id": "alice", "balance": 250}}


async def test_get_answers_a_query_with_variables(gql: GraphQLClient) -> None:
    await funded(gql, "alice", 250)
    response = await gql.http.get(
        "/graphql",
        params={"query": BALANCE, "variables": json.dumps({"id": "alice", "at": 1_000})},
    )
    assert response.status_code == 200
    body = response.json()
    assert "errors" not in body, body["errors"]
    assert body["data"] == {"account": {"balance": 250, "outgoing": 0}}


async def test_get_refuses_a_mutation_with_405_and_changes_nothing(gql: GraphQLClient) -> None:
    await funded(gql, "alice", 250)
    response = await gql.http.get(
        "/graphql",
        params={
            "query": DEPOSIT,
            "variables": json.dumps({"id": "alice", "amount": 100, "ts": 2_000}),
        },
    )
    assert response.status_code == 405
    assert_no_stack_trace(response)
    assert error_codes_of(response)[0] == "METHOD_NOT_ALLOWED"
    assert "POST" in response.headers.get("allow", "")
    assert await balance(gql, "alice") == 250

    response = await gql.http.get(
        "/graphql",
        params={"query": 'mutation { createAccount(input: {id: "bob"}) { errors { code } } }'},
    )
    assert response.status_code == 405
    assert error_codes_of(response)[0] == "METHOD_NOT_ALLOWED"
    assert (await gql.ok('{ account(id: "bob") { id } }'))["account"] is None


async def test_graphiql_is_served_to_browsers(gql: GraphQLClient) -> None:
    response = await gql.http.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


async def test_graphiql_can_be_turned_off(make_client: MakeClient) -> None:
    client = await make_client(graphiql=False)
    response = await client.http.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert_no_stack_trace(response)
    assert "graphiql" not in response.text.lower()
    # The API itself still answers.
    assert await client.ok("{ accounts { nodes { id } } }") == {"accounts": {"nodes": []}}


async def test_health_is_ok_while_the_database_answers(gql: GraphQLClient) -> None:
    response = await gql.http.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def _other_backends(admin: psycopg.AsyncConnection[Any], name: str) -> int:
    cursor = await admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_health_is_503_while_the_database_refuses_connections(
    make_client: MakeClient, server_url: str, database_url: str
) -> None:
    # PostgreSQL refuses to disallow connections to the database one is connected to, so
    # this test administers the test database from the server's maintenance database.
    async with await psycopg.AsyncConnection.connect(server_url, autocommit=True) as admin:
        await _health_through_an_outage(make_client, admin, database_url)


async def _health_through_an_outage(
    make_client: MakeClient, admin: psycopg.AsyncConnection[Any], database_url: str
) -> None:
    client = await make_client(pool=PoolLimits(min_size=2, max_size=4, pool_timeout_s=1.0))
    await funded(client, "alice", 250)
    response = await client.http.get("/health")
    assert response.status_code == 200

    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    assert isinstance(name, str)
    database = sql.Identifier(name)
    await admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(database))
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        for _ in range(100):
            if await _other_backends(admin, name) == 0:
                break
            await asyncio.sleep(0.05)
        assert await _other_backends(admin, name) == 0

        response = await client.http.get("/health")
        assert response.status_code == 503
        assert_no_stack_trace(response)

        # A GraphQL request meanwhile gets an error with a code, never a stack trace.
        response = await client.http.post(
            "/graphql", json={"query": BALANCE, "variables": {"id": "alice"}}
        )
        assert_no_stack_trace(response)
        assert error_codes_of(response)
    finally:
        await admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(database))

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        response = await client.http.get("/health")
        if response.status_code == 200 or loop.time() > deadline:
            break
        await asyncio.sleep(0.2)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert await balance(client, "alice") == 250


async def test_malformed_json_is_400_bad_request(gql: GraphQLClient) -> None:
    response = await gql.http.post(
        "/graphql",
        content=b'{"query": "{ accounts { nodes { id } } }"',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert_no_stack_trace(response)
    assert error_codes_of(response) == ["BAD_REQUEST"]


async def test_syntax_error_is_graphql_parse_failed(gql: GraphQLClient) -> None:
    response = await gql.http.post("/graphql", json={"query": "{ account(id: ) { id "})
    assert_no_stack_trace(response)
    body = response.json()
    assert error_codes_of(response) == ["GRAPHQL_PARSE_FAILED"]
    assert body.get("data") is None


async def test_unknown_field_is_graphql_validation_failed(gql: GraphQLClient) -> None:
    await funded(gql, "alice", 250)
    response = await gql.http.post(
        "/graphql", json={"query": '{ account(id: "alice") { id password } }'}
    )
    assert_no_stack_trace(response)
    assert set(error_codes_of(response)) == {"GRAPHQL_VALIDATION_FAILED"}
    assert response.json().get("data") is None


@pytest.mark.parametrize(
    "amount", ["100", 1.5, 100.0, -1, 2**53, 2**64, True, None, [100], {"value": 100}]
)
async def test_bad_variable_scalar_is_bad_user_input(gql: GraphQLClient, amount: object) -> None:
    await funded(gql, "alice", 250)
    response = await gql.http.post(
        "/graphql",
        json={"query": DEPOSIT, "variables": {"id": "alice", "amount": amount, "ts": 2_000}},
    )
    assert_no_stack_trace(response)
    assert error_codes_of(response) == ["BAD_USER_INPUT"]
    assert response.json().get("data") is None
    assert await balance(gql, "alice") == 250


@pytest.mark.parametrize("at", ["2000", 1.5, -1, 2**53])
async def test_bad_timestamp_variable_is_bad_user_input(gql: GraphQLClient, at: object) -> None:
    await funded(gql, "alice", 250)
    codes = await gql.error_codes(BALANCE, {"id": "alice", "at": at})
    assert codes == ["BAD_USER_INPUT"]


LIST = "{ accounts { nodes { id } } }"
HUGE_LITERAL = '{ account(id: "a") { balance(at: ' + "9" * 400 + ") } }"


def _raw(body: bytes, content_type: str = "application/json") -> dict[str, Any]:
    return {"content": body, "headers": {"Content-Type": content_type}}


def _json(payload: object) -> dict[str, Any]:
    return {"json": payload}


MALFORMED: list[tuple[str, dict[str, Any]]] = [
    ("not json", _raw(b"not json at all")),
    ("empty body", _raw(b"")),
    ("json scalar", _raw(b"42")),
    ("json null", _raw(b"null")),
    ("json array of numbers", _raw(b"[1, 2]")),
    ("json string", _raw(json.dumps(LIST).encode())),
    ("invalid utf-8", _raw(b'{"query": "\xff\xfe"}')),
    ("no query", _json({"variables": {}})),
    ("query not a string", _json({"query": 42})),
    ("variables not an object", _json({"query": LIST, "variables": [1]})),
    ("extensions not an object", _json({"query": LIST, "extensions": 1})),
    ("empty batch", _json([])),
    ("text/plain", _raw(LIST.encode(), "text/plain")),
    ("unknown operation name", _json({"query": f"query A {LIST}", "operationName": "B"})),
    ("two anonymous operations", _json({"query": LIST + LIST})),
    ("subscription", _json({"query": f"subscription {LIST}"})),
    ("deep nesting", _json({"query": "{" * 5_000 + "}" * 5_000})),
    ("huge integer literal", _json({"query": HUGE_LITERAL})),
    ("wrong argument type", _json({"query": '{ account(id: "a") { balance(at: "soon") } }'})),
    ("missing variable", _json({"query": BALANCE})),
]  # fmt: skip


@pytest.mark.parametrize("request_kwargs", [m[1] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
async def test_malformed_requests_get_coded_errors_and_no_stack_trace(
    gql: GraphQLClient, request_kwargs: dict[str, Any]
) -> None:
    try:
        response = await gql.http.post("/graphql", **request_kwargs)
    except Exception as exc:  # the app raised: a real server would answer 500
        pytest.fail(f"the server crashed instead of answering 400: {exc!r}")
    assert_no_stack_trace(response)
    assert response.status_code < 500, response.text
    assert all(code for code in error_codes_of(response))


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_other_methods_are_refused_without_stack_trace(
    gql: GraphQLClient, method: str
) -> None:
    response = await gql.http.request(
        method, "/graphql", json={"query": "{ accounts { nodes { id } } }"}
    )
    assert response.status_code == 405
    assert_no_stack_trace(response)
    assert error_codes_of(response) == ["METHOD_NOT_ALLOWED"]


async def test_get_without_query_is_a_coded_error(gql: GraphQLClient) -> None:
    response = await gql.http.get("/graphql", headers={"Accept": "application/json"})
    assert 400 <= response.status_code < 500
    assert_no_stack_trace(response)
    assert error_codes_of(response)


def _aliases(count: int) -> str:
    fields = []
    for i in range(count):
        fields.append(f'a{i}: account(id: "alice") {{ balance }}')
        fields.append(f'b{i}: account(id: "bob") {{ balance x: balance y: balance }}')
    fields.append('la: account(id: "alice") { transactions(last: 1) { nodes { balanceAfter } } }')
    fields.append('lb: account(id: "bob") { transactions(last: 1) { nodes { balanceAfter } } }')
    return "{ " + " ".join(fields) + " }"


async def test_many_aliases_of_one_balance_agree(gql: GraphQLClient, audit) -> None:
    total = 10_000
    await funded(gql, "alice", total)
    await funded(gql, "bob", 0)
    query = _aliases(25)
    stop = asyncio.Event()

    async def move_money() -> int:
        moves = 0
        while not stop.is_set():
            assert (await transfer(gql, "alice", "bob", 7))["errors"] == []
            assert (await transfer(gql, "bob", "alice", 3))["errors"] == []
            moves += 1
        return moves

    async def read() -> list[dict[str, Any]]:
        seen = []
        try:
            for _ in range(15):
                seen.append(await gql.ok(query))
        finally:
            stop.set()
        return seen

    moves, seen = await asyncio.gather(move_money(), read())
    assert moves > 0
    for data in seen:
        alice = {data[f"a{i}"]["balance"] for i in range(25)}
        bob = {data[f"b{i}"][k] for i in range(25) for k in ("balance", "x", "y")}
        assert len(alice) == 1, alice
        assert len(bob) == 1, bob
        # Never half of a transfer: the money is all there, in one consistent snapshot.
        assert alice.pop() + bob.pop() == total
        # Separate statements of the request read the same snapshot.
        for last, same in (("la", "a0"), ("lb", "b0")):
            newest = data[last]["transactions"]["nodes"]
            assert (newest[0]["balanceAfter"] if newest else 0) == data[same]["balance"]
    await audit()
