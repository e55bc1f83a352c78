"""transferBatch: many transfers in one transaction, applied in order, one result each.

Not atomic, each item commits or is refused on its own and later items see earlier ones;
atomic, all commit or none does. Per-item idempotency keys, the size limit, overlapping
accounts (exact balanceAfter chains) and batches racing each other and single transfers."""

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from bank_graphql.ledger import ClockMode
from tests.conftest import GraphQLClient, MakeClient
from tests.db_helpers import entry_count, table_rows
from tests.operations import (
    DAY_MS,
    HISTORY,
    MAX_MONEY,
    TRANSFER,
    balance,
    batch,
    deposit,
    funded,
    merge,
    pay,
)
from tests.operations import (
    batch_item as item,
)
from tests.operations import (
    item_codes as outcome_codes,
)

Audit = Callable[[], Awaitable[None]]
Db = psycopg.AsyncConnection[Any]

BATCH = """
mutation($transfers: [TransferInput!]!, $atomic: Boolean! = false) {
  transferBatch(input: {transfers: $transfers, atomic: $atomic}) {
    results {
      balance
      entry { id accountId timestamp kind amount balanceAfter counterpartyId }
      sourceAccount { id }
      targetAccount { id }
      errors { code message field }
    }
    errors { code message field }
  }
}"""


async def run_batch(
    gql: GraphQLClient, items: list[dict[str, Any]], *, atomic: bool = False
) -> dict[str, Any]:
    return await batch(gql, items, atomic=atomic, document=BATCH)


def item_field(index: int, name: str) -> list[str]:
    return ["input", "transfers", str(index), name]


def assert_refused(result: dict[str, Any]) -> None:
    """A refused item reports no effect."""
    assert result["balance"] is None, result
    assert result["entry"] is None, result
    assert result["sourceAccount"] is None, result
    assert result["targetAccount"] is None, result


def assert_applied(result: dict[str, Any], source: str, target: str, amount: int) -> None:
    assert result["errors"] == [], result
    assert result["sourceAccount"] == {"id": source}
    assert result["targetAccount"] == {"id": target}
    entry = result["entry"]
    assert entry["kind"] == "TRANSFER_OUT"
    assert entry["accountId"] == source
    assert entry["counterpartyId"] == target
    assert entry["amount"] == amount
    assert entry["balanceAfter"] == result["balance"]


async def entries_of(db: Db, account: str) -> list[tuple[Any, ...]]:
    """An account's entries in ledger order: (id, ts, kind, amount, balance_after)."""
    cursor = await db.execute(
        "SELECT id, ts, kind::text, amount, balance_after FROM entries "
        "WHERE account_id = %s ORDER BY ts, id",
        (account,),
    )
    return await cursor.fetchall()


def simulate(
    opening: dict[str, int], items: list[dict[str, Any]]
) -> tuple[list[int | str], dict[str, int]]:
    """The outcome of each item of a non-atomic batch with no timestamps or keys: the
    source's balance after it, or INSUFFICIENT_FUNDS; and the closing balances."""
    balances = dict(opening)
    outcomes: list[int | str] = []
    for transfer_input in items:
        source, target = transfer_input["sourceAccountId"], transfer_input["targetAccountId"]
        amount = transfer_input["amount"]
        if amount > balances[source]:
            outcomes.append("INSUFFICIENT_FUNDS")
            continue
        balances[source] -= amount
        balances[target] += amount
        outcomes.append(balances[source])
    return outcomes, balances


# -- mixed outcomes and ordering ---------------------------------------------------------


