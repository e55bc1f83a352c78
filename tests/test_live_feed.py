"""`ledgerEntries` (LIVE.md) under concurrent writers: every committed entry once, each
account's in its order, resumable mid-stream; and what a credential may see of the feeds
(ACCESS.md): refusals, a scope, and a revocation that ends the socket."""

import asyncio
import random
from typing import Any

import psycopg

from bank_graphql.ledger import Role, audit_books, create_api_key
from tests.live_client import (
    ACCOUNT_FEED,
    LEDGER_FEED,
    Bank,
    Socket,
    entry_ids,
    init_frame,
    per_account,
    until,
)
from tests.servers import BIN, Serve
from tests.test_websocket import close_of, open_socket, ws_url

Db = psycopg.AsyncConnection[Any]
ACCOUNTS = [f"w{i}" for i in range(10)]
WRITERS = 8
OPS_MAX = 150  # per writer: a bound, should the feed never deliver


async def committed(db: Db) -> dict[str, list[str]]:
    """Entry ids by account, in each account's order (timestamp, id)."""
    # ORDER BY the number: "id" alone would name the text column of the select list.
    cursor = await db.execute("SELECT account_id, id::text FROM entries ORDER BY ts, entries.id")
    found: dict[str, list[str]] = {}
    for account, entry in await cursor.fetchall():
        found.setdefault(account, []).append(entry)
    return found


async def write_until(bank: Bank, seed: int, stop: asyncio.Event) -> int:
    """Deposits, transfers, payments and small batches among ACCOUNTS until `stop`."""
    rng = random.Random(seed)
    done = 0
    while not stop.is_set() and done < OPS_MAX:
        source, target = rng.sample(ACCOUNTS, 2)
        choice = rng.random()
        if choice < 0.2:
            await bank.deposit(target, rng.randint(1, 99))
        elif choice < 0.3:
            await bank.pay(source, rng.randint(1, 99))
        elif choice < 0.4:
            await bank.batch([(source, target, 3), (target, source, 2), (source, target, 1)])
        else:
            await bank.transfer(source, target, rng.randint(1, 99))
        done += 1
    return done


async def test_ledger_entries_under_concurrent_writers(database_url: str, serve: Serve) -> None:
    server = serve("--database-url", database_url)
    bank = Bank(server)
    for account in ACCOUNTS:
        await bank.open(account, 1_000_000)
    await bank.open("probe")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
        before = {e for entries in (await committed(db)).values() for e in entries}
        sock = await Socket.open(server)
        await sock.subscribe("all", LEDGER_FEED)
        await sock.started("all", lambda: bank.deposit("probe", 1))
        stop = asyncio.Event()
        writers = [asyncio.create_task(write_until(bank, seed, stop)) for seed in range(WRITERS)]
        # Resume from an event's cursor while the writers run, and keep them running a while.
        kth = (await sock.wait_events("all", 60))[-1]
        resumed = await Socket.open(server)
        await resumed.subscribe("rest", LEDGER_FEED, after=kth["cursor"])
        await resumed.wait_events("rest", 60)
        stop.set()
        assert all(done < OPS_MAX for done in await asyncio.gather(*writers))

        by_account = await committed(db)
        expected = {e for a in ACCOUNTS for e in by_account[a]} - before
        got = sock.events["all"]
        await until(lambda: expected <= set(entry_ids(got)), "every committed entry")
        # Entries committed before the subscription started: test_live.py's business.
        ignored = before | set(by_account["probe"])
        received = [e for e in entry_ids(got) if e not in ignored]
        assert len(entry_ids(got)) == len(set(entry_ids(got))), "an entry delivered twice"
        assert set(received) == expected
        for account in ACCOUNTS:
            order = [e for e in by_account[account] if e not in before]
            seen = per_account(got).get(account, [])
            assert [e for e in seen if e not in before] == order, account

        after_kth = entry_ids(got)[entry_ids(got).index(kth["node"]["id"]) + 1 :]
        rest = resumed.events["rest"]
        await until(lambda: set(after_kth) <= set(entry_ids(rest)), "the remainder")
        assert len(entry_ids(rest)) == len(set(entry_ids(rest))), "an entry delivered twice"
        assert set(entry_ids(rest)) == set(after_kth)
        for account, entries in per_account(rest).items():
            assert entries == per_account(got)[account][-len(entries) :], account
        assert "all" not in sock.ends
        assert "rest" not in resumed.ends
        assert await audit_books(db) == []
    await sock.close()
    await resumed.close()
    await bank.aclose()


async def revoke(database_url: str, key_id: str) -> None:
    process = await asyncio.create_subprocess_exec(
        str(BIN), "keys", "revoke", key_id, "--database-url", database_url
    )
    assert await process.wait() == 0


async def test_access_on_the_live_feeds(database_url: str, serve: Serve) -> None:
    server = serve("--database-url", database_url, auth=True)
    admin = Bank(server, server.admin_key)
    await admin.open("mine", 1_000)
    await admin.open("theirs", 1_000)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
        key, customer = await create_api_key(
            db, Role.CUSTOMER, accounts=["mine"], name="live", expires_in_days=None
        )
    # No credential, or one that is not valid: 4403.
    for credential in (None, "not-a-key", customer[:-1] + ("b" if customer.endswith("a") else "a")):
        ws = await open_socket(ws_url(server), init=False)
        await ws.send(init_frame(credential))
        assert (await close_of(ws))[0] == 4403, credential

    # A new key is taken within a moment (the server polls the keys): wait until it is.
    viewer = Bank(server, customer)
    for _ in range(200):
        if (await viewer.http.post("/graphql", json={"query": "{ viewer { role } }"})).is_success:
            break
        await asyncio.sleep(0.05)
    await viewer.aclose()
    sock = await Socket.open(server, customer)
    for name, account in (("theirs", "theirs"), ("nobody", "nobody")):
        await sock.subscribe(name, ACCOUNT_FEED, id=account)
        assert await sock.error_codes(name) == ["ACCOUNT_NOT_FOUND"], name
    await sock.subscribe("all", LEDGER_FEED)
    first = await sock.started("all", lambda: admin.deposit("mine", 1))
    await admin.deposit("theirs", 5)
    await admin.transfer("theirs", "mine", 7)
    await admin.transfer("mine", "theirs", 3)
    await admin.deposit("theirs", 2)
    marker = await admin.deposit("mine", 2)
    await until(lambda: marker in [e["node"] for e in sock.events["all"]], "the marker")
    mine = [edge["node"] for edge in await admin.transactions("mine")]
    assert [e["node"] for e in sock.events["all"]] == mine[mine.index(first["node"]) :]
    assert mine[-3]["counterpartyId"] == "theirs"  # a statement names the other side

    # Revoked: the server ends the socket (within about a second; waited for generously).
    await revoke(database_url, key.id)
    await until(lambda: sock.closed is not None, "the socket's end after the revocation", 15)
    assert sock.closed == 4403
    assert "all" not in sock.ends or sock.ends["all"]["type"] == "error"
    await admin.aclose()
