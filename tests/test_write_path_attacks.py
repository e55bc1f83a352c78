"""The write path attacked from outside: racing keys, racing creations, merges and batches,
cashback falling due between a batch's items, and ids and keys that spell array syntax."""

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any

import psycopg
import pytest

from bank_graphql.ledger import ClockMode, SweepLimits, audit_books
from tests.conftest import GraphQLClient, MakeClient
from tests.db_helpers import cashback_left_behind, entry_count, scalar
from tests.operations import (
    BATCH,
    CREATE,
    DAY_MS,
    DEPOSIT,
    MERGE,
    TRANSFER,
    balance,
    batch,
    batch_item,
    create,
    deposit,
    funded,
    item_codes,
    merge_payload,
    pay,
)

Db = psycopg.AsyncConnection[Any]
Audit = Callable[[], Awaitable[None]]
DUE = 1_000 + DAY_MS  # cashback of a payment at 1_000 falls due here

PAY_KEYED = """
mutation($id: ID!, $amount: Money!, $ts: Timestamp, $key: String) {
  pay(input: {accountId: $id, amount: $amount, timestamp: $ts, idempotencyKey: $key}) {
    balance payment { id } errors { code message field }
  }
}"""

# The server's backends waiting for a lock.
LOCK_WAITERS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'bank-graphql'
  AND wait_event_type = 'Lock'
"""


async def _lock_waiters_reach(db: Db, count: int, timeout_s: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await scalar(db, LOCK_WAITERS) >= count:
            return True
        await asyncio.sleep(0.01)
    return False


def _codes(body: dict[str, Any]) -> str:
    """One mutation's outcome: a GraphQL error code, "OK", or its UserError codes."""
    if "errors" in body:
        return "GRAPHQL:" + body["errors"][0]["extensions"]["code"]
    payload = next(iter(body["data"].values()))
    if "results" in payload:
        return ",".join(item_codes(payload))
    return "+".join(e["code"] for e in payload["errors"]) or "OK"


# -- an account created while a write is under way ------------------------------------------


async def _race_a_late_account(
    gql: GraphQLClient, db: Db, database_url: str, write: Coroutine[Any, Any, dict[str, Any]]
) -> dict[str, Any]:
    """Run `write`, which names account "late" before it exists, held up after it locked its
    accounts (a lock on payment1 stalls its cashback credit); meanwhile "late" is created and
    a deposit of 100 into it is held up just before its commit (a lock on the client clock).
    Then both are let go, the write first. Returns the write's payload."""
    async with AsyncExitStack() as stack:
        payments = await stack.enter_async_context(
            await psycopg.AsyncConnection.connect(database_url)
        )
        clock = await stack.enter_async_context(await psycopg.AsyncConnection.connect(database_url))
        await payments.execute("SELECT 1 FROM payments WHERE id = 1 FOR UPDATE")
        writing = asyncio.create_task(write)
        assert await _lock_waiters_reach(db, 1)
        assert (await create(gql, "late"))["errors"] == []
        await clock.execute("SELECT 1 FROM client_clock FOR UPDATE")
        depositing = asyncio.create_task(deposit(gql, "late", 100, DUE + 5_000))
        assert await _lock_waiters_reach(db, 2)
        await payments.commit()
        await _lock_waiters_reach(db, 2)  # the write queues behind the deposit, if it reads "late"
        await clock.commit()
        written, deposited = await asyncio.gather(writing, depositing)
    assert deposited["errors"] == []
    return written


async def _with_due_cashback_on(gql: GraphQLClient, account_id: str) -> None:
    """`account_id` holds 900 and payment1's cashback of 2, due by the client clock's now."""
    await funded(gql, account_id, 1_000)
    assert (await pay(gql, account_id, 100, 1_000))["errors"] == []
    await funded(gql, "clock", 1, ts=DUE + 4_000)


async def test_a_batch_never_writes_an_account_it_did_not_lock(
    gql: GraphQLClient, db: Db, database_url: str
) -> None:
    await _with_due_cashback_on(gql, "x")

    moved = await _race_a_late_account(
        gql, db, database_url, batch(gql, [batch_item("x", "late", 10)])
    )

    credited = 10 if item_codes(moved) == ["OK"] else 0
    assert await scalar(db, "SELECT balance FROM accounts WHERE id = 'late'") == 100 + credited
    assert await audit_books(db) == []


async def test_a_merge_never_absorbs_an_account_it_did_not_lock(
    gql: GraphQLClient, db: Db, database_url: str
) -> None:
    await _with_due_cashback_on(gql, "a")

    merged = await _race_a_late_account(gql, db, database_url, merge_payload(gql, "a", "late"))

    absorbed = 100 if merged["errors"] == [] else 0
    assert await balance(gql, "a") == 902 + absorbed
    assert await audit_books(db) == []


# -- cashback falling due between a batch's items ---------------------------------------------


