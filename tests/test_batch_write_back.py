"""A batch keeps the rows it locked in memory and writes them back once: attacked through the
API. The same account many times on both sides, cashback falling due between items, refused
items between applied ones, late atomic aborts; a batch against the same transfers sent one
by one on a twin database; batches racing single transfers, merges, pays and the sweeper."""

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bank_graphql.edge.app import create_app
from bank_graphql.edge.settings import Settings
from bank_graphql.ledger import ClockMode, SweepLimits, audit_books
from tests.conftest import GraphQLClient, MakeClient, admin_headers, cloned_database
from tests.db_helpers import cashback_left_behind, table_rows
from tests.operations import (
    BATCH,
    DAY_MS,
    MAX_MONEY,
    MERGE,
    TRANSFER,
    batch,
    batch_item,
    funded,
    item_codes,
    merge_payload,
    pay,
)

Db = psycopg.AsyncConnection[Any]
Audit = Callable[[], Awaitable[None]]
Item = dict[str, Any]

BOOKS = """
SELECT account_id, ts, kind, amount, balance_after, counterparty_id, payment_id
FROM entries ORDER BY account_id, ts, id"""

ACCOUNTS = """
SELECT id, balance, outgoing, pending_cashback, next_cashback_due_at, last_entry_at,
       merged_into
FROM accounts ORDER BY id"""


@asynccontextmanager
async def client_on(url: str, **overrides: Any) -> AsyncIterator[GraphQLClient]:
    """The app on database `url` (client clock, no sweeper unless asked), its lifespan real."""
    app = create_app(
        replace(
            Settings(database_url=url, clock=ClockMode.CLIENT, sweeper_enabled=False), **overrides
        )
    )
    headers = await admin_headers(url)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers
        ) as http,
    ):
        yield GraphQLClient(http)


async def books_of(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int]:
    """Every entry (ids aside), every account, and the client clock's now."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        entries = await (await conn.execute(BOOKS)).fetchall()
        accounts = await (await conn.execute(ACCOUNTS)).fetchall()
        clock = await (await conn.execute("SELECT now_ms FROM client_clock")).fetchone()
        assert await audit_books(conn) == []
        assert clock is not None
        return list(entries), list(accounts), int(clock[0])


def answer_of(result: dict[str, Any]) -> dict[str, Any]:
    """A transfer's answer without the ids only the database numbering decides."""
    entry = result["entry"]
    return {
        "codes": [e["code"] for e in result["errors"]],
        "balance": result["balance"],
        "entry": None if entry is None else {k: v for k, v in entry.items() if k != "id"},
        "source": result["sourceAccount"],
        "target": result["targetAccount"],
    }


TRANSFER_OUTGOING = """
mutation($from: ID!, $to: ID!, $amount: Money!, $ts: Timestamp) {
  transfer(input: {sourceAccountId: $from, targetAccountId: $to, amount: $amount,
                   timestamp: $ts}) {
    balance
    entry { id accountId timestamp kind amount balanceAfter counterpartyId }
    sourceAccount { id outgoing }
    targetAccount { id outgoing }
    errors { code message field }
  }
}"""


async def one_by_one(gql: GraphQLClient, items: list[Item]) -> list[dict[str, Any]]:
    answers = []
    for item in items:
        variables = {
            "from": item["sourceAccountId"],
            "to": item["targetAccountId"],
            "amount": item["amount"],
            "ts": item.get("timestamp"),
        }
        data = await gql.ok(TRANSFER_OUTGOING, variables)
        answers.append(answer_of(data["transfer"]))
    return answers


# -- the ledger both sides start from ---------------------------------------------------------

PAYERS = ("a", "b", "c", "d")


