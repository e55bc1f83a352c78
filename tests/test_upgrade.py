"""A database made by an earlier release is brought up to date by `serve` itself.

`tests/fixtures/schema_v1.sql` is the schema as the first release shipped it. A database
built from it, holding rows as that release wrote them, must serve every read and write
after a plain `bank-graphql serve` on it, with nothing lost."""

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from bank_graphql.ledger import audit_books
from tests.conftest import Serve

V1_SCHEMA = Path(__file__).parent / "fixtures" / "schema_v1.sql"
M = 2**53 - 1

# carol sent M to dave twice: the first release stored her outgoing as 2M, past the ceiling.
V1_ROWS = f"""
INSERT INTO accounts (id, created_at, balance, outgoing, last_entry_at, survivor_id) VALUES
    ('alice', 0, 1000, 0, 0, 'alice'),
    ('bob', 0, 0, 0, 0, 'bob'),
    ('carol', 0, 0, {2 * M}, 0, 'carol'),
    ('dave', 0, {M}, {M}, 0, 'dave');
INSERT INTO entries (account_id, ts, kind, amount, balance_after, counterparty_id) VALUES
    ('alice', 0, 'DEPOSIT', 1000, 1000, NULL),
    ('carol', 0, 'DEPOSIT', {M}, {M}, NULL),
    ('carol', 0, 'TRANSFER_OUT', {M}, 0, 'dave'),
    ('dave', 0, 'TRANSFER_IN', {M}, {M}, 'carol'),
    ('dave', 0, 'TRANSFER_OUT', {M}, 0, 'carol'),
    ('carol', 0, 'TRANSFER_IN', {M}, {M}, 'dave'),
    ('carol', 0, 'TRANSFER_OUT', {M}, 0, 'dave'),
    ('dave', 0, 'TRANSFER_IN', {M}, {M}, 'carol');
"""


@pytest.fixture
def v1_database_url(server_url: str) -> Iterator[str]:
    name = f"bank_v1_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(server_url, dbname=name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(V1_SCHEMA.read_bytes())
        conn.execute(V1_ROWS.encode())
    yield url
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_serve_upgrades_a_first_release_database_in_place(
    serve: Serve, v1_database_url: str
) -> None:
    server = serve("--database-url", v1_database_url)

    def ok(query: str) -> dict[str, object]:
        body = httpx.post(f"{server.base}/graphql", json={"query": query}, timeout=30).json()
        assert "errors" not in body, body
        data: dict[str, object] = body["data"]
        return data

    moved = ok(
        'mutation { transfer(input: {sourceAccountId: "alice", targetAccountId: "bob", '
        "amount: 10}) { balance errors { code } } }"
    )
    assert moved == {"transfer": {"balance": 990, "errors": []}}
    paid = ok('mutation { pay(input: {accountId: "carol", amount: 1}) { errors { code } } }')
    assert paid == {"pay": {"errors": [{"code": "INSUFFICIENT_FUNDS"}]}}
    read = ok(
        '{ alice: account(id: "alice") { balance outgoing transactions { nodes { amount } } }'
        ' bob: account(id: "bob") { balance } topSpenders(first: 2) { accountId outgoing } }'
    )
    assert read == {
        "alice": {
            "balance": 990,
            "outgoing": 10,
            "transactions": {"nodes": [{"amount": 1000}, {"amount": 10}]},
        },
        "bob": {"balance": 10},
        "topSpenders": [
            {"accountId": "carol", "outgoing": M},
            {"accountId": "dave", "outgoing": M},
        ],
    }
    assert asyncio.run(_audit(v1_database_url)) == []


async def _audit(url: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await audit_books(conn)
