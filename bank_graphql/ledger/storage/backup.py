"""What backup and restore ask of the database itself; PostgreSQL's own tools copy it."""

from collections.abc import Iterable

from psycopg import Connection, Error, sql

# Tables, sequences and views outside PostgreSQL's own schemas: what a restore would collide
# with, and (tables alone) what a dump copies one by one.
_USER_RELATIONS = """
SELECT count(*) FILTER (WHERE c.relkind IN ('r', 'p')), count(*)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'S', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%'
  AND n.nspname NOT LIKE 'pg\\_temp%'
"""

_SETTING_NAMES = "SELECT name FROM pg_settings"

_PROBE_TABLE = "CREATE TEMPORARY TABLE option_probe (probe integer)"
_PROBE_OPTION = sql.SQL("ALTER TABLE option_probe ALTER COLUMN probe SET ({} = {})")

AFTER_RESTORE = """
-- The live feed's bookkeeping counts in the transaction numbers of the server the backup
-- came from, which mean nothing here. Entries the feed had not sequenced yet (all committed
-- now) take the next positions in id order, and the horizon starts again from this
-- server's own transactions, so the entries written after the restore are all sequenced.
RESET search_path;
DO $$
BEGIN
    IF to_regclass('feed_state') IS NULL THEN
        RETURN;  -- a ledger from before the live feed: `migrate` builds it
    END IF;
    INSERT INTO feed (position, entry_id)
    SELECT s.last_position + row_number() OVER (ORDER BY e.id), e.id
    FROM entries e, feed_state s
    WHERE NOT EXISTS (SELECT FROM feed f WHERE f.entry_id = e.id)
    ORDER BY e.id;
    UPDATE feed_state
    SET last_position = (SELECT coalesce(max(position), 0) FROM feed),
        horizon = pg_snapshot_xmin(pg_current_snapshot());
END $$;
"""
"""SQL to run in the restore's own transaction, after the backup's contents."""


def user_relations(database_url: str) -> tuple[int, int]:
    """(tables, tables and other relations) of the database outside PostgreSQL's own."""
    with Connection.connect(database_url, autocommit=True) as conn:
        row = conn.execute(_USER_RELATIONS).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def setting_names(database_url: str) -> frozenset[str]:
    """The configuration parameters the server knows (`SET name = ...` of any other fails)."""
    with Connection.connect(database_url, autocommit=True) as conn:
        return frozenset(str(row[0]) for row in conn.execute(_SETTING_NAMES).fetchall())


def accepted_column_options(database_url: str, options: Iterable[tuple[str, str]]) -> set[str]:
    """Which of the column options (name, value) the server accepts: a server may add its
    own (n_distinct and n_distinct_inherited are every PostgreSQL's), which others refuse.
    Tried on a temporary table, in a transaction rolled back."""
    accepted = set()
    with Connection.connect(database_url) as conn:
        conn.execute(_PROBE_TABLE)
        for name, value in options:
            try:
                with conn.transaction():
                    conn.execute(_PROBE_OPTION.format(sql.Identifier(name), sql.Literal(value)))
            except Error:
                continue
            accepted.add(name)
        conn.rollback()
    return accepted
