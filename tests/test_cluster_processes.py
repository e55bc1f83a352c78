"""Several `bank-graphql serve` processes on one PostgreSQL, each with its own pool, sweeper
and listener, and writers spread across them: a keyed request runs once whichever processes
it reaches, a cashback is credited once whichever sweeper or read gets there first, every
process's subscribers see every entry written through any of them, and the books audit
clean."""

import asyncio
import random
from typing import Any

import psycopg
import pytest

from bank_graphql.ledger import audit_books
from tests.live_client import LEDGER_FEED, Bank, Socket, entry_ids, until
from tests.servers import Serve

pytestmark = pytest.mark.cluster

Db = psycopg.AsyncConnection[Any]
PROCESSES = 3
ACCOUNTS = [f"c{i}" for i in range(8)]
OPENED_AT = 1_000
DAY_MS = 86_400_000
PAYMENTS = 24
KEYS = 30
UNKEYED = 60


async def _count(db: Db, query: str) -> int:
    row = await (await db.execute(query)).fetchone()
    assert row is not None
    return int(row[0])


async def _keyed_transfer(banks: list[Bank], key: str, source: str, target: str) -> set[str]:
    """The same keyed transfer sent to every process at once, twice: the entry ids answered."""
    request = {"sourceAccountId": source, "targetAccountId": target, "amount": 7}
    input_ = {**request, "idempotencyKey": key}
    answers = await asyncio.gather(
        *(bank.write("transfer", input_, "entry { id }") for bank in banks * 2)
    )
    return {answer["entry"]["id"] for answer in answers}


async def _writes(banks: list[Bank]) -> list[set[str]]:
    rng = random.Random(7)
    payments = [banks[i % PROCESSES].pay(rng.choice(ACCOUNTS), 1_000) for i in range(PAYMENTS)]
    unkeyed = [
        banks[i % PROCESSES].transfer(*rng.sample(ACCOUNTS, 2), rng.randint(1, 50))
        for i in range(UNKEYED)
    ]
    keyed = [_keyed_transfer(banks, f"cluster-{k}", *rng.sample(ACCOUNTS, 2)) for k in range(KEYS)]
    *_, answered = await asyncio.gather(
        asyncio.gather(*payments), asyncio.gather(*unkeyed), asyncio.gather(*keyed)
    )
    return list(answered)


async def test_processes_share_one_ledger(database_url: str, serve: Serve) -> None:
    servers = [serve("--database-url", database_url, "--clock", "client") for _ in range(3)]
    banks = [Bank(server) for server in servers]
    for account in ACCOUNTS:
        await banks[0].open(account, 1_000_000, ts=OPENED_AT)
    for n, bank in enumerate(banks):
        await bank.open(f"probe{n}", ts=OPENED_AT)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
        sockets = [await Socket.open(server) for server in servers]
        for n, sock in enumerate(sockets):
            await sock.subscribe("all", LEDGER_FEED)
            await sock.started("all", lambda bank=banks[n], n=n: bank.deposit(f"probe{n}", 1))
        before = await _count(db, "SELECT coalesce(max(id), 0) FROM entries")

        answered = await _writes(banks)
        assert all(len(ids) == 1 for ids in answered), "a keyed transfer answered two entries"
        # The clock passes every cashback's due time: the three sweepers, and reads through
        # every process (which settle what is due first), race to credit them.
        await banks[1].open("clock", ts=OPENED_AT + DAY_MS + 1)
        reads = [bank.post("{ topSpenders(first: 3) { accountId } }") for bank in banks * 4]
        await asyncio.gather(*reads)
        cashback = "SELECT count(*) FROM entries WHERE kind = 'CASHBACK'"
        for _ in range(300):
            if await _count(db, cashback) >= PAYMENTS:
                break
            await asyncio.sleep(0.05)

        assert await _count(db, cashback) == PAYMENTS
        twice = "SELECT count(*) FROM (SELECT payment_id FROM entries WHERE kind = 'CASHBACK'"
        assert await _count(db, twice + " GROUP BY payment_id HAVING count(*) > 1) t") == 0
        transfers = "SELECT count(*) FROM entries WHERE kind = 'TRANSFER_OUT'"
        assert await _count(db, transfers) == UNKEYED + KEYS
        assert await _count(db, "SELECT count(*) FROM entries WHERE kind = 'PAYMENT'") == PAYMENTS

        cursor = await db.execute(
            "SELECT id::text FROM entries WHERE id > %s AND account_id NOT LIKE 'probe%%'",
            (before,),
        )
        expected = {row[0] for row in await cursor.fetchall()}
        for n, sock in enumerate(sockets):
            got = sock.events["all"]
            await until(lambda got=got: expected <= set(entry_ids(got)), f"process {n}'s feed")
            assert len(entry_ids(got)) == len(set(entry_ids(got))), "an entry delivered twice"
        assert await audit_books(db) == []
    for sock in sockets:
        await sock.close()
    for bank in banks:
        await bank.aclose()
