"""Who did what: every entry records its principal (`LedgerEntry.actor`): `key:<id>` for an
API key, `jwt:<sub>` for a JWT, `anonymous` with access control off, `system` for cashback
the ledger credits itself. `viewer` tells a credential who it is."""

import re
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
)
from tests.operations import DAY_MS, create

X, Y, Z = "actor-x", "actor-y", "actor-z"

DEPOSIT_A = """
mutation($id: ID!, $amount: Money!, $ts: Timestamp) {
  deposit(input: {accountId: $id, amount: $amount, timestamp: $ts}) {
    entry { id kind actor }
    errors { code message }
  }
}"""

TRANSFER_A = """
mutation($from: ID!, $to: ID!, $amount: Money!, $ts: Timestamp) {
  transfer(input: {sourceAccountId: $from, targetAccountId: $to, amount: $amount,
                   timestamp: $ts}) {
    entry { id kind actor }
    errors { code message }
  }
}"""

BATCH_A = """
mutation($transfers: [TransferInput!]!) {
  transferBatch(input: {transfers: $transfers}) {
    results { entry { id kind actor } errors { code message } }
    errors { code message }
  }
}"""

PAY_A = """
mutation($id: ID!, $amount: Money!, $ts: Timestamp) {
  pay(input: {accountId: $id, amount: $amount, timestamp: $ts}) {
    payment { id }
    errors { code message }
  }
}"""

MERGE_A = """
mutation($a: ID!, $b: ID!, $ts: Timestamp) {
  mergeAccounts(input: {accountId: $a, absorbedAccountId: $b, timestamp: $ts}) {
    account { id }
    errors { code message }
  }
}"""

HISTORY_A = """
query($id: ID!) {
  account(id: $id) { transactions(first: 100) { nodes { id kind actor paymentId } } }
}"""

ACTOR_KINDS = [*KINDS, "off"]
"""An API key, a JWT, or no credential with access control off."""


async def _admin(access: Access, kind: str) -> tuple[Caller, str]:
    """An ADMIN caller of `kind` and the actor its entries must record."""
    if kind == "off":
        await access.start(auth=False)
        return access.caller(None), "anonymous"
    credential = await access.credential(kind, Role.ADMIN)
    await access.start()
    return access.caller(credential), credential.principal


async def _mutate(caller: Caller, document: str, name: str, **variables: Any) -> dict[str, Any]:
    body = await caller.post(document, variables)
    assert "errors" not in body, body["errors"]
    payload: dict[str, Any] = body["data"][name]
    assert payload["errors"] == [], payload
    return payload


async def _history(caller: Caller, account_id: str) -> list[tuple[str, str | None]]:
    """(kind, actor) of each of the account's entries, oldest first."""
    data = await caller.ok(HISTORY_A, {"id": account_id})
    return [(n["kind"], n["actor"]) for n in data["account"]["transactions"]["nodes"]]


async def _actors(db: Db) -> set[str | None]:
    cursor = await db.execute("SELECT DISTINCT actor FROM entries")
    return {row[0] for row in await cursor.fetchall()}


@pytest.mark.parametrize("kind", ACTOR_KINDS)
async def test_every_entry_records_who_caused_it(access: Access, db: Db, kind: str) -> None:
    caller, actor = await _admin(access, kind)
    if kind == "key":
        assert re.fullmatch(r"key:[a-z0-9]{12}", actor), actor
    for account_id in (X, Y, Z):
        assert (await create(caller, account_id, 1_000))["errors"] == []
    deposited = await _mutate(caller, DEPOSIT_A, "deposit", id=X, amount=10_000, ts=1_000)
    assert deposited["entry"]["actor"] == actor
    assert (await _mutate(caller, DEPOSIT_A, "deposit", id=Z, amount=500))["entry"][
        "actor"
    ] == actor
    moved = await _mutate(caller, TRANSFER_A, "transfer", **{"from": X, "to": Y, "amount": 100})
    assert moved["entry"] == {"id": moved["entry"]["id"], "kind": "TRANSFER_OUT", "actor": actor}
    batch = await _mutate(
        caller,
        BATCH_A,
        "transferBatch",
        transfers=[{"sourceAccountId": X, "targetAccountId": Y, "amount": 50}],
    )
    assert batch["results"][0]["errors"] == []
    assert batch["results"][0]["entry"]["actor"] == actor
    await _mutate(caller, PAY_A, "pay", id=X, amount=1_000)
    await _mutate(caller, MERGE_A, "mergeAccounts", a=Y, b=Z)

    assert await _history(caller, X) == [
        ("DEPOSIT", actor),
        ("TRANSFER_OUT", actor),
        ("TRANSFER_OUT", actor),
        ("PAYMENT", actor),
    ]
    assert await _history(caller, Y) == [
        ("TRANSFER_IN", actor),
        ("TRANSFER_IN", actor),
        ("MERGE_IN", actor),
    ]
    assert await _actors(db) == {actor}  # Z's DEPOSIT and MERGE_OUT too