async def payers(gql: GraphQLClient) -> None:
    """a, b, c, d hold 1_000 each, less payments whose cashback falls due at DAY_MS + 1_000,
    + 2_000, + 3_000 (a twice, b, c); e holds 0; the client clock stands at 4_000."""
    for account_id in PAYERS:
        await funded(gql, account_id, 1_000, ts=0)
    await funded(gql, "e", 0, ts=0)
    for account_id, amount, ts in (
        ("a", 500, 1_000),
        ("b", 300, 2_000),
        ("a", 100, 3_000),
        ("c", 400, 3_000),
    ):
        assert (await pay(gql, account_id, amount, ts))["errors"] == []
    await funded(gql, "clock", 0, ts=4_000)


async def payers_rich_and_merged(gql: GraphQLClient) -> None:
    """`payers`, and: d (its payment's cashback of 4 due at DAY_MS + 2_500) merged into c;
    rich 1_000 short of overflowing, 20 of it cashback due at DAY_MS + 4_000."""
    await payers(gql)
    assert (await pay(gql, "d", 200, 2_500))["errors"] == []
    await funded(gql, "rich", MAX_MONEY - 20, ts=4_000)
    assert (await pay(gql, "rich", 1_000, 4_000))["errors"] == []
    assert (await merge_payload(gql, "c", "d", 4_000))["errors"] == []


@asynccontextmanager
async def prepared(
    server_url: str,
    template_db: str,
    setup: Callable[[GraphQLClient], Awaitable[None]] = payers,
) -> AsyncIterator[str]:
    """A database holding what `setup` made, to clone a twin from for each side."""
    with cloned_database(server_url, template_db, prefix="bank_twin") as url:
        async with client_on(url) as gql:
            await setup(gql)
        yield psycopg.conninfo.conninfo_to_dict(url)["dbname"]  # type: ignore[misc]


