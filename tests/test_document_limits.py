"""Documents and values built to be expensive or to break the server: fragment bombs, batch
results, malformed cursors and over-long integers. Each is refused with a coded error before
anything runs (or answered as a valid document), never with Python's own text."""

import base64
import json
from typing import Any

import httpx
import pytest

from bank_graphql.api.limits import QueryLimits
from tests.conftest import GraphQLClient, MakeClient
from tests.operations import funded, pay, transfer
from tests.servers import Serve
from tests.test_limits import assert_refused, post

# --- fragment bombs ------------------------------------------------------------------------


def bomb(n: int, root: str, leaf: str, *, inline: bool = False) -> str:
    """n fragments, each selecting the next twice: 2^n copies of `leaf` once expanded."""
    if inline:
        body = "... on {root} {{ ...F{next} }} ... {{ ...F{next} }}"
    else:
        body = "...F{next} ...F{next}"
    fragments = [
        f"fragment F{i} on {root} {{ " + body.format(root=root, next=i + 1) + " }" for i in range(n)
    ]
    fragments.append(f"fragment F{n} on {root} {{ {leaf} }}")
    operation = "mutation" if root == "Mutation" else "query"
    return f"{operation} {{ ...F0 }} " + " ".join(fragments)


def _deep(levels: int) -> str:
    return "a { " * (levels - 1) + "b" + " }" * (levels - 1)


# (name, root, leaf, inline, the code expected, a word of the message expected)
BOMBS = [
    ("cost", "Query", "accounts { nodes { id } }", False, "QUERY_TOO_COSTLY", "objects"),
    ("inline", "Query", "accounts { nodes { id } }", True, "QUERY_TOO_COSTLY", "objects"),
    (
        "mutation",
        "Mutation",
        'createAccount(input: {id: "bomb"}) { errors { code } }',
        False,
        "QUERY_TOO_COSTLY",
        "objects",
    ),
    ("aliases", "Query", "x: __typename", False, "GRAPHQL_VALIDATION_FAILED", "aliases"),
    ("depth", "Query", _deep(14), False, "GRAPHQL_VALIDATION_FAILED", "depth"),
]


async def test_fragment_bombs_are_refused_and_the_server_stays_responsive(
    serve: Serve, database_url: str
) -> None:
    # A real server: with validation exponential in the fragments, a request here would
    # block its event loop for hours; the client's timeout turns that into a failure.
    server = serve("--database-url", database_url, "--clock", "client")
    async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
        for n in (30, 60):
            for name, root, leaf, inline, code, word in BOMBS:
                document = bomb(n, root, leaf, inline=inline)
                response = await http.post("/graphql", json={"query": document})
                errors = assert_refused(response, code)
                assert any(word in e["message"] for e in errors), (name, n, errors)
            # Only scalars: a valid document, answered at once (execution visits each
            # fragment once per selection set).
            for inline in (False, True):
                document = bomb(n, "Query", "__typename", inline=inline)
                response = await http.post("/graphql", json={"query": document})
                assert response.json() == {"data": {"__typename": "Query"}}, response.text
        response = await http.post("/graphql", json={"query": '{ account(id: "bomb") { id } }'})
        assert response.json() == {"data": {"account": None}}
        assert (await http.get("/health")).status_code == 200


async def test_depth_through_a_fragment_counts_where_it_is_spread(
    make_client: MakeClient,
) -> None:
    client = await make_client(queries=QueryLimits(depth_max=3))
    fragment = "fragment T on Account { transactions { nodes { id } } }"
    shallow = '{ account(id: "x") { ...T } }'  # depth 3
    assert await client.ok(f"{shallow} {fragment}") == {"account": None}
    # The same fragment, also spread one level deeper (depth 4), is refused.
    deep = '{ account(id: "x") { ...T } accounts { nodes { ... on Account { ...T } } } }'
    errors = assert_refused(await post(client, f"{deep} {fragment}"), "GRAPHQL_VALIDATION_FAILED")
    assert any("maximum operation depth of 3" in e["message"] for e in errors), errors


async def test_aliases_in_a_fragment_count_each_time_it_is_spread(
    make_client: MakeClient,
) -> None:
    client = await make_client(queries=QueryLimits(aliases_max=4))
    fragment = "fragment F on Query { a: __typename b: __typename }"
    assert set(await client.ok(f"{{ ...F ... {{ ...F }} }} {fragment}")) == {"a", "b"}
    over = f"{{ ...F ... {{ ...F }} c: __typename }} {fragment}"
    errors = assert_refused(await post(client, over), "GRAPHQL_VALIDATION_FAILED")
    assert any("5 aliases" in e["message"] for e in errors), errors


