"""Scope isolation: for a credential limited to accounts A1 and A2, the other accounts (B1,
B2, B3, with payments, transfers and a merge of their own) do not exist. It cannot see,
count, rank, page to or infer them: not through `account`, `accounts`, `topSpenders`,
`payment`, a transfer's payload, a refusal (code, field and message as for an id never
created), an error message, or an idempotency key another principal used."""

import base64
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from bank_graphql.ledger import Role
from tests.access_fixtures import (
    KINDS,
    VIEWER,
    Access,
    Caller,
    Db,
    access_fixture,  # noqa: F401 - registers the `access` fixture
    changed_tables,
    state,
    substituted,
)
from tests.operations import (
    BATCH,
    DEPOSIT,
    MAX_MONEY,
    MERGE,
    PAYMENT,
    TOP_SPENDERS,
    TRANSFER,
    batch_item,
    create,
    deposit,
    funded,
    merge,
    pay,
    transfer,
)

Audit = Callable[[], Awaitable[None]]

# Ids interleave, so that a page or a ranking that let an outside account in would show it
# between the scope's own.
A1, B1, A2, B2, B3 = "acct-11", "acct-12", "acct-13", "acct-14", "acct-15"
SCOPE = [A1, A2]
OUTSIDE = [B1, B2, B3]
GHOST = "acct-19"
"""Never created: what an outside account must look like."""
B1_NEWEST_TS = 7_777_777
NOW = 8_000_000
LATER = "zz-later"
"""Created, outside the scope, at NOW: the latest time any mutation used."""
B2_ROOM = 1_234
"""How much more B2 can hold before it overflows."""

