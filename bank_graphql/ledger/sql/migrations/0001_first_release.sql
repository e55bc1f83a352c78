-- Version 1: the schema of the first release, exactly as it shipped (its statements are
-- idempotent, as every schema before numbered migrations was). A database made before the
-- schema version was recorded is taken to be at this version and goes on from 0002.
--
-- Money and timestamps are bigint: money in minor units, time in ms since the Unix epoch.
-- Both stay within 0 .. 2^53-1 (9007199254740991) so they survive JSON clients exactly.

DO $$ BEGIN
    CREATE TYPE entry_kind AS ENUM (
        'DEPOSIT', 'TRANSFER_IN', 'TRANSFER_OUT', 'PAYMENT', 'CASHBACK', 'MERGE_IN', 'MERGE_OUT'
    );
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

CREATE TABLE IF NOT EXISTS accounts (
    -- COLLATE "C": ids sort by bytes, the same on every server whatever its locale.
    id text COLLATE "C" PRIMARY KEY
        CONSTRAINT account_id_format CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$'),
    created_at bigint NOT NULL CHECK (created_at BETWEEN 0 AND 9007199254740991),
    balance bigint NOT NULL DEFAULT 0
        CONSTRAINT balance_not_negative CHECK (balance >= 0),
    -- Transfers out and payments of this account and of every account merged into it.
    outgoing bigint NOT NULL DEFAULT 0 CHECK (outgoing >= 0),
    -- Cashback of payments owned by this account that is not credited yet. Balance plus pending
    -- cashback is capped so that crediting cashback can never overflow.
    pending_cashback bigint NOT NULL DEFAULT 0 CHECK (pending_cashback >= 0),
    next_cashback_due_at bigint,
    -- Timestamp of the newest entry, or created_at while there is none.
    last_entry_at bigint NOT NULL,
    -- While open, survivor_id = id. After a merge it names the account that owns everything
    -- this one owned (followed through merge chains), and merged_into the direct absorber.
    survivor_id text COLLATE "C" NOT NULL REFERENCES accounts (id),
    merged_into text COLLATE "C" REFERENCES accounts (id),
    merged_at bigint,
    CONSTRAINT balance_within_money CHECK (balance + pending_cashback <= 9007199254740991),
    CONSTRAINT merged_is_closed CHECK ((merged_into IS NULL) = (survivor_id = id)),
    CHECK (last_entry_at >= created_at)
);

CREATE INDEX IF NOT EXISTS accounts_by_survivor ON accounts (survivor_id);
-- topSpenders reads this index instead of the ledger.
CREATE INDEX IF NOT EXISTS accounts_top_spenders ON accounts (outgoing DESC, id)
    WHERE merged_into IS NULL;

CREATE SEQUENCE IF NOT EXISTS payment_numbers AS bigint;

CREATE TABLE IF NOT EXISTS payments (
    id bigint PRIMARY KEY,                 -- the N of "paymentN"
    account_id text COLLATE "C" NOT NULL REFERENCES accounts (id),  -- the payer
    ts bigint NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    cashback bigint NOT NULL CHECK (cashback = amount * 2 / 100),
    cashback_due_at bigint NOT NULL CHECK (cashback_due_at = ts + 86400000),
    -- True once the cashback entry is written (or at once for a zero cashback).
    settled boolean NOT NULL
);

CREATE INDEX IF NOT EXISTS payments_by_account ON payments (account_id, id);
CREATE INDEX IF NOT EXISTS payments_unsettled_by_due ON payments (cashback_due_at, id)
    WHERE NOT settled;
CREATE INDEX IF NOT EXISTS payments_unsettled_by_account ON payments (account_id, cashback_due_at)
    WHERE NOT settled;

CREATE TABLE IF NOT EXISTS entries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id text COLLATE "C" NOT NULL REFERENCES accounts (id),
    ts bigint NOT NULL CHECK (ts BETWEEN 0 AND 9007199254740991),
    kind entry_kind NOT NULL,
    amount bigint NOT NULL CHECK (amount BETWEEN 0 AND 9007199254740991),
    balance_after bigint NOT NULL CHECK (balance_after BETWEEN 0 AND 9007199254740991),
    counterparty_id text COLLATE "C" REFERENCES accounts (id),
    payment_id bigint REFERENCES payments (id),
    CONSTRAINT only_merges_move_zero CHECK (amount > 0 OR kind IN ('MERGE_IN', 'MERGE_OUT')),
    CONSTRAINT counterparty_matches_kind CHECK (
        (counterparty_id IS NOT NULL) = (kind IN ('TRANSFER_IN', 'TRANSFER_OUT', 'MERGE_IN', 'MERGE_OUT'))
    ),
    CONSTRAINT payment_matches_kind CHECK (
        (payment_id IS NOT NULL) = (kind IN ('PAYMENT', 'CASHBACK'))
    )
);