async def test_checking_that_fields_of_one_name_merge_is_bounded(
    gql: GraphQLClient, make_client: MakeClient
) -> None:
    # Fields of one response name are compared pairwise, as are fragments spread side by
    # side: 200 of either would block the server for seconds; they are refused instead.
    repeated = "{ " + "accounts { nodes { id } } " * 200 + "}"
    fragments = " ".join(
        f"fragment F{i} on Query {{ accounts {{ nodes {{ id }} }} }}" for i in range(200)
    )
    spread = "{ " + " ".join(f"...F{i}" for i in range(200)) + " } " + fragments
    for document in (repeated, spread):
        assert_refused(await post(gql, document), "GRAPHQL_VALIDATION_FAILED")
    few = "{ " + "accounts { nodes { id } } " * 20 + "}"
    assert await gql.ok(few) == {"accounts": {"nodes": []}}
    low = await make_client(queries=QueryLimits(merge_checks_max=100))
    assert_refused(await post(low, few), "GRAPHQL_VALIDATION_FAILED")


# --- the cost of a batch's results --------------------------------------------------------

BATCH = """
mutation($transfers: [TransferInput!]!) {
  transferBatch(input: {transfers: $transfers}) { errors { code } %s }
}"""
HEAVY_RESULTS = """results {
  sourceAccount {
    transactions(first: 100) { nodes { id amount balanceAfter } }
    payments(first: 100) { nodes { id amount } }
  }
}"""
LIGHT_RESULTS = "results { balance entry { id } errors { code } }"


async def test_results_of_a_batch_from_a_variable_count_a_full_batch(
    gql: GraphQLClient,
) -> None:
    await funded(gql, "src", 10_000, 0)
    await funded(gql, "dst", 0, 0)
    items = [
        {"sourceAccountId": "src", "targetAccountId": "dst", "amount": 1, "idempotencyKey": "k"}
    ] * 1000
    errors = assert_refused(
        await post(gql, BATCH % HEAVY_RESULTS, transfers=items), "QUERY_TOO_COSTLY"
    )
    assert "more than the 25000 allowed" in errors[0]["message"], errors
    # The same through a fragment.
    fragmented = BATCH % "...R" + f" fragment R on TransferBatchPayload {{ {HEAVY_RESULTS} }}"
    assert_refused(await post(gql, fragmented, transfers=items), "QUERY_TOO_COSTLY")
    data = await gql.ok('{ account(id: "src") { balance } }')
    assert data["account"]["balance"] == 10_000  # nothing ran

    # A full batch asking a few fields of each result is fine.
    light = [{**item, "idempotencyKey": None} for item in items]
    data = await gql.ok(BATCH % LIGHT_RESULTS, {"transfers": light})
    results = data["transferBatch"]["results"]
    assert len(results) == 1000
    assert all(r["errors"] == [] for r in results)
    assert results[-1]["balance"] == 9_000


def _literal_batch(count: int) -> str:
    item = '{sourceAccountId: "src", targetAccountId: "dst", amount: 1}'
    return (
        "mutation { transferBatch(input: {transfers: [" + ", ".join([item] * count) + "]}) "
        "{ results { sourceAccount { transactions(first: 100) { nodes { id } } } } } }"
    )


async def test_results_of_a_literal_batch_count_its_items(make_client: MakeClient) -> None:
    client = await make_client(queries=QueryLimits(cost_max=500))
    await funded(client, "src", 100, 0)
    await funded(client, "dst", 0, 0)
    # Per item: the write, its result, the account and a page of 100 entries.
    errors = assert_refused(await post(client, _literal_batch(5)), "QUERY_TOO_COSTLY")
    assert "515 objects" in errors[0]["message"], errors
    data = await client.ok('{ account(id: "src") { balance } }')
    assert data["account"]["balance"] == 100
    data = await client.ok(_literal_batch(4))  # 412
    assert len(data["transferBatch"]["results"]) == 4
    # A variable may hold a full batch: 1,000 writes, the errors and 1,000 results.
    errors = assert_refused(
        await post(client, BATCH % "results { balance }", transfers=[]), "QUERY_TOO_COSTLY"
    )
    assert "2001 objects" in errors[0]["message"], errors


# --- cursors that are not positions -------------------------------------------------------


def _b64(raw: str | bytes) -> str:
    data = raw.encode() if isinstance(raw, str) else raw
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


