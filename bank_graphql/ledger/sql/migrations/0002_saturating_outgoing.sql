-- Version 2: outgoing saturates at the money ceiling, and the one-statement transfer credits
-- cashback due by its effective timestamp first.
--
-- Also run on databases made by any release before schema versions were recorded (taken to be
-- at version 1, whatever their idempotent schema.sql had already added), so every statement
-- here is idempotent.

-- The money ceiling, 2^53-1: the largest amount, balance or total any JSON client holds exactly.
CREATE OR REPLACE FUNCTION money_max() RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 9007199254740991::bigint $$;

-- A reporting total (outgoing) plus an amount, saturating at the money ceiling: a total must
-- never refuse or fail a money movement. Never overflows, even from a total already past it.
CREATE OR REPLACE FUNCTION money_total_add(total bigint, amount bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT least(total, money_max() - amount) + amount $$;

-- accounts.outgoing: transfers out and payments of the account and of every account merged
-- into it, saturating at money_max() (money_total_add). Totals written past the ceiling by the
-- first release (it did not saturate) are clamped.
UPDATE accounts SET outgoing = money_max() WHERE outgoing > money_max();

-- The same totals inside stored idempotency outcomes, so that a replay answers what a new
-- request would. Only the accounts' outgoing changes; the order of the accounts is kept.
UPDATE idempotency_keys
SET outcome = jsonb_set(outcome, '{accounts}', (
    SELECT jsonb_agg(
        CASE WHEN (account ->> 'outgoing')::numeric > money_max()
             THEN jsonb_set(account, '{outgoing}', to_jsonb(money_max()))
             ELSE account END
        ORDER BY position)
    FROM jsonb_array_elements(outcome -> 'accounts') WITH ORDINALITY AS a (account, position)
))
WHERE outcome @? '$.accounts[*] ? (@.outgoing > 9007199254740991)';

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
    stamp bigint;
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
    newest_entry_at := greatest(src.last_entry_at, tgt.last_entry_at);
    -- The effective timestamp, known only now that the rows are locked: a newest entry may be
    -- ahead of p_now. Cashback due by it (or by now) must be credited before it.
    stamp := coalesce(p_requested, greatest(p_now, newest_entry_at));
    IF src.next_cashback_due_at <= greatest(p_now, stamp)
       OR tgt.next_cashback_due_at <= greatest(p_now, stamp) THEN
        outcome := 'SETTLE_FIRST'; RETURN;
    END IF;
    IF p_requested < newest_entry_at THEN outcome := 'TIMESTAMP_OUT_OF_ORDER'; RETURN; END IF;
    source_balance := src.balance;
    IF p_amount > src.balance THEN outcome := 'INSUFFICIENT_FUNDS'; RETURN; END IF;
    IF tgt.balance + tgt.pending_cashback + p_amount > money_max() THEN
        outcome := 'BALANCE_OVERFLOW'; RETURN;
    END IF;

    entry_ts := stamp;
    source_balance := src.balance - p_amount;
    INSERT INTO entries (account_id, ts, kind, amount, balance_after, counterparty_id)
    VALUES (p_source, entry_ts, 'TRANSFER_OUT', p_amount, source_balance, p_target)
    RETURNING id INTO entry_id;
    INSERT INTO entries (account_id, ts, kind, amount, balance_after, counterparty_id)
    VALUES (p_target, entry_ts, 'TRANSFER_IN', p_amount, tgt.balance + p_amount, p_source);
    UPDATE accounts
    SET balance = CASE WHEN id = p_source THEN source_balance ELSE tgt.balance + p_amount END,
        outgoing = CASE WHEN id = p_source THEN money_total_add(outgoing, p_amount)
                        ELSE least(outgoing, money_max()) END,
        last_entry_at = entry_ts
    WHERE id IN (p_source, p_target);
    outcome := 'OK';
    source_created_at := src.created_at;
    source_outgoing := money_total_add(src.outgoing, p_amount);
    target_created_at := tgt.created_at;
    target_outgoing := least(tgt.outgoing, money_max());
END $$;