async def _payer_and_others(gql: GraphQLClient) -> None:
    """x pays 500 at 1_000: its cashback of 10 falls due at DUE. y, p, q hold 1_000 each."""
    for account_id in ("x", "y", "p", "q"):
        await funded(gql, account_id, 1_000)
    assert (await pay(gql, "x", 500, 1_000))["errors"] == []


async def test_batch_item_before_cashback_due_by_the_now_an_earlier_item_moved(
    gql: GraphQLClient, db: Db
) -> None:
    await _payer_and_others(gql)

    payload = await batch(gql, [batch_item("p", "q", 1, DUE + 5), batch_item("x", "y", 1, DUE - 1)])

    # The same two transfers sent one by one: the second is out of order.
    assert item_codes(payload) == ["OK", "TIMESTAMP_OUT_OF_ORDER"]
    assert await cashback_left_behind(db) == []


async def test_same_two_transfers_one_by_one_refuse_the_second(gql: GraphQLClient) -> None:
    await _payer_and_others(gql)
    first = await gql.ok(TRANSFER, {"from": "p", "to": "q", "amount": 1, "ts": DUE + 5})
    assert first["transfer"]["errors"] == []

    second = await gql.ok(TRANSFER, {"from": "x", "to": "y", "amount": 1, "ts": DUE - 1})

    assert [e["code"] for e in second["transfer"]["errors"]] == ["TIMESTAMP_OUT_OF_ORDER"]


async def test_cashback_due_between_items_is_credited_between_them(
    gql: GraphQLClient, audit: Audit
) -> None:
    await _payer_and_others(gql)

    payload = await batch(
        gql,
        [
            batch_item("y", "x", 1, DUE - 1),
            batch_item("x", "y", 511, DUE),  # needs the cashback due at that instant
            batch_item("x", "y", 1),
        ],
    )

    assert item_codes(payload) == ["OK", "OK", "INSUFFICIENT_FUNDS"]
    history = await gql.ok(
        'query { account(id: "x") { transactions { nodes { timestamp kind balanceAfter } } } }'
    )
    nodes = history["account"]["transactions"]["nodes"]
    assert [(n["timestamp"], n["kind"], n["balanceAfter"]) for n in nodes[2:]] == [
        (DUE - 1, "TRANSFER_IN", 501),
        (DUE, "CASHBACK", 511),
        (DUE, "TRANSFER_OUT", 0),
    ]
    await audit()


# -- atomic batches: which refusal is named --------------------------------------------------


async def test_atomic_batch_names_an_item_refused_on_input_before_a_replayed_refusal(
    gql: GraphQLClient,
) -> None:
    """Input refusals are found before the database is asked, so they are named even when
    an earlier item's key would replay a stored refusal (README, "Batched transfers")."""
    await funded(gql, "x", 1_000)
    await funded(gql, "y", 0)
    refused = await gql.ok(
        TRANSFER, {"from": "x", "to": "y", "amount": 10**12, "ts": 2_000, "key": "K"}
    )
    assert [e["code"] for e in refused["transfer"]["errors"]] == ["INSUFFICIENT_FUNDS"]

    payload = await batch(
        gql,
        [batch_item("x", "y", 10**12, 2_000, key="K"), batch_item("x", "no such id!", 7, 2_000)],
        atomic=True,
    )

    assert item_codes(payload) == ["BATCH_ABORTED", "INVALID_ACCOUNT_ID"]


# -- idempotency keys under races -------------------------------------------------------------


async def test_one_key_sent_to_every_mutation_at_once_runs_one_of_them(
    make_client: MakeClient, db: Db, audit: Audit
) -> None:
    gql = await make_client(ClockMode.SYSTEM)
    await funded(gql, "a", 10**6, ts=None)
    await funded(gql, "b", 10**6, ts=None)
    before = await entry_count(db)
    requests = [
        (DEPOSIT, {"id": "a", "amount": 1, "key": "K"}),
        (TRANSFER, {"from": "a", "to": "b", "amount": 1, "key": "K"}),
        (PAY_KEYED, {"id": "a", "amount": 1, "key": "K"}),
        (CREATE, {"id": "c", "key": "K"}),
        (MERGE, {"a": "a", "b": "b", "key": "K"}),
        (BATCH, {"transfers": [batch_item("b", "a", 1, key="K")], "atomic": False}),
        (BATCH, {"transfers": [batch_item("b", "a", 1, key="K")], "atomic": True}),
    ] * 4
    random.Random(7).shuffle(requests)

    answers = await asyncio.gather(*(gql.post(q, v) for q, v in requests))

    outcomes = Counter(_codes(a) for a in answers)
    assert set(outcomes) <= {"OK", "IDEMPOTENCY_KEY_REUSED"}, outcomes
    ran = {q for (q, v), a in zip(requests, answers, strict=True) if _codes(a) == "OK"}
    assert len(ran) == 1, outcomes  # the winner's duplicates replay it; every other is refused
    effects = await entry_count(db) - before + await scalar(db, "SELECT count(*) FROM accounts")
    assert effects in {1 + 2, 2 + 2, 0 + 3}  # deposit/pay, transfer/batch/merge, or create
    await audit()


