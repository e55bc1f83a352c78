"""What one request may ask: depth, tokens, aliases, cost, body size, introspection, and the
browser-facing defaults (CSRF, CORS).

Every limit refuses what is over it with a coded GraphQL error before anything runs (no
`data`, no account written) and lets generous real queries through with the defaults.
"""

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from graphql import Source, TokenKind, get_introspection_query
from graphql.language.lexer import Lexer

from bank_graphql.api.limits import QueryLimits
from tests.conftest import GraphQLClient, MakeClient

STACK_TRACE_MARKERS = ("Traceback", 'File "')

ACCOUNT_COUNT = 100


def assert_refused(response: httpx.Response, code: str) -> list[dict[str, Any]]:
    """A coded GraphQL error naming `code`, no data, no stack trace; the errors returned."""
    assert response.status_code < 500, response.text
    for marker in STACK_TRACE_MARKERS:
        assert marker not in response.text, response.text
    body = response.json()
    assert body.get("data") is None, body
    errors: list[dict[str, Any]] = body.get("errors") or []
    assert errors, body
    codes = [e.get("extensions", {}).get("code") for e in errors]
    assert all(codes), body
    assert code in codes, body
    return errors


async def post(client: GraphQLClient, query: str, **variables: Any) -> httpx.Response:
    return await client.http.post("/graphql", json={"query": query, "variables": variables})


async def account_exists(client: GraphQLClient, account_id: str) -> bool:
    data = await client.ok("query($id: ID!) { account(id: $id) { id } }", {"id": account_id})
    return data["account"] is not None


async def account_count(client: GraphQLClient) -> int:
    data = await client.ok("{ accounts(first: 100) { nodes { id } } }")
    return len(data["accounts"]["nodes"])


def token_count(document: str) -> int:
    lexer = Lexer(Source(document))
    count = 0
    while lexer.advance().kind is not TokenKind.EOF:
        count += 1
    return count


def _id(i: int) -> str:
    return f"acct{i:03}"


async def open_accounts(client: GraphQLClient, count: int = ACCOUNT_COUNT) -> None:
    """`count` accounts, each with a deposit of 100 + i, opened in one request."""
    fields = []
    for i in range(count):
        fields.append(f'c{i}: createAccount(input: {{id: "{_id(i)}"}}) {{ errors {{ code }} }}')
        fields.append(
            f'd{i}: deposit(input: {{accountId: "{_id(i)}", amount: {100 + i}}}) '
            "{ errors { code } }"
        )
    data = await client.ok("mutation { " + " ".join(fields) + " }")
    assert all(payload["errors"] == [] for payload in data.values()), data


# --- generous real queries pass with the defaults ---------------------------------------


async def test_a_dashboard_of_100_accounts_by_alias_passes(gql: GraphQLClient) -> None:
    await open_accounts(gql)
    fields = " ".join(
        f'a{i}: account(id: "{_id(i)}") {{ id balance outgoing createdAt }}'
        for i in range(ACCOUNT_COUNT)
    )
    data = await gql.ok("query Dashboard { " + fields + " }")
    assert len(data) == ACCOUNT_COUNT
    for i in range(ACCOUNT_COUNT):
        assert data[f"a{i}"]["id"] == _id(i)
        assert data[f"a{i}"]["balance"] == 100 + i


async def test_a_full_page_of_accounts_with_full_pages_of_transactions_passes(
    gql: GraphQLClient,
) -> None:
    await open_accounts(gql)
    data = await gql.ok(
        "{ accounts(first: 100) { nodes { id transactions(first: 100) { nodes { id } } } } }"
    )
    nodes = data["accounts"]["nodes"]
    assert [n["id"] for n in nodes] == [_id(i) for i in range(ACCOUNT_COUNT)]
    assert all(len(n["transactions"]["nodes"]) == 1 for n in nodes)


