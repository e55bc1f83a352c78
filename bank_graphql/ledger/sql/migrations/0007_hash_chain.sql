-- Version 7: tamper evidence. Each entry carries a hash over its own content and the hash
-- of the entry before it in its account's chain (the account's entries by ts, then id: the
-- order of the balanceAfter chain), so each account's ledger is a chain that no change made
-- behind the ledger's back (a superuser who disabled the append-only trigger) leaves whole.
--
-- The hash is written by the statement that writes the entry: a BEFORE INSERT trigger, so
-- no write path can forget it and no caller can choose it. The writer holds the account's
-- row lock, so the entry it reads as the account's last is the last.
--
-- Entries from before this version keep no hash of their own (the ledger is never
-- rewritten): each account's are folded, in chain order, into one anchor hash recorded here
-- once, and the account's first new entry chains on from the anchor.

ALTER TABLE entries ADD COLUMN IF NOT EXISTS hash bytea;

-- The one definition of an entry's hash: sha256 over the previous hash (empty for an
-- account's first entry) and the entry's fields joined by '|'. The encoding is unambiguous:
-- the fields are always the same ten, and none before the last (the actor) can hold a '|'
-- (numbers, an entry kind, account ids by their format). The transaction id is in it too:
-- it orders the live feed, so moving it could hide an entry from the feed's checks. STABLE, not IMMUTABLE, as what it
-- calls is: so the planner inlines it into the audit's queries.
CREATE OR REPLACE FUNCTION ledger_entry_hash(p_prev bytea, e entries) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT sha256(p_prev || convert_to(concat_ws('|',
        e.id, e.account_id, e.ts, e.kind, e.amount, e.balance_after,
        coalesce(e.counterparty_id, ''), coalesce(e.payment_id::text, ''),
        coalesce(e.xid::text, ''), coalesce(e.actor, '')), 'UTF8'))
$$;

-- A chain folded over entries in the order given: ledger_chain(e ORDER BY e.ts, e.id).
CREATE OR REPLACE AGGREGATE ledger_chain(entries) (
    SFUNC = ledger_entry_hash, STYPE = bytea, INITCOND = ''
);

CREATE TABLE IF NOT EXISTS chain_anchors (
    account_id text COLLATE "C" PRIMARY KEY REFERENCES accounts (id),
    -- The anchor covers the account's entries up to this one, in chain order.
    last_entry_id bigint NOT NULL REFERENCES entries (id),
    entry_count bigint NOT NULL CHECK (entry_count > 0),
    hash bytea NOT NULL
);

DROP TRIGGER IF EXISTS chain_anchors_append_only ON chain_anchors;
CREATE TRIGGER chain_anchors_append_only BEFORE UPDATE OR DELETE ON chain_anchors
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_rewrite();
DROP TRIGGER IF EXISTS chain_anchors_no_truncate ON chain_anchors;
CREATE TRIGGER chain_anchors_no_truncate BEFORE TRUNCATE ON chain_anchors
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_rewrite();

-- ALTER TABLE above holds the entries table until this version commits: nothing is being
-- appended while the anchors are folded.
INSERT INTO chain_anchors (account_id, last_entry_id, entry_count, hash)
SELECT account_id, max(id), count(*), ledger_chain(e ORDER BY e.ts, e.id)
FROM entries e
WHERE NOT EXISTS (SELECT FROM chain_anchors)
GROUP BY account_id;

CREATE OR REPLACE FUNCTION ledger_chain_entry() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    prev bytea;
BEGIN
    SELECT e.hash INTO prev FROM entries e
    WHERE e.account_id = NEW.account_id
    ORDER BY e.ts DESC, e.id DESC LIMIT 1;
    IF prev IS NULL THEN
        -- The account's first entry, or its first since the anchor.
        SELECT a.hash INTO prev FROM chain_anchors a WHERE a.account_id = NEW.account_id;
    END IF;
    NEW.hash := ledger_entry_hash(coalesce(prev, ''::bytea), NEW);
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS entries_chain ON entries;
CREATE TRIGGER entries_chain BEFORE INSERT ON entries
    FOR EACH ROW EXECUTE FUNCTION ledger_chain_entry();
