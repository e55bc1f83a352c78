-- Access control: API keys, who wrote each entry, and idempotency keys per principal.
-- The mutations of 0004 gain their caller, p_actor, as first parameter: the principal
-- ('key:<key id>', 'jwt:<subject>' or 'anonymous') recorded on every entry they write and
-- owning their idempotency keys. Cashback is written by 'system', which no credential is.

-- API keys: only a SHA-256 of each key is kept (keys are random, 256 bits: a fast hash
-- is enough). Servers keep the table in memory and reload it when `revision` changes.
CREATE SEQUENCE IF NOT EXISTS api_key_revisions AS bigint;

CREATE TABLE IF NOT EXISTS api_keys (
    id text COLLATE "C" PRIMARY KEY CHECK (id ~ '^[a-z0-9]{12}$'),
    name text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    role text NOT NULL CHECK (role IN ('ADMIN', 'OPERATOR', 'CUSTOMER', 'READER')),
    -- NULL: not limited. A CUSTOMER always is.
    accounts text[] COLLATE "C",
    hash bytea NOT NULL UNIQUE CHECK (length(hash) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz,
    last_used_at timestamptz,
    -- From api_key_revisions at every change but last_used_at: the sum over the table grows
    -- with every committed change, so servers see each one, whatever order they commit in.
    revision bigint NOT NULL DEFAULT nextval('api_key_revisions'),
    CONSTRAINT customer_is_scoped CHECK (role <> 'CUSTOMER' OR accounts IS NOT NULL)
);

CREATE OR REPLACE FUNCTION api_key_revised() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.revision := nextval('api_key_revisions');
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS api_keys_revised ON api_keys;
CREATE TRIGGER api_keys_revised
    BEFORE UPDATE OF id, name, role, accounts, hash, expires_at, revoked_at ON api_keys
    FOR EACH ROW EXECUTE FUNCTION api_key_revised();

-- Who caused each entry. Entries from before access control keep NULL; every new one must
-- name its actor, and only cashback is the system's (NOT VALID: checked on new rows only).
ALTER TABLE entries ADD COLUMN IF NOT EXISTS actor text;
ALTER TABLE entries DROP CONSTRAINT IF EXISTS entry_names_actor;
ALTER TABLE entries ADD CONSTRAINT entry_names_actor
    CHECK (actor IS NOT NULL AND (actor = 'system') = (kind = 'CASHBACK')) NOT VALID;

-- Idempotency keys belong to their principal. Keys stored before access control were
-- anonymous's: a retry without access control still finds them.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS principal text NOT NULL
    DEFAULT 'anonymous';
ALTER TABLE idempotency_keys ALTER COLUMN principal DROP DEFAULT;
ALTER TABLE idempotency_keys DROP CONSTRAINT IF EXISTS idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (principal, key);

DROP FUNCTION IF EXISTS ledger_create_account(text, bigint, bigint, text, text);
DROP FUNCTION IF EXISTS ledger_deposit(text, bigint, bigint, bigint, text, text);
DROP FUNCTION IF EXISTS ledger_pay(text, bigint, bigint, bigint, text, text);
DROP FUNCTION IF EXISTS ledger_merge(text, text, bigint, bigint, text, text);
DROP FUNCTION IF EXISTS ledger_absorb(text, text, bigint);
DROP FUNCTION IF EXISTS ledger_transfer_one(
    text, text, bigint, bigint, bigint, bigint, accounts, accounts);
DROP FUNCTION IF EXISTS ledger_transfers(
    text[], text[], bigint[], bigint[], text[], text[], jsonb[], boolean, bigint);
DROP FUNCTION IF EXISTS ledger_apply_transfers(
    text[], text[], bigint[], bigint[], boolean, bigint, bigint, accounts[], jsonb[]);
DROP FUNCTION IF EXISTS ledger_transfer(text, text, bigint, bigint, bigint, text, text, jsonb);
DROP FUNCTION IF EXISTS ledger_refuse(text, text, text, jsonb);
DROP FUNCTION IF EXISTS ledger_store(text, jsonb);
DROP FUNCTION IF EXISTS ledger_claim(text, text, text);

-- -- idempotency keys, per principal --------------------------------------------------------

-- Claims p_key of p_actor for this transaction: NULL when claimed (go ahead), else what to
-- answer: the stored outcome of the same request, or IDEMPOTENCY_KEY_REUSED. A duplicate
-- racing the first user of a key waits here, on the primary key, until that one ends.
CREATE OR REPLACE FUNCTION ledger_claim(
    p_actor text, p_key text, p_operation text, p_fingerprint text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    stored idempotency_keys%ROWTYPE;
BEGIN
    LOOP
        INSERT INTO idempotency_keys (principal, key, operation, fingerprint, outcome)
        VALUES (p_actor, p_key, p_operation, p_fingerprint, 'null')
        ON CONFLICT (principal, key) DO NOTHING;
        IF FOUND THEN
            RETURN NULL;
        END IF;
        SELECT * INTO stored FROM idempotency_keys WHERE principal = p_actor AND key = p_key;
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

CREATE OR REPLACE FUNCTION ledger_store(p_actor text, p_key text, p_outcome jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    UPDATE idempotency_keys SET outcome = p_outcome WHERE principal = p_actor AND key = p_key;
    RETURN p_outcome;
END $$;

-- An outcome the caller decided on the input alone (a malformed amount, say), stored under
-- its key like any outcome; or the answer the key already holds.
CREATE OR REPLACE FUNCTION ledger_refuse(
    p_actor text, p_operation text, p_key text, p_fingerprint text, p_outcome jsonb
) RETURNS jsonb LANGUAGE sql AS $$
    SELECT coalesce(ledger_claim(p_actor, p_key, p_operation, p_fingerprint),
                    ledger_store(p_actor, p_key, p_outcome))
$$;

CREATE OR REPLACE FUNCTION ledger_entry_doc(e entries) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', e.id, 'account_id', e.account_id, 'ts', e.ts,
                              'kind', e.kind, 'amount', e.amount,
                              'balance_after', e.balance_after,
                              'counterparty_id', e.counterparty_id, 'payment_id', e.payment_id,
                              'actor', e.actor)
$$;

-- -- cashback, credited by the system -----------------------------------------------------

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
        INSERT INTO entries (account_id, ts, kind, amount, balance_after, payment_id, actor)
        VALUES (p_owner, stamp, 'CASHBACK', due.cashback, acc.balance, due.id, 'system');
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

-- -- the mutations, with their actor ----------------------------------------------------

CREATE OR REPLACE FUNCTION ledger_create_account(
    p_actor text, p_id text, p_requested bigint, p_wall bigint, p_key text, p_fingerprint text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    outcome jsonb;
    created accounts%ROWTYPE;
    ts bigint;
BEGIN
    IF p_key IS NOT NULL THEN
        outcome := ledger_claim(p_actor, p_key, 'createAccount', p_fingerprint);
        IF outcome IS NOT NULL THEN RETURN outcome; END IF;
    END IF;
    outcome := ledger_refuse_future(p_wall, p_requested);
    IF outcome IS NULL THEN
        ts := coalesce(p_requested, ledger_now(p_wall));
        INSERT INTO accounts (id, created_at, last_entry_at, survivor_id)
        VALUES (p_id, ts, ts, p_id)
        ON CONFLICT (id) DO NOTHING
        RETURNING * INTO created;
        IF FOUND THEN
            PERFORM ledger_advance_clock(p_wall, ts);
            outcome := ledger_done(NULL, NULL, NULL,
                                   jsonb_build_array(ledger_account_doc(created)));
        ELSE
            outcome := ledger_refused('ACCOUNT_ALREADY_EXISTS', 'id',
                                      jsonb_build_object('id', p_id));
        END IF;
    END IF;
    IF p_key IS NOT NULL THEN PERFORM ledger_store(p_actor, p_key, outcome); END IF;
    RETURN outcome;
END $$;

CREATE OR REPLACE FUNCTION ledger_deposit(
    p_actor text, p_account text, p_amount bigint, p_requested bigint, p_wall bigint,
    p_key text, p_fingerprint text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    outcome jsonb;
    locked record;
    acc accounts%ROWTYPE;
    entry entries%ROWTYPE;
BEGIN
    IF p_key IS NOT NULL THEN
        outcome := ledger_claim(p_actor, p_key, 'deposit', p_fingerprint);
        IF outcome IS NOT NULL THEN RETURN outcome; END IF;
    END IF;
    locked := ledger_lock_one(p_account, p_requested, p_wall);
    acc := locked.acc;
    outcome := locked.refusal;
    -- Pending cashback counts too, so crediting it later can never overflow.
    IF outcome IS NULL AND acc.balance + acc.pending_cashback > money_max() - p_amount THEN
        outcome := ledger_refused('BALANCE_OVERFLOW', 'amount',
                                  jsonb_build_object('account', p_account));
    END IF;
    IF outcome IS NULL THEN
        PERFORM ledger_settle(ARRAY[p_account], locked.stamp);
        SELECT * INTO acc FROM accounts WHERE id = p_account;
        INSERT INTO entries (account_id, ts, kind, amount, balance_after, actor)
        VALUES (p_account, locked.stamp, 'DEPOSIT', p_amount, acc.balance + p_amount, p_actor)
        RETURNING * INTO entry;
        UPDATE accounts SET balance = entry.balance_after, last_entry_at = entry.ts
        WHERE id = p_account;
        PERFORM ledger_advance_clock(p_wall, entry.ts);
        outcome := ledger_done(entry.balance_after, ledger_entry_doc(entry), NULL,
                               jsonb_build_array(ledger_account_doc(acc)));
    END IF;
    IF p_key IS NOT NULL THEN PERFORM ledger_store(p_actor, p_key, outcome); END IF;
    RETURN outcome;
END $$;

CREATE OR REPLACE FUNCTION ledger_pay(
    p_actor text, p_account text, p_amount bigint, p_requested bigint, p_wall bigint,
    p_key text, p_fingerprint text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    outcome jsonb;
    locked record;
    acc accounts%ROWTYPE;
    available bigint;
    paid payments%ROWTYPE;
BEGIN
    IF p_key IS NOT NULL THEN
        outcome := ledger_claim(p_actor, p_key, 'pay', p_fingerprint);
        IF outcome IS NOT NULL THEN RETURN outcome; END IF;
    END IF;
    locked := ledger_lock_one(p_account, p_requested, p_wall);
    acc := locked.acc;
    outcome := locked.refusal;
    IF outcome IS NULL AND cashback_due_at(locked.stamp) > money_max() THEN
        outcome := ledger_refused('INVALID_TIMESTAMP', 'timestamp',
                                  jsonb_build_object('reason', 'cashback_past_end'));
    END IF;
    IF outcome IS NULL THEN
        available := acc.balance + ledger_cashback_due(acc, locked.stamp);
        IF p_amount > available THEN
            outcome := ledger_refused('INSUFFICIENT_FUNDS', 'amount', jsonb_build_object(
                'account', p_account, 'amount', p_amount, 'balance', available));
        END IF;
    END IF;
    IF outcome IS NULL THEN
        PERFORM ledger_settle(ARRAY[p_account], locked.stamp);
        -- Before numbering: its lock wait may fail and be retried, and a number is never
        -- given back.
        PERFORM ledger_advance_clock(p_wall, locked.stamp);
        INSERT INTO payments (id, account_id, ts, amount, cashback, cashback_due_at, settled)
        VALUES (nextval('payment_numbers'), p_account, locked.stamp, p_amount,
                cashback_of(p_amount), cashback_due_at(locked.stamp),
                cashback_of(p_amount) = 0)
        RETURNING * INTO paid;
        INSERT INTO entries (account_id, ts, kind, amount, balance_after, payment_id, actor)
        VALUES (p_account, paid.ts, 'PAYMENT', p_amount, available - p_amount, paid.id,
                p_actor);
        UPDATE accounts
        SET balance = available - p_amount, outgoing = money_total_add(outgoing, p_amount),
            last_entry_at = paid.ts, pending_cashback = pending_cashback + paid.cashback,
            next_cashback_due_at = CASE WHEN paid.settled THEN next_cashback_due_at
                ELSE least(next_cashback_due_at, paid.cashback_due_at) END
        WHERE id = p_account
        RETURNING * INTO acc;
        outcome := ledger_done(acc.balance, NULL, jsonb_build_object(
            'id', paid.id, 'owner_id', p_account, 'ts', paid.ts, 'amount', paid.amount,
            'cashback', paid.cashback, 'cashback_due_at', paid.cashback_due_at),
            jsonb_build_array(ledger_account_doc(acc)));
    END IF;
    IF p_key IS NOT NULL THEN PERFORM ledger_store(p_actor, p_key, outcome); END IF;
    RETURN outcome;
END $$;

CREATE OR REPLACE FUNCTION ledger_merge(
    p_actor text, p_survivor text, p_absorbed text, p_requested bigint, p_wall bigint,
    p_key text, p_fingerprint text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    outcome jsonb;
    now_ms bigint := ledger_now(p_wall);
    keeper accounts%ROWTYPE;
    gone accounts%ROWTYPE;
    locked accounts[];
    stamp bigint;
BEGIN
    IF p_key IS NOT NULL THEN
        outcome := ledger_claim(p_actor, p_key, 'mergeAccounts', p_fingerprint);
        IF outcome IS NOT NULL THEN RETURN outcome; END IF;
    END IF;
    outcome := ledger_refuse_future(p_wall, p_requested);
    IF outcome IS NULL THEN
        locked := ledger_lock(ARRAY[p_survivor, p_absorbed], now_ms);
        keeper := ledger_row(locked, p_survivor);
        gone := ledger_row(locked, p_absorbed);
        IF keeper.id IS NULL THEN
            outcome := ledger_not_found(p_survivor, 'accountId');
        ELSIF gone.id IS NULL THEN
            outcome := ledger_not_found(p_absorbed, 'absorbedAccountId');
        ELSE
            stamp := ledger_stamp(p_requested, now_ms,
                                  greatest(keeper.last_entry_at, gone.last_entry_at));
            IF stamp IS NULL THEN
                outcome := ledger_out_of_order(
                    p_requested, greatest(keeper.last_entry_at, gone.last_entry_at));
            ELSIF gone.balance + gone.pending_cashback
                  > money_max() - (keeper.balance + keeper.pending_cashback) THEN
                outcome := ledger_refused('BALANCE_OVERFLOW', 'absorbedAccountId',
                    jsonb_build_object('account', p_survivor, 'pending', true));
            END IF;
        END IF;
    END IF;
    IF outcome IS NULL THEN
        outcome := ledger_absorb(p_actor, p_survivor, p_absorbed, stamp);
        PERFORM ledger_advance_clock(p_wall, stamp);
    END IF;
    IF p_key IS NOT NULL THEN PERFORM ledger_store(p_actor, p_key, outcome); END IF;
    RETURN outcome;
END $$;

CREATE OR REPLACE FUNCTION ledger_absorb(
    p_actor text, p_survivor text, p_absorbed text, p_stamp bigint
)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    keeper accounts%ROWTYPE;
    gone accounts%ROWTYPE;
BEGIN
    PERFORM ledger_settle(ARRAY[p_survivor, p_absorbed], p_stamp);
    SELECT * INTO keeper FROM accounts WHERE id = p_survivor;
    SELECT * INTO gone FROM accounts WHERE id = p_absorbed;
    INSERT INTO entries (account_id, ts, kind, amount, balance_after, counterparty_id, actor)
    VALUES (p_absorbed, p_stamp, 'MERGE_OUT', gone.balance, 0, p_survivor, p_actor),
           (p_survivor, p_stamp, 'MERGE_IN', gone.balance, keeper.balance + gone.balance,
            p_absorbed, p_actor);
    UPDATE accounts
    SET balance = 0, pending_cashback = 0, next_cashback_due_at = NULL, last_entry_at = p_stamp
    WHERE id = p_absorbed;
    UPDATE accounts
    SET balance = keeper.balance + gone.balance,
        outgoing = money_total_add(least(keeper.outgoing, money_max()),
                                   least(gone.outgoing, money_max())),
        pending_cashback = keeper.pending_cashback + gone.pending_cashback,
        next_cashback_due_at = least(keeper.next_cashback_due_at, gone.next_cashback_due_at),
        last_entry_at = p_stamp
    WHERE id = p_survivor
    RETURNING * INTO keeper;
    UPDATE accounts
    SET survivor_id = p_survivor,
        merged_into = CASE WHEN id = p_absorbed THEN p_survivor ELSE merged_into END,
        merged_at = CASE WHEN id = p_absorbed THEN p_stamp ELSE merged_at END
    WHERE survivor_id = p_absorbed;
    RETURN ledger_done(keeper.balance, NULL, NULL,
                       jsonb_build_array(ledger_account_doc(keeper)));
END $$;

-- The source's funds at p_horizon (cashback due by then counted): INSUFFICIENT_FUNDS for
-- p_amount, or NULL.
CREATE OR REPLACE FUNCTION ledger_short_of_funds(
    src accounts, p_amount bigint, p_horizon bigint
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    available bigint := src.balance;
BEGIN
    IF src.next_cashback_due_at <= p_horizon THEN
        available := available + ledger_cashback_due(src, p_horizon);
    END IF;
    IF p_amount <= available THEN RETURN NULL; END IF;
    RETURN ledger_refused('INSUFFICIENT_FUNDS', 'amount', jsonb_build_object(
        'account', src.id, 'amount', p_amount, 'balance', available));
END $$;

-- p_hidden: the target is outside the caller's scope. Then whether it exists, and when it
-- last moved, must not answer a transfer that its source alone refuses: the source's funds
-- are checked first, at the source's own stamp (the real stamp is never earlier, so a
-- transfer this lets through is checked again below and passes).
CREATE OR REPLACE FUNCTION ledger_transfer_one(
    p_actor text, p_source text, p_target text, p_amount bigint, p_requested bigint, p_now bigint,
    p_wall bigint, p_hidden boolean, INOUT src accounts, INOUT tgt accounts, OUT stamp bigint,
    OUT outcome jsonb
) LANGUAGE plpgsql AS $$
DECLARE
    available bigint;
    out_id bigint;
BEGIN
    IF p_requested > p_wall THEN
        outcome := ledger_refuse_future(p_wall, p_requested);
    ELSIF src.id IS NULL THEN
        outcome := ledger_not_found(p_source, 'sourceAccountId');
    ELSIF p_hidden THEN
        outcome := ledger_short_of_funds(
            src, p_amount, coalesce(p_requested, greatest(p_now, src.last_entry_at)));
    END IF;
    IF outcome IS NULL AND tgt.id IS NULL THEN
        outcome := ledger_not_found(p_target, 'targetAccountId');
    END IF;
    IF outcome IS NOT NULL THEN RETURN; END IF;
    stamp := ledger_stamp(p_requested, p_now, greatest(src.last_entry_at, tgt.last_entry_at));
    IF stamp IS NULL THEN
        outcome := ledger_out_of_order(
            p_requested, greatest(src.last_entry_at, tgt.last_entry_at));
        RETURN;
    END IF;
    available := src.balance;
    IF src.next_cashback_due_at <= stamp THEN
        available := available + ledger_cashback_due(src, stamp);
    END IF;
    IF p_amount > available THEN
        outcome := ledger_refused('INSUFFICIENT_FUNDS', 'amount', jsonb_build_object(
            'account', p_source, 'amount', p_amount, 'balance', available));
    ELSIF tgt.balance + tgt.pending_cashback > money_max() - p_amount THEN
        outcome := ledger_refused('BALANCE_OVERFLOW', 'amount',
                                  jsonb_build_object('account', p_target));
    END IF;
    IF outcome IS NOT NULL OR src.next_cashback_due_at <= stamp
       OR tgt.next_cashback_due_at <= stamp THEN
        RETURN;
    END IF;
    src.balance := src.balance - p_amount;
    src.outgoing := money_total_add(src.outgoing, p_amount);
    src.last_entry_at := stamp;
    tgt.balance := tgt.balance + p_amount;
    tgt.last_entry_at := stamp;
    -- The rows of a VALUES list are numbered in order: the first is the TRANSFER_OUT.
    WITH legs AS (
        INSERT INTO entries (account_id, ts, kind, amount, balance_after, counterparty_id,
                             actor)
        VALUES (p_source, stamp, 'TRANSFER_OUT', p_amount, src.balance, p_target, p_actor),
               (p_target, stamp, 'TRANSFER_IN', p_amount, tgt.balance, p_source, p_actor)
        RETURNING id
    )
    SELECT min(id) INTO out_id FROM legs;
    outcome := ledger_done(src.balance, jsonb_build_object(
            'id', out_id, 'account_id', p_source, 'ts', stamp, 'kind', 'TRANSFER_OUT',
            'amount', p_amount, 'balance_after', src.balance, 'counterparty_id', p_target,
            'payment_id', NULL, 'actor', p_actor),
        NULL, jsonb_build_array(ledger_account_doc(src), ledger_account_doc(tgt)));
END $$;

CREATE OR REPLACE FUNCTION ledger_transfers(
    p_actor text, p_sources text[], p_targets text[], p_amounts bigint[], p_requested bigint[],
    p_keys text[], p_fingerprints text[], p_refused jsonb[], p_hidden boolean[],
    p_atomic boolean, p_wall bigint
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    n integer := cardinality(p_sources);
    results jsonb[] := array_fill(NULL::jsonb, ARRAY[n]);
    claimed boolean[] := array_fill(false, ARRAY[n]);
    now_ms bigint := ledger_now(p_wall);
    newest bigint;
    touched text[] := p_sources || p_targets;
    i integer;
BEGIN
    IF cardinality(array_remove(p_keys, NULL)) > 0 THEN
        -- Claims in key order: batches claiming overlapping keys queue in the same order.
        FOR i IN
            SELECT k.i FROM unnest(p_keys) WITH ORDINALITY AS k (key, i)
            WHERE k.key IS NOT NULL ORDER BY k.key
        LOOP
            results[i] := ledger_claim(p_actor, p_keys[i], 'transfer', p_fingerprints[i]);
            claimed[i] := results[i] IS NULL;
            IF claimed[i] THEN results[i] := p_refused[i]; END IF;
        END LOOP;
        FOR i IN 1 .. n LOOP
            IF p_atomic AND NOT claimed[i] AND ledger_has_refusals(results[i]) THEN
                PERFORM ledger_abort_batch(i - 1, results[i]);  -- a replayed refusal too
            END IF;
        END LOOP;
        touched := ARRAY(
            SELECT unnest(ARRAY[p_sources[j], p_targets[j]])
            FROM generate_subscripts(p_sources, 1) AS j WHERE results[j] IS NULL);
    END IF;
    results := ledger_apply_transfers(
        p_actor, p_sources, p_targets, p_amounts, p_requested, p_hidden, p_atomic, p_wall,
        now_ms, ledger_lock(touched, now_ms), results);
    FOR i IN 1 .. n LOOP
        IF claimed[i] THEN PERFORM ledger_store(p_actor, p_keys[i], results[i]); END IF;
    END LOOP;
    RETURN to_jsonb(results);
END $$;

CREATE OR REPLACE FUNCTION ledger_apply_transfers(
    p_actor text, p_sources text[], p_targets text[], p_amounts bigint[], p_requested bigint[],
    p_hidden boolean[], p_atomic boolean, p_wall bigint, p_now bigint, p_rows accounts[],
    p_results jsonb[]
) RETURNS jsonb[] LANGUAGE plpgsql AS $$
DECLARE
    ids text[] := ledger_ids(p_rows);
    dirty boolean := false;
    now_ms bigint := p_now;
    settled_to bigint := p_now;
    newest bigint;
    step record;
    ps integer;
    pt integer;
BEGIN
    FOR i IN 1 .. cardinality(p_sources) LOOP
        CONTINUE WHEN p_results[i] IS NOT NULL;
        IF now_ms > settled_to THEN  -- an earlier item moved the client clock's now
            IF dirty THEN PERFORM ledger_write_back(p_rows); dirty := false; END IF;
            PERFORM ledger_settle(ids, now_ms);
            p_rows := ledger_rows(ids);
            settled_to := now_ms;
        END IF;
        ps := array_position(ids, p_sources[i]);
        pt := array_position(ids, p_targets[i]);
        step := ledger_transfer_one(p_actor, p_sources[i], p_targets[i], p_amounts[i],
                                    p_requested[i], now_ms, p_wall, p_hidden[i],
                                    p_rows[ps], p_rows[pt]);
        IF step.outcome IS NULL THEN  -- cashback due by its timestamp is credited first
            IF dirty THEN PERFORM ledger_write_back(p_rows); dirty := false; END IF;
            PERFORM ledger_settle(ARRAY[p_sources[i], p_targets[i]], step.stamp);
            p_rows := ledger_rows(ids);
            step := ledger_transfer_one(p_actor, p_sources[i], p_targets[i], p_amounts[i],
                                        p_requested[i], now_ms, p_wall, p_hidden[i],
                                        p_rows[ps], p_rows[pt]);
        END IF;
        p_results[i] := step.outcome;
        IF ledger_has_refusals(step.outcome) THEN
            IF p_atomic THEN PERFORM ledger_abort_batch(i - 1, step.outcome); END IF;
            CONTINUE;
        END IF;
        p_rows[ps] := step.src;
        p_rows[pt] := step.tgt;
        dirty := true;
        newest := greatest(newest, step.stamp);
        IF p_wall IS NULL THEN  -- later items see the client clock it moved
            now_ms := greatest(now_ms, newest);
        END IF;
    END LOOP;
    IF dirty THEN PERFORM ledger_write_back(p_rows); END IF;
    IF newest IS NOT NULL THEN PERFORM ledger_advance_clock(p_wall, newest); END IF;
    RETURN p_results;
END $$;

CREATE OR REPLACE FUNCTION ledger_transfer(
    p_actor text, p_source text, p_target text, p_amount bigint, p_requested bigint, p_wall bigint,
    p_key text, p_fingerprint text, p_refused jsonb, p_hidden boolean
) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN ledger_transfers(p_actor, ARRAY[p_source], ARRAY[p_target], ARRAY[p_amount],
                            ARRAY[p_requested], ARRAY[p_key], ARRAY[p_fingerprint],
                            ARRAY[p_refused], ARRAY[p_hidden], false, p_wall) -> 0;
END $$;
