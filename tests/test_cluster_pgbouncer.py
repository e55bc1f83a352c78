"""`serve --pgbouncer` through a real PgBouncer in transaction pooling mode: statements are
not prepared (a server session may differ at each transaction), the timeouts are set inside
each transaction and never left on a shared server session, and the live feed LISTENs on
the direct URL."""

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bank_graphql.ledger import audit_books
from tests.live_client import LEDGER_FEED, Bank, Socket, entry_ids, until
from tests.pgbouncer import running_pgbouncer, through
from tests.servers import Serve, Server, serve_refusal

pytestmark = pytest.mark.cluster

ACCOUNTS = [f"p{i}" for i in range(6)]
TRANSFER = "mutation($input: TransferInput!) { transfer(input: $input) { errors { code } } }"


@pytest.fixture(scope="module")
def pgbouncer_port(server_url: str) -> Iterator[int]:
    with running_pgbouncer(server_url) as port:
        yield port


def _serve_pooled(
    serve: Serve, database_url: str, port: int, env: dict[str, str] | None = None
) -> Server:
    pooled = through(port, database_url)
    return serve(
        "--database-url", pooled, "--pgbouncer", "--direct-database-url", database_url, env=env
    )


async def _settings(url: str) -> list[tuple[str, str]]:
    """statement_timeout and lock_timeout as a new client of `url` finds them, 8 times."""
    found = []
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, prepare_threshold=None
    ) as conn:
        for _ in range(8):
            cursor = await conn.execute(
                "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')"
            )
            row = await cursor.fetchone()
            assert row is not None
            found.append((row[0], row[1]))
    return found


async def test_a_server_works_through_pgbouncer(
    database_url: str, pgbouncer_port: int, serve: Serve
) -> None:
    server = _serve_pooled(serve, database_url, pgbouncer_port)
    bank = Bank(server)
    for account in ACCOUNTS:
        await bank.open(account, 1_000_000)
    sock = await Socket.open(server)
    await sock.subscribe("all", LEDGER_FEED)
    await sock.started("all", lambda: bank.deposit(ACCOUNTS[0], 1))
    # Each statement many times over (psycopg would prepare it from its 6th use), from many
    # requests at once, so they land on several server sessions.
    outs = await asyncio.gather(
        *(bank.transfer(ACCOUNTS[i % 6], ACCOUNTS[(i + 1) % 6], 1 + i) for i in range(40))
    )
    keyed = {"sourceAccountId": ACCOUNTS[0], "targetAccountId": ACCOUNTS[1], "amount": 5}
    replays = await asyncio.gather(
        *(bank.write("transfer", {**keyed, "idempotencyKey": "k"}, "entry { id }") for _ in "ab")
    )
    assert replays[0]["entry"]["id"] == replays[1]["entry"]["id"]
    await bank.batch([(ACCOUNTS[2], ACCOUNTS[3], 4), (ACCOUNTS[3], ACCOUNTS[4], 2)])
    await bank.pay(ACCOUNTS[5], 300)
    assert len(await bank.transactions(ACCOUNTS[0])) > 10

    written = {out["id"] for out in outs} | {replays[0]["entry"]["id"]}
    got = sock.events["all"]
    await until(lambda: written <= set(entry_ids(got)), "the transfers on the live feed")
    # Nothing this server set stays on a server session another client of PgBouncer gets.
    pooled = through(pgbouncer_port, database_url)
    assert set(await _settings(pooled)) == set(await _settings(database_url))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
        assert await audit_books(db) == []
    await sock.close()
    await bank.aclose()


