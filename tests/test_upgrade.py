"""A ledger the first release wrote is brought up to date in place by `serve` itself.

tests/fixtures/schema_v1.sql is the schema as the first release shipped it, and
tests/fixtures/v1_ledger.sql the rows that release wrote (accounts, deposits, transfers, an
outgoing past the ceiling, payments with cashback credited and pending, a merge, idempotency
keys; made by tests/fixtures/make_v1_ledger.py). After a plain `bank-graphql serve` on it,
every balance, entry, payment and key answers as before, and no entry is rewritten."""

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from bank_graphql.ledger import audit_books, current_version, latest_version, migrate
from tests.conftest import Serve

FIXTURES = Path(__file__).parent / "fixtures"
V1_SCHEMA = FIXTURES / "schema_v1.sql"
V1_LEDGER = FIXTURES / "v1_ledger.sql"
V1_KEYED = json.loads((FIXTURES / "v1_keyed_requests.json").read_text())
M = 2**53 - 1

ACCOUNT = """query($id: ID!) {
  account(id: $id) {
    id createdAt balance outgoing
    transactions(first: 100) {
      nodes { id accountId timestamp kind amount balanceAfter counterpartyId paymentId }
    }
  }
}"""
PAYMENT = """query($owner: ID!, $id: ID!) {
  payment(accountId: $owner, id: $id) {
    id accountId timestamp amount cashback cashbackDueAt status
  }
}"""
TOP_SPENDERS = "{ topSpenders(first: 3) { accountId outgoing } }"
TRANSFER = """mutation($from: ID!, $to: ID!, $amount: Money!) {
  transfer(input: {sourceAccountId: $from, targetAccountId: $to, amount: $amount}) {
    balance errors { code }
  }
}"""


@pytest.fixture
def v1_database_url(server_url: str) -> Iterator[str]:
    name = f"bank_v1_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(server_url, dbname=name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(V1_SCHEMA.read_bytes())
        conn.execute(V1_LEDGER.read_bytes())
    yield url
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query.encode()).fetchall()