async def test_the_deepest_real_mutation_passes(gql: GraphQLClient) -> None:
    await open_accounts(gql, 2)
    data = await gql.ok(
        """mutation {
          transfer(input: {sourceAccountId: "acct000", targetAccountId: "acct001", amount: 7}) {
            errors { code }
            sourceAccount { transactions(last: 100) { edges { node { id kind } } } }
            targetAccount { payments(first: 100) { edges { node { id status } } } }
          }
        }"""
    )
    assert data["transfer"]["errors"] == []
    kinds = [e["node"]["kind"] for e in data["transfer"]["sourceAccount"]["transactions"]["edges"]]
    assert kinds == ["DEPOSIT", "TRANSFER_OUT"]


# --- cost --------------------------------------------------------------------------------

EXPENSIVE = "accounts(first: 100) { nodes { transactions(first: 100) { nodes { id } } } }"


async def test_100_aliases_of_full_pages_of_pages_are_too_costly(gql: GraphQLClient) -> None:
    await open_accounts(gql, 3)
    query = "{ " + " ".join(f"a{i}: {EXPENSIVE}" for i in range(100)) + " }"
    assert_refused(await post(gql, query), "QUERY_TOO_COSTLY")


async def test_cost_is_refused_just_over_the_maximum_and_passes_at_it(
    gql: GraphQLClient,
) -> None:
    # topSpenders(first: 1000) costs 1000: 25 of them are exactly the 25,000 allowed.
    at_limit = " ".join(f"t{i}: topSpenders(first: 1000) {{ accountId }}" for i in range(25))
    data = await gql.ok("{ " + at_limit + " }")
    assert len(data) == 25
    over = "{ " + at_limit + ' one: account(id: "x") { id } }'
    errors = assert_refused(await post(gql, over), "QUERY_TOO_COSTLY")
    assert "25001" in errors[0]["message"], errors


async def test_a_too_costly_mutation_writes_nothing(gql: GraphQLClient) -> None:
    # Each alias costs its payload (1), the account (1) and a page of 100 entries.
    fields = " ".join(
        f'c{i}: createAccount(input: {{id: "cost{i}"}}) '
        "{ account { transactions(first: 100) { nodes { id } } } errors { code } }"
        for i in range(250)
    )
    assert_refused(await post(gql, "mutation { " + fields + " }"), "QUERY_TOO_COSTLY")
    assert await account_count(gql) == 0


async def test_fragments_do_not_hide_cost(gql: GraphQLClient) -> None:
    query = """
    query {
      a: accounts(first: 100) { nodes { ...History } }
      b: accounts(first: 100) { ... on AccountConnection { nodes { ...History } } }
      c: accounts(first: 100) { nodes { ...History } }
    }
    fragment History on Account { transactions(first: 100) { nodes { id } } }"""
    assert_refused(await post(gql, query), "QUERY_TOO_COSTLY")


VARIABLE_PAGES = """
query($n: Int) {
  a: accounts(first: $n) { nodes { transactions(first: $n) { nodes { id } } } }
  b: accounts(first: $n) { nodes { transactions(first: $n) { nodes { id } } } }
  c: accounts(first: $n) { nodes { transactions(first: $n) { nodes { id } } } }
}"""


async def test_page_sizes_given_by_variables_count_at_the_maximum(gql: GraphQLClient) -> None:
    await open_accounts(gql, 3)
    # With literal pages of 1 the same shape is cheap and passes ...
    data = await gql.ok(VARIABLE_PAGES.replace("query($n: Int)", "query").replace("$n", "1"))
    assert len(data["a"]["nodes"]) == 1
    # ... but a variable may say 100 at run time, so it counts as 100: 3 x 10,100 > 25,000.
    for n in (1, 0, None):
        assert_refused(await post(gql, VARIABLE_PAGES, n=n), "QUERY_TOO_COSTLY")
    # One such selection (10,100) is within the limit, whatever the variable says.
    one = (
        "query($n: Int) { accounts(first: $n) { nodes { transactions(first: $n) "
        "{ nodes { id } } } } }"
    )
    data = await gql.ok(one, {"n": 100})
    assert len(data["accounts"]["nodes"]) == 3


