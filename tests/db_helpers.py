"""Reads of the tables themselves, for checking what the API wrote (or did not write)."""

import asyncio
import time
from typing import Any

import psycopg

Db = psycopg.AsyncConnection[Any]

# Every table a mutation can write, in a stable order: compared before and after one.
TABLES = {
    "accounts": "SELECT * FROM accounts ORDER BY id",
    "entries": "SELECT * FROM entries ORDER BY id",
    "payments": "SELECT * FROM payments ORDER BY id",
    "keys": "SELECT * FROM idempotency_keys ORDER BY key",
    "clock": "SELECT * FROM client_clock",
}


async def scalar(db: Db, query: str, *params: object) -> int:
    """The one integer `query` selects."""
    cursor = await db.execute(query.encode(), params or None)
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def entry_count(db: Db, kind: str | None = None) -> int:
    """How many entries there are, of `kind` or of every kind."""
    if kind is None:
        return await scalar(db, "SELECT count(*) FROM entries")
    return await scalar(db, "SELECT count(*) FROM entries WHERE kind = %s", kind)


async def client_now(db: Db) -> int:
    return await scalar(db, "SELECT now_ms FROM client_clock")


async def balances(db: Db) -> dict[str, int]:
    cursor = await db.execute("SELECT id, balance FROM accounts")
    return {str(k): int(v) for k, v in await cursor.fetchall()}


async def table_rows(db: Db) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table a mutation can write (TABLES)."""
    state: dict[str, list[tuple[Any, ...]]] = {}
    for name, query in TABLES.items():
        cursor = await db.execute(query.encode())
        state[name] = list(await cursor.fetchall())
    return state


async def cashback_rows(db: Db) -> list[tuple[Any, ...]]:
    """(account_id, ts, amount, balance_after, payment_id) of every CASHBACK entry written."""
    cursor = await db.execute(
        "SELECT account_id, ts, amount, balance_after, payment_id FROM entries "
        "WHERE kind = 'CASHBACK' ORDER BY id"
    )
    return [tuple(row) for row in await cursor.fetchall()]


async def wait_until_cashback(db: Db, count: int, timeout_s: float = 5.0) -> list[tuple[Any, ...]]:
    """Poll the entries table until `count` CASHBACK entries exist, or give up after a while."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await cashback_rows(db)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.02)


# An unsettled cashback due at or before the newest entry of the account owning it (or of an
# account merged into that one): an entry got in ahead of cashback that was already due.
_CASHBACK_LEFT_BEHIND = """
SELECT 'payment' || p.id, s.id, p.cashback_due_at, newest.ts
FROM payments p
JOIN accounts o ON o.id = p.account_id
JOIN accounts s ON s.id = o.survivor_id
CROSS JOIN LATERAL (
    SELECT max(e.ts) AS ts FROM accounts f JOIN entries e ON e.account_id = f.id
    WHERE f.survivor_id = s.id
) AS newest
WHERE NOT p.settled AND p.cashback_due_at <= newest.ts
ORDER BY p.id
"""


async def cashback_left_behind(db: Db) -> list[tuple[Any, ...]]:
    """(payment, owner, due at, owner's newest entry) of every cashback an entry overtook."""
    cursor = await db.execute(_CASHBACK_LEFT_BEHIND)
    return [tuple(row) for row in await cursor.fetchall()]
