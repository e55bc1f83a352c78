"""Due cashback comes first, up to each write's effective timestamp, on every path: batch items
after earlier items, the one-statement transfer, keyed transfers, merges and batches on the
system clock whose other account's newest entry is ahead of now. And a ledger that already
holds cashback overtaken by a later entry (as earlier versions could leave it) still answers
every read, and the sweeper repairs it and survives accounts it cannot settle."""

import asyncio
import logging
import re
import time
from typing import Any

import psycopg
import pytest

import bank_graphql.ledger.storage.clock as clock_module
from bank_graphql.ledger import ClockMode, SweepLimits
from tests.conftest import GraphQLClient, MakeClient
from tests.db_helpers import cashback_left_behind, cashback_rows, wait_until_cashback
from tests.operations import (
    DAY_MS,
    DEPOSIT,
    MAX_MONEY,
    MERGE,
    TRANSFER,
    batch,
    batch_item,
    create,
    deposit,
    item_codes,
)

Db = psycopg.AsyncConnection[Any]

PAY_QUIET = """
mutation($id: ID!, $amount: Money!, $ts: Timestamp) {
  pay(input: {accountId: $id, amount: $amount, timestamp: $ts}) {
    payment { id cashbackDueAt }
    errors { code message field }
  }
}"""

# Every read the API offers on an account, plus the lists every caller sees.
READ_ALL = """
query($id: ID!) {
  account(id: $id) {
    id balance outgoing
    transactions(first: 100) { nodes { timestamp kind amount balanceAfter paymentId } }
    payments(first: 100) { nodes { id cashbackDueAt status } }
  }
  accounts(first: 100) { nodes { id balance outgoing } }
  topSpenders(first: 10) { accountId outgoing }
}"""


async def pay_quiet(gql: GraphQLClient, account: str, amount: int, ts: int | None = None) -> int:
    """Pay without reading anything back (a read would settle due cashback); the due time."""
    data = await gql.ok(PAY_QUIET, {"id": account, "amount": amount, "ts": ts})
    assert data["pay"]["errors"] == [], data
    due: int = data["pay"]["payment"]["cashbackDueAt"]
    return due


async def read_all(gql: GraphQLClient, account: str) -> dict[str, Any]:
    """Every read of `account`; they must all answer."""
    return await gql.ok(READ_ALL, {"id": account})


async def history(db: Db, account: str) -> list[tuple[int, str, int, int]]:
    """(ts, kind, amount, balance_after) of the account's entries in ledger order."""
    cursor = await db.execute(
        "SELECT ts, kind::text, amount, balance_after FROM entries "
        "WHERE account_id = %s ORDER BY ts, id",
        (account,),
    )
    return [tuple(row) for row in await cursor.fetchall()]  # type: ignore[misc]


async def cashback_due_on_cc_at_one_day(gql: GraphQLClient, *accounts: str) -> None:
    """`accounts` created at 0; ca holds 1,000; cc 10,000 and paid 1,000, cashback due a day on."""
    for account in accounts:
        assert (await create(gql, account, 0))["errors"] == []
    assert (await deposit(gql, "ca", 1_000, 0))["errors"] == []
    assert (await deposit(gql, "cc", 10_000, 0))["errors"] == []
    assert await pay_quiet(gql, "cc", 1_000, 0) == DAY_MS


# cc's ledger once its cashback is credited at its due time, before 1 sent at 100,000,000.
CC_CREDITED_THEN_SENT_ONE = [
    (0, "DEPOSIT", 10_000, 10_000),
    (0, "PAYMENT", 1_000, 9_000),
    (DAY_MS, "CASHBACK", 20, 9_020),
    (100_000_000, "TRANSFER_OUT", 1, 9_019),
]


# -- the reproduction: a batch item after an item that moved the timeline on -----------------


@pytest.mark.parametrize("atomic", [False, True], ids=["not-atomic", "atomic"])
async def test_batch_item_credits_cashback_due_before_its_timestamp(
    gql: GraphQLClient, db: Db, audit: Any, atomic: bool
) -> None:
    await cashback_due_on_cc_at_one_day(gql, "ca", "cb", "cc")

    payload = await batch(
        gql,
        [batch_item("ca", "cb", 1, 100_000_000), batch_item("cc", "ca", 1)],
        atomic=atomic,
    )

    assert item_codes(payload) == ["OK", "OK"]
    assert payload["results"][1]["entry"]["timestamp"] == 100_000_000
    assert payload["results"][1]["balance"] == 9_000 + 20 - 1
    assert await history(db, "cc") == CC_CREDITED_THEN_SENT_ONE
    assert await cashback_left_behind(db) == []
    read = await read_all(gql, "cc")
    assert read["account"]["balance"] == 9_019
    assert read["account"]["payments"]["nodes"][0]["status"] == "CASHBACK_RECEIVED"
    assert read["topSpenders"][:2] == [
        {"accountId": "cc", "outgoing": 1_001},
        {"accountId": "ca", "outgoing": 1},
    ]
    assert (await deposit(gql, "cc", 1))["errors"] == []
    await audit()