async def batch_against_one_by_one(
    server_url: str, template: str, items: list[Item]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The batch's answers and those of the same transfers one by one, each on its own twin
    of `template`; the books of the two twins, once reads settled what is due, must agree."""
    with (
        cloned_database(server_url, template) as batched_url,
        cloned_database(server_url, template) as single_url,
    ):
        async with client_on(batched_url) as gql:
            payload = await batch(gql, items)
            batched = [answer_of(r) for r in payload["results"]]
            await gql.ok("query { accounts { nodes { id balance } } }")
        async with client_on(single_url) as gql:
            single = await one_by_one(gql, items)
            await gql.ok("query { accounts { nodes { id balance } } }")
        assert await books_of(batched_url) == await books_of(single_url)
    return batched, single


def t(offset: int) -> int:
    return DAY_MS + offset


async def test_many_items_on_the_same_accounts_across_due_cashback_equal_one_by_one(
    server_url: str, template_db: str
) -> None:
    items = [
        batch_item("a", "b", 300, t(500)),
        batch_item("b", "a", 250, t(500)),
        batch_item("a", "b", 900),  # a holds 450
        batch_item("a", "e", 10, t(1_000)),  # a's cashback of 10 falls due at this instant
        batch_item("e", "a", 10),
        batch_item("b", "a", 1, t(900)),  # a moved at t(1_000)
        batch_item("c", "a", 5, t(2_500)),  # b's cashback of 6 falls due before this
        batch_item("b", "c", 706),  # b keeps 50, its cashback credited by the now moved
        batch_item("a", "b", 1),
        batch_item("ghost", "a", 1),
        batch_item("a", "ghost", 1),
        batch_item("d", "a", 1, t(2_400)),  # a moved at t(2_500)
        batch_item("a", "c", 20, t(3_000)),  # a's 2 and c's 8 fall due at this instant
        batch_item("c", "a", 1),
        batch_item("a", "a", 1),
        batch_item("e", "b", 1, t(3_000)),  # e gave back all it got
    ]
    async with prepared(server_url, template_db) as template:
        batched, single = await batch_against_one_by_one(server_url, template, items)
    assert batched == single
    assert [a["codes"] for a in batched] == [
        [],
        [],
        ["INSUFFICIENT_FUNDS"],
        [],
        [],
        ["TIMESTAMP_OUT_OF_ORDER"],
        [],
        [],
        [],
        ["ACCOUNT_NOT_FOUND"],
        ["ACCOUNT_NOT_FOUND"],
        ["TIMESTAMP_OUT_OF_ORDER"],
        [],
        [],
        ["SAME_ACCOUNT"],
        ["INSUFFICIENT_FUNDS"],
    ]


async def test_overflow_and_merged_cashback_between_items_equal_one_by_one(
    server_url: str, template_db: str
) -> None:
    items = [
        batch_item("a", "rich", 400),
        batch_item("b", "rich", 601),  # would overflow, pending cashback counted
        batch_item("b", "rich", 600),
        batch_item("b", "rich", 1),  # rich holds MAX_MONEY with its pending cashback
        batch_item("d", "a", 1),  # merged into c
        batch_item("c", "d", 1),
        batch_item("c", "a", 604, t(2_500)),  # needs d's 4, due then, now c's
        batch_item("rich", "e", 30, t(4_000)),
        batch_item("e", "rich", 30),
        batch_item("b", "rich", 1),
    ]
    async with prepared(server_url, template_db, payers_rich_and_merged) as template:
        batched, single = await batch_against_one_by_one(server_url, template, items)
    assert batched == single
    assert [a["codes"] for a in batched] == [
        [],
        ["BALANCE_OVERFLOW"],
        [],
        ["BALANCE_OVERFLOW"],
        ["ACCOUNT_NOT_FOUND"],
        ["ACCOUNT_NOT_FOUND"],
        [],
        [],
        [],
        ["BALANCE_OVERFLOW"],
    ]


async def test_batch_outcomes_name_each_items_own_outgoing(
    gql: GraphQLClient, audit: Audit
) -> None:
    await payers(gql)

    payload = await batch(
        gql,
        [
            batch_item("a", "b", 100),
            batch_item("b", "a", 40),
            batch_item("a", "b", 5_000),
            batch_item("a", "b", 1, t(1_000)),
            batch_item("b", "a", 1),
        ],
    )

    assert item_codes(payload) == ["OK", "OK", "INSUFFICIENT_FUNDS", "OK", "OK"]
    results = payload["results"]
    # a spent 500 + 100 in payments before; b spent 300.
    assert [r["sourceAccount"] for r in results] == [
        {"id": "a", "outgoing": 700},
        {"id": "b", "outgoing": 340},
        None,
        {"id": "a", "outgoing": 701},
        {"id": "b", "outgoing": 341},
    ]
    assert [r["entry"] and r["entry"]["balanceAfter"] for r in results] == [
        300,
        760,
        None,
        349,  # 300 + 40, a's cashback of 10 due at t(1_000), - 1
        760,
    ]
    await audit()


async def test_atomic_batch_aborting_late_after_due_cashback_leaves_the_books(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await payers(gql)
    before = await table_rows(db)

    payload = await batch(
        gql,
        [
            batch_item("a", "b", 100, t(1_000)),
            batch_item("b", "a", 100, t(2_000)),
            batch_item("c", "a", 5, t(3_000)),
            *[batch_item("a", "b", 1) for _ in range(20)],
            batch_item("e", "a", 1),
        ],
        atomic=True,
    )

    assert item_codes(payload)[-1] == "INSUFFICIENT_FUNDS"
    assert set(item_codes(payload)[:-1]) == {"BATCH_ABORTED"}
    assert await table_rows(db) == before
    await audit()


async def test_ping_pong_batch_keeps_every_balance_after_in_chain(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await payers(gql)
    rng = random.Random(7)
    items = []
    ts = 4_000
    for _ in range(200):
        ts += rng.choice([0, 0, DAY_MS // 20])
        source, target = rng.sample(["a", "b", "c", "e"], 2)
        items.append(batch_item(source, target, rng.randint(1, 400), rng.choice([None, ts])))

    payload = await batch(gql, items)

    applied = [r for r in payload["results"] if not r["errors"]]
    assert 20 < len(applied) < 200
    cursor = await db.execute(
        "SELECT id, balance_after FROM entries WHERE kind = 'TRANSFER_OUT' ORDER BY id"
    )
    stored = {str(k): v for k, v in await cursor.fetchall()}
    assert {r["entry"]["id"]: r["entry"]["balanceAfter"] for r in applied} == {
        k: v for k, v in stored.items() if k in {r["entry"]["id"] for r in applied}
    }
    assert await cashback_left_behind(db) == []
    await audit()


# -- random small batches against the same transfers one by one -------------------------------

ACCOUNT_IDS = st.sampled_from(["a", "b", "c", "d", "e", "rich", "ghost"])
ITEMS = st.lists(
    st.tuples(
        ACCOUNT_IDS,
        ACCOUNT_IDS,
        st.one_of(st.integers(1, 700), st.integers(990, 1_010)),
        st.one_of(st.none(), st.sampled_from([t(k * 250) for k in range(19)])),
    ),
    min_size=1,
    max_size=8,
)


def test_random_batches_equal_the_same_transfers_one_by_one(
    server_url: str, template_db: str
) -> None:
    with cloned_database(server_url, template_db, prefix="bank_twin") as url:

        async def setup() -> None:
            async with client_on(url) as gql:
                await payers_rich_and_merged(gql)

        asyncio.run(setup())
        template = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        assert isinstance(template, str)

        @settings(
            max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(ITEMS)
        def same(plan: list[tuple[str, str, int, int | None]]) -> None:
            items = [batch_item(*item) for item in plan]
            batched, single = asyncio.run(batch_against_one_by_one(server_url, template, items))
            assert batched == single

        same()


# -- racing ----------------------------------------------------------------------------------


async def test_batches_racing_transfers_merges_pays_and_the_sweeper_keep_the_books(
    make_client: MakeClient, db: Db, audit: Audit
) -> None:
    gql = await make_client(
        ClockMode.CLIENT, sweeper_enabled=True, sweeper=SweepLimits(interval_s=0.01)
    )
    accounts = [f"r{i}" for i in range(6)]
    for account_id in accounts:
        await funded(gql, account_id, 100_000, ts=0)
    clock = [0]
    answers: list[dict[str, Any]] = []

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(15):
            clock[0] += rng.randint(0, DAY_MS // 6)
            ts = rng.choice([None, clock[0]])
            source, target = rng.sample(accounts, 2)
            roll = rng.random()
            if roll < 0.4:
                pool = rng.sample(accounts, 3)
                items = [
                    batch_item(*rng.sample(pool, 2), rng.randint(1, 3_000), rng.choice([None, ts]))
                    for _ in range(rng.randint(2, 25))
                ]
                body = {"transfers": items, "atomic": rng.random() < 0.3}
                answers.append(await gql.post(BATCH, body))
            elif roll < 0.65:
                variables = {"from": source, "to": target, "amount": rng.randint(1, 3_000)}
                answers.append(await gql.post(TRANSFER, {**variables, "ts": ts}))
            elif roll < 0.92:
                variables = {"id": source, "amount": rng.randint(1, 5_000), "ts": ts}
                answers.append(await gql.post(PAY_DOC, variables))
            else:
                answers.append(await gql.post(MERGE, {"a": source, "b": target, "ts": ts}))

    await asyncio.gather(*(client(seed) for seed in range(8)))

    assert [a["errors"] for a in answers if "errors" in a] == []
    await gql.ok("query { accounts { nodes { id balance } } }")
    assert await cashback_left_behind(db) == []
    await audit()


PAY_DOC = """
mutation($id: ID!, $amount: Money!, $ts: Timestamp) {
  pay(input: {accountId: $id, amount: $amount, timestamp: $ts}) { balance errors { code } }
}"""
