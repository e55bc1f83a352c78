-- Version 6: the live feed. Every entry gets a position in one global order that is gap-free
-- to resume from: positions are handed out after the fact, only to entries that every
-- older transaction has finished with, so an entry that commits late with a smaller id is
-- never jumped over.
--
-- Each entry records the transaction that wrote it (`xid`, filled by its default: the
-- write path does not change). `ledger_sequence_feed` takes a snapshot, and gives positions,
-- in id order, to the entries visible in it that have none yet, looking only at entries of
-- transactions at or after the horizon: the oldest transaction still running at the last
-- snapshot. Below it every transaction had finished, so its entries were all seen then.
--
-- Why this keeps each account's order: a write locks the account rows before it appends
-- entries, so on one account a later commit has a larger id and becomes visible no earlier;
-- entries are sequenced by snapshot, then by id.

ALTER TABLE entries ADD COLUMN IF NOT EXISTS xid xid8;
ALTER TABLE entries ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
-- Entries from before this version have none (they are all sequenced below); every later
-- entry must have one.
ALTER TABLE entries DROP CONSTRAINT IF EXISTS entry_names_transaction;
ALTER TABLE entries ADD CONSTRAINT entry_names_transaction CHECK (xid IS NOT NULL) NOT VALID;
CREATE INDEX IF NOT EXISTS entries_by_transaction ON entries (xid);

CREATE TABLE IF NOT EXISTS feed (
    position bigint PRIMARY KEY CHECK (position > 0),
    entry_id bigint NOT NULL UNIQUE REFERENCES entries (id)
);

CREATE TABLE IF NOT EXISTS feed_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- Transactions older than this had all finished when the feed was last sequenced.
    horizon xid8 NOT NULL,
    last_position bigint NOT NULL CHECK (last_position >= 0)
);

DROP TRIGGER IF EXISTS feed_append_only ON feed;
CREATE TRIGGER feed_append_only BEFORE UPDATE OR DELETE ON feed
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_rewrite();
DROP TRIGGER IF EXISTS feed_no_truncate ON feed;
CREATE TRIGGER feed_no_truncate BEFORE TRUNCATE ON feed
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_rewrite();

-- Entries from before this version, in id order (ALTER TABLE above holds the table: none
-- is being written). A write waiting for the table is still running in this snapshot, so
-- the horizon stays at or below its transaction.
INSERT INTO feed (position, entry_id)
SELECT row_number() OVER (ORDER BY id), id FROM entries
WHERE NOT EXISTS (SELECT FROM feed)
ORDER BY id;
INSERT INTO feed_state (horizon, last_position)
SELECT pg_snapshot_xmin(pg_current_snapshot()), coalesce(max(position), 0) FROM feed
ON CONFLICT DO NOTHING;

-- Positions for up to `p_limit` entries; returns how many got one. Any number of processes
-- may call it: one sequences, the others find the state row locked and return 0 at once.
-- NOTIFY bank_feed (the last position) wakes the processes' listeners; it is only a hint.
CREATE OR REPLACE FUNCTION ledger_sequence_feed(p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    state feed_state%ROWTYPE;
    snap pg_snapshot;
    added integer;
    new_horizon xid8;
BEGIN
    SELECT * INTO state FROM feed_state FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN RETURN 0; END IF;
    -- Taken after the lock: the statement below sees at least what this snapshot shows.
    snap := pg_current_snapshot();
    INSERT INTO feed (position, entry_id)
    SELECT state.last_position + row_number() OVER (ORDER BY fresh.id), fresh.id
    FROM (
        SELECT e.id FROM entries e
        WHERE e.xid >= state.horizon AND pg_visible_in_snapshot(e.xid, snap)
          AND NOT EXISTS (SELECT FROM feed f WHERE f.entry_id = e.id)
        ORDER BY e.id LIMIT p_limit
    ) AS fresh;
    GET DIAGNOSTICS added = ROW_COUNT;
    -- A full batch may have left entries of this snapshot behind: keep the horizon.
    new_horizon := CASE WHEN added < p_limit THEN pg_snapshot_xmin(snap) ELSE state.horizon END;
    IF added > 0 OR new_horizon <> state.horizon THEN
        UPDATE feed_state
        SET last_position = state.last_position + added, horizon = new_horizon;
    END IF;
    IF added > 0 THEN
        PERFORM pg_notify('bank_feed', (state.last_position + added)::text);
    END IF;
    RETURN added;
END $$;