BAD_CURSORS = [
    "YToA",  # "a:" and a NUL byte
    _b64("a:\x00"),
    _b64("a:acct\x00x"),
    _b64("a:"),
    _b64("a:" + "x" * 65),
    _b64("a:not an id"),
    _b64("a:é"),
    _b64("e:\x00:1"),
    _b64("e:1:\x00"),
    _b64("p:\x00"),
    _b64("p:"),
    _b64("p:-1"),
    _b64("p:0"),
    _b64("p:+1"),
    _b64("p: 1"),
    _b64("p:1 "),
    _b64("p:\u0661"),  # an Arabic-Indic digit: int() reads it, a cursor does not hold it
    _b64(f"p:{2**63}"),
    _b64("p:" + "9" * 5000),
    _b64("e:-1:1"),
    _b64("e:1:-1"),
    _b64(f"e:{2**53}:1"),
    _b64(f"e:1:{2**63}"),
    _b64("e:1:1:1"),
    _b64("e:1"),
    _b64("x:1:1"),
    _b64(b"a:\xff\xfe"),
    _b64(b"\xff\xfe\x00"),
    "",
    "=",
    "====",
    "!!!!",
    "YToA!",
    "Y ToA",
    "é",
    "\ud800",
    "a" * 5,
    "A" * 100_000,
]


@pytest.mark.parametrize(
    ("connection", "argument"),
    [
        ("accounts", "after"),
        ("transactions", "after"),
        ("transactions", "before"),
        ("payments", "after"),
    ],
)
async def test_a_cursor_that_is_not_a_position_is_bad_user_input(
    gql: GraphQLClient, connection: str, argument: str
) -> None:
    await funded(gql, "acct", 100, 0)
    await pay(gql, "acct", 10, 1)
    if connection == "accounts":
        query = "query($c: String) { accounts(after: $c) { nodes { id } } }"
    else:
        query = (
            f'query($c: String) {{ account(id: "acct") {{ {connection}({argument}: $c) '
            "{ nodes { id } } } }"
        )
    for cursor in BAD_CURSORS:
        # ASCII JSON, so a lone surrogate travels as its escape.
        content = json.dumps({"query": query, "variables": {"c": cursor}})
        response = await gql.http.post(
            "/graphql", content=content, headers={"Content-Type": "application/json"}
        )
        body = response.json()
        codes = [e["extensions"]["code"] for e in body.get("errors", [])]
        assert codes == ["BAD_USER_INPUT"], (cursor[:20], body)
        assert "Traceback" not in json.dumps(body)
        assert len(body["errors"][0]["message"]) < 200, body


async def test_every_cursor_the_server_gives_is_taken_back(gql: GraphQLClient) -> None:
    await funded(gql, "a.b:c@d-e_f", 100, 0)
    await funded(gql, "Z", 100, 0)
    await transfer(gql, "Z", "a.b:c@d-e_f", 7, 2)
    await pay(gql, "Z", 10, 3)
    data = await gql.ok("{ accounts { edges { cursor node { id } } } }")
    for edge in data["accounts"]["edges"]:
        page = await gql.ok(
            "query($c: String) { accounts(after: $c) { nodes { id } } }", {"c": edge["cursor"]}
        )
        assert edge["node"]["id"] not in [n["id"] for n in page["accounts"]["nodes"]]
    data = await gql.ok(
        '{ account(id: "Z") { transactions { edges { cursor } } payments { edges { cursor } } } }'
    )
    for connection, argument in (("transactions", "after"), ("transactions", "before")):
        for edge in data["account"][connection]["edges"]:
            await gql.ok(
                f'query($c: String) {{ account(id: "Z") {{ {connection}({argument}: $c) '
                "{ nodes { id } } } }",
                {"c": edge["cursor"]},
            )
    for edge in data["account"]["payments"]["edges"]:
        await gql.ok(
            'query($c: String) { account(id: "Z") { payments(after: $c) { nodes { id } } } }',
            {"c": edge["cursor"]},
        )


# --- over-long integers -------------------------------------------------------------------

PYTHON_TEXT = ("int_max_str_digits", "Exceeds the limit", "digits) for integer")

LONG_LITERALS = [
    "{ accounts(first: %s) { nodes { id } } }",
    "{ accounts(first: -%s) { nodes { id } } }",
    '{ account(id: "a") { transactions(first: %s) { nodes { id } } } }',
    '{ account(id: "a") { transactions(last: %s, from: %s) { nodes { id } } } }',
    '{ account(id: "a") { payments(first: %s) { nodes { id } } } }',
    '{ account(id: "a") { balance(at: %s) } }',
    '{ payment(accountId: "a", id: "payment1") { status(at: %s) } }',
    "{ topSpenders(first: %s) { accountId } }",
    "{ account(id: %s) { id } }",
    "{ __typename @include(if: %s) }",
    "query($n: Int = %s) { accounts(first: $n) { nodes { id } } }",
    'query($t: Timestamp = %s) { account(id: "a") { balance(at: $t) } }',
    'mutation { deposit(input: {accountId: "a", amount: %s}) { balance } }',
    'mutation { pay(input: {accountId: "a", amount: 1, timestamp: %s}) { balance } }',
    'mutation { createAccount(input: {id: "a", timestamp: %s}) { errors { code } } }',
    'mutation { transferBatch(input: {transfers: [{sourceAccountId: "a", '
    'targetAccountId: "b", amount: 1}, {sourceAccountId: "a", targetAccountId: "b", '
    "amount: %s}]}) { errors { code } } }",
]