@pytest.mark.parametrize("kind", ACTOR_KINDS)
async def test_cashback_is_the_systems_whoever_settles_it(
    access: Access, db: Db, kind: str
) -> None:
    """X's cashback is settled by its owner's own later deposit, Y's by a READER's query:
    both record `system`, never the principal whose request happened to credit them."""
    reading = None if kind == "off" else await access.credential("jwt", Role.READER)
    caller, actor = await _admin(access, kind)
    reader = caller if reading is None else access.caller(reading)
    for account_id in (X, Y):
        assert (await create(caller, account_id, 1_000))["errors"] == []
        await _mutate(caller, DEPOSIT_A, "deposit", id=account_id, amount=100_000, ts=1_000)
        await _mutate(caller, PAY_A, "pay", id=account_id, amount=10_000, ts=1_000)
    due = 1_000 + DAY_MS
    await _mutate(caller, DEPOSIT_A, "deposit", id=X, amount=1, ts=due)
    assert await _history(reader, Y) == [
        ("DEPOSIT", actor),
        ("PAYMENT", actor),
        ("CASHBACK", "system"),
    ]
    assert await _history(caller, X) == [
        ("DEPOSIT", actor),
        ("PAYMENT", actor),
        ("CASHBACK", "system"),
        ("DEPOSIT", actor),
    ]
    assert await _actors(db) == {actor, "system"}


@pytest.mark.parametrize("kind", KINDS)
async def test_a_scoped_transfer_records_its_principal_on_both_sides(
    access: Access, kind: str
) -> None:
    """The target's TRANSFER_IN entry, outside the customer's scope, still names the
    customer who caused it (as the ADMIN reading that account sees)."""
    admin_key = await access.credential("key", Role.ADMIN)
    customer = await access.credential(kind, Role.CUSTOMER, [X])
    await access.start()
    admin = access.caller(admin_key)
    for account_id in (X, Y):
        assert (await create(admin, account_id, 1_000))["errors"] == []
    await _mutate(admin, DEPOSIT_A, "deposit", id=X, amount=1_000)
    moved = await _mutate(
        access.caller(customer), TRANSFER_A, "transfer", **{"from": X, "to": Y, "amount": 10}
    )
    assert moved["entry"]["actor"] == customer.principal
    assert await _history(admin, Y) == [("TRANSFER_IN", customer.principal)]
    assert (await _history(admin, X))[-1] == ("TRANSFER_OUT", customer.principal)


# (kind, role, scope) of each credential `viewer` is asked by.
CREDENTIALS = [
    ("key", Role.ADMIN, None),
    ("key", Role.OPERATOR, [Y, X]),
    ("key", Role.CUSTOMER, [X]),
    ("key", Role.READER, None),
    ("jwt", Role.ADMIN, None),
    ("jwt", Role.OPERATOR, None),
    ("jwt", Role.CUSTOMER, [X, Y]),
    ("jwt", Role.READER, [Y]),
]


async def test_viewer_names_each_credential(access: Access) -> None:
    credentials = [await access.credential(kind, role, scope) for kind, role, scope in CREDENTIALS]
    await access.start()
    principals = set()
    for credential in credentials:
        viewer = (await access.caller(credential).ok(VIEWER))["viewer"]
        accounts = viewer["accounts"]
        assert {**viewer, "accounts": None if accounts is None else sorted(accounts)} == {
            "principal": credential.principal,
            "role": credential.role.value,
            "accounts": None if credential.accounts is None else sorted(credential.accounts),
        }, credential
        assert credential.token not in str(viewer)
        principals.add(viewer["principal"])
    assert len(principals) == len(credentials)
    key_ids = [c.principal for c in credentials if c.kind == "key"]
    assert all(re.fullmatch(r"key:[a-z0-9]{12}", p) for p in key_ids), key_ids


async def test_viewer_with_access_control_off(access: Access) -> None:
    await access.start(auth=False)
    viewer = (await access.caller(None).ok(VIEWER))["viewer"]
    assert viewer == {"principal": "anonymous", "role": "ADMIN", "accounts": None}