async def test_batches_racing_over_shared_keys_run_each_key_once(
    make_client: MakeClient, db: Db, audit: Audit
) -> None:
    gql = await make_client(ClockMode.SYSTEM)
    accounts = [f"r{i}" for i in range(5)]
    for account_id in accounts:
        await funded(gql, account_id, 10**6, ts=None)
    plan = {
        f"key-{i}": batch_item(
            accounts[i % 5], accounts[(i + 1 + i // 5) % 5], 1 + i, key=f"key-{i}"
        )
        for i in range(30)
        if (i + 1 + i // 5) % 5 != i % 5
    }
    rng = random.Random(3)
    orders = [rng.sample(sorted(plan), 15) for _ in range(12)]

    answers = await asyncio.gather(
        *(
            gql.post(
                BATCH, {"transfers": [plan[k] for k in order + order[:2]], "atomic": j % 3 == 0}
            )
            for j, order in enumerate(orders)
        )
    )

    assert all("errors" not in a for a in answers), answers
    entries: dict[str, set[str]] = {}
    for order, answer in zip(orders, answers, strict=True):
        for key, result in zip(
            order + order[:2], answer["data"]["transferBatch"]["results"], strict=True
        ):
            if result["entry"] is not None:
                entries.setdefault(key, set()).add(result["entry"]["id"])
    assert all(len(ids) == 1 for ids in entries.values()), entries
    assert await entry_count(db, "TRANSFER_OUT") == len(entries)
    await audit()


async def test_ids_and_keys_spelling_array_syntax_survive_a_batch(
    gql: GraphQLClient, audit: Audit
) -> None:
    await funded(gql, "NULL", 100)
    await funded(gql, "null", 100)
    items = [
        batch_item("NULL", "null", 5, key="NULL"),
        batch_item("null", "NULL", 7, key='a"b\\c{,}'),
        batch_item("NULL", "null", 1, key=" spaced "),
    ]

    first = await batch(gql, items)
    again = await batch(gql, items)

    assert item_codes(first) == ["OK", "OK", "OK"]
    assert again == first
    assert [r["entry"]["counterpartyId"] for r in first["results"]] == ["null", "NULL", "null"]
    assert await balance(gql, "NULL") == 100 - 5 + 7 - 1
    await audit()


# -- merges racing everything else --------------------------------------------------------------


async def test_transfers_into_an_account_being_merged_land_before_or_are_not_found(
    gql: GraphQLClient, audit: Audit
) -> None:
    for account_id in ("a", "b", "x"):
        await funded(gql, account_id, 1_000)
    sends = [gql.post(TRANSFER, {"from": "x", "to": "b", "amount": 1}) for _ in range(20)]

    answers = await asyncio.gather(*sends[:10], merge_payload(gql, "a", "b"), *sends[10:])

    merged = answers.pop(10)
    assert merged["errors"] == []
    outcomes = Counter(_codes(a) for a in answers)
    assert set(outcomes) <= {"OK", "ACCOUNT_NOT_FOUND"}, outcomes
    assert await balance(gql, "a") == 2_000 + outcomes["OK"]
    await audit()


async def test_batches_pays_merges_and_a_busy_sweeper_keep_the_books(
    make_client: MakeClient, db: Db, audit: Audit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    gql = await make_client(
        ClockMode.CLIENT, sweeper_enabled=True, sweeper=SweepLimits(interval_s=0.01, batch_max=3)
    )
    accounts = [f"s{i}" for i in range(12)]
    for account_id in accounts:
        await funded(gql, account_id, 10**6, ts=0)
    answers: list[dict[str, Any]] = []
    clock = [0]

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(20):
            clock[0] += rng.randint(0, DAY_MS // 8)
            ts = rng.choice([None, clock[0]])
            source, target = rng.sample(accounts, 2)
            roll = rng.random()
            if roll < 0.45:
                items = [
                    batch_item(
                        *rng.sample(accounts, 2), rng.randint(1, 5_000), rng.choice([None, ts])
                    )
                    for _ in range(rng.randint(1, 20))
                ]
                body = {"transfers": items, "atomic": rng.random() < 0.3}
                answers.append(await gql.post(BATCH, body))
            elif roll < 0.9:
                variables = {"id": source, "amount": rng.randint(1, 20_000), "ts": ts}
                answers.append(await gql.post(PAY_KEYED, variables))
            elif roll < 0.94:
                answers.append(await gql.post(MERGE, {"a": source, "b": target, "ts": ts}))
            else:
                answers.append(await gql.post("query { accounts { nodes { id balance } } }"))

    await asyncio.gather(*(client(seed) for seed in range(8)))

    assert [a["errors"] for a in answers if "errors" in a] == []
    assert await entry_count(db, "CASHBACK") > 0
    assert await cashback_left_behind(db) == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    await audit()