-- One index answers balance(at) (last entry at or before `at`) and keyset pages of history.
CREATE INDEX IF NOT EXISTS entries_by_account_time ON entries (account_id, ts, id)
    INCLUDE (balance_after);

-- The ledger is append-only: no UPDATE, DELETE or TRUNCATE, whoever asks.
CREATE OR REPLACE FUNCTION refuse_ledger_rewrite() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

DROP TRIGGER IF EXISTS entries_append_only ON entries;
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_rewrite();
DROP TRIGGER IF EXISTS entries_no_truncate ON entries;
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_rewrite();

-- "Now" of the client clock: the greatest timestamp any successful mutation has used.
CREATE TABLE IF NOT EXISTS client_clock (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    now_ms bigint NOT NULL DEFAULT 0
);
INSERT INTO client_clock DEFAULT VALUES ON CONFLICT DO NOTHING;

-- Idempotency keys: the stored outcome of the first request that used each key.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key text PRIMARY KEY,
    operation text NOT NULL,
    fingerprint text NOT NULL,
    outcome jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (created_at);

-- One transfer in one statement: the hot path of `transfer` when there is no idempotency key
-- and no cashback to settle first (system clock). It locks both accounts in id order, checks,
-- appends both entries and updates both accounts, or changes nothing and says why:
--   OK | SOURCE_NOT_FOUND | TARGET_NOT_FOUND | SETTLE_FIRST | TIMESTAMP_OUT_OF_ORDER |
--   INSUFFICIENT_FUNDS | BALANCE_OVERFLOW
-- SETTLE_FIRST: cashback is due on one of them; the service then takes its general path,
-- which credits it first. The rules are those of bank_graphql/ledger (checks.py, service.py).
CREATE OR REPLACE FUNCTION ledger_transfer(
    p_source text, p_target text, p_amount bigint, p_requested bigint, p_now bigint,
    OUT outcome text, OUT entry_id bigint, OUT entry_ts bigint, OUT source_balance bigint,
    OUT newest_entry_at bigint, OUT source_created_at bigint, OUT source_outgoing bigint,
    OUT target_created_at bigint, OUT target_outgoing bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    src accounts%ROWTYPE;
    tgt accounts%ROWTYPE;
    row accounts%ROWTYPE;
BEGIN
    -- Id order: opposing transfers queue in the same order and never deadlock.
    FOR row IN
        SELECT * FROM accounts
        WHERE id IN (p_source, p_target) AND merged_into IS NULL
        ORDER BY id FOR UPDATE
    LOOP
        IF row.id = p_source THEN src := row; ELSE tgt := row; END IF;
    END LOOP;
    IF src.id IS NULL THEN outcome := 'SOURCE_NOT_FOUND'; RETURN; END IF;
    IF tgt.id IS NULL THEN outcome := 'TARGET_NOT_FOUND'; RETURN; END IF;
    IF src.next_cashback_due_at <= greatest(p_now, p_requested)
       OR tgt.next_cashback_due_at <= greatest(p_now, p_requested) THEN
        outcome := 'SETTLE_FIRST'; RETURN;
    END IF;
    newest_entry_at := greatest(src.last_entry_at, tgt.last_entry_at);
    IF p_requested < newest_entry_at THEN outcome := 'TIMESTAMP_OUT_OF_ORDER'; RETURN; END IF;
    source_balance := src.balance;
    IF p_amount > src.balance THEN outcome := 'INSUFFICIENT_FUNDS'; RETURN; END IF;
    IF tgt.balance + tgt.pending_cashback + p_amount > 9007199254740991 THEN
        outcome := 'BALANCE_OVERFLOW'; RETURN;
    END IF;

    entry_ts := coalesce(p_requested, greatest(p_now, newest_entry_at));
    source_balance := src.balance - p_amount;
    INSERT INTO entries (account_id, ts, kind, amount, balance_after, counterparty_id)
    VALUES (p_source, entry_ts, 'TRANSFER_OUT', p_amount, source_balance, p_target)
    RETURNING id INTO entry_id;
    INSERT INTO entries (account_id, ts, kind, amount, balance_after, counterparty_id)
    VALUES (p_target, entry_ts, 'TRANSFER_IN', p_amount, tgt.balance + p_amount, p_source);
    UPDATE accounts
    SET balance = CASE WHEN id = p_source THEN source_balance ELSE tgt.balance + p_amount END,
        outgoing = CASE WHEN id = p_source THEN outgoing + p_amount ELSE outgoing END,
        last_entry_at = entry_ts
    WHERE id IN (p_source, p_target);
    outcome := 'OK';
    source_created_at := src.created_at;
    source_outgoing := src.outgoing + p_amount;
    target_created_at := tgt.created_at;
    target_outgoing := tgt.outgoing;
END $$;