async def test_top_spenders_by_variable_counts_at_its_maximum(gql: GraphQLClient) -> None:
    fields = " ".join(f"t{i}: topSpenders(first: $n) {{ accountId }}" for i in range(26))
    assert_refused(await post(gql, "query($n: Int!) { " + fields + " }", n=1), "QUERY_TOO_COSTLY")
    data = await gql.ok("{ " + fields.replace("$n", "1") + " }")
    assert len(data) == 26


# --- depth -------------------------------------------------------------------------------


def _nested(levels: int) -> str:
    return "{ " + "a { " * (levels - 1) + "b" + " }" * (levels - 1) + " }"


async def test_a_query_deeper_than_the_default_maximum_is_refused(gql: GraphQLClient) -> None:
    # No real selection of this schema nests 13 fields deep, so the fields are unknown (and
    # refused for that too); the depth limit must speak up as well, and only past 12.
    errors = assert_refused(await post(gql, _nested(14)), "GRAPHQL_VALIDATION_FAILED")
    assert any("maximum operation depth of 12" in e["message"] for e in errors), errors
    errors = assert_refused(await post(gql, _nested(13)), "GRAPHQL_VALIDATION_FAILED")
    assert not any("depth" in e["message"] for e in errors), errors


async def test_the_standard_introspection_query_passes_with_the_defaults(
    gql: GraphQLClient,
) -> None:
    # GraphiQL's introspection query nests `ofType` deeper than depth_max: it must still pass.
    data = await gql.ok(get_introspection_query(descriptions=True))
    names = {t["name"] for t in data["__schema"]["types"]}
    assert {"Query", "Mutation", "Account", "Money", "Timestamp"} <= names


async def test_a_lowered_depth_maximum_refuses_deeper_queries_and_runs_nothing(
    make_client: MakeClient,
) -> None:
    client = await make_client(queries=QueryLimits(depth_max=3))
    shallow = '{ account(id: "a") { transactions { nodes { id } } } }'  # depth 3
    assert await client.ok(shallow) == {"account": None}
    deep = "{ accounts { nodes { transactions { nodes { id } } } } }"  # depth 4
    errors = assert_refused(await post(client, deep), "GRAPHQL_VALIDATION_FAILED")
    assert any("depth" in e["message"] for e in errors), errors
    mutation = (
        'mutation { createAccount(input: {id: "deep"}) '
        "{ account { transactions { nodes { id } } } errors { code } } }"
    )
    assert_refused(await post(client, mutation), "GRAPHQL_VALIDATION_FAILED")
    assert not await account_exists(client, "deep")


# --- aliases -----------------------------------------------------------------------------


def _aliased_reads(count: int) -> str:
    return "{ " + " ".join(f'a{i}: account(id: "x") {{ id }}' for i in range(count)) + " }"


async def test_aliases_up_to_the_maximum_pass_and_one_more_is_refused(gql: GraphQLClient) -> None:
    data = await gql.ok(_aliased_reads(250))
    assert len(data) == 250
    errors = assert_refused(await post(gql, _aliased_reads(251)), "GRAPHQL_VALIDATION_FAILED")
    assert any("alias" in e["message"] for e in errors), errors


async def test_too_many_aliased_mutations_write_nothing(gql: GraphQLClient) -> None:
    fields = " ".join(
        f'c{i}: createAccount(input: {{id: "alias{i}"}}) {{ errors {{ code }} }}'
        for i in range(251)
    )
    assert_refused(await post(gql, "mutation { " + fields + " }"), "GRAPHQL_VALIDATION_FAILED")
    assert await account_count(gql) == 0


async def test_a_lowered_alias_maximum_holds_inside_fragments(make_client: MakeClient) -> None:
    client = await make_client(queries=QueryLimits(aliases_max=3))
    ok = (
        "{ a: accounts { nodes { id } } ...F } "
        "fragment F on Query { b: topSpenders(first: 1) { accountId } }"
    )
    assert set(await client.ok(ok)) == {"a", "b"}
    over = (
        "{ a: accounts { nodes { x: id } } ...F } "
        "fragment F on Query { b: topSpenders(first: 1) { y: accountId } }"
    )
    assert_refused(await post(client, over), "GRAPHQL_VALIDATION_FAILED")


