"""Account.transactions: Relay keyset connections over one account's ledger, and balance(at)."""

import asyncio
import base64
from typing import Any

import pytest

from tests.conftest import GraphQLClient
from tests.operations import (
    DAY_MS,
    HISTORY,
    balance,
    create,
    deposit,
    funded,
    pay,
    transfer,
)

Entry = dict[str, Any]


async def history(gql: GraphQLClient, account_id: str, **args: Any) -> dict[str, Any]:
    """One page of `account_id`'s transactions; checks the connection's own invariants."""
    data = await gql.ok(HISTORY, {"id": account_id, **args})
    page: dict[str, Any] = data["account"]["transactions"]
    edges = page["edges"]
    # `nodes` is the edges' nodes, in the same order.
    assert [n["id"] for n in page["nodes"]] == [e["node"]["id"] for e in edges]
    info = page["pageInfo"]
    if edges:
        assert info["startCursor"] == edges[0]["cursor"]
        assert info["endCursor"] == edges[-1]["cursor"]
    else:
        assert info["startCursor"] is None
        assert info["endCursor"] is None
    return page


def nodes(page: dict[str, Any]) -> list[Entry]:
    return [e["node"] for e in page["edges"]]


def ids(entries: list[Entry]) -> list[str]:
    return [e["id"] for e in entries]


def order_key(entry: Entry) -> tuple[int, int]:
    return entry["timestamp"], int(entry["id"])


async def walk_forward(
    gql: GraphQLClient, account_id: str, size: int, **bounds: Any
) -> list[dict[str, Any]]:
    pages = []
    after = None
    while True:
        page = await history(gql, account_id, first=size, after=after, **bounds)
        pages.append(page)
        if not page["pageInfo"]["hasNextPage"]:
            return pages
        after = page["pageInfo"]["endCursor"]
        assert len(pages) < 1_000, "runaway pagination"


async def walk_backward(
    gql: GraphQLClient, account_id: str, size: int, **bounds: Any
) -> list[dict[str, Any]]:
    pages = []
    before = None
    while True:
        page = await history(gql, account_id, last=size, before=before, **bounds)
        pages.append(page)
        if not page["pageInfo"]["hasPreviousPage"]:
            return pages
        before = page["pageInfo"]["startCursor"]
        assert len(pages) < 1_000, "runaway pagination"


async def ledger_of(gql: GraphQLClient, account_id: str) -> list[Entry]:
    """The whole ledger of an account (100 entries at most), in one page."""
    page = await history(gql, account_id, first=100)
    assert not page["pageInfo"]["hasNextPage"]
    return nodes(page)


