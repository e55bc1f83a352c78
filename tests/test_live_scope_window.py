"""A scoped subscriber catching up with a long feed: each query looks at a bounded window of
positions, and the subscriber still gets exactly its own entries, in order, once each."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from psycopg_pool import AsyncConnectionPool

from bank_graphql.ledger import LiveFeed, LiveLimits, PoolLimits, Principal, Role, open_pool
from bank_graphql.ledger.storage import feed
from bank_graphql.ledger.storage.database import Conn
from tests.conftest import GraphQLClient


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool[Conn]]:
    opened = await open_pool(database_url, PoolLimits(min_size=1, max_size=2))
    yield opened
    await opened.close()


async def _deposit(gql: GraphQLClient, account: str, amount: int, ts: int) -> None:
    query = (
        "mutation($a: ID!, $n: Money!, $t: Timestamp) "
        "{ deposit(input: {accountId: $a, amount: $n, timestamp: $t}) { errors { code } } }"
    )
    data = await gql.ok(query, {"a": account, "n": amount, "t": ts})
    assert data["deposit"]["errors"] == []


async def test_a_scoped_catch_up_reads_windows_and_misses_nothing(
    gql: GraphQLClient,
    pool: AsyncConnectionPool[Conn],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for account in ("mine", "theirs"):
        create = (
            "mutation($a: ID!) { createAccount(input: {id: $a, timestamp: 1}) { errors { code } } }"
        )
        assert (await gql.ok(create, {"a": account}))["createAccount"]["errors"] == []
    plan = ["theirs"] * 7 + ["mine"] + ["theirs"] * 5 + ["mine"] + ["theirs"] * 4
    for ts, account in enumerate(plan, start=10):
        await _deposit(gql, account, ts, ts)
    monkeypatch.setattr(feed, "SCOPED_SCAN_MAX", 3)
    live = LiveFeed(pool, database_url, LiveLimits(page_rows=2, sequence_interval_s=0.01))
    await live.start()
    try:
        for _ in range(600):  # the sequencer gives every entry its position
            if await feed.FeedReads(pool).end() == len(plan):
                break
            await asyncio.sleep(0.05)
        customer = Principal("key:test", Role.CUSTOMER, frozenset({"mine"}))
        seen = []
        async with asyncio.timeout(30):
            async for item in live.entries(customer, 0):
                seen.append(item)
                if len(seen) == 2:
                    break
        assert [i.entry.account_id for i in seen] == ["mine", "mine"]
        assert [i.entry.amount for i in seen] == [17, 23]
        assert seen[0].position < seen[1].position
        assert live.subscribers == 0  # the subscriber left when its generator closed
    finally:
        await live.stop()
