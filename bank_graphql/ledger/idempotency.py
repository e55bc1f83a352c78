"""Idempotency keys: the first request with a key runs; later ones get its stored outcome.

The key is claimed (inserted) first thing in the mutation's own transaction, under the
table's primary key. A racing duplicate's insert waits on that index until the winner
commits, then finds the key taken and replays the stored outcome: exactly one runs, and a
loser never takes a payment number or writes anything. If the winner rolls back, the key
is free again and the next duplicate runs.
"""

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from bank_graphql.ledger.database import Conn
from bank_graphql.ledger.refusals import Refusal, RefusalCode

RETENTION_DAYS_MIN = 7

_CLAIM = """
INSERT INTO idempotency_keys (key, operation, fingerprint, outcome)
VALUES (%(key)s, %(operation)s, %(fingerprint)s, 'null'::jsonb)
ON CONFLICT (key) DO NOTHING
RETURNING true
"""

_STORED = "SELECT operation, fingerprint, outcome FROM idempotency_keys WHERE key = %s"

_STORE = "UPDATE idempotency_keys SET outcome = %(outcome)s WHERE key = %(key)s"

_PRUNE = """
DELETE FROM idempotency_keys
WHERE key IN (
    SELECT key FROM idempotency_keys
    WHERE created_at < now() - make_interval(days => %(days)s)
    ORDER BY created_at
    LIMIT %(limit)s
)
"""


@dataclass(frozen=True, slots=True)
class KeyedRequest:
    """A mutation's idempotency key and what it asked for, reduced to a fingerprint."""

    key: str
    operation: str
    fingerprint: str

    @classmethod
    def of(cls, key: str, operation: str, arguments: dict[str, Any]) -> "KeyedRequest":
        canonical = json.dumps([operation, arguments], sort_keys=True, separators=(",", ":"))
        return cls(key, operation, hashlib.sha256(canonical.encode()).hexdigest())


def key_refusal() -> Refusal:
    return Refusal(
        RefusalCode.INVALID_IDEMPOTENCY_KEY,
        "an idempotency key is 1 to 128 printable characters",
        ("idempotencyKey",),
    )


def reuse_refusal(key: KeyedRequest) -> Refusal:
    return Refusal(
        RefusalCode.IDEMPOTENCY_KEY_REUSED,
        f"idempotency key {key.key!r} was already used for another request",
        ("idempotencyKey",),
    )


async def claim(conn: Conn, request: KeyedRequest) -> dict[str, Any] | Refusal | None:
    """Claim the key for this transaction.

    None: claimed, go ahead. A dict: the stored outcome of the same request, to replay.
    A Refusal: the key belongs to another request.
    """
    params = dataclasses.asdict(request)
    cursor = await conn.execute(_CLAIM, params)
    if await cursor.fetchone() is not None:
        return None
    cursor = await conn.execute(_STORED, (request.key,))
    row = await cursor.fetchone()
    assert row is not None, "a key that blocked our insert is committed"
    operation, fingerprint, outcome = row
    if operation != request.operation or fingerprint != request.fingerprint:
        return reuse_refusal(request)
    stored: dict[str, Any] = outcome
    return stored


async def store(conn: Conn, key: str, outcome: dict[str, Any]) -> None:
    await conn.execute(_STORE, {"key": key, "outcome": Jsonb(outcome)})


async def prune(conn: Conn, retention_days: int, batch_max: int) -> int:
    """Delete up to `batch_max` keys older than `retention_days` (at least 7)."""
    days = max(retention_days, RETENTION_DAYS_MIN)
    cursor = await conn.execute(_PRUNE, {"days": days, "limit": batch_max})
    return cursor.rowcount
