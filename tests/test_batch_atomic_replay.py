"""An atomic batch whose item replays a stored refusal under its idempotency key is refused
whole: that item reports its stored refusal, every other item BATCH_ABORTED, nothing commits
and nothing is stored under the items' keys."""

from typing import Any

import psycopg

from tests.conftest import GraphQLClient
from tests.db_helpers import table_rows
from tests.operations import TRANSFER, batch, batch_item, funded, item_codes

Db = psycopg.AsyncConnection[Any]
TRILLION = 10**12


async def _refused_with_key(gql: GraphQLClient, key: str) -> dict[str, Any]:
    """X→Y 10^12 under `key`: refused for want of funds, and that refusal stored."""
    variables = {"from": "x", "to": "y", "amount": TRILLION, "ts": 2_000, "key": key}
    payload: dict[str, Any] = (await gql.ok(TRANSFER, variables))["transfer"]
    assert [e["code"] for e in payload["errors"]] == ["INSUFFICIENT_FUNDS"]
    return payload


async def test_atomic_batch_aborts_on_a_replayed_refusal(
    gql: GraphQLClient, db: Db, audit: Any
) -> None:
    await funded(gql, "x", 1_000)
    await funded(gql, "y", 0)
    refused = await _refused_with_key(gql, "K")
    before = await table_rows(db)

    payload = await batch(
        gql,
        [batch_item("x", "y", TRILLION, 2_000, key="K"), batch_item("x", "y", 7, 2_000)],
        atomic=True,
    )

    assert payload["errors"] == []
    assert item_codes(payload) == ["INSUFFICIENT_FUNDS", "BATCH_ABORTED"]
    first = payload["results"][0]["errors"]
    assert [(e["code"], e["message"]) for e in first] == [
        (e["code"], e["message"]) for e in refused["errors"]
    ]
    assert first[0]["field"] == ["input", "transfers", "0", "amount"]
    for result in payload["results"]:
        assert result["balance"] is None
        assert result["entry"] is None
    assert await table_rows(db) == before
    await audit()


async def test_atomic_batch_aborts_on_a_later_replayed_refusal_and_stores_no_key(
    gql: GraphQLClient, db: Db, audit: Any
) -> None:
    await funded(gql, "x", 1_000)
    await funded(gql, "y", 0)
    await _refused_with_key(gql, "K")
    before = await table_rows(db)
    items = [
        batch_item("x", "y", 1, 2_000, key="fresh"),
        batch_item("x", "y", 7, 2_000, key="also-fresh"),
        batch_item("x", "y", TRILLION, 2_000, key="K"),
    ]

    payload = await batch(gql, items, atomic=True)

    assert item_codes(payload) == ["BATCH_ABORTED", "BATCH_ABORTED", "INSUFFICIENT_FUNDS"]
    assert await table_rows(db) == before

    # Without the replayed refusal the same keys run as new requests.
    retried = await batch(gql, items[1:2], atomic=True)
    assert item_codes(retried) == ["OK"]
    assert retried["results"][0]["balance"] == 993
    await audit()


async def test_non_atomic_batch_still_replays_a_refusal_beside_applied_items(
    gql: GraphQLClient, audit: Any
) -> None:
    await funded(gql, "x", 1_000)
    await funded(gql, "y", 0)
    await _refused_with_key(gql, "K")

    payload = await batch(
        gql, [batch_item("x", "y", TRILLION, 2_000, key="K"), batch_item("x", "y", 7, 2_000)]
    )

    assert item_codes(payload) == ["INSUFFICIENT_FUNDS", "OK"]
    assert payload["results"][1]["balance"] == 993
    await audit()