ACCOUNTS = """
query($first: Int, $after: String) {
  accounts(first: $first, after: $after) {
    edges { cursor node { id } }
    nodes { id balance outgoing }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""

ACCOUNT_FULL = """
query($id: ID!) {
  account(id: $id) {
    id balance outgoing
    transactions(first: 100) { nodes { id accountId kind amount counterpartyId } }
    payments(first: 100) { nodes { id accountId amount } }
  }
}"""

TRANSFER_SHOWING_TARGET = """
mutation($from: ID!, $to: ID!, $amount: Money!, $ts: Timestamp, $key: String) {
  transfer(input: {sourceAccountId: $from, targetAccountId: $to, amount: $amount,
                   timestamp: $ts, idempotencyKey: $key}) {
    balance
    entry { id accountId kind amount }
    sourceAccount { id balance }
    targetAccount { id createdAt balance outgoing payments { nodes { id } } }
    errors { code message field }
  }
}"""

PAY_K = """
mutation($id: ID!, $amount: Money!, $ts: Timestamp, $key: String) {
  pay(input: {accountId: $id, amount: $amount, timestamp: $ts, idempotencyKey: $key}) {
    balance
    payment { id accountId amount }
    account { id balance }
    errors { code message field }
  }
}"""


@dataclass
class World:
    admin: Caller
    callers: dict[str, Caller]
    """Credentials by name, limited to SCOPE unless their name says otherwise."""
    payments: dict[str, str]
    """A payment of each account that made one, by account id."""
    secrets: list[str]
    """Numbers about the outside accounts that a scoped credential must never be shown."""


async def _world(access: Access, **credentials: tuple[str, Role, list[str]]) -> World:
    """The ledger every test here starts from, made by an unscoped ADMIN key; the app
    started with the credentials asked for (name -> (kind, role, scope))."""
    admin_key = await access.credential("key", Role.ADMIN)
    issued = {
        name: await access.credential(kind, role, scope)
        for name, (kind, role, scope) in credentials.items()
    }
    await access.start()
    admin = access.caller(admin_key)
    await funded(admin, A1, 50_000)
    await funded(admin, A2, 20_000)
    await funded(admin, B1, 9_424_681)
    await funded(admin, B3, 5_000)
    await funded(admin, B2, MAX_MONEY - B2_ROOM - 1_070_360 - 5_000)
    payments = {
        A1: (await pay(admin, A1, 200, 2_000))["payment"]["id"],
        B1: (await pay(admin, B1, 700_000, 3_000))["payment"]["id"],
    }
    assert (await transfer(admin, A1, A2, 300, 2_000))["errors"] == []
    assert (await transfer(admin, B1, B2, 1_070_360, 3_000))["errors"] == []
    await merge(admin, B2, B3, 3_000)
    assert (await deposit(admin, B1, 1, B1_NEWEST_TS))["errors"] == []
    # The client clock's now (every later entry's default time) moves past B1's newest entry.
    assert (await create(admin, LATER, NOW))["errors"] == []
    numbers = [B1_NEWEST_TS, B2_ROOM]
    for account_id in (B1, B2):
        found = (await admin.ok(ACCOUNT_FULL, {"id": account_id}))["account"]
        numbers += [found["balance"], found["outgoing"]]
    assert found["balance"] == MAX_MONEY - B2_ROOM
    secrets = [str(n) for n in numbers if n >= 1_000]
    callers = {name: access.caller(credential) for name, credential in issued.items()}
    return World(admin, callers, payments, secrets)


def _leaks(caller: Caller, secrets: list[str]) -> list[str]:
    """The secrets (whole numbers) that appear in any answer `caller` got."""
    return [
        secret
        for text in caller.seen
        for secret in secrets
        if re.search(rf"(?<![0-9]){secret}(?![0-9])", text)
    ]


def _cursor(account_id: str) -> str:
    """An `accounts` cursor as the server spells one (bank_graphql/api/cursors.py): what a
    client could craft for an id it should not know."""
    return base64.urlsafe_b64encode(f"a:{account_id}".encode()).decode().rstrip("=")


SCOPED = [("key", Role.ADMIN), ("key", Role.CUSTOMER), ("jwt", Role.CUSTOMER), ("jwt", Role.READER)]


@pytest.mark.parametrize(("kind", "role"), SCOPED, ids=lambda v: getattr(v, "value", v))
async def test_reads_show_nothing_outside_the_scope(access: Access, kind: str, role: Role) -> None:
    world = await _world(access, me=(kind, role, SCOPE))
    me = world.callers["me"]
    never = await me.post(ACCOUNT_FULL, {"id": GHOST})
    assert never == {"data": {"account": None}}
    for outside in OUTSIDE:
        assert await me.post(ACCOUNT_FULL, {"id": outside}) == never, outside
    own = (await me.ok(ACCOUNT_FULL, {"id": A1}))["account"]
    assert own["id"] == A1
    assert [p["id"] for p in own["payments"]["nodes"]] == [world.payments[A1]]

    listed = (await me.ok(ACCOUNTS, {"first": 100}))["accounts"]
    assert [n["id"] for n in listed["nodes"]] == SCOPE
    assert [e["node"]["id"] for e in listed["edges"]] == SCOPE
    assert listed["pageInfo"]["hasNextPage"] is False

    seen, after, pages = [], None, 0
    while True:
        page = (await me.ok(ACCOUNTS, {"first": 1, "after": after}))["accounts"]
        seen += [n["id"] for n in page["nodes"]]
        pages += 1
        assert pages <= 3, seen
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == SCOPE

    everyone = (await world.admin.ok(TOP_SPENDERS, {"first": 10}))["topSpenders"]
    assert everyone[0]["accountId"] == B1
    ranked = (await me.ok(TOP_SPENDERS, {"first": 10}))["topSpenders"]
    by_id = {s["accountId"]: s for s in everyone}
    assert ranked == [by_id[A1], by_id[A2]]
    assert (await me.ok(TOP_SPENDERS, {"first": 1}))["topSpenders"] == [by_id[A1]]

    outside_payment = world.payments[B1]
    for account_id in (B1, B2, A1, GHOST):
        found = await me.ok(PAYMENT, {"account": account_id, "id": outside_payment})
        assert found == {"payment": None}, account_id
    mine = await me.ok(PAYMENT, {"account": A1, "id": world.payments[A1]})
    assert mine["payment"]["accountId"] == A1

    viewer = (await me.ok(VIEWER))["viewer"]
    assert sorted(viewer["accounts"]) == SCOPE
    assert _leaks(me, world.secrets) == []


async def test_top_spenders_ranks_the_scope_only(access: Access) -> None:
    """B1 spends most of all; a credential limited to A1 and A2 ranks those two only."""
    world = await _world(access, me=("key", Role.CUSTOMER, SCOPE))
    me = world.callers["me"]
    for first in (0, 1, 2, 3, 1000):
        ranked = (await me.ok(TOP_SPENDERS, {"first": first}))["topSpenders"]
        assert len(ranked) == min(first, len(SCOPE)), (first, ranked)
        assert {s["accountId"] for s in ranked} <= set(SCOPE), (first, ranked)
    everyone = (await world.admin.ok(TOP_SPENDERS, {"first": 1}))["topSpenders"]
    assert everyone[0]["accountId"] in OUTSIDE


async def test_pages_after_a_cursor_of_an_outside_account(access: Access) -> None:
    """A cursor naming an outside account (given to someone else, or crafted) pages exactly
    like one naming an id never created at the same place in the order."""
    world = await _world(access, me=("key", Role.CUSTOMER, SCOPE))
    me = world.callers["me"]
    everyone = (await world.admin.ok(ACCOUNTS, {"first": 100}))["accounts"]["edges"]
    given = {e["node"]["id"]: e["cursor"] for e in everyone}
    assert given[B1] == _cursor(B1), "the server's cursors are not spelt as this test thinks"
    for outside, never, expected in ((B1, "acct-12a", [A2]), (B2, "acct-14a", [])):
        from_outside = await me.post(ACCOUNTS, {"first": 10, "after": given[outside]})
        from_never = await me.post(ACCOUNTS, {"first": 10, "after": _cursor(never)})
        assert from_outside == from_never, outside
        assert "errors" not in from_outside, from_outside
        assert [n["id"] for n in from_outside["data"]["accounts"]["nodes"]] == expected
    assert _leaks(me, world.secrets) == []


@pytest.mark.parametrize("role", [Role.CUSTOMER, Role.ADMIN], ids=lambda r: r.value)
async def test_a_transfer_to_an_outside_account_shows_nothing_of_it(
    access: Access, audit: Audit, role: Role
) -> None:
    world = await _world(access, me=("key", role, SCOPE))
    me = world.callers["me"]
    before = (await world.admin.ok(ACCOUNT_FULL, {"id": B1}))["account"]["balance"]
    body = await me.post(TRANSFER_SHOWING_TARGET, {"from": A1, "to": B1, "amount": 100})
    result = body["data"]["transfer"]
    assert "errors" not in body, body
    assert result["errors"] == []
    assert result["targetAccount"] is None
    assert result["sourceAccount"]["id"] == A1
    after = (await world.admin.ok(ACCOUNT_FULL, {"id": B1}))["account"]["balance"]
    assert after == before + 100

    shown = await me.post(
        BATCH.replace("targetAccount { id outgoing }", "targetAccount { id balance outgoing }"),
        {"transfers": [batch_item(A1, B2, 7), batch_item(A1, A2, 7)], "atomic": False},
    )
    results = shown["data"]["transferBatch"]["results"]
    assert [r["errors"] for r in results] == [[], []]
    assert results[0]["targetAccount"] is None
    assert results[1]["targetAccount"]["id"] == A2
    assert _leaks(me, world.secrets) == []
    await audit()


# A mutation naming account X, by `build(X)`; the role that runs it (limited to SCOPE).
REFUSALS: dict[str, tuple[Role, Callable[[str], tuple[str, dict[str, Any]]]]] = {
    "deposit": (Role.ADMIN, lambda x: (DEPOSIT, {"id": x, "amount": 5})),
    "deposit past the balance limit": (
        Role.OPERATOR,
        lambda x: (DEPOSIT, {"id": x, "amount": MAX_MONEY}),
    ),
    "deposit before its newest entry": (
        Role.OPERATOR,
        lambda x: (DEPOSIT, {"id": x, "amount": 5, "ts": 5_000}),
    ),
    "pay": (Role.CUSTOMER, lambda x: (PAY_K, {"id": x, "amount": 5})),
    "pay more than its balance": (Role.CUSTOMER, lambda x: (PAY_K, {"id": x, "amount": 10**12})),
    "pay under a key": (Role.ADMIN, lambda x: (PAY_K, {"id": x, "amount": 5, "key": f"k-{x}"})),
    "transfer out": (Role.CUSTOMER, lambda x: (TRANSFER, {"from": x, "to": A1, "amount": 5})),
    "transfer out, more than its balance": (
        Role.CUSTOMER,
        lambda x: (TRANSFER, {"from": x, "to": A1, "amount": 10**12}),
    ),
    "transfer out, before its newest entry": (
        Role.CUSTOMER,
        lambda x: (TRANSFER, {"from": x, "to": A1, "amount": 5, "ts": 5_000}),
    ),
    "transfer out to a never-created account": (
        Role.ADMIN,
        lambda x: (TRANSFER, {"from": x, "to": "acct-99", "amount": 5}),
    ),
    "transfer out under a key": (
        Role.CUSTOMER,
        lambda x: (TRANSFER, {"from": x, "to": A1, "amount": 5, "key": f"k-{x}"}),
    ),
    "merge it into an own account": (Role.ADMIN, lambda x: (MERGE, {"a": A1, "b": x})),
    "merge an own account into it": (Role.ADMIN, lambda x: (MERGE, {"a": x, "b": A2})),
    "merge under a key": (Role.ADMIN, lambda x: (MERGE, {"a": A1, "b": x, "key": f"k-{x}"})),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_naming_an_outside_account_is_refused_as_for_one_never_created(
    access: Access, db: Db, audit: Audit, case: str
) -> None:
    role, build = REFUSALS[case]
    world = await _world(access, me=("key", role, SCOPE))
    me = world.callers["me"]
    document, variables = build(GHOST)
    before = await state(db)
    never = await me.post(document, variables)
    # A refusal under a key may be stored as that key's outcome; nothing else changes.
    unchanged = [[]] if "key" not in variables else [[], ["keys"]]
    assert await changed_tables(db, before) in unchanged
    (name,) = never["data"]
    assert [e["code"] for e in never["data"][name]["errors"]] == ["ACCOUNT_NOT_FOUND"], never
    for outside in OUTSIDE:
        document, variables = build(outside)
        before = await state(db)
        answer = await me.post(document, variables)
        assert substituted(answer, {outside: GHOST}) == never, (outside, answer)
        assert await changed_tables(db, before) in unchanged, outside
        # A retry under the same key is the same refusal, still.
        if "key" in variables:
            assert await me.post(document, variables) == answer
    assert _leaks(me, world.secrets) == []
    await audit()


async def test_batch_items_naming_an_outside_account(access: Access, db: Db, audit: Audit) -> None:
    world = await _world(access, me=("key", Role.CUSTOMER, SCOPE))
    me = world.callers["me"]

    before = await state(db)
    never = await me.post(BATCH, {"transfers": [batch_item(GHOST, A1, 5)]})
    results = never["data"]["transferBatch"]["results"]
    assert [e["code"] for e in results[0]["errors"]] == ["ACCOUNT_NOT_FOUND"], never
    for outside in OUTSIDE:
        answer = await me.post(BATCH, {"transfers": [batch_item(outside, A1, 5)]})
        assert substituted(answer, {outside: GHOST}) == never, (outside, answer)
    assert await changed_tables(db, before) == []
    # Beside items that move money, each refused item reads as for an id never created.
    mixed = [batch_item(A1, A2, 5), *(batch_item(x, A1, 5) for x in (*OUTSIDE, GHOST))]
    loose = (await me.post(BATCH, {"transfers": mixed}))["data"]["transferBatch"]
    assert loose["results"][0]["errors"] == []
    for index, outside in enumerate(OUTSIDE, start=1):
        refused = substituted(loose["results"][index]["errors"], {outside: GHOST})
        assert refused == [{**results[0]["errors"][0], "field": _field(index)}], outside
    assert loose["results"][-1]["errors"] == [{**results[0]["errors"][0], "field": _field(4)}]

    def atomic(source: str) -> dict[str, Any]:
        return {"transfers": [batch_item(A1, A2, 5), batch_item(source, A1, 5)], "atomic": True}

    before = await state(db)
    never_whole = await me.post(BATCH, atomic(GHOST))
    assert await changed_tables(db, before) == []
    for outside in OUTSIDE:
        answer = await me.post(BATCH, atomic(outside))
        assert substituted(answer, {outside: GHOST}) == never_whole, (outside, answer)
    assert await changed_tables(db, before) == []
    assert _leaks(me, world.secrets) == []
    await audit()


@pytest.mark.parametrize("kind", KINDS)
async def test_after_a_merge_the_absorbed_id_grants_nothing_of_the_survivor(
    access: Access, audit: Audit, kind: str
) -> None:
    world = await _world(
        access,
        b1_admin=("key", Role.ADMIN, [B1]),
        b1_customer=(kind, Role.CUSTOMER, [B1]),
    )
    await merge(world.admin, A1, B1)
    payment = world.payments[B1]
    assert (await world.admin.ok(PAYMENT, {"account": A1, "id": payment}))["payment"] is not None
    for caller in world.callers.values():
        for account_id in (B1, A1):
            assert await caller.ok(ACCOUNT_FULL, {"id": account_id}) == {"account": None}
        listed = (await caller.ok(ACCOUNTS, {"first": 100}))["accounts"]
        assert listed["nodes"] == []
        assert listed["edges"] == []
        assert (await caller.ok(TOP_SPENDERS, {"first": 10}))["topSpenders"] == []
        for account_id in (A1, B1):
            found = await caller.ok(PAYMENT, {"account": account_id, "id": payment})
            assert found == {"payment": None}
        never = await caller.post(TRANSFER, {"from": GHOST, "to": A2, "amount": 1})
        named = await caller.post(TRANSFER, {"from": B1, "to": A2, "amount": 1})
        assert substituted(named, {B1: GHOST}) == never
        survivor = await caller.post(TRANSFER, {"from": A1, "to": A2, "amount": 1})
        assert substituted(survivor, {A1: GHOST}) == never
    admin = world.callers["b1_admin"]
    for document, variables, named in (
        (DEPOSIT, {"id": A1, "amount": 1}, A1),
        (DEPOSIT, {"id": B1, "amount": 1}, B1),
        (MERGE, {"a": A1, "b": B1}, A1),
        (MERGE, {"a": B1, "b": A1}, A1),
    ):
        answer = await admin.post(document, variables)
        never = await admin.post(document, substituted(variables, {named: GHOST}))
        (name,) = answer["data"]
        assert [e["code"] for e in answer["data"][name]["errors"]] == ["ACCOUNT_NOT_FOUND"]
        assert substituted(answer, {named: GHOST}) == never, (variables, answer)
    await audit()


async def test_idempotency_keys_belong_to_their_principal(
    access: Access, db: Db, audit: Audit
) -> None:
    """One key string, three principals: three keys. Nobody replays, or is refused by,
    another's outcome."""
    world = await _world(
        access,
        first=("key", Role.CUSTOMER, SCOPE),
        second=("key", Role.CUSTOMER, SCOPE),
        third=("jwt", Role.CUSTOMER, SCOPE),
    )
    first, second, third = (world.callers[n] for n in ("first", "second", "third"))
    shared = "order-42"

    async def send(caller: Caller, amount: int) -> dict[str, Any]:
        body = await caller.post(TRANSFER, {"from": A1, "to": A2, "amount": amount, "key": shared})
        assert "errors" not in body, body
        result: dict[str, Any] = body["data"]["transfer"]
        return result

    entries = await _scalar(db, "SELECT count(*) FROM entries")
    one = await send(first, 10)
    two = await send(second, 20)  # another input under "the same" key: not REUSED
    three = await send(third, 10)  # the same input as the first: not its replay
    for result in (one, two, three):
        assert result["errors"] == [], result
    assert two["entry"]["amount"] == 20
    ids = {one["entry"]["id"], two["entry"]["id"], three["entry"]["id"]}
    assert len(ids) == 3, ids
    assert three["balance"] == one["balance"] - 20 - 10
    assert await _scalar(db, "SELECT count(*) FROM entries") == entries + 6
    # Each principal's replay is its own outcome.
    assert await send(first, 10) == one
    assert await send(second, 20) == two
    assert await send(third, 10) == three
    # And its own key's reuse with another input is refused for it alone.
    reused = await send(first, 30)
    assert [e["code"] for e in reused["errors"]] == ["IDEMPOTENCY_KEY_REUSED"]
    await audit()