# --- tokens ------------------------------------------------------------------------------


async def test_more_tokens_than_the_default_maximum_are_refused(gql: GraphQLClient) -> None:
    query = "{ accounts { nodes { " + "id " * 10_000 + "} } }"
    assert token_count(query) > 10_000
    errors = assert_refused(await post(gql, query), "GRAPHQL_PARSE_FAILED")
    assert any("tokens" in e["message"] for e in errors), errors


async def test_the_token_maximum_is_exact_and_runs_nothing_over_it(
    make_client: MakeClient,
) -> None:
    mutation = (
        'mutation { createAccount(input: {id: "tokens"}) { account { id } errors { code } } }'
    )
    tokens = token_count(mutation)
    over = await make_client(queries=QueryLimits(tokens_max=tokens - 1))
    assert_refused(await post(over, mutation), "GRAPHQL_PARSE_FAILED")
    assert not await account_exists(over, "tokens")
    at = await make_client(queries=QueryLimits(tokens_max=tokens))
    data = await at.ok(mutation)
    assert data["createAccount"] == {"account": {"id": "tokens"}, "errors": []}


# --- body size ---------------------------------------------------------------------------

CREATE_DOC = (
    "mutation($id: ID!) { createAccount(input: {id: $id}) { account { id } errors { code } } }"
)


def _body_of_size(size: int, account_id: str) -> bytes:
    """A JSON request creating `account_id`, padded with spaces to exactly `size` bytes."""
    body = json.dumps({"query": CREATE_DOC, "variables": {"id": account_id}}).encode()
    assert len(body) <= size
    return body[:-1] + b" " * (size - len(body)) + b"}"


async def _chunks(body: bytes, size: int = 100) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    body = response.json()
    assert body["errors"][0]["extensions"]["code"] == "REQUEST_TOO_LARGE"
    assert body.get("data") is None


