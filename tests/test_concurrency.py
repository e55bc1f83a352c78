"""Many clients at once: money is conserved, no balance goes negative, every balanceAfter
chain holds, and a read of many balances never sees half of a transfer."""

import asyncio
import random

from bank_graphql.ledger import ClockMode
from tests.conftest import GraphQLClient, MakeClient
from tests.operations import PAY, TRANSFER, funded

CLIENTS = 24
TRANSFERS_PER_CLIENT = 30
ACCOUNTS = ["acc-1", "acc-2", "acc-3", "acc-4"]
HOT = "hot"
OPENING = 5_000

TOTAL_QUERY = (
    "{ "
    + " ".join(
        f'a{i}: account(id: "{account}") {{ balance }}'
        for i, account in enumerate([*ACCOUNTS, HOT])
    )
    + " }"
)


async def _open_books(gql: GraphQLClient) -> None:
    for account in [*ACCOUNTS, HOT]:
        await funded(gql, account, OPENING, ts=None)


async def _client(gql: GraphQLClient, seed: int, outcomes: list[str]) -> None:
    rng = random.Random(seed)
    for _ in range(TRANSFERS_PER_CLIENT):
        other = rng.choice(ACCOUNTS)
        # Half of all transfers touch the hot account, in both directions.
        source, target = (HOT, other) if rng.random() < 0.5 else (other, HOT)
        if rng.random() < 0.5:
            source, target = rng.sample(ACCOUNTS, 2)
        body = await gql.post(
            TRANSFER, {"from": source, "to": target, "amount": rng.randint(1, 900)}
        )
        assert "errors" not in body, body
        errors = body["data"]["transfer"]["errors"]
        outcomes.append(errors[0]["code"] if errors else "OK")


async def test_concurrent_transfers_keep_the_books(make_client: MakeClient, db, audit) -> None:
    gql = await make_client(ClockMode.SYSTEM)
    await _open_books(gql)
    total = OPENING * (len(ACCOUNTS) + 1)
    outcomes: list[str] = []
    torn_reads: list[int] = []
    writers_done = asyncio.Event()

    async def reader() -> int:
        reads = 0
        while not writers_done.is_set():
            data = await gql.ok(TOTAL_QUERY)
            seen = sum(account["balance"] for account in data.values())
            if seen != total:
                torn_reads.append(seen)
            reads += 1
        return reads

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(_client(gql, seed, outcomes) for seed in range(CLIENTS)))
    writers_done.set()
    reads = await reading

    assert len(outcomes) == CLIENTS * TRANSFERS_PER_CLIENT
    assert set(outcomes) <= {"OK", "INSUFFICIENT_FUNDS"}, set(outcomes)
    assert outcomes.count("OK") > len(outcomes) // 2
    assert reads > 0
    assert torn_reads == []
    data = await gql.ok(TOTAL_QUERY)
    balances = [account["balance"] for account in data.values()]
    assert sum(balances) == total
    assert min(balances) >= 0
    cursor = await db.execute("SELECT count(*) FROM entries WHERE kind = 'TRANSFER_OUT'")
    assert (await cursor.fetchone())[0] == outcomes.count("OK")
    await audit()


async def test_concurrent_payments_and_transfers_balance(make_client: MakeClient, audit) -> None:
    gql = await make_client(ClockMode.SYSTEM)
    await _open_books(gql)

    async def spender(seed: int) -> list[str]:
        rng = random.Random(seed)
        paid = []
        for _ in range(15):
            account = rng.choice([*ACCOUNTS, HOT])
            if rng.random() < 0.5:
                body = await gql.ok(PAY, {"id": account, "amount": rng.randint(1, 700)})
                errors = body["pay"]["errors"]
                if not errors:
                    paid.append(body["pay"]["payment"]["id"])
            else:
                target = rng.choice([a for a in [*ACCOUNTS, HOT] if a != account])
                await gql.ok(TRANSFER, {"from": account, "to": target, "amount": 100})
        return paid

    results = await asyncio.gather(*(spender(seed) for seed in range(16)))
    payment_ids = [p for paid in results for p in paid]
    numbers = sorted(int(p.removeprefix("payment")) for p in payment_ids)
    # Numbers are taken only on success: no gaps, no duplicates.
    assert numbers == list(range(1, len(numbers) + 1))
    await audit()