async def test_mixed_batch_commits_successes_and_refuses_the_rest(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await funded(gql, "alice", 1_000)
    await funded(gql, "bob", 0)
    await funded(gql, "carol", 500)
    await funded(gql, "big", MAX_MONEY)
    await funded(gql, "gone", 70)
    await merge(gql, "carol", "gone", 1_500)
    entries_before = await entry_count(db)

    payload = await run_batch(
        gql,
        [
            item("alice", "bob", 300, 2_000),  # 0: ok
            item("alice", "nobody", 10, 2_000),  # 1: unknown target
            item("bob", "bob", 5, 2_000),  # 2: same account
            item("bob", "carol", 1_000, 2_000),  # 3: bob holds only 300
            item("carol", "alice", 0, 2_000),  # 4: zero amount
            item("carol", "alice", 100, 500),  # 5: before carol's newest entry
            item("bad id!", "alice", 1, 2_000),  # 6: malformed id
            item("alice", "big", 1, 2_000),  # 7: big would overflow
            item("gone", "alice", 1, 2_000),  # 8: merged away
            item("carol", "alice", 200, 2_500),  # 9: ok
        ],
    )

    assert payload["errors"] == []
    assert outcome_codes(payload) == [
        "OK",
        "ACCOUNT_NOT_FOUND",
        "SAME_ACCOUNT",
        "INSUFFICIENT_FUNDS",
        "INVALID_AMOUNT",
        "TIMESTAMP_OUT_OF_ORDER",
        "INVALID_ACCOUNT_ID",
        "BALANCE_OVERFLOW",
        "ACCOUNT_NOT_FOUND",
        "OK",
    ]
    results = payload["results"]
    assert [r["errors"][0]["field"] for r in results if r["errors"]] == [
        item_field(1, "targetAccountId"),
        item_field(2, "targetAccountId"),
        item_field(3, "amount"),
        item_field(4, "amount"),
        item_field(5, "timestamp"),
        item_field(6, "sourceAccountId"),
        item_field(7, "amount"),
        item_field(8, "sourceAccountId"),
    ]
    for result in results:
        if result["errors"]:
            assert_refused(result)
            assert all(e["message"] for e in result["errors"])

    assert_applied(results[0], "alice", "bob", 300)
    assert results[0]["balance"] == 700
    assert results[0]["entry"]["timestamp"] == 2_000
    assert_applied(results[9], "carol", "alice", 200)
    assert results[9]["balance"] == 370  # 500 + 70 merged in - 200
    assert results[9]["entry"]["timestamp"] == 2_500

    assert await balance(gql, "alice") == 900
    assert await balance(gql, "bob") == 300
    assert await balance(gql, "carol") == 370
    assert await balance(gql, "big") == MAX_MONEY
    # Two transfers, two legs each: nothing else was written.
    assert await entry_count(db) == entries_before + 4
    assert [e[2:] for e in await entries_of(db, "alice")] == [
        ("DEPOSIT", 1_000, 1_000),
        ("TRANSFER_OUT", 300, 700),
        ("TRANSFER_IN", 200, 900),
    ]
    assert [e[2:] for e in await entries_of(db, "bob")] == [("TRANSFER_IN", 300, 300)]
    await audit()


async def test_refusals_match_those_of_a_single_transfer(gql: GraphQLClient) -> None:
    """Each refused item reports what `transfer` alone would, with the item's path."""
    await funded(gql, "alice", 100)
    await funded(gql, "bob", 0)
    cases = [
        item("alice", "nobody", 10, 2_000),
        item("nobody", "alice", 10, 2_000),
        item("alice", "alice", 10, 2_000),
        item("alice", "bob", 101, 2_000),
        item("alice", "bob", 0, 2_000),
        item("alice", "bob", 10, 999),
        item("alice", "-x", 10, 2_000),
    ]
    payload = await run_batch(gql, cases)
    assert payload["errors"] == []
    for index, case in enumerate(cases):
        single = await gql.ok(
            TRANSFER,
            {
                "from": case["sourceAccountId"],
                "to": case["targetAccountId"],
                "amount": case["amount"],
                "ts": case["timestamp"],
            },
        )
        expected = [
            (e["code"], None if e["field"] is None else e["field"][1:])
            for e in single["transfer"]["errors"]
        ]
        assert expected, case
        got = [
            (e["code"], None if e["field"] is None else e["field"][3:])
            for e in payload["results"][index]["errors"]
        ]
        assert got == expected, (index, case)
        assert [e["field"][:3] for e in payload["results"][index]["errors"]] == [
            ["input", "transfers", str(index)]
        ] * len(got)
    assert await balance(gql, "alice") == 100


async def test_later_items_see_the_effects_of_earlier_ones(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await funded(gql, "a", 500)
    await funded(gql, "b", 0)
    await funded(gql, "c", 0)

    payload = await run_batch(
        gql,
        [
            item("a", "b", 400, 2_000),  # 0: b now holds 400
            item("b", "c", 300, 2_000),  # 1: only possible thanks to item 0
            item("c", "a", 250, 2_000),  # 2: only possible thanks to item 1
            item("b", "c", 200, 2_000),  # 3: b holds 100 now
            item("c", "b", 50, 2_000),  # 4: c holds 50
            item("c", "b", 1, 2_000),  # 5: c is empty
        ],
    )

    assert payload["errors"] == []
    assert outcome_codes(payload) == [
        "OK",
        "OK",
        "OK",
        "INSUFFICIENT_FUNDS",
        "OK",
        "INSUFFICIENT_FUNDS",
    ]
    assert [r["balance"] for r in payload["results"]] == [100, 100, 50, None, 0, None]
    assert await balance(gql, "a") == 350
    assert await balance(gql, "b") == 150
    assert await balance(gql, "c") == 0
    assert [e[2:] for e in await entries_of(db, "b")] == [
        ("TRANSFER_IN", 400, 400),
        ("TRANSFER_OUT", 300, 100),
        ("TRANSFER_IN", 50, 150),
    ]
    await audit()


async def test_later_items_see_timestamps_of_earlier_ones_not_of_refused_ones(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await funded(gql, "a", 500)
    await funded(gql, "b", 0)

    payload = await run_batch(
        gql,
        [
            item("a", "b", 9_999, 5_000),  # 0: refused, so a's newest entry stays at 1000
            item("a", "b", 100, 3_000),  # 1: fine: item 0 wrote nothing
            item("b", "a", 50, 2_000),  # 2: before item 1's entry on b
            item("b", "a", 50, 3_000),  # 3: equal is fine
        ],
    )

    assert payload["errors"] == []
    assert outcome_codes(payload) == [
        "INSUFFICIENT_FUNDS",
        "OK",
        "TIMESTAMP_OUT_OF_ORDER",
        "OK",
    ]
    assert payload["results"][2]["errors"][0]["field"] == item_field(2, "timestamp")
    assert [e[1:] for e in await entries_of(db, "a")] == [
        (1_000, "DEPOSIT", 500, 500),
        (3_000, "TRANSFER_OUT", 100, 400),
        (3_000, "TRANSFER_IN", 50, 450),
    ]
    await audit()


async def test_items_settle_due_cashback_like_a_single_transfer(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await funded(gql, "a", 1_000)
    await funded(gql, "b", 0)
    paid = await pay(gql, "a", 1_000, 1_000)
    assert paid["errors"] == []
    due = paid["payment"]["cashbackDueAt"]
    assert due == 1_000 + DAY_MS

    payload = await run_batch(
        gql,
        [
            item("a", "b", 20, due - 1),  # 0: the cashback is not due yet
            item("a", "b", 21, due),  # 1: 20 credited first, still too little
            item("a", "b", 20, due),  # 2: exactly the cashback
        ],
    )

    assert payload["errors"] == []
    assert outcome_codes(payload) == ["INSUFFICIENT_FUNDS", "INSUFFICIENT_FUNDS", "OK"]
    assert payload["results"][2]["balance"] == 0
    assert [e[1:] for e in await entries_of(db, "a")] == [
        (1_000, "DEPOSIT", 1_000, 1_000),
        (1_000, "PAYMENT", 1_000, 0),
        (due, "CASHBACK", 20, 20),
        (due, "TRANSFER_OUT", 20, 0),
    ]
    assert await entry_count(db, "CASHBACK") == 1
    await audit()


# -- atomic ------------------------------------------------------------------------------


async def test_atomic_batch_aborts_whole_when_an_item_is_refused_while_running(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await funded(gql, "a", 500)
    await funded(gql, "b", 0)
    before = await table_rows(db)

    payload = await run_batch(
        gql,
        [
            item("a", "b", 200, 5_000),
            item("b", "a", 100, 5_000),
            item("a", "b", 1_000, 5_000),  # a holds 400 here
            item("b", "a", 50, 5_000),
        ],
        atomic=True,
    )

    assert payload["errors"] == []
    assert outcome_codes(payload) == [
        "BATCH_ABORTED",
        "BATCH_ABORTED",
        "INSUFFICIENT_FUNDS",
        "BATCH_ABORTED",
    ]
    assert payload["results"][2]["errors"][0]["field"] == item_field(2, "amount")
    for result in payload["results"]:
        assert len(result["errors"]) == 1
        assert_refused(result)
    # Nothing changed, not even the client clock.
    assert await table_rows(db) == before
    assert (await deposit(gql, "b", 1))["entry"]["timestamp"] == 1_000
    await audit()


async def test_atomic_batch_aborts_on_an_input_refusal(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await funded(gql, "a", 500)
    await funded(gql, "b", 0)
    before = await table_rows(db)

    payload = await run_batch(
        gql,
        [item("a", "b", 10, 2_000), item("b", "a", 0, 2_000), item("a", "b", 10, 2_000)],
        atomic=True,
    )

    assert payload["errors"] == []
    assert outcome_codes(payload) == ["BATCH_ABORTED", "INVALID_AMOUNT", "BATCH_ABORTED"]
    assert payload["results"][1]["errors"][0]["field"] == item_field(1, "amount")
    assert await table_rows(db) == before

    unknown = await run_batch(
        gql, [item("a", "b", 10, 2_000), item("a", "nobody", 10, 2_000)], atomic=True
    )
    assert outcome_codes(unknown) == ["BATCH_ABORTED", "ACCOUNT_NOT_FOUND"]
    assert unknown["results"][1]["errors"][0]["field"] == item_field(1, "targetAccountId")
    assert await table_rows(db) == before
    await audit()


async def test_atomic_batch_commits_all_when_every_item_passes(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await funded(gql, "a", 500)
    await funded(gql, "b", 0)
    await funded(gql, "c", 0)

    payload = await run_batch(
        gql,
        [item("a", "b", 300, 2_000), item("b", "c", 300, 2_000), item("c", "a", 100, 2_100)],
        atomic=True,
    )

    assert payload["errors"] == []
    assert outcome_codes(payload) == ["OK", "OK", "OK"]
    assert [r["balance"] for r in payload["results"]] == [200, 0, 200]
    assert_applied(payload["results"][1], "b", "c", 300)
    ids = [int(r["entry"]["id"]) for r in payload["results"]]
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    assert (await balance(gql, "a"), await balance(gql, "b"), await balance(gql, "c")) == (
        300,
        0,
        200,
    )
    assert await entry_count(db, "TRANSFER_OUT") == 3
    await audit()


async def test_atomic_abort_stores_no_keys_so_a_retry_runs_again(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await funded(gql, "a", 100)
    await funded(gql, "b", 0)
    items = [item("a", "b", 100, 2_000, key="k-one"), item("b", "a", 150, 2_000, key="k-two")]

    aborted = await run_batch(gql, items, atomic=True)
    assert outcome_codes(aborted) == ["BATCH_ABORTED", "INSUFFICIENT_FUNDS"]
    assert (await table_rows(db))["keys"] == []

    await deposit(gql, "b", 50, 1_500)
    retried = await run_batch(gql, items, atomic=True)
    assert retried["errors"] == []
    assert outcome_codes(retried) == ["OK", "OK"]
    assert [r["balance"] for r in retried["results"]] == [0, 0]
    assert await balance(gql, "a") == 150

    # Now the keys hold the outcomes: a third run replays them and changes nothing.
    before = await table_rows(db)
    replayed = await run_batch(gql, items, atomic=True)
    assert replayed == retried
    assert await table_rows(db) == before
    await audit()


async def test_atomic_batch_aborts_when_an_item_key_belongs_to_another_request(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await funded(gql, "a", 500)
    await funded(gql, "b", 0)
    used = await gql.ok(
        TRANSFER, {"from": "a", "to": "b", "amount": 10, "ts": 2_000, "key": "taken"}
    )
    assert used["transfer"]["errors"] == []
    before = await table_rows(db)

    payload = await run_batch(
        gql,
        [item("a", "b", 20, 3_000), item("a", "b", 30, 3_000, key="taken")],
        atomic=True,
    )

    assert payload["errors"] == []
    assert outcome_codes(payload) == ["BATCH_ABORTED", "IDEMPOTENCY_KEY_REUSED"]
    assert payload["results"][1]["errors"][0]["field"] == item_field(1, "idempotencyKey")
    assert await table_rows(db) == before
    await audit()


async def test_atomic_batch_aborts_on_a_key_repeated_with_other_input(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await funded(gql, "a", 500)
    await funded(gql, "b", 0)
    before = await table_rows(db)

    payload = await run_batch(
        gql,
        [item("a", "b", 20, 2_000, key="twice"), item("a", "b", 30, 2_000, key="twice")],
        atomic=True,
    )

    assert payload["errors"] == []
    assert outcome_codes(payload) == ["BATCH_ABORTED", "IDEMPOTENCY_KEY_REUSED"]
    assert await table_rows(db) == before
    await audit()


async def test_atomic_batch_aborts_on_an_invalid_key(gql: GraphQLClient, db: Db) -> None:
    await funded(gql, "a", 500)
    await funded(gql, "b", 0)
    before = await table_rows(db)

    payload = await run_batch(
        gql, [item("a", "b", 20, 2_000), item("a", "b", 30, 2_000, key="")], atomic=True
    )

    assert outcome_codes(payload) == ["BATCH_ABORTED", "INVALID_IDEMPOTENCY_KEY"]
    assert await table_rows(db) == before


# -- overlapping accounts ----------------------------------------------------------------


async def test_one_account_in_many_items_keeps_exact_chains(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    opening = {"hot": 1_000, "x": 300, "y": 0, "z": 50}
    for account, amount in opening.items():
        await funded(gql, account, amount)
    rng = random.Random(7)
    items = []
    for _ in range(60):
        other = rng.choice(["x", "y", "z"])
        source, target = ("hot", other) if rng.random() < 0.5 else (other, "hot")
        items.append(item(source, target, rng.randint(1, 400), 2_000))
    expected, closing = simulate(opening, items)
    assert "INSUFFICIENT_FUNDS" in expected  # the draw does exercise refusals

    payload = await run_batch(gql, items)

    assert payload["errors"] == []
    got: list[int | str] = [
        r["balance"] if not r["errors"] else r["errors"][0]["code"] for r in payload["results"]
    ]
    assert got == expected
    for account, amount in closing.items():
        assert await balance(gql, account) == amount

    # The hot account's entries follow item order: ids increase, each balanceAfter exact.
    hot_entries = [e for e in await entries_of(db, "hot") if e[2] != "DEPOSIT"]
    running, chain = opening["hot"], []
    for transfer_input, outcome in zip(items, expected, strict=True):
        if isinstance(outcome, str) or "hot" not in (
            transfer_input["sourceAccountId"],
            transfer_input["targetAccountId"],
        ):
            continue
        outgoing = transfer_input["sourceAccountId"] == "hot"
        running += -transfer_input["amount"] if outgoing else transfer_input["amount"]
        chain.append(("TRANSFER_OUT" if outgoing else "TRANSFER_IN", running))
    assert [(e[2], e[4]) for e in hot_entries] == chain
    ids = [e[0] for e in hot_entries]
    assert ids == sorted(ids)
    out_ids = [int(r["entry"]["id"]) for r in payload["results"] if not r["errors"]]
    assert out_ids == sorted(out_ids)
    assert len(set(out_ids)) == len(out_ids)

    # The API's history agrees with the rows.
    history = await gql.ok(HISTORY, {"id": "hot", "first": 100})
    nodes = [edge["node"] for edge in history["account"]["transactions"]["edges"]]
    assert [n["balanceAfter"] for n in nodes if n["kind"] != "DEPOSIT"] == [
        balance_after for _, balance_after in chain
    ]
    await audit()


# -- size --------------------------------------------------------------------------------


async def test_batch_too_large_is_refused_whole_and_empty_batch_is_fine(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await funded(gql, "a", 5_000)
    await funded(gql, "b", 0)
    before = await table_rows(db)

    for atomic in (False, True):
        too_large = await run_batch(gql, [item("a", "b", 1)] * 1_001, atomic=atomic)
        assert too_large["results"] == []
        assert [(e["code"], e["field"]) for e in too_large["errors"]] == [
            ("BATCH_TOO_LARGE", ["input", "transfers"])
        ]
        assert too_large["errors"][0]["message"]
        assert await table_rows(db) == before

    for atomic in (False, True):
        empty = await run_batch(gql, [], atomic=atomic)
        assert empty == {"results": [], "errors": []}
    assert await table_rows(db) == before

    # The limit itself is allowed.
    limit = await run_batch(gql, [item("a", "b", 1, 2_000)] * 1_000)
    assert limit["errors"] == []
    assert set(outcome_codes(limit)) == {"OK"}
    assert [r["balance"] for r in limit["results"]] == list(range(4_999, 3_999, -1))
    assert await balance(gql, "b") == 1_000
    await audit()


async def test_batch_of_100_transfers_all_land(gql: GraphQLClient, db: Db, audit: Audit) -> None:
    accounts = [f"acc-{i}" for i in range(10)]
    opening = dict.fromkeys(accounts, 1_000)
    for account in accounts:
        await funded(gql, account, 1_000)
    items = [
        item(accounts[i % 10], accounts[(i * 3 + 1) % 10], 10 + i, 2_000 + i)
        for i in range(100)
        if accounts[i % 10] != accounts[(i * 3 + 1) % 10]
    ]
    items += [item("acc-0", "acc-9", 1, 3_000)] * (100 - len(items))
    assert len(items) == 100
    expected, closing = simulate(opening, items)
    assert all(isinstance(e, int) for e in expected)

    payload = await run_batch(gql, items)

    assert payload["errors"] == []
    assert outcome_codes(payload) == ["OK"] * 100
    assert [r["balance"] for r in payload["results"]] == expected
    for transfer_input, result in zip(items, payload["results"], strict=True):
        assert_applied(
            result,
            transfer_input["sourceAccountId"],
            transfer_input["targetAccountId"],
            transfer_input["amount"],
        )
        assert result["entry"]["timestamp"] == transfer_input["timestamp"]
    assert len({r["entry"]["id"] for r in payload["results"]}) == 100
    assert await entry_count(db, "TRANSFER_OUT") == 100
    assert await entry_count(db, "TRANSFER_IN") == 100
    cursor = await db.execute(
        "SELECT id, account_id, amount, balance_after FROM entries WHERE kind = 'TRANSFER_OUT'"
    )
    stored = {str(row[0]): row[1:] for row in await cursor.fetchall()}
    assert stored == {
        r["entry"]["id"]: (r["entry"]["accountId"], r["entry"]["amount"], r["balance"])
        for r in payload["results"]
    }
    for account, amount in closing.items():
        assert await balance(gql, account) == amount
    await audit()


# -- idempotency keys --------------------------------------------------------------------


async def test_item_keys_replay_earlier_single_transfers_and_batches(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await funded(gql, "a", 1_000)
    await funded(gql, "b", 0)
    single = await gql.ok(
        TRANSFER, {"from": "a", "to": "b", "amount": 100, "ts": 2_000, "key": "single"}
    )
    assert single["transfer"]["errors"] == []
    refused = await gql.ok(
        TRANSFER, {"from": "b", "to": "a", "amount": 500, "ts": 2_000, "key": "refused"}
    )
    assert [e["code"] for e in refused["transfer"]["errors"]] == ["INSUFFICIENT_FUNDS"]

    first = await run_batch(
        gql,
        [
            item("a", "b", 100, 2_000, key="single"),  # replay of the single transfer
            item("a", "b", 50, 3_000, key="batched"),  # runs
            item("b", "a", 500, 2_000, key="refused"),  # replays the refusal
        ],
    )
    assert first["errors"] == []
    assert outcome_codes(first) == ["OK", "OK", "INSUFFICIENT_FUNDS"]
    replay = first["results"][0]
    assert replay["balance"] == 900
    assert replay["entry"] == single["transfer"]["entry"]
    assert first["results"][1]["balance"] == 850
    assert first["results"][2]["errors"][0]["field"] == item_field(2, "amount")
    assert await balance(gql, "a") == 850

    before = await table_rows(db)
    second = await run_batch(
        gql,
        [
            item("b", "a", 500, 2_000, key="refused"),
            item("a", "b", 50, 3_000, key="batched"),
            item("a", "b", 100, 2_000, key="single"),
            item("a", "b", 51, 3_000, key="batched"),  # same key, other input
        ],
    )
    assert second["errors"] == []
    assert outcome_codes(second) == [
        "INSUFFICIENT_FUNDS",
        "OK",
        "OK",
        "IDEMPOTENCY_KEY_REUSED",
    ]
    assert second["results"][1] == first["results"][1]
    assert second["results"][2] == first["results"][0]
    assert second["results"][3]["errors"][0]["field"] == item_field(3, "idempotencyKey")
    assert_refused(second["results"][3])
    assert await table_rows(db) == before

    # And a single transfer replays what a batch item stored.
    again = await gql.ok(
        TRANSFER, {"from": "a", "to": "b", "amount": 50, "ts": 3_000, "key": "batched"}
    )
    assert again["transfer"]["entry"] == first["results"][1]["entry"]
    assert again["transfer"]["balance"] == 850
    assert await table_rows(db) == before
    await audit()


async def test_key_twice_in_one_batch(gql: GraphQLClient, db: Db, audit: Audit) -> None:
    await funded(gql, "a", 1_000)
    await funded(gql, "b", 0)

    payload = await run_batch(
        gql,
        [
            item("a", "b", 100, 2_000, key="dup"),
            item("b", "a", 10, 2_000),
            item("a", "b", 100, 2_000, key="dup"),  # same input: same outcome, one effect
            item("a", "b", 200, 2_000, key="clash"),
            item("a", "b", 300, 2_000, key="clash"),  # other input: refused
            item("b", "a", 5_000, 2_000, key="poor"),
            item("b", "a", 5_000, 2_000, key="poor"),  # same refusal
        ],
    )

    assert payload["errors"] == []
    assert outcome_codes(payload) == [
        "OK",
        "OK",
        "OK",
        "OK",
        "IDEMPOTENCY_KEY_REUSED",
        "INSUFFICIENT_FUNDS",
        "INSUFFICIENT_FUNDS",
    ]
    results = payload["results"]
    assert results[2] == results[0]
    assert results[0]["balance"] == 900
    assert results[3]["balance"] == 710
    assert results[4]["errors"][0]["field"] == item_field(4, "idempotencyKey")
    assert_refused(results[4])
    assert [(e["code"], e["message"]) for e in results[6]["errors"]] == [
        (e["code"], e["message"]) for e in results[5]["errors"]
    ]
    assert results[6]["errors"][0]["field"] == item_field(6, "amount")
    assert await balance(gql, "a") == 710
    assert await balance(gql, "b") == 290
    assert await entry_count(db, "TRANSFER_OUT") == 3
    await audit()


async def test_invalid_key_refuses_only_its_item(gql: GraphQLClient, db: Db, audit: Audit) -> None:
    await funded(gql, "a", 1_000)
    await funded(gql, "b", 0)

    payload = await run_batch(
        gql,
        [
            item("a", "b", 100, 2_000, key="fine"),
            item("a", "b", 100, 2_000, key=""),
            item("a", "b", 100, 2_000, key="x" * 129),
            item("a", "b", 100, 2_000, key="tab\there"),
            item("a", "b", 100, 2_000, key="x" * 128),
        ],
    )

    assert payload["errors"] == []
    assert outcome_codes(payload) == [
        "OK",
        "INVALID_IDEMPOTENCY_KEY",
        "INVALID_IDEMPOTENCY_KEY",
        "INVALID_IDEMPOTENCY_KEY",
        "OK",
    ]
    for index in (1, 2, 3):
        assert payload["results"][index]["errors"][0]["field"] == item_field(
            index, "idempotencyKey"
        )
        assert_refused(payload["results"][index])
    assert [r["balance"] for r in payload["results"]] == [900, None, None, None, 800]
    assert await balance(gql, "a") == 800
    assert sorted(row[0] for row in (await table_rows(db))["keys"]) == ["fine", "x" * 128]
    await audit()


# -- concurrency -------------------------------------------------------------------------

ACCOUNTS = ["acc-1", "acc-2", "acc-3", "acc-4"]
HOT = "hot"
OPENING = 5_000


async def gather_all(*tasks: Awaitable[Any]) -> list[Any]:
    """Wait for every task (none left running past the test), then raise the first failure."""
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _random_transfer(rng: random.Random) -> tuple[str, str, int]:
    other = rng.choice(ACCOUNTS)
    source, target = (HOT, other) if rng.random() < 0.5 else (other, HOT)
    if rng.random() < 0.3:
        source, target = rng.sample(ACCOUNTS, 2)
    return source, target, rng.randint(1, 900)


async def test_concurrent_batches_and_single_transfers_keep_the_books(
    make_client: MakeClient, db: Db, audit: Audit
) -> None:
    gql = await make_client(ClockMode.SYSTEM)
    for account in [*ACCOUNTS, HOT]:
        await funded(gql, account, OPENING, ts=None)
    outcomes: list[str] = []

    async def batcher(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(4):
            items = [item(*_random_transfer(rng)) for _ in range(20)]
            payload = await run_batch(gql, items)
            assert payload["errors"] == []
            assert len(payload["results"]) == 20
            applied = []
            for transfer_input, result in zip(items, payload["results"], strict=True):
                if result["errors"]:
                    assert_refused(result)
                else:
                    assert_applied(
                        result,
                        transfer_input["sourceAccountId"],
                        transfer_input["targetAccountId"],
                        transfer_input["amount"],
                    )
                    applied.append(int(result["entry"]["id"]))
            # One flush, in item order.
            assert applied == sorted(applied)
            outcomes.extend(outcome_codes(payload))

    async def single(seed: int) -> None:
        rng = random.Random(1_000 + seed)
        for _ in range(15):
            source, target, amount = _random_transfer(rng)
            body = await gql.post(TRANSFER, {"from": source, "to": target, "amount": amount})
            assert "errors" not in body, body
            errors = body["data"]["transfer"]["errors"]
            outcomes.append(errors[0]["code"] if errors else "OK")

    await gather_all(*(batcher(s) for s in range(8)), *(single(s) for s in range(8)))

    assert len(outcomes) == 8 * 4 * 20 + 8 * 15
    assert set(outcomes) <= {"OK", "INSUFFICIENT_FUNDS"}, set(outcomes)
    assert outcomes.count("OK") > len(outcomes) // 2
    balances = [await balance(gql, account) for account in [*ACCOUNTS, HOT]]
    assert all(b is not None and b >= 0 for b in balances), balances
    assert sum(b or 0 for b in balances) == OPENING * (len(ACCOUNTS) + 1)
    assert await entry_count(db, "TRANSFER_OUT") == outcomes.count("OK")
    assert await entry_count(db, "TRANSFER_IN") == outcomes.count("OK")
    await audit()


async def test_concurrent_keyed_batches_run_each_key_once(
    make_client: MakeClient, db: Db, audit: Audit
) -> None:
    """Overlapping keyed batches racing each other and keyed single transfers."""
    gql = await make_client(ClockMode.SYSTEM)
    await funded(gql, "a", 10_000, ts=None)
    await funded(gql, "b", 10_000, ts=None)
    items = [
        item("a", "b", 10 + i, key=f"k{i}") if i % 2 else item("b", "a", 10 + i, key=f"k{i}")
        for i in range(10)
    ]

    async def send_batch(offset: int) -> dict[str, Any]:
        rotated = items[offset:] + items[:offset]
        payload = await run_batch(gql, rotated)
        assert payload["errors"] == []
        return {
            r_in["idempotencyKey"]: result
            for r_in, result in zip(rotated, payload["results"], strict=True)
        }

    async def send_single(index: int) -> dict[str, Any]:
        transfer_input = items[index]
        data = await gql.ok(
            TRANSFER,
            {
                "from": transfer_input["sourceAccountId"],
                "to": transfer_input["targetAccountId"],
                "amount": transfer_input["amount"],
                "key": transfer_input["idempotencyKey"],
            },
        )
        return {transfer_input["idempotencyKey"]: data["transfer"]}

    answers = await gather_all(
        *(send_batch(offset) for offset in (0, 3, 7, 0, 5)),
        *(send_single(i) for i in range(10)),
    )

    for key in (f"k{i}" for i in range(10)):
        seen = [answer[key] for answer in answers if key in answer]
        assert len(seen) == 6
        assert all(s == seen[0] for s in seen), (key, seen)
        assert seen[0]["errors"] == []
    assert await entry_count(db, "TRANSFER_OUT") == 10
    assert [await balance(gql, "a"), await balance(gql, "b")] == [
        10_000 + sum(t["amount"] * (1 if t["targetAccountId"] == "a" else -1) for t in items),
        10_000 + sum(t["amount"] * (1 if t["targetAccountId"] == "b" else -1) for t in items),
    ]
    await audit()