async def test_nobody_learns_another_principals_outcome_under_a_key(
    access: Access, db: Db, audit: Audit
) -> None:
    """The unscoped ADMIN moves money out of B1 under a key; the scoped credential sending
    the same request under the same key is refused as for an account never created, not
    answered with the ADMIN's stored success, and not told the key is taken."""
    world = await _world(
        access, me=("key", Role.ADMIN, SCOPE), me_too=("jwt", Role.CUSTOMER, SCOPE)
    )
    me = world.callers["me"]
    key = "payout-1"
    done = await world.admin.ok(TRANSFER, {"from": B1, "to": A1, "amount": 5, "key": key})
    assert done["transfer"]["errors"] == []
    never = await me.post(TRANSFER, {"from": GHOST, "to": A1, "amount": 5, "key": "other-key"})
    entries = await _scalar(db, "SELECT count(*) FROM entries")
    for _ in range(2):
        answer = await me.post(TRANSFER, {"from": B1, "to": A1, "amount": 5, "key": key})
        assert substituted(answer, {B1: GHOST}) == never
    # Another input under the ADMIN's key: a fresh request of its own, not REUSED.
    own = await world.callers["me_too"].post(
        TRANSFER, {"from": A1, "to": A2, "amount": 6, "key": key}
    )
    assert own["data"]["transfer"]["errors"] == [], own
    assert await _scalar(db, "SELECT count(*) FROM entries") == entries + 2
    # The ADMIN's replay is still its own outcome.
    again = await world.admin.ok(TRANSFER, {"from": B1, "to": A1, "amount": 5, "key": key})
    assert again == done
    assert _leaks(me, world.secrets) == []
    await audit()