@pytest.mark.parametrize("atomic", [False, True], ids=["not-atomic", "atomic"])
async def test_client_clock_now_moves_with_each_batch_item(
    gql: GraphQLClient, db: Db, audit: Any, atomic: bool
) -> None:
    """On the client clock, now is the greatest timestamp a successful mutation used, batch
    items included: an untimed item on accounts no earlier item touched is stamped at it,
    after the cashback due by then."""
    await cashback_due_on_cc_at_one_day(gql, "ca", "cb", "cc", "cd")

    payload = await batch(
        gql,
        [batch_item("ca", "cb", 1, 100_000_000), batch_item("cc", "cd", 1)],
        atomic=atomic,
    )

    assert item_codes(payload) == ["OK", "OK"]
    assert payload["results"][1]["entry"]["timestamp"] == 100_000_000
    assert await history(db, "cc") == CC_CREDITED_THEN_SENT_ONE
    assert await cashback_left_behind(db) == []
    await audit()


# -- system clock: the other account's newest entry is ahead of now ---------------------------

SYSTEM_NOW = 1_700_000_000_000


def _op_variables(op: str) -> tuple[str, dict[str, Any]]:
    if op == "merge":
        return MERGE, {"a": "a", "b": "b"}
    key = "keyed" if op == "keyed transfer" else None
    return TRANSFER, {"from": "a", "to": "b", "amount": 1, "key": key}


@pytest.mark.parametrize("op", ["one-statement transfer", "keyed transfer", "merge", "batch"])
async def test_system_clock_write_stamped_after_now_credits_cashback_due_before_it(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch, db: Db, audit: Any, op: str
) -> None:
    """Another server's clock ran 51 ms ahead when it wrote b's newest entry. A write on a and
    b at this server's now is stamped with that newest entry's time, so a's cashback due in
    between is credited first."""
    fake = {"now": SYSTEM_NOW - DAY_MS}
    monkeypatch.setattr(clock_module, "wall_clock_ms", lambda: fake["now"])
    gql = await make_client(ClockMode.SYSTEM)
    for account in ("a", "b"):
        assert (await create(gql, account))["errors"] == []
    assert (await deposit(gql, "a", 1_000))["errors"] == []
    fake["now"] = SYSTEM_NOW - DAY_MS + 10
    assert await pay_quiet(gql, "a", 500) == SYSTEM_NOW + 10
    fake["now"] = SYSTEM_NOW + 51
    assert (await deposit(gql, "b", 5))["errors"] == []
    fake["now"] = SYSTEM_NOW

    if op == "batch":
        result = (await batch(gql, [batch_item("a", "b", 1)]))["results"][0]
    else:
        document, variables = _op_variables(op)
        (result,) = (await gql.ok(document, variables)).values()
    assert result["errors"] == [], result

    kinds = [(ts, kind) for ts, kind, _, _ in await history(db, "a")]
    last = ("MERGE_IN", SYSTEM_NOW + 51) if op == "merge" else ("TRANSFER_OUT", SYSTEM_NOW + 51)
    assert kinds[-2:] == [(SYSTEM_NOW + 10, "CASHBACK"), (last[1], last[0])]
    assert await cashback_left_behind(db) == []
    fake["now"] = SYSTEM_NOW + 100
    assert (await read_all(gql, "a"))["account"]["balance"] == (
        1_000 - 500 + 10 + (5 if op == "merge" else -1)
    )
    await audit()


# -- a ledger that already holds overtaken cashback ------------------------------------------

POISON = """
INSERT INTO entries (account_id, ts, kind, amount, balance_after, counterparty_id, actor)
VALUES ('cc', 100000000, 'TRANSFER_OUT', 1, 8999, 'ca', 'anonymous'),
       ('ca', 100000000, 'TRANSFER_IN', 1, 1, 'cc', 'anonymous');
UPDATE accounts SET balance = 8999, outgoing = outgoing + 1, last_entry_at = 100000000
WHERE id = 'cc';
UPDATE accounts SET balance = 1, last_entry_at = 100000000 WHERE id = 'ca';
UPDATE client_clock SET now_ms = 100000000;
"""