# Entries at timestamps 2000, 2000, 2010, 2010, 2020, ... (pairs share a timestamp).
def _ts(i: int) -> int:
    return 2_000 + (i // 2) * 10


async def seeded(gql: GraphQLClient, account_id: str, count: int) -> list[Entry]:
    """`account_id` created at 1000 with `count` deposits of 1, 2, 3 ... (pairs share a ts)."""
    await funded(gql, account_id, 0)
    entries = []
    for i in range(count):
        payload = await deposit(gql, account_id, i + 1, _ts(i))
        assert payload["errors"] == []
        entries.append(payload["entry"])
    return entries


async def test_seeded_ledger_is_ordered_with_running_balance(gql: GraphQLClient) -> None:
    written = await seeded(gql, "acct", 9)
    entries = await ledger_of(gql, "acct")
    assert ids(entries) == ids(written)
    assert [e["timestamp"] for e in entries] == [_ts(i) for i in range(9)]
    assert [e["balanceAfter"] for e in entries] == [(i + 1) * (i + 2) // 2 for i in range(9)]
    assert [order_key(e) for e in entries] == sorted(order_key(e) for e in entries)


async def test_first_after_walks_every_entry_exactly_once(gql: GraphQLClient) -> None:
    written = await seeded(gql, "acct", 23)
    pages = await walk_forward(gql, "acct", 5)
    assert [len(p["edges"]) for p in pages] == [5, 5, 5, 5, 3]
    seen = [e for p in pages for e in nodes(p)]
    assert ids(seen) == ids(written)
    for n, page in enumerate(pages):
        info = page["pageInfo"]
        assert info["hasPreviousPage"] is (n > 0)
        assert info["hasNextPage"] is (n < len(pages) - 1)


async def test_last_before_walks_backwards_exactly_once(gql: GraphQLClient) -> None:
    written = await seeded(gql, "acct", 23)
    pages = await walk_backward(gql, "acct", 5)
    assert [len(p["edges"]) for p in pages] == [5, 5, 5, 5, 3]
    # Each page is itself oldest first; pages come newest first.
    seen = [e for p in reversed(pages) for e in nodes(p)]
    assert ids(seen) == ids(written)
    assert ids(nodes(pages[0])) == ids(written[-5:])
    for n, page in enumerate(pages):
        info = page["pageInfo"]
        assert info["hasPreviousPage"] is (n < len(pages) - 1)
        assert info["hasNextPage"] is (n > 0)


async def test_cursors_of_forward_and_backward_pages_agree(gql: GraphQLClient) -> None:
    written = await seeded(gql, "acct", 12)
    forward = await history(gql, "acct", first=12)
    cursors = [e["cursor"] for e in forward["edges"]]
    middle = cursors[6]
    after = await history(gql, "acct", first=100, after=middle)
    assert ids(nodes(after)) == ids(written[7:])
    before = await history(gql, "acct", last=100, before=middle)
    assert ids(nodes(before)) == ids(written[:6])
    between = await history(gql, "acct", first=100, after=cursors[2], before=cursors[8])
    assert ids(nodes(between)) == ids(written[3:8])


async def test_page_info_at_the_edges(gql: GraphQLClient) -> None:
    written = await seeded(gql, "acct", 4)
    exact = await history(gql, "acct", first=4)
    assert ids(nodes(exact)) == ids(written)
    assert exact["pageInfo"]["hasNextPage"] is False
    assert exact["pageInfo"]["hasPreviousPage"] is False

    past_end = await history(gql, "acct", first=10, after=exact["pageInfo"]["endCursor"])
    assert past_end["edges"] == []
    assert past_end["pageInfo"]["hasNextPage"] is False
    assert past_end["pageInfo"]["hasPreviousPage"] is True

    before_start = await history(gql, "acct", last=10, before=exact["pageInfo"]["startCursor"])
    assert before_start["edges"] == []
    assert before_start["pageInfo"]["hasPreviousPage"] is False
    assert before_start["pageInfo"]["hasNextPage"] is True


async def test_empty_ledger_is_an_empty_connection(gql: GraphQLClient) -> None:
    await funded(gql, "empty", 0)
    for args in ({}, {"first": 10}, {"last": 10}, {"first": 0}):
        page = await history(gql, "empty", **args)
        assert page["edges"] == []
        assert page["nodes"] == []
        assert page["pageInfo"] == {
            "hasNextPage": False,
            "hasPreviousPage": False,
            "startCursor": None,
            "endCursor": None,
        }


async def test_default_page_size_is_50(gql: GraphQLClient) -> None:
    written = await seeded(gql, "acct", 53)
    page = await history(gql, "acct")
    assert ids(nodes(page)) == ids(written[:50])
    assert page["pageInfo"]["hasNextPage"] is True
    assert page["pageInfo"]["hasPreviousPage"] is False
    rest = await history(gql, "acct", after=page["pageInfo"]["endCursor"])
    assert ids(nodes(rest)) == ids(written[50:])
    assert rest["pageInfo"]["hasNextPage"] is False


async def test_first_zero_returns_no_edges(gql: GraphQLClient) -> None:
    await seeded(gql, "acct", 3)
    page = await history(gql, "acct", first=0)
    assert page["edges"] == []
    assert page["nodes"] == []
    assert page["pageInfo"]["startCursor"] is None
    assert page["pageInfo"]["endCursor"] is None
    # Relay: more edges exist beyond an empty first page.
    assert page["pageInfo"]["hasNextPage"] is True


async def test_page_size_100_is_allowed(gql: GraphQLClient) -> None:
    written = await seeded(gql, "acct", 3)
    assert ids(nodes(await history(gql, "acct", first=100))) == ids(written)
    assert ids(nodes(await history(gql, "acct", last=100))) == ids(written)


@pytest.mark.parametrize(
    "args",
    [{"first": 101}, {"last": 101}, {"first": -1}, {"last": -1}, {"first": 1_000_000}],
)
async def test_page_size_out_of_range_is_bad_user_input(
    gql: GraphQLClient, args: dict[str, int]
) -> None:
    await seeded(gql, "acct", 2)
    body = await gql.post(HISTORY, {"id": "acct", **args})
    assert body.get("errors"), body
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]
    assert body["data"] is None or body["data"]["account"] is None


def _b64(raw: str | bytes) -> str:
    data = raw.encode() if isinstance(raw, str) else raw
    return base64.urlsafe_b64encode(data).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "",
        "!!!not base64!!!",
        "%%%",
        _b64("e:1"),
        _b64("e:x:y"),
        _b64("a:acct"),
        _b64("p:1"),
        _b64(b"\xff\xfe\x00"),  # not UTF-8
        _b64("e:1:2:3"),
        _b64("e:-1:1e9"),
        _b64(f"e:{2**64}:1"),  # well-formed, but no bigint
        "8J-YgA",  # base64 of an emoji
    ],
)
@pytest.mark.parametrize("direction", ["after", "before"])
async def test_garbage_cursor_is_bad_user_input(
    gql: GraphQLClient, cursor: str, direction: str
) -> None:
    await seeded(gql, "acct", 2)
    size = "first" if direction == "after" else "last"
    body = await gql.post(HISTORY, {"id": "acct", size: 10, direction: cursor})
    assert body.get("errors"), body
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]
    assert "Traceback" not in str(body)