async def test_a_body_over_the_limit_by_content_length_is_413(make_client: MakeClient) -> None:
    client = await make_client(body_bytes_max=1000)
    response = await client.http.post(
        "/graphql",
        content=_body_of_size(1001, "big"),
        headers={"Content-Type": "application/json"},
    )
    assert response.request.headers["content-length"] == "1001"
    assert_too_large(response)
    assert not await account_exists(client, "big")
    response = await client.http.post(
        "/graphql",
        content=_body_of_size(1000, "fits"),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["createAccount"]["errors"] == []


async def test_a_streamed_body_over_the_limit_is_413(make_client: MakeClient) -> None:
    client = await make_client(body_bytes_max=1000)
    response = await client.http.post(
        "/graphql",
        content=_chunks(_body_of_size(1001, "big")),
        headers={"Content-Type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_too_large(response)
    assert not await account_exists(client, "big")
    response = await client.http.post(
        "/graphql",
        content=_chunks(_body_of_size(1000, "fits")),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["createAccount"]["errors"] == []


async def test_the_default_body_limit_refuses_two_megabytes(gql: GraphQLClient) -> None:
    response = await gql.http.post(
        "/graphql",
        content=_body_of_size(2 * 1024 * 1024, "big"),
        headers={"Content-Type": "application/json"},
    )
    assert_too_large(response)
    assert not await account_exists(gql, "big")


# --- introspection -----------------------------------------------------------------------

INTROSPECTION = [
    "{ __schema { queryType { name } } }",
    '{ __type(name: "Account") { name } }',
    "{ accounts { nodes { id } } s: __schema { types { name } } }",
    "{ ...F } fragment F on Query { __schema { mutationType { name } } }",
]


async def test_introspection_is_on_by_default(gql: GraphQLClient) -> None:
    data = await gql.ok("{ __schema { queryType { name } mutationType { name } } }")
    assert data["__schema"] == {
        "queryType": {"name": "Query"},
        "mutationType": {"name": "Mutation"},
    }
    data = await gql.ok('{ __type(name: "Account") { name } }')
    assert data["__type"] == {"name": "Account"}


@pytest.mark.parametrize("query", INTROSPECTION)
async def test_introspection_can_be_turned_off(make_client: MakeClient, query: str) -> None:
    client = await make_client(queries=QueryLimits(introspection=False))
    assert_refused(await post(client, query), "GRAPHQL_VALIDATION_FAILED")
    # Normal queries, and __typename, still work.
    data = await client.ok("{ __typename accounts { nodes { id } } }")
    assert data == {"__typename": "Query", "accounts": {"nodes": []}}


# --- CSRF-safe defaults ------------------------------------------------------------------

CSRF_MUTATION = 'mutation { createAccount(input: {id: "csrf"}) { account { id } errors { code } } }'

SIMPLE_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    (
        "text/plain",
        {
            "content": json.dumps({"query": CSRF_MUTATION}).encode(),
            "headers": {"Content-Type": "text/plain"},
        },
    ),
    (
        "text/plain;charset=UTF-8",
        {
            "content": json.dumps({"query": CSRF_MUTATION}).encode(),
            "headers": {"Content-Type": "text/plain;charset=UTF-8"},
        },
    ),
    ("urlencoded", {"data": {"query": CSRF_MUTATION}}),
    (
        "urlencoded json",
        {
            "content": json.dumps({"query": CSRF_MUTATION}).encode(),
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        },
    ),
    ("multipart query", {"files": {"query": (None, CSRF_MUTATION)}}),
    (
        "multipart upload spec",
        {
            "files": {
                "operations": (None, json.dumps({"query": CSRF_MUTATION})),
                "map": (None, "{}"),
            }
        },
    ),
    ("no content type", {"content": json.dumps({"query": CSRF_MUTATION}).encode()}),
]


@pytest.mark.parametrize(
    "request_kwargs", [r[1] for r in SIMPLE_REQUESTS], ids=[r[0] for r in SIMPLE_REQUESTS]
)
async def test_simple_cross_site_requests_cannot_mutate(
    gql: GraphQLClient, request_kwargs: dict[str, Any]
) -> None:
    headers = {**request_kwargs.get("headers", {}), "Origin": "https://evil.example"}
    response = await gql.http.post("/graphql", **{**request_kwargs, "headers": headers})
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert body.get("data") is None, body
    assert body["errors"], body
    assert all(e["extensions"]["code"] for e in body["errors"]), body
    assert not await account_exists(gql, "csrf")


# --- CORS --------------------------------------------------------------------------------

LISTED = "https://app.example"
OTHER = "https://evil.example"
QUERY = {"query": "{ accounts { nodes { id } } }"}


async def preflight(client: GraphQLClient, origin: str) -> httpx.Response:
    return await client.http.options(
        "/graphql",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )


async def cross_origin_post(client: GraphQLClient, origin: str) -> httpx.Response:
    return await client.http.post("/graphql", json=QUERY, headers={"Origin": origin})


async def test_no_origin_is_allowed_by_default(gql: GraphQLClient) -> None:
    for origin in (LISTED, OTHER, "null"):
        response = await preflight(gql, origin)
        assert response.status_code < 500
        assert "access-control-allow-origin" not in response.headers, response.headers
        response = await cross_origin_post(gql, origin)
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers, response.headers
        assert "access-control-allow-credentials" not in response.headers


async def test_listed_origins_are_allowed_and_others_are_not(make_client: MakeClient) -> None:
    client = await make_client(cors_origins=(LISTED,))
    response = await preflight(client, LISTED)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == LISTED
    assert "POST" in response.headers["access-control-allow-methods"]
    response = await cross_origin_post(client, LISTED)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == LISTED

    for origin in (OTHER, "null", LISTED + ".evil.example", "http://app.example"):
        response = await preflight(client, origin)
        assert response.status_code < 500
        assert response.headers.get("access-control-allow-origin") in (None, ""), origin
        response = await cross_origin_post(client, origin)
        assert response.headers.get("access-control-allow-origin") in (None, ""), origin