async def test_a_held_lock_times_out_behind_pgbouncer(
    database_url: str, pgbouncer_port: int, serve: Serve
) -> None:
    server = _serve_pooled(serve, database_url, pgbouncer_port, {"BANK_LOCK_TIMEOUT_MS": "200"})
    bank = Bank(server)
    await bank.open("held", 1_000)
    await bank.open("free")
    transfer = {"sourceAccountId": "held", "targetAccountId": "free", "amount": 1}
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as holder:
        await holder.execute("BEGIN")
        await holder.execute("SELECT FROM accounts WHERE id = 'held' FOR UPDATE")
        started = time.monotonic()
        # Without a lock timeout in its transaction the write would wait for the holder,
        # which lets go only after 20 s.
        answer = asyncio.create_task(
            bank.http.post("/graphql", json={"query": TRANSFER, "variables": {"input": transfer}})
        )
        done, _ = await asyncio.wait({answer}, timeout=20)
        await holder.execute("ROLLBACK")
    assert done, "the write waited for the lock"
    body: dict[str, Any] = (await answer).json()
    assert [e["extensions"]["code"] for e in body["errors"]] == ["DATABASE_BUSY"], body
    assert time.monotonic() - started < 10
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
        cursor = await db.execute("SELECT count(*) FROM entries WHERE kind = 'TRANSFER_OUT'")
        assert await cursor.fetchone() == (0,)
    await bank.aclose()


def _refusal(args: list[str], folder: Path) -> str:
    return serve_refusal(["--pgbouncer", *args], folder)


@pytest.mark.parametrize(
    "args",
    [
        ["--database-url", "postgresql://127.0.0.1:1/bank"],
        ["--direct-database-url", "postgresql://127.0.0.1:1/bank"],
    ],
)
def test_pgbouncer_mode_needs_both_urls(args: list[str], tmp_path: Path) -> None:
    assert "--direct-database-url" in _refusal(args, tmp_path)


NESTED = "{ accounts(first: 20) { nodes { id balance transactions(first: 5) { nodes { id } } } } }"


@pytest.mark.parametrize(
    ("lock", "query"),
    [
        # Blocks the cashback check a read makes before its snapshot, a statement of its own.
        ("LOCK TABLE payments IN ACCESS EXCLUSIVE MODE", "{ accounts(first: 2) { nodes { id } } }"),
        # Blocks reads inside the snapshot while sibling fields are still running on it.
        ("LOCK TABLE entries IN ACCESS EXCLUSIVE MODE", NESTED),
    ],
)
async def test_a_read_behind_a_held_lock_is_refused_in_time(
    database_url: str, pgbouncer_port: int, serve: Serve, lock: str, query: str
) -> None:
    server = _serve_pooled(serve, database_url, pgbouncer_port, {"BANK_LOCK_TIMEOUT_MS": "200"})
    bank = Bank(server)
    for account in ACCOUNTS:
        await bank.open(account, 100)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as holder:
        await holder.execute("BEGIN")
        await holder.execute(lock)
        started = time.monotonic()
        answer = asyncio.create_task(bank.http.post("/graphql", json={"query": query}))
        done, _ = await asyncio.wait({answer}, timeout=20)
        await holder.execute("ROLLBACK")
    assert done, "the read waited for the lock"
    response = await answer
    assert response.status_code == 200, response.text
    codes = [e["extensions"]["code"] for e in response.json()["errors"]]
    assert set(codes) == {"DATABASE_BUSY"}, response.text
    assert time.monotonic() - started < 10
    await bank.aclose()


def test_pgbouncer_mode_refuses_two_databases_or_an_unreachable_pooler(
    database_url: str, server_url: str, pgbouncer_port: int, tmp_path: Path
) -> None:
    # The migration at start goes the direct way: it must not migrate another database.
    other = through(pgbouncer_port, server_url)
    stderr = _refusal(["--database-url", other, "--direct-database-url", database_url], tmp_path)
    assert "not the same database" in stderr
    unreachable = "postgresql://postgres@127.0.0.1:1/bank"
    args = ["--database-url", unreachable, "--direct-database-url", database_url]
    assert "cannot reach" in _refusal(args, tmp_path)


def test_a_pooler_url_is_told_apart_from_postgresql(
    database_url: str, pgbouncer_port: int, tmp_path: Path
) -> None:
    pooled = through(pgbouncer_port, database_url)
    stderr = serve_refusal(["--database-url", pooled], tmp_path)
    assert "--pgbouncer" in stderr, stderr
    stderr = _refusal(["--database-url", pooled, "--direct-database-url", pooled], tmp_path)
    assert "--direct-database-url is a pooler" in stderr, stderr