async def test_cursor_of_another_connection_is_bad_user_input(gql: GraphQLClient) -> None:
    await seeded(gql, "acct", 2)
    data = await gql.ok("{ accounts(first: 1) { edges { cursor } } }")
    account_cursor = data["accounts"]["edges"][0]["cursor"]
    codes = await gql.error_codes(HISTORY, {"id": "acct", "first": 5, "after": account_cursor})
    assert codes == ["BAD_USER_INPUT"]


async def test_from_to_bounds_are_inclusive(gql: GraphQLClient) -> None:
    written = await seeded(gql, "acct", 12)  # timestamps 2000 x2, 2010 x2, ..., 2050 x2
    inside = [e for e in written if 2_010 <= e["timestamp"] <= 2_030]
    assert len(inside) == 6
    page = await history(gql, "acct", first=100, **{"from": 2_010, "to": 2_030})
    assert ids(nodes(page)) == ids(inside)
    assert page["pageInfo"]["hasNextPage"] is False
    assert page["pageInfo"]["hasPreviousPage"] is False

    # Bounds between entries.
    page = await history(gql, "acct", first=100, **{"from": 2_005, "to": 2_025})
    assert ids(nodes(page)) == ids([e for e in written if 2_005 <= e["timestamp"] <= 2_025])
    # A single instant.
    page = await history(gql, "acct", first=100, **{"from": 2_020, "to": 2_020})
    assert ids(nodes(page)) == ids([e for e in written if e["timestamp"] == 2_020])
    # Only one bound.
    page = await history(gql, "acct", first=100, **{"from": 2_040})
    assert ids(nodes(page)) == ids(written[8:])
    page = await history(gql, "acct", first=100, to=2_000)
    assert ids(nodes(page)) == ids(written[:2])
    # An empty range.
    page = await history(gql, "acct", first=100, **{"from": 2_031, "to": 2_039})
    assert page["edges"] == []
    page = await history(gql, "acct", first=100, **{"from": 2_030, "to": 2_010})
    assert page["edges"] == []


