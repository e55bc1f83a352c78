-- The write path as SQL functions: every rule of a money movement lives here, once.
-- Each mutation is one statement, `SELECT ledger_<mutation>(...)`, run as its own
-- transaction: one round trip to success or refusal. Python checks only the shape of the
-- inputs (ids, amounts, keys) and turns the outcome documents into answers.
--
-- An outcome is a jsonb document, the same one stored under an idempotency key:
--   {"refusals": [{"code", "field", "args"}], "balance", "entry", "payment", "accounts"}
-- A refusal changes nothing, except that cashback due by now stays credited: it is owed
-- whatever the request wanted.
--
-- "Now" is p_wall, the server's clock read by the caller; NULL selects the client clock,
-- whose now is the greatest timestamp any successful mutation has used.
--
-- The functions that read rows are VOLATILE (the default) on purpose: each of their
-- statements then sees what committed before it, rows locked a statement earlier included.
-- A STABLE function would read with its caller's snapshot, taken before the lock waited.

DROP FUNCTION IF EXISTS ledger_transfer(text, text, bigint, bigint, bigint);
DROP FUNCTION IF EXISTS ledger_lock(text[]);
DROP FUNCTION IF EXISTS ledger_lock(text[], bigint);
DROP FUNCTION IF EXISTS ledger_open_account(text);
DROP FUNCTION IF EXISTS ledger_locked_account(text, text[]);

-- A payment's cashback: 2% of it, rounded down, due 24 hours after it.
CREATE OR REPLACE FUNCTION cashback_of(amount bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT amount * 2 / 100 $$;

CREATE OR REPLACE FUNCTION cashback_due_at(ts bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT ts + 86400000 $$;

-- The payments table checks its rows with the same two functions (the constraints the
-- first release named by position are replaced).
ALTER TABLE payments DROP CONSTRAINT IF EXISTS payments_check;
ALTER TABLE payments DROP CONSTRAINT IF EXISTS payments_check1;
ALTER TABLE payments DROP CONSTRAINT IF EXISTS cashback_rule;
ALTER TABLE payments DROP CONSTRAINT IF EXISTS cashback_due_rule;
ALTER TABLE payments ADD CONSTRAINT cashback_rule CHECK (cashback = cashback_of(amount));
ALTER TABLE payments ADD CONSTRAINT cashback_due_rule
    CHECK (cashback_due_at = cashback_due_at(ts));

-- -- outcome documents -------------------------------------------------------------------
-- STABLE, as jsonb_build_object is: PostgreSQL then inlines them where they are called, and
-- does not plan them again at every call.

CREATE OR REPLACE FUNCTION ledger_refused(p_code text, p_field text, p_args jsonb)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'refusals', jsonb_build_array(jsonb_build_object(
            'code', p_code, 'field', jsonb_build_array(p_field), 'args', p_args)),
        'balance', NULL, 'entry', NULL, 'payment', NULL, 'accounts', '[]'::jsonb)
$$;

CREATE OR REPLACE FUNCTION ledger_done(
    p_balance bigint, p_entry jsonb, p_payment jsonb, p_accounts jsonb
) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('refusals', '[]'::jsonb, 'balance', p_balance, 'entry', p_entry,
                              'payment', p_payment, 'accounts', p_accounts)
$$;

CREATE OR REPLACE FUNCTION ledger_account_doc(a accounts) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', a.id, 'created_at', a.created_at,
                              'outgoing', least(a.outgoing, money_max()))
$$;

CREATE OR REPLACE FUNCTION ledger_entry_doc(e entries) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', e.id, 'account_id', e.account_id, 'ts', e.ts,
                              'kind', e.kind, 'amount', e.amount,
                              'balance_after', e.balance_after,
                              'counterparty_id', e.counterparty_id, 'payment_id', e.payment_id)
$$;

