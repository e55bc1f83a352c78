"""Accounts: createAccount, account(id), the accounts connection, and many balances at once."""

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest

from bank_graphql.ledger import ClockMode
from tests.conftest import GraphQLClient, MakeClient
from tests.db_helpers import client_now, entry_count, scalar
from tests.operations import CREATE, HISTORY, create, deposit, funded, transfer

Audit = Callable[[], Awaitable[None]]

ACCOUNT = """
query($id: ID!, $at: Timestamp) {
  account(id: $id) { id createdAt balance(at: $at) outgoing }
}"""

ACCOUNTS = """
query($first: Int, $after: String) {
  accounts(first: $first, after: $after) {
    edges { cursor node { id createdAt } }
    nodes { id }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""


def _one_error(payload: dict[str, Any], code: str, field: list[str]) -> None:
    """The payload carries exactly one UserError, with `code` and `field`, and nothing else."""
    errors = payload["errors"]
    assert [(e["code"], e["field"]) for e in errors] == [(code, field)], errors
    assert errors[0]["message"], errors
    assert payload["account"] is None, payload


async def _create_many(gql: GraphQLClient, ids: list[str], ts: int) -> None:
    """Create every id at `ts` in one request (mutations of one request run in order)."""
    fields = "\n".join(
        f"c{i}: createAccount(input: {{id: {json.dumps(a)}, timestamp: {ts}}}) "
        "{ errors { code } }"
        for i, a in enumerate(ids)
    )
    data = await gql.ok(f"mutation {{\n{fields}\n}}")
    assert all(payload["errors"] == [] for payload in data.values()), data


async def _page(gql: GraphQLClient, first: int | None, after: str | None = None) -> dict[str, Any]:
    data = await gql.ok(ACCOUNTS, {"first": first, "after": after})
    page: dict[str, Any] = data["accounts"]
    assert page["nodes"] == [{"id": edge["node"]["id"]} for edge in page["edges"]]
    return page


def _ids(page: dict[str, Any]) -> list[str]:
    return [edge["node"]["id"] for edge in page["edges"]]


# -- createAccount -------------------------------------------------------------------------


async def test_create_account_starts_empty_at_the_given_timestamp(
    gql: GraphQLClient, db: psycopg.AsyncConnection[Any], audit: Audit
) -> None:
    created = await create(gql, "alice", 5_000)
    assert created["errors"] == []
    assert created["account"] == {"id": "alice", "createdAt": 5_000}

    data = await gql.ok(ACCOUNT, {"id": "alice"})
    assert data["account"] == {"id": "alice", "createdAt": 5_000, "balance": 0, "outgoing": 0}
    # Before its creation the account has no balance at all; from its creation on, 0.
    assert (await gql.ok(ACCOUNT, {"id": "alice", "at": 4_999}))["account"]["balance"] is None
    assert (await gql.ok(ACCOUNT, {"id": "alice", "at": 5_000}))["account"]["balance"] == 0

    history = (await gql.ok(HISTORY, {"id": "alice"}))["account"]["transactions"]
    assert history["edges"] == []
    assert await entry_count(db) == 0
    await audit()


async def test_create_account_on_the_system_clock_uses_the_servers_time(
    make_client: MakeClient,
) -> None:
    gql = await make_client(ClockMode.SYSTEM)
    before = time.time_ns() // 1_000_000
    created = await create(gql, "alice")
    after = time.time_ns() // 1_000_000
    assert created["errors"] == []
    assert before <= created["account"]["createdAt"] <= after


async def test_create_account_twice_is_refused_and_changes_nothing(
    gql: GraphQLClient, db: psycopg.AsyncConnection[Any], audit: Audit
) -> None:
    await funded(gql, "alice", 50, ts=1_000)

    again = await create(gql, "alice", 2_000)

    _one_error(again, "ACCOUNT_ALREADY_EXISTS", ["input", "id"])
    data = await gql.ok(ACCOUNT, {"id": "alice"})
    assert data["account"] == {"id": "alice", "createdAt": 1_000, "balance": 50, "outgoing": 0}
    assert await scalar(db, "SELECT count(*) FROM accounts") == 1
    assert await entry_count(db) == 1
    assert await client_now(db) == 1_000  # a refused mutation does not move the clock
    await audit()


async def test_account_ids_are_case_sensitive(gql: GraphQLClient) -> None:
    assert (await create(gql, "alice", 1_000))["errors"] == []
    created = await create(gql, "Alice", 1_000)
    assert created["errors"] == []
    assert created["account"]["id"] == "Alice"


@pytest.mark.parametrize(
    "bad_id",
    [
        pytest.param("", id="empty"),
        pytest.param("a" * 65, id="65-chars"),
        pytest.param("-abc", id="leading-dash"),
        pytest.param("_abc", id="leading-underscore"),
        pytest.param(".abc", id="leading-dot"),
        pytest.param("a b", id="space"),
        pytest.param("café", id="unicode-letter"),
        pytest.param("ab\u0661", id="unicode-digit"),
        pytest.param("a/b", id="slash"),
        pytest.param("a#b", id="hash"),
        pytest.param("abc\n", id="trailing-newline"),
    ],
)
async def test_create_account_refuses_invalid_ids(
    gql: GraphQLClient, db: psycopg.AsyncConnection[Any], bad_id: str
) -> None:
    data = await gql.ok(CREATE, {"id": bad_id, "ts": 1_000})

    _one_error(data["createAccount"], "INVALID_ACCOUNT_ID", ["input", "id"])
    assert await scalar(db, "SELECT count(*) FROM accounts") == 0
    assert await client_now(db) == 0


@pytest.mark.parametrize(
    "good_id",
    [
        pytest.param("a" * 64, id="64-chars"),
        pytest.param("a_b.c:d@e-f", id="every-punctuation"),
        pytest.param("0", id="one-digit"),
        pytest.param("Z9-", id="trailing-dash"),
    ],
)
async def test_create_account_accepts_edge_valid_ids(gql: GraphQLClient, good_id: str) -> None:
    created = await create(gql, good_id, 1_000)

    assert created["errors"] == []
    assert created["account"] == {"id": good_id, "createdAt": 1_000}
    data = await gql.ok(ACCOUNT, {"id": good_id})
    assert data["account"] == {"id": good_id, "createdAt": 1_000, "balance": 0, "outgoing": 0}


# -- account(id) ---------------------------------------------------------------------------


@pytest.mark.parametrize("unknown", ["bob", "ALICE", "alice2", "not an id", ""])
async def test_account_is_null_when_unknown(gql: GraphQLClient, unknown: str) -> None:
    await funded(gql, "alice", 10)

    data = await gql.ok(ACCOUNT, {"id": unknown})

    assert data == {"account": None}


# -- accounts(first, after) ----------------------------------------------------------------


async def test_accounts_pages_in_byte_order_of_ids(gql: GraphQLClient) -> None:
    ids = ["b", "a", "B", "A", "0", "9z", "a_b", "a@b", "a:b", "a.b", "a-b", "Z"]
    await _create_many(gql, ids, 1_000)
    # Byte order: digits < ':' < '@' < upper case < '_' < lower case; '-' < '.' < digits.
    expected = ["0", "9z", "A", "B", "Z", "a", "a-b", "a.b", "a:b", "a@b", "a_b", "b"]
    assert expected == sorted(ids, key=str.encode)

    seen: list[str] = []
    after = None
    for number in range(4):
        page = await _page(gql, 3, after)
        assert len(page["edges"]) == 3
        info = page["pageInfo"]
        assert info["startCursor"] == page["edges"][0]["cursor"]
        assert info["endCursor"] == page["edges"][-1]["cursor"]
        assert info["hasNextPage"] is (number < 3)
        if number == 0:
            assert info["hasPreviousPage"] is False
        assert all(edge["node"]["createdAt"] == 1_000 for edge in page["edges"])
        seen += _ids(page)
        after = info["endCursor"]
    assert seen == expected

    # Past the end: an empty page with no cursors and nothing next.
    tail = await _page(gql, 3, after)
    assert tail["edges"] == []
    assert tail["pageInfo"]["hasNextPage"] is False
    assert tail["pageInfo"]["startCursor"] is None
    assert tail["pageInfo"]["endCursor"] is None


async def test_accounts_whole_list_in_one_page_and_a_partial_last_page(gql: GraphQLClient) -> None:
    await _create_many(gql, ["c", "a", "b", "d", "e"], 1_000)

    whole = await _page(gql, 100)
    assert _ids(whole) == ["a", "b", "c", "d", "e"]
    assert whole["pageInfo"]["hasNextPage"] is False
    assert whole["pageInfo"]["hasPreviousPage"] is False

    first = await _page(gql, 3)
    rest = await _page(gql, 3, first["pageInfo"]["endCursor"])
    assert _ids(first) == ["a", "b", "c"]
    assert first["pageInfo"]["hasNextPage"] is True
    assert _ids(rest) == ["d", "e"]
    assert rest["pageInfo"]["hasNextPage"] is False


async def test_accounts_cursor_is_a_key_not_an_offset(gql: GraphQLClient) -> None:
    await _create_many(gql, ["b", "d", "f"], 1_000)
    first = await _page(gql, 2)
    assert _ids(first) == ["b", "d"]

    # Accounts created before and after the cursor's key: the next page shows only those
    # after it, and repeats nothing.
    await _create_many(gql, ["a", "c", "e"], 2_000)
    rest = await _page(gql, 10, first["pageInfo"]["endCursor"])

    assert _ids(rest) == ["e", "f"]
    assert rest["pageInfo"]["hasNextPage"] is False


async def test_accounts_default_page_is_fifty(gql: GraphQLClient) -> None:
    ids = [f"acct{i:03d}" for i in range(51)]
    await _create_many(gql, ids, 1_000)

    data = await gql.ok("{ accounts { nodes { id } pageInfo { hasNextPage } } }")

    assert [n["id"] for n in data["accounts"]["nodes"]] == ids[:50]
    assert data["accounts"]["pageInfo"]["hasNextPage"] is True


async def test_accounts_first_zero_is_an_empty_page(gql: GraphQLClient) -> None:
    empty = await _page(gql, 0)
    assert empty["edges"] == []
    assert empty["pageInfo"]["hasNextPage"] is False

    await _create_many(gql, ["a", "b"], 1_000)
    page = await _page(gql, 0)
    assert page["edges"] == []
    assert page["pageInfo"]["startCursor"] is None
    assert page["pageInfo"]["endCursor"] is None
    assert page["pageInfo"]["hasNextPage"] is True  # more exist beyond the empty page


async def test_accounts_first_of_a_hundred_is_allowed(gql: GraphQLClient) -> None:
    await _create_many(gql, ["a"], 1_000)
    assert _ids(await _page(gql, 100)) == ["a"]


@pytest.mark.parametrize("first", [101, 1_000, -1, -100])
async def test_accounts_first_out_of_range_is_bad_user_input(
    gql: GraphQLClient, first: int
) -> None:
    await _create_many(gql, ["a"], 1_000)

    body = await gql.post(ACCOUNTS, {"first": first})

    assert [e["extensions"]["code"] for e in body.get("errors", [])] == ["BAD_USER_INPUT"], body
    assert body.get("data") is None


async def test_accounts_bad_cursor_is_bad_user_input(gql: GraphQLClient) -> None:
    await funded(gql, "alice", 100)
    await funded(gql, "bob", 0)
    await transfer(gql, "alice", "bob", 10, 2_000)
    history = (await gql.ok(HISTORY, {"id": "alice"}))["account"]["transactions"]
    entry_cursor = history["edges"][0]["cursor"]

    for cursor in ["not a cursor!", "", "%%%%", "YWJj", entry_cursor]:
        body = await gql.post(ACCOUNTS, {"first": 10, "after": cursor})
        codes = [e["extensions"]["code"] for e in body.get("errors", [])]
        assert codes == ["BAD_USER_INPUT"], (cursor, body)
        assert body.get("data") is None, (cursor, body)


# -- many balances in one request ----------------------------------------------------------


async def test_many_balances_in_one_request(gql: GraphQLClient) -> None:
    ids = [f"acct{i:03d}" for i in range(80)]
    await _create_many(gql, ids, 1_000)
    deposits = "\n".join(
        f"d{i}: deposit(input: {{accountId: {json.dumps(a)}, amount: {i * 7 + 1}, "
        "timestamp: 2000}) { errors { code } }"
        for i, a in enumerate(ids)
    )
    data = await gql.ok(f"mutation {{\n{deposits}\n}}")
    assert all(payload["errors"] == [] for payload in data.values()), data
    assert (await transfer(gql, "acct079", "acct000", 100, 3_000))["errors"] == []
    expected = {a: i * 7 + 1 for i, a in enumerate(ids)}
    expected["acct079"] -= 100
    expected["acct000"] += 100

    aliased = "\n".join(
        f"a{i}: account(id: {json.dumps(a)}) {{ id balance before: balance(at: 2500) outgoing }}"
        for i, a in enumerate(ids)
    )
    body = await gql.post(
        f"query {{\n{aliased}\naccounts(first: 100) {{ nodes {{ id balance }} }}\n}}"
    )

    assert "errors" not in body, body["errors"]
    data = body["data"]
    for i, a in enumerate(ids):
        assert data[f"a{i}"] == {
            "id": a,
            "balance": expected[a],
            "before": i * 7 + 1,
            "outgoing": 100 if a == "acct079" else 0,
        }
    assert {n["id"]: n["balance"] for n in data["accounts"]["nodes"]} == expected


async def test_balance_reads_follow_the_ledger(gql: GraphQLClient) -> None:
    await funded(gql, "alice", 0, ts=1_000)
    assert (await deposit(gql, "alice", 300, 2_000))["errors"] == []
    assert (await deposit(gql, "alice", 200, 3_000))["errors"] == []

    query = """
    query {
      a: account(id: "alice") { at0: balance(at: 999) at1: balance(at: 1000)
                                at2: balance(at: 2500) at3: balance(at: 3000) now: balance }
    }"""
    data = await gql.ok(query)

    assert data["a"] == {"at0": None, "at1": 0, "at2": 300, "at3": 500, "now": 500}