async def test_from_to_combined_with_cursors(gql: GraphQLClient) -> None:
    written = await seeded(gql, "acct", 14)
    bounds = {"from": 2_010, "to": 2_050}
    inside = [e for e in written if 2_010 <= e["timestamp"] <= 2_050]
    assert len(inside) == 10

    pages = await walk_forward(gql, "acct", 3, **bounds)
    assert [len(p["edges"]) for p in pages] == [3, 3, 3, 1]
    assert ids([e for p in pages for e in nodes(p)]) == ids(inside)
    # The range's last page says so, though entries exist after `to`.
    assert pages[-1]["pageInfo"]["hasNextPage"] is False
    # The first page has nothing before it in the range, though entries exist before `from`.
    assert pages[0]["pageInfo"]["hasPreviousPage"] is False

    pages = await walk_backward(gql, "acct", 4, **bounds)
    assert [len(p["edges"]) for p in pages] == [4, 4, 2]
    assert ids([e for p in reversed(pages) for e in nodes(p)]) == ids(inside)
    assert pages[0]["pageInfo"]["hasNextPage"] is False
    assert pages[-1]["pageInfo"]["hasPreviousPage"] is False

    # A cursor from outside the range still pages within the range.
    everything = await history(gql, "acct", first=100)
    first_cursor = everything["edges"][0]["cursor"]
    last_cursor = everything["edges"][-1]["cursor"]
    page = await history(gql, "acct", first=100, after=first_cursor, **bounds)
    assert ids(nodes(page)) == ids(inside)
    page = await history(gql, "acct", last=100, before=last_cursor, **bounds)
    assert ids(nodes(page)) == ids(inside)


async def test_entries_at_one_timestamp_across_accounts_keep_id_order(
    gql: GraphQLClient, audit
) -> None:
    for name in ("a", "b", "c"):
        await funded(gql, name, 0)
    t = 5_000
    assert (await deposit(gql, "a", 100, t))["errors"] == []
    assert (await transfer(gql, "a", "b", 30, t))["errors"] == []
    assert (await deposit(gql, "c", 7, t))["errors"] == []
    assert (await transfer(gql, "b", "c", 10, t))["errors"] == []
    assert (await pay(gql, "a", 50, t))["errors"] == []
    assert (await transfer(gql, "c", "a", 4, t))["errors"] == []
    assert (await deposit(gql, "b", 1, t))["errors"] == []
    assert (await transfer(gql, "a", "c", 24, t))["errors"] == []

    expected = {
        "a": [("DEPOSIT", 100, 100), ("TRANSFER_OUT", 30, 70), ("PAYMENT", 50, 20),
              ("TRANSFER_IN", 4, 24), ("TRANSFER_OUT", 24, 0)],
        "b": [("TRANSFER_IN", 30, 30), ("TRANSFER_OUT", 10, 20), ("DEPOSIT", 1, 21)],
        "c": [("DEPOSIT", 7, 7), ("TRANSFER_IN", 10, 17), ("TRANSFER_OUT", 4, 13),
              ("TRANSFER_IN", 24, 37)],
    }  # fmt: skip
    all_ids: list[int] = []
    for name, rows in expected.items():
        entries = await ledger_of(gql, name)
        assert [(e["kind"], e["amount"], e["balanceAfter"]) for e in entries] == rows
        assert all(e["timestamp"] == t for e in entries)
        entry_ids = [int(e["id"]) for e in entries]
        assert entry_ids == sorted(entry_ids)
        all_ids += entry_ids
        # Paging one entry at a time, both ways, gives the same order.
        forward = [e for p in await walk_forward(gql, name, 1) for e in nodes(p)]
        assert ids(forward) == ids(entries)
        backward = [e for p in reversed(await walk_backward(gql, name, 1)) for e in nodes(p)]
        assert ids(backward) == ids(entries)
    assert len(set(all_ids)) == len(all_ids)
    await audit()


async def test_pages_never_skip_or_repeat_while_entries_are_appended(
    gql: GraphQLClient,
) -> None:
    written = await seeded(gql, "acct", 10)
    seen: list[Entry] = []
    after = None
    next_ts = _ts(9)
    amount = 1_000
    for _ in range(100):
        page = await history(gql, "acct", first=3, after=after)
        seen += nodes(page)
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
        # Between page fetches, append entries (faster than pages are read): at the newest
        # timestamp and later.
        for _ in range(4):
            if len(written) < 30:
                payload = await deposit(gql, "acct", amount, next_ts)
                assert payload["errors"] == []
                written.append(payload["entry"])
                amount += 1
                next_ts += 5
    assert len(written) == 30
    assert ids(seen) == ids(written)
    assert [order_key(e) for e in seen] == sorted(order_key(e) for e in seen)