class Api:
    def __init__(self, base: str, key: str | None = None) -> None:
        self.base = base
        self.headers = {} if key is None else {"Authorization": f"Bearer {key}"}

    def post(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(
            f"{self.base}/graphql",
            json={"query": query, "variables": variables},
            headers=self.headers,
            timeout=30,
        )
        body: dict[str, Any] = response.json()
        return body

    def ok(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = self.post(query, variables)
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data


def _entry(row: tuple[Any, ...]) -> dict[str, Any]:
    entry_id, account_id, ts, kind, amount, balance_after, counterparty_id, payment_id = row
    return {
        "id": str(entry_id),
        "accountId": account_id,
        "timestamp": ts,
        "kind": kind,
        "amount": amount,
        "balanceAfter": balance_after,
        "counterpartyId": counterparty_id,
        "paymentId": None if payment_id is None else f"payment{payment_id}",
    }


def _check_accounts(api: Api, accounts: list[tuple[Any, ...]], entries: list[Any]) -> None:
    for account_id, created_at, balance, outgoing, merged_into in accounts:
        found = api.ok(ACCOUNT, {"id": account_id})["account"]
        if merged_into is not None:
            assert found is None, account_id  # a merged account answers as gone
            continue
        own = [_entry(e) for e in entries if e[1] == account_id]
        assert found == {
            "id": account_id,
            "createdAt": created_at,
            "balance": balance,
            "outgoing": min(outgoing, M),  # the first release let it pass the ceiling
            "transactions": {"nodes": own},
        }


def _check_payments(api: Api, payments: list[tuple[Any, ...]]) -> None:
    for number, owner, ts, amount, cashback, due_at, settled in payments:
        found = api.ok(PAYMENT, {"owner": owner, "id": f"payment{number}"})["payment"]
        assert found == {
            "id": f"payment{number}",
            "accountId": owner,
            "timestamp": ts,
            "amount": amount,
            "cashback": cashback,
            "cashbackDueAt": due_at,
            "status": "CASHBACK_RECEIVED" if settled else "IN_PROGRESS",
        }


def _replayed_answer(request: dict[str, Any]) -> dict[str, Any]:
    """What a replay of the request must answer: what the first release answered, except that
    an outgoing it stored past the ceiling now answers the ceiling (it could not answer it)."""
    if request["variables"]["key"] != "t-ceiling":
        answer: dict[str, Any] = request["answer"]
        return answer
    moved = dict(request["answer"]["data"]["transfer"])
    moved["sourceAccount"] = {"id": "carol", "createdAt": 1_700_000_000_000, "outgoing": M}
    return {"data": {"transfer": moved}}


V1_ENTRY_COLUMNS = "id, account_id, ts, kind, amount, balance_after, counterparty_id, payment_id"


def test_serve_upgrades_a_first_release_ledger_in_place(serve: Serve, v1_database_url: str) -> None:
    url = v1_database_url
    entries = _rows(url, f"SELECT {V1_ENTRY_COLUMNS} FROM entries ORDER BY id")
    accounts = _rows(
        url, "SELECT id, created_at, balance, outgoing, merged_into FROM accounts ORDER BY id"
    )
    payments = _rows(
        url,
        "SELECT p.id, o.survivor_id, p.ts, p.amount, p.cashback, p.cashback_due_at, p.settled"
        " FROM payments p JOIN accounts o ON o.id = p.account_id ORDER BY p.id",
    )
    assert current_version(url) == 1

    api = Api(serve("--database-url", url, "--clock", "client").base)

    assert current_version(url) == latest_version()
    assert _rows(url, f"SELECT {V1_ENTRY_COLUMNS} FROM entries ORDER BY id") == entries, (
        "entries were rewritten"
    )
    assert _rows(url, "SELECT count(*) FROM entries WHERE actor IS NOT NULL") == [(0,)]
    _check_accounts(api, accounts, entries)
    _check_payments(api, payments)
    assert {s["accountId"]: s["outgoing"] for s in api.ok(TOP_SPENDERS)["topSpenders"]} == {
        "carol": M,
        "dave": M,
        "alice": 12_500,
    }
    for request in V1_KEYED:
        assert api.post(request["query"], request["variables"]) == _replayed_answer(request)
    assert _rows(url, "SELECT count(*) FROM entries") == [(len(entries),)], "a replay wrote"
    assert asyncio.run(_audit(url)) == []

    # And it goes on: new writes on the upgraded ledger.
    moved = api.ok(TRANSFER, {"from": "alice", "to": "bob", "amount": 10})["transfer"]
    assert moved == {"balance": 88_691, "errors": []}
    assert asyncio.run(_audit(url)) == []


ACTORS = """query($id: ID!) {
  viewer { principal role }
  account(id: $id) { transactions(first: 100) { nodes { kind actor } } }
}"""
DEPOSIT = """mutation($id: ID!) {
  deposit(input: {accountId: $id, amount: 5}) { entry { actor } errors { code } }
}"""


def test_a_first_release_ledger_gains_access_control(serve: Serve, v1_database_url: str) -> None:
    old_entries = _rows(v1_database_url, "SELECT count(*) FROM entries")[0][0]
    server = serve("--database-url", v1_database_url, "--clock", "client", auth=True)

    assert httpx.post(f"{server.base}/graphql", json={"query": TOP_SPENDERS}).status_code == 401
    api = Api(server.base, server.admin_key)
    data = api.ok(ACTORS, {"id": "alice"})
    principal = data["viewer"]["principal"]
    assert principal.startswith("key:"), data["viewer"]
    assert data["viewer"]["role"] == "ADMIN"
    old = data["account"]["transactions"]["nodes"]
    assert old, "alice has entries from the first release"
    assert {entry["actor"] for entry in old} == {None}, "entries from before keep a null actor"

    written = api.ok(DEPOSIT, {"id": "alice"})["deposit"]
    assert written == {"entry": {"actor": principal}, "errors": []}
    assert _rows(v1_database_url, "SELECT count(*) FROM entries WHERE actor IS NULL") == [
        (old_entries,)
    ]
    assert asyncio.run(_audit(v1_database_url)) == []


def test_stored_outcomes_hold_no_outgoing_past_the_ceiling(v1_database_url: str) -> None:
    past_ceiling = (
        "SELECT count(*) FROM idempotency_keys"
        " WHERE outcome @? '$.accounts[*] ? (@.outgoing > 9007199254740991)'"
    )
    assert _rows(v1_database_url, past_ceiling) == [(1,)]  # t-ceiling, as stored by v1
    migrate(v1_database_url)
    assert _rows(v1_database_url, past_ceiling) == [(0,)]
    stored = "SELECT outcome -> 'accounts' FROM idempotency_keys WHERE key = 't-ceiling'"
    assert _rows(v1_database_url, stored) == [
        (
            [
                {"id": "carol", "outgoing": M, "created_at": 1_700_000_000_000},
                {"id": "dave", "outgoing": M, "created_at": 1_700_000_000_000},
            ],
        )
    ]


async def _audit(url: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await audit_books(conn)