async def test_refusals_show_nothing_of_an_outside_target(access: Access, audit: Audit) -> None:
    """A transfer to B2 that would overflow it is refused, but the refusal does not tell B2's
    balance (or how much room it has left)."""
    world = await _world(access, me=("key", Role.CUSTOMER, SCOPE))
    me = world.callers["me"]
    body = await me.post(TRANSFER_SHOWING_TARGET, {"from": A1, "to": B2, "amount": 2 * B2_ROOM})
    result = body["data"]["transfer"]
    assert [e["code"] for e in result["errors"]] == ["BALANCE_OVERFLOW"], body
    assert result["targetAccount"] is None
    assert _leaks(me, world.secrets) == []
    await audit()


async def test_a_timestamp_refusal_does_not_tell_an_outside_targets_newest_entry(
    access: Access,
) -> None:
    """A transfer to B1 timed before B1's newest entry is refused (TIMESTAMP_OUT_OF_ORDER),
    but the refusal does not tell when B1 last moved ("nothing else about it is shown")."""
    world = await _world(access, me=("key", Role.CUSTOMER, SCOPE))
    me = world.callers["me"]
    body = await me.post(TRANSFER, {"from": A1, "to": B1, "amount": 5, "ts": 5_000})
    errors = body["data"]["transfer"]["errors"]
    assert [e["code"] for e in errors] == ["TIMESTAMP_OUT_OF_ORDER"], body
    assert str(B1_NEWEST_TS) not in json.dumps(errors)