async def test_pages_never_skip_or_repeat_under_concurrent_appends(gql: GraphQLClient) -> None:
    written = await seeded(gql, "acct", 20)
    start = _ts(19)

    async def append() -> list[Entry]:
        added = []
        for i in range(40):
            payload = await deposit(gql, "acct", 10 + i, start + i // 3)
            assert payload["errors"] == []
            added.append(payload["entry"])
            await asyncio.sleep(0)
        return added

    async def read() -> list[Entry]:
        got: list[Entry] = []
        after = None
        for _ in range(1_000):
            page = await history(gql, "acct", first=4, after=after)
            got += nodes(page)
            after = page["pageInfo"]["endCursor"] or after
            if not page["pageInfo"]["hasNextPage"]:
                break
        return got

    added, seen = await asyncio.gather(append(), read())
    seen_ids = ids(seen)
    assert len(seen_ids) == len(set(seen_ids)), "an entry was repeated"
    # Everything present before paging began was seen, then a prefix of what was appended.
    all_ids = ids(written + added)
    assert seen_ids == all_ids[: len(seen_ids)], "an entry was skipped"
    assert len(seen_ids) >= len(written)
    # Once appends are over, the ledger holds exactly what was written, in order.
    assert ids(await ledger_of(gql, "acct")) == all_ids


async def test_balance_at_past_instants_is_the_last_entry_at_or_before(
    gql: GraphQLClient,
) -> None:
    await funded(gql, "acct", 0, ts=1_000)
    await funded(gql, "other", 0, ts=1_000)
    assert (await deposit(gql, "acct", 100, 2_000))["errors"] == []
    assert (await deposit(gql, "acct", 50, 2_000))["errors"] == []
    assert (await transfer(gql, "acct", "other", 30, 3_000))["errors"] == []
    assert (await pay(gql, "acct", 40, 5_000))["errors"] == []  # cashback 0: no entry
    assert (await transfer(gql, "other", "acct", 5, 7_000))["errors"] == []

    expected = {
        999: None,  # before the account existed
        1_000: 0,
        1_999: 0,
        2_000: 150,
        2_500: 150,
        2_999: 150,
        3_000: 120,
        4_999: 120,
        5_000: 80,
        6_999: 80,
        7_000: 85,
        None: 85,
    }
    for at, want in expected.items():
        assert await balance(gql, "acct", at) == want, at

    # The same rule, checked against the ledger itself at every instant of interest.
    entries = await ledger_of(gql, "acct")
    instants = sorted({e["timestamp"] + d for e in entries for d in (-1, 0, 1)})
    for at in instants:
        before = [e for e in entries if e["timestamp"] <= at]
        want = before[-1]["balanceAfter"] if before else 0
        assert await balance(gql, "acct", at) == want, at


async def test_balance_at_counts_cashback_from_its_due_instant(gql: GraphQLClient) -> None:
    await funded(gql, "acct", 1_000, ts=1_000)
    paid = await pay(gql, "acct", 500, 2_000)  # cashback 10, due 2000 + 1 day
    assert paid["errors"] == []
    due = paid["payment"]["cashbackDueAt"]
    assert due == 2_000 + DAY_MS
    # Move the client clock past the due time with another account's activity.
    await create(gql, "later", due + 1_000)
    assert await balance(gql, "acct", due - 1) == 500
    assert await balance(gql, "acct", due) == 510
    assert await balance(gql, "acct") == 510
    entries = await ledger_of(gql, "acct")
    assert [(e["kind"], e["timestamp"], e["balanceAfter"]) for e in entries] == [
        ("DEPOSIT", 1_000, 1_000),
        ("PAYMENT", 2_000, 500),
        ("CASHBACK", due, 510),
    ]
