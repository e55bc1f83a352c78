"""Pruning idempotency keys past their retention (claims and replays are the SQL's:
ledger_claim)."""

from bank_graphql.ledger.storage.database import Conn

RETENTION_DAYS_MIN = 7

_PRUNE = """
DELETE FROM idempotency_keys
WHERE (principal, key) IN (
    SELECT principal, key FROM idempotency_keys
    WHERE created_at < now() - make_interval(days => %(days)s)
    ORDER BY created_at
    LIMIT %(limit)s
)
"""


async def prune(conn: Conn, retention_days: int, batch_max: int) -> int:
    """Delete up to `batch_max` keys older than `retention_days` (at least 7)."""
    days = max(retention_days, RETENTION_DAYS_MIN)
    cursor = await conn.execute(_PRUNE, {"days": days, "limit": batch_max})
    return cursor.rowcount
