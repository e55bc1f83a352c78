"""Idempotency keys: the first request with a key runs; later ones get its stored outcome.

The key is claimed (inserted) first thing in the mutation's own transaction, under the
table's primary key. A racing duplicate's insert waits on that index until the winner
commits, then finds the key taken and replays the stored outcome: exactly one runs, and a
loser never takes a payment number or writes anything. If the winner rolls back, the key
is free again and the next duplicate runs.
"""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from bank_graphql.ledger.domain.models import WriteOutcome
from bank_graphql.ledger.domain.refusals import Refusal, RefusalCode
from bank_graphql.ledger.domain.rules import is_idempotency_key
from bank_graphql.ledger.storage.database import Conn

RETENTION_DAYS_MIN = 7

# Sorted, so two batches claiming overlapping keys queue in the same order.
_CLAIM = """
INSERT INTO idempotency_keys (key, operation, fingerprint, outcome)
SELECT key, operation, fingerprint, 'null'::jsonb
FROM unnest(%(keys)s::text[], %(operations)s::text[], %(fingerprints)s::text[])
    AS wanted (key, operation, fingerprint)
ORDER BY key
ON CONFLICT (key) DO NOTHING
RETURNING key
"""

_STORED = "SELECT key, operation, fingerprint, outcome FROM idempotency_keys WHERE key = ANY(%s)"

_STORE = """
UPDATE idempotency_keys AS k SET outcome = v.outcome
FROM unnest(%(keys)s::text[], %(outcomes)s::jsonb[]) AS v (key, outcome)
WHERE k.key = v.key
"""

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


Claim = dict[str, Any] | Refusal | None
"""None: claimed, go ahead. A dict: the stored outcome of the same request, to replay.
A Refusal: the key belongs to another request."""


async def claim(conn: Conn, requests: Sequence[KeyedRequest]) -> dict[str, Claim]:
    """Claim each request's key for this transaction (keys must be distinct)."""
    cursor = await conn.execute(
        _CLAIM,
        {
            "keys": [r.key for r in requests],
            "operations": [r.operation for r in requests],
            "fingerprints": [r.fingerprint for r in requests],
        },
    )
    claimed = {row[0] for row in await cursor.fetchall()}
    claims: dict[str, Claim] = dict.fromkeys(claimed)
    taken = {r.key: r for r in requests if r.key not in claimed}
    if taken:
        cursor = await conn.execute(_STORED, (list(taken),))
        for key, operation, fingerprint, outcome in await cursor.fetchall():
            request = taken[key]
            same = operation == request.operation and fingerprint == request.fingerprint
            claims[key] = outcome if same else reuse_refusal(request)
    return claims


def replayed(claim: Claim) -> WriteOutcome | None:
    """What a claim answers: None to go ahead, else the stored outcome or the reuse refusal."""
    if isinstance(claim, Refusal):
        return WriteOutcome(refusals=(claim,))
    return None if claim is None else WriteOutcome.from_json(claim)


async def store(conn: Conn, outcomes: dict[str, dict[str, Any]]) -> None:
    """Store each claimed key's outcome (a JSON document)."""
    if outcomes:
        await conn.execute(
            _STORE, {"keys": list(outcomes), "outcomes": [Jsonb(o) for o in outcomes.values()]}
        )


async def prune(conn: Conn, retention_days: int, batch_max: int) -> int:
    """Delete up to `batch_max` keys older than `retention_days` (at least 7)."""
    days = max(retention_days, RETENTION_DAYS_MIN)
    cursor = await conn.execute(_PRUNE, {"days": days, "limit": batch_max})
    return cursor.rowcount


def keyed_request(
    key: str | None, operation: str, **arguments: object
) -> KeyedRequest | Refusal | None:
    if key is None:
        return None
    if not is_idempotency_key(key):
        return key_refusal()
    return KeyedRequest.of(key, operation, arguments)