async def _poison(gql: GraphQLClient, db: Db) -> None:
    """cc's cashback due at 86400000 left unsettled behind its transfer at 100000000, written
    as earlier versions wrote the reproduction's batch item."""
    for account in ("ca", "cc"):
        assert (await create(gql, account, 0))["errors"] == []
    assert (await deposit(gql, "cc", 10_000, 0))["errors"] == []
    assert await pay_quiet(gql, "cc", 1_000, 0) == DAY_MS
    async with db.transaction():
        await db.execute(POISON)
    assert await cashback_left_behind(db) == [("payment1", "cc", DAY_MS, 100_000_000)]


@pytest.mark.parametrize("noticed_by", ["query", "mutation", "sweeper"])
async def test_cashback_overtaken_by_an_entry_is_credited_at_that_entry(
    make_client: MakeClient,
    db: Db,
    audit: Any,
    caplog: pytest.LogCaptureFixture,
    noticed_by: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="bank_graphql")
    sweeping = noticed_by == "sweeper"
    gql = await make_client(
        ClockMode.CLIENT, sweeper_enabled=sweeping, sweeper=SweepLimits(interval_s=0.02)
    )
    await _poison(gql, db)

    if noticed_by == "mutation":
        assert (await deposit(gql, "cc", 5))["balance"] == 8_999 + 20 + 5
    elif sweeping:
        assert len(await wait_until_cashback(db, 1)) == 1
    read = await read_all(gql, "cc")

    assert await cashback_rows(db) == [("cc", 100_000_000, 20, 9_019, 1)]
    assert await cashback_left_behind(db) == []
    assert read["account"]["payments"]["nodes"][0]["status"] == "CASHBACK_RECEIVED"
    assert [n["kind"] for n in read["account"]["transactions"]["nodes"]][:4] == [
        "DEPOSIT",
        "PAYMENT",
        "TRANSFER_OUT",
        "CASHBACK",
    ]
    assert any("payment1" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    await audit()


# -- the sweeper survives an account it cannot settle -----------------------------------------


async def _lag_seconds(gql: GraphQLClient) -> float:
    text = (await gql.http.get("/metrics")).text
    match = re.search(r"^bank_graphql_sweeper_lag_seconds (\S+)$", text, re.MULTILINE)
    assert match is not None, text
    return float(match.group(1))


async def _eventually(check: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_sweeper_settles_other_accounts_past_one_it_cannot_settle(
    make_client: MakeClient, db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    """Account "broken" owes cashback its row no longer counts as pending, on a full balance, so
    crediting it breaks a CHECK constraint: that account is skipped and logged, the others
    are settled, reads answer, and the sweeper keeps running."""
    caplog.set_level(logging.WARNING, logger="bank_graphql")
    gql = await make_client(
        ClockMode.CLIENT, sweeper_enabled=True, sweeper=SweepLimits(interval_s=0.02)
    )
    for account in ("broken", "fine"):
        assert (await create(gql, account, 0))["errors"] == []
        assert (await deposit(gql, account, 1_000, 0))["errors"] == []
    assert await pay_quiet(gql, "broken", 1_000, 0) == DAY_MS
    assert await pay_quiet(gql, "fine", 1_000, 1) == DAY_MS + 1
    await db.execute("UPDATE accounts SET pending_cashback = 0 WHERE id = 'broken'")
    assert (await deposit(gql, "broken", MAX_MONEY, 0))["errors"] == []

    assert (await create(gql, "clock", DAY_MS + 1))["errors"] == []
    assert await wait_until_cashback(db, 1) == [("fine", DAY_MS + 1, 20, 20, 2)]
    # A query request settles what is due first: it skips "broken" too, and answers.
    fine = await gql.ok('{ account(id: "fine") { balance } }')
    assert fine["account"]["balance"] == 20

    async def lag_follows_the_clock() -> bool:
        return await _lag_seconds(gql) == 0.5

    moved_on = await gql.ok(DEPOSIT, {"id": "clock", "amount": 1, "ts": DAY_MS + 500})
    assert moved_on["deposit"]["errors"] == []
    await _eventually(lag_follows_the_clock)
    assert any("broken" in r.getMessage() for r in caplog.records)