CREATE OR REPLACE FUNCTION ledger_has_refusals(p_outcome jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$ SELECT jsonb_array_length(p_outcome -> 'refusals') > 0 $$;

-- -- idempotency keys ----------------------------------------------------------------------

-- Claims p_key for this transaction: NULL when claimed (go ahead), else what to answer: the
-- stored outcome of the same request, or IDEMPOTENCY_KEY_REUSED. A duplicate racing the
-- first user of a key waits here, on the primary key, until that one commits or rolls back.
CREATE OR REPLACE FUNCTION ledger_claim(p_key text, p_operation text, p_fingerprint text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    stored idempotency_keys%ROWTYPE;
BEGIN
    LOOP
        INSERT INTO idempotency_keys (key, operation, fingerprint, outcome)
        VALUES (p_key, p_operation, p_fingerprint, 'null')
        ON CONFLICT (key) DO NOTHING;
        IF FOUND THEN
            RETURN NULL;
        END IF;
        SELECT * INTO stored FROM idempotency_keys WHERE key = p_key;
        IF FOUND THEN
            IF stored.operation = p_operation AND stored.fingerprint = p_fingerprint THEN
                RETURN stored.outcome;
            END IF;
            RETURN ledger_refused('IDEMPOTENCY_KEY_REUSED', 'idempotencyKey',
                                  jsonb_build_object('key', p_key));
        END IF;
        -- Pruned between the two statements: claim it again.
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION ledger_store(p_key text, p_outcome jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE idempotency_keys SET outcome = p_outcome WHERE key = p_key;
    RETURN p_outcome;
END $$;

-- An outcome the caller decided on the input alone (a malformed amount, say), stored under
-- its key like any outcome; or the answer the key already holds.
CREATE OR REPLACE FUNCTION ledger_refuse(
    p_operation text, p_key text, p_fingerprint text, p_outcome jsonb
) RETURNS jsonb LANGUAGE sql AS $$
    SELECT coalesce(ledger_claim(p_key, p_operation, p_fingerprint),
                    ledger_store(p_key, p_outcome))
$$;

-- -- time -----------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION ledger_now(p_wall bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF p_wall IS NOT NULL THEN RETURN p_wall; END IF;
    RETURN (SELECT now_ms FROM client_clock);
END $$;

CREATE OR REPLACE FUNCTION ledger_advance_clock(p_wall bigint, p_ts bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_wall IS NULL THEN
        UPDATE client_clock SET now_ms = p_ts WHERE now_ms < p_ts;
    END IF;
END $$;

-- On the server's clock a timestamp later than now is refused.
CREATE OR REPLACE FUNCTION ledger_refuse_future(p_wall bigint, p_requested bigint)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_requested > p_wall THEN
        ledger_refused('INVALID_TIMESTAMP', 'timestamp', jsonb_build_object(
            'reason', 'future', 'requested', p_requested, 'now', p_wall))
    END
$$;

-- A mutation's timestamp on accounts whose newest entry is at p_newest: the one requested,
-- or now, or that newest entry when it is ahead of now. NULL when the requested one is
-- earlier than that entry (TIMESTAMP_OUT_OF_ORDER).
CREATE OR REPLACE FUNCTION ledger_stamp(p_requested bigint, p_now bigint, p_newest bigint)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_requested IS NULL THEN greatest(p_now, p_newest)
                WHEN p_requested >= p_newest THEN p_requested END
$$;

CREATE OR REPLACE FUNCTION ledger_out_of_order(p_requested bigint, p_newest bigint)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT ledger_refused('TIMESTAMP_OUT_OF_ORDER', 'timestamp',
                          jsonb_build_object('requested', p_requested, 'newest', p_newest))
$$;

-- -- accounts and cashback ------------------------------------------------------------------

-- Locks the open accounts among p_ids in id order: two writes touching the same accounts
-- always queue in the same order, so opposing transfers never deadlock. Missing and merged
-- accounts are left out. Then credits their cashback due by p_now (none when NULL), which
-- is owed whatever the write goes on to do. Returns the rows it locked, in id order: for the
-- rest of the write, those are the accounts that exist (one created meanwhile is not).
CREATE OR REPLACE FUNCTION ledger_lock(p_ids text[], p_now bigint) RETURNS accounts[]
LANGUAGE plpgsql AS $$
DECLARE
    locked accounts[];
    earliest_due bigint;
BEGIN
    SELECT array_agg(l.row ORDER BY (l.row).id), min((l.row).next_cashback_due_at)
    INTO locked, earliest_due
    FROM (
        SELECT a AS row FROM accounts a
        -- "Open" written as survivor_id = id (the same, by merged_is_closed) rather than
        -- merged_into IS NULL: that would tempt a generic plan into scanning the whole
        -- partial index of top spenders, whose predicate it matches.
        WHERE a.id = ANY(p_ids) AND a.survivor_id = a.id
        ORDER BY a.id FOR UPDATE
    ) AS l;
    IF earliest_due <= p_now THEN
        PERFORM ledger_settle(ledger_ids(locked), p_now);
        locked := ledger_rows(ledger_ids(locked));
    END IF;
    RETURN coalesce(locked, '{}');
END $$;

CREATE OR REPLACE FUNCTION ledger_ids(p_rows accounts[]) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    locked accounts;
    ids text[] := '{}';
BEGIN
    FOREACH locked IN ARRAY p_rows LOOP
        ids := ids || locked.id;
    END LOOP;
    RETURN ids;
END $$;

-- The current rows of accounts this write has locked, in id order.
CREATE OR REPLACE FUNCTION ledger_rows(p_ids text[]) RETURNS accounts[]
LANGUAGE plpgsql AS $$
BEGIN
    RETURN ARRAY(SELECT a FROM accounts a WHERE a.id = ANY(p_ids) ORDER BY a.id);
END $$;

-- The row of account p_id among rows a write locked, or NULL: it does not exist for it.
CREATE OR REPLACE FUNCTION ledger_row(p_rows accounts[], p_id text) RETURNS accounts
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    candidate accounts;
BEGIN
    FOREACH candidate IN ARRAY p_rows LOOP
        IF candidate.id = p_id THEN RETURN candidate; END IF;
    END LOOP;
    RETURN NULL;
END $$;

-- Writes back what a batch changed in its rows: balances, totals and newest entry times.
CREATE OR REPLACE FUNCTION ledger_write_back(p_rows accounts[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    changed accounts;
BEGIN
    FOREACH changed IN ARRAY p_rows LOOP
        UPDATE accounts
        SET balance = changed.balance, outgoing = changed.outgoing,
            last_entry_at = changed.last_entry_at
        WHERE id = changed.id;
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION ledger_not_found(p_id text, p_field text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT ledger_refused('ACCOUNT_NOT_FOUND', p_field, jsonb_build_object('id', p_id))
$$;

-- Cashback of the account's payments (and of the accounts it absorbed) due by p_horizon and
-- not credited yet. Its next due time spares the query when nothing can be due.
CREATE OR REPLACE FUNCTION ledger_cashback_due(p_owner accounts, p_horizon bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    IF p_owner.next_cashback_due_at IS NULL OR p_owner.next_cashback_due_at > p_horizon THEN
        RETURN 0;
    END IF;
    RETURN (SELECT coalesce(sum(p.cashback), 0)::bigint
            FROM payments p JOIN accounts o ON o.id = p.account_id
            WHERE o.survivor_id = p_owner.id AND NOT p.settled
              AND p.cashback_due_at <= p_horizon);
END $$;

-- Credits the cashback due by p_horizon to the locked open account p_owner, each at its due
-- time, in due order. Cashback found unpaid behind a later entry (a ledger written by an
-- early version can hold some) is credited at that entry's time, with a warning: late, but
-- the ledger stays in time order.
CREATE OR REPLACE FUNCTION ledger_credit_cashback(p_owner text, p_horizon bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    acc accounts%ROWTYPE;
    due record;
    stamp bigint;
BEGIN
    SELECT * INTO acc FROM accounts WHERE id = p_owner;
    FOR due IN
        SELECT p.id, p.cashback, p.cashback_due_at
        FROM payments p JOIN accounts o ON o.id = p.account_id
        WHERE o.survivor_id = p_owner AND NOT p.settled AND p.cashback_due_at <= p_horizon
        ORDER BY p.cashback_due_at, p.id
    LOOP
        stamp := greatest(due.cashback_due_at, acc.last_entry_at);
        IF stamp > due.cashback_due_at THEN
            RAISE WARNING 'cashback of payment% was due at %, before the newest entry of '
                'account %; credited at that entry''s time, %',
                due.id, due.cashback_due_at, quote_literal(p_owner), stamp;
        END IF;
        acc.balance := acc.balance + due.cashback;
        acc.pending_cashback := acc.pending_cashback - due.cashback;
        acc.last_entry_at := stamp;
        INSERT INTO entries (account_id, ts, kind, amount, balance_after, payment_id)
        VALUES (p_owner, stamp, 'CASHBACK', due.cashback, acc.balance, due.id);
        UPDATE payments SET settled = true WHERE id = due.id;
    END LOOP;
    UPDATE accounts
    SET balance = acc.balance, pending_cashback = acc.pending_cashback,
        last_entry_at = acc.last_entry_at,
        next_cashback_due_at = (
            SELECT min(p.cashback_due_at)
            FROM payments p JOIN accounts o ON o.id = p.account_id
            WHERE o.survivor_id = p_owner AND NOT p.settled)
    WHERE id = p_owner;
END $$;

-- Credits the cashback due by p_horizon to those of the locked accounts p_ids that have any.
CREATE OR REPLACE FUNCTION ledger_settle(p_ids text[], p_horizon bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    owner text;
BEGIN
    FOR owner IN
        SELECT id FROM accounts
        WHERE id = ANY(p_ids) AND survivor_id = id AND next_cashback_due_at <= p_horizon
        ORDER BY id
    LOOP
        PERFORM ledger_credit_cashback(owner, p_horizon);
    END LOOP;
END $$;

-- The sweeper's and the readers' settlement: locks p_owners and credits everything due by
-- p_horizon, looking at each account's payments (no shortcut). Returns the accounts locked.
CREATE OR REPLACE FUNCTION ledger_settle_accounts(p_owners text[], p_horizon bigint)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    owner text;
    settled integer := 0;
BEGIN
    FOR owner IN SELECT r.id FROM unnest(ledger_lock(p_owners, NULL)) AS r LOOP
        PERFORM ledger_credit_cashback(owner, p_horizon);
        settled := settled + 1;
    END LOOP;
    RETURN settled;
END $$;