def assert_clean_refusal(body: dict[str, Any], codes: set[str], case: object) -> None:
    text = json.dumps(body)
    assert body.get("data") is None, (case, text[:500])
    assert body.get("errors"), (case, text[:500])
    for marker in (*PYTHON_TEXT, "Traceback", "INTERNAL_SERVER_ERROR"):
        assert marker not in text, (case, text[:500])
    assert {e["extensions"]["code"] for e in body["errors"]} <= codes, (case, text[:500])
    assert len(text) < 2000, (case, text[:500])


async def test_an_over_long_integer_literal_is_refused_cleanly(gql: GraphQLClient) -> None:
    for digits in (65, 4300, 5000):
        for document in LONG_LITERALS:
            filled = document.replace("%s", "9" * digits)
            body = await gql.post(filled)
            assert_clean_refusal(body, {"GRAPHQL_VALIDATION_FAILED"}, (digits, document))
    assert await gql.ok('{ account(id: "a") { id } }') == {"account": None}
    # Up to 64 digits is an account id, or an ordinary out-of-range number.
    assert await gql.ok("{ account(id: %s) { id } }" % ("9" * 64)) == {"account": None}
    for document in LONG_LITERALS[:8]:
        body = await gql.post(document.replace("%s", "9" * 64))
        assert_clean_refusal(body, {"GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT"}, document)


VARIABLES = [
    ("query($n: Int) { accounts(first: $n) { nodes { id } } }", "n"),
    ("query($n: Int!) { topSpenders(first: $n) { accountId } }", "n"),
    ('query($t: Timestamp) { account(id: "a") { balance(at: $t) } }', "t"),
    ('mutation($m: Money!) { deposit(input: {accountId: "a", amount: $m}) { balance } }', "m"),
]


async def test_an_over_long_integer_variable_is_refused_cleanly(gql: GraphQLClient) -> None:
    for digits in (30, 4000, 4300, 5000):
        for document, variable in VARIABLES:
            body = json.dumps({"query": document, "variables": {variable: 0}})
            body = body.replace(": 0}}", ": " + "9" * digits + "}}")
            response = await gql.http.post(
                "/graphql", content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code < 500, response.text[:500]
            codes = {"BAD_USER_INPUT", "BAD_REQUEST"}
            assert_clean_refusal(response.json(), codes, (digits, document))


async def test_every_batch_item_counts_even_with_no_results_asked(gql: GraphQLClient) -> None:
    """Each item is a write: aliased batches cannot multiply the batch cap past the cost."""
    await funded(gql, "src", 10_000, 0)
    await funded(gql, "dst", 0, 0)
    items = [{"sourceAccountId": "src", "targetAccountId": "dst", "amount": 1}] * 1000
    aliased = (
        "mutation($transfers: [TransferInput!]!) {"
        + " ".join(
            f"b{n}: transferBatch(input: {{transfers: $transfers}}) {{ errors {{ code }} }}"
            for n in range(30)
        )
        + "}"
    )
    errors = assert_refused(await post(gql, aliased, transfers=items), "QUERY_TOO_COSTLY")
    assert "30030 objects" in errors[0]["message"], errors
    data = await gql.ok('{ account(id: "src") { balance } }')
    assert data["account"]["balance"] == 10_000  # nothing ran

    # One full batch, with no results asked, still runs.
    data = await gql.ok(BATCH % "", {"transfers": items})
    assert data["transferBatch"]["errors"] == []
    data = await gql.ok('{ account(id: "src") { balance } }')
    assert data["account"]["balance"] == 9_000


async def test_an_error_message_is_never_much_larger_than_its_request(gql: GraphQLClient) -> None:
    """graphql-core echoes a bad value, indented by its depth: messages are cut short."""
    nested = "[" * 150 + "1" + "]" * 150
    document = (
        "{"
        + " ".join(f"a{n}: accounts(first: {nested}) {{ nodes {{ id }} }}" for n in range(30))
        + "}"
    )
    response = await gql.http.post("/graphql", json={"query": document})
    errors = response.json()["errors"]
    assert errors
    assert all(e["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED" for e in errors)
    assert all(len(e["message"]) <= 1000 for e in errors), max(len(e["message"]) for e in errors)
    assert len(response.content) < 20 * len(document)