def _field(index: int) -> list[str]:
    return ["input", "transfers", str(index), "sourceAccountId"]


async def _scalar(db: Db, query: str) -> int:
    cursor = await db.execute(query.encode())
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_an_own_account_created_later_in_scope(access: Access) -> None:
    """A scope may name an id before it exists: the account appears to the credential once
    an ADMIN creates it, and not before."""
    admin_key = await access.credential("key", Role.ADMIN)
    me_key = await access.credential("key", Role.CUSTOMER, ["later-1"])
    await access.start()
    admin, me = access.caller(admin_key), access.caller(me_key)
    assert await me.ok(ACCOUNT_FULL, {"id": "later-1"}) == {"account": None}
    assert (await create(admin, "later-1", 1_000))["errors"] == []
    assert (await me.ok(ACCOUNT_FULL, {"id": "later-1"}))["account"]["id"] == "later-1"


async def test_queries_sent_by_get_are_scoped_too(access: Access) -> None:
    """`GET /graphql?query=...` runs queries under the same credential and scope."""
    world = await _world(access, me=("jwt", Role.CUSTOMER, SCOPE))
    me = world.callers["me"]
    for account_id, expected in ((B1, None), (GHOST, None), (A1, {"id": A1})):
        response = await me.http.get(
            "/graphql",
            params={"query": f'{{ account(id: "{account_id}") {{ id }} }}'},
            headers=me.headers(),
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"data": {"account": expected}}, account_id
    response = await me.http.get(
        "/graphql",
        params={"query": "{ accounts(first: 100) { nodes { id } } }"},
        headers=me.headers(),
    )
    assert [n["id"] for n in response.json()["data"]["accounts"]["nodes"]] == SCOPE
