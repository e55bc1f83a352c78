"""Idempotency keys: a replay gets the stored outcome and changes nothing, another request
under a used key is refused, invalid keys store nothing, concurrent duplicates run once,
and keys past retention are pruned (by the CLI and by the server's sweeper)."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest

from bank_graphql.ledger import ClockMode
from tests.conftest import GraphQLClient, MakeClient
from tests.db_helpers import entry_count, scalar
from tests.operations import account, balance, deposit, funded, transfer
from tests.servers import BIN

Audit = Callable[[], Awaitable[None]]
Db = psycopg.AsyncConnection[Any]

CREATE_K = """
mutation($id: ID!, $ts: Timestamp, $key: String) {
  createAccount(input: {id: $id, timestamp: $ts, idempotencyKey: $key}) {
    account { id createdAt outgoing }
    errors { code message field }
  }
}"""

DEPOSIT_K = """
mutation($id: ID!, $amount: Money!, $ts: Timestamp, $key: String) {
  deposit(input: {accountId: $id, amount: $amount, timestamp: $ts, idempotencyKey: $key}) {
    balance
    entry { id accountId timestamp kind amount balanceAfter counterpartyId paymentId }
    account { id createdAt }
    errors { code message field }
  }
}"""

TRANSFER_K = """
mutation($from: ID!, $to: ID!, $amount: Money!, $ts: Timestamp, $key: String) {
  transfer(input: {sourceAccountId: $from, targetAccountId: $to, amount: $amount,
                   timestamp: $ts, idempotencyKey: $key}) {
    balance
    entry { id accountId timestamp kind amount balanceAfter counterpartyId }
    sourceAccount { id createdAt }
    targetAccount { id createdAt }
    errors { code message field }
  }
}"""

PAY_K = """
mutation($id: ID!, $amount: Money!, $ts: Timestamp, $key: String) {
  pay(input: {accountId: $id, amount: $amount, timestamp: $ts, idempotencyKey: $key}) {
    balance
    payment { id accountId timestamp amount cashback cashbackDueAt }
    account { id createdAt }
    errors { code message field }
  }
}"""

MERGE_K = """
mutation($id: ID!, $absorbed: ID!, $ts: Timestamp, $key: String) {
  mergeAccounts(input: {accountId: $id, absorbedAccountId: $absorbed, timestamp: $ts,
                        idempotencyKey: $key}) {
    balance
    account { id createdAt }
    errors { code message field }
  }
}"""

REUSED = "IDEMPOTENCY_KEY_REUSED"
KEY_FIELD = ["input", "idempotencyKey"]


async def _mutate(
    gql: GraphQLClient, document: str, name: str, variables: dict[str, Any]
) -> dict[str, Any]:
    """The mutation's payload; any GraphQL error fails the test."""
    body = await gql.post(document, variables)
    assert "errors" not in body, body["errors"]
    payload: dict[str, Any] = body["data"][name]
    return payload


def _codes(payload: dict[str, Any]) -> list[str]:
    return [error["code"] for error in payload["errors"]]


async def _keys(db: Db) -> set[str]:
    cursor = await db.execute("SELECT key FROM idempotency_keys")
    return {row[0] for row in await cursor.fetchall()}


# -- replays of a success ----------------------------------------------------------------


async def test_create_account_replays_and_creates_once(gql: GraphQLClient, db: Db) -> None:
    variables = {"id": "alice", "ts": 1_000, "key": "create-alice"}
    first = await _mutate(gql, CREATE_K, "createAccount", variables)
    assert first == {
        "account": {"id": "alice", "createdAt": 1_000, "outgoing": 0},
        "errors": [],
    }
    again = await _mutate(gql, CREATE_K, "createAccount", variables)
    assert again == first
    assert await scalar(db, "SELECT count(*) FROM accounts") == 1
    # Without the key, the same request is a new one and is refused.
    unkeyed = await _mutate(gql, CREATE_K, "createAccount", {"id": "alice", "ts": 1_000})
    assert _codes(unkeyed) == ["ACCOUNT_ALREADY_EXISTS"]
    assert await _keys(db) == {"create-alice"}


async def test_deposit_replays_the_stored_entry_and_balance(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await funded(gql, "alice", 0)
    variables = {"id": "alice", "amount": 500, "ts": 2_000, "key": "dep-1"}
    first = await _mutate(gql, DEPOSIT_K, "deposit", variables)
    assert first["errors"] == []
    assert first["balance"] == 500
    assert first["entry"]["kind"] == "DEPOSIT"
    # Another deposit moves the balance on; the replay still answers what the first did.
    assert (await deposit(gql, "alice", 70, 3_000))["errors"] == []
    for _ in range(3):
        assert await _mutate(gql, DEPOSIT_K, "deposit", variables) == first
    assert await balance(gql, "alice") == 570
    assert await entry_count(db, "DEPOSIT") == 2
    await audit()


async def test_transfer_replays_and_moves_money_once(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await funded(gql, "alice", 1_000)
    await funded(gql, "bob", 0)
    variables = {"from": "alice", "to": "bob", "amount": 300, "ts": 2_000, "key": "tr-1"}
    first = await _mutate(gql, TRANSFER_K, "transfer", variables)
    assert first["errors"] == []
    assert first["balance"] == 700
    assert first["entry"]["kind"] == "TRANSFER_OUT"
    assert first["sourceAccount"]["id"] == "alice"
    assert first["targetAccount"]["id"] == "bob"
    for _ in range(3):
        assert await _mutate(gql, TRANSFER_K, "transfer", variables) == first
    assert await balance(gql, "alice") == 700
    assert await balance(gql, "bob") == 300
    assert await entry_count(db, "TRANSFER_OUT") == 1
    assert await entry_count(db, "TRANSFER_IN") == 1
    assert (await account(gql, "alice")) == {"id": "alice", "balance": 700, "outgoing": 300}
    await audit()


async def test_pay_replays_the_same_payment_and_takes_no_number(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await funded(gql, "alice", 1_000)
    variables = {"id": "alice", "amount": 250, "ts": 2_000, "key": "pay-1"}
    first = await _mutate(gql, PAY_K, "pay", variables)
    assert first["errors"] == []
    assert first["payment"]["id"] == "payment1"
    assert first["balance"] == 750
    for _ in range(3):
        assert await _mutate(gql, PAY_K, "pay", variables) == first
    assert await scalar(db, "SELECT count(*) FROM payments") == 1
    assert await entry_count(db, "PAYMENT") == 1
    # The replays took no payment number: the next new payment is payment2.
    second = await _mutate(
        gql, PAY_K, "pay", {"id": "alice", "amount": 100, "ts": 3_000, "key": "pay-2"}
    )
    assert second["errors"] == []
    assert second["payment"]["id"] == "payment2"
    assert await balance(gql, "alice", 3_000) == 650
    await audit()


async def test_merge_replays_after_the_absorbed_account_is_gone(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await funded(gql, "alice", 100)
    await funded(gql, "bob", 40)
    variables = {"id": "alice", "absorbed": "bob", "ts": 2_000, "key": "merge-1"}
    first = await _mutate(gql, MERGE_K, "mergeAccounts", variables)
    assert first == {
        "balance": 140,
        "account": {"id": "alice", "createdAt": 1_000},
        "errors": [],
    }
    assert await account(gql, "bob") is None
    # Run again, the merge would be refused (bob no longer exists); the replay is not.
    for _ in range(3):
        assert await _mutate(gql, MERGE_K, "mergeAccounts", variables) == first
    unkeyed = await _mutate(
        gql, MERGE_K, "mergeAccounts", {"id": "alice", "absorbed": "bob", "ts": 2_000}
    )
    assert _codes(unkeyed) == ["ACCOUNT_NOT_FOUND"]
    assert await entry_count(db, "MERGE_OUT") == 1
    assert await entry_count(db, "MERGE_IN") == 1
    assert await balance(gql, "alice") == 140
    await audit()


# -- replays of a refusal ----------------------------------------------------------------


async def test_refusal_replays_even_after_the_account_got_money(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await funded(gql, "alice", 100)
    await funded(gql, "bob", 0)
    variables = {"from": "alice", "to": "bob", "amount": 500, "ts": 2_000, "key": "tr-poor"}
    refused = await _mutate(gql, TRANSFER_K, "transfer", variables)
    assert _codes(refused) == ["INSUFFICIENT_FUNDS"]
    assert refused["errors"][0]["field"] == ["input", "amount"]
    assert refused["balance"] is None
    assert refused["entry"] is None
    assert await _keys(db) == {"tr-poor"}

    assert (await deposit(gql, "alice", 1_000, 3_000))["errors"] == []
    entries = await entry_count(db)
    # Now the transfer could succeed, but the key's outcome is the stored refusal.
    assert await _mutate(gql, TRANSFER_K, "transfer", variables) == refused
    assert await entry_count(db) == entries
    assert await balance(gql, "alice") == 1_100
    assert await balance(gql, "bob") == 0
    await audit()


async def test_input_refusal_is_stored_under_its_key(gql: GraphQLClient, db: Db) -> None:
    await funded(gql, "alice", 100)
    variables = {"id": "alice", "amount": 0, "ts": 2_000, "key": "pay-zero"}
    refused = await _mutate(gql, PAY_K, "pay", variables)
    assert _codes(refused) == ["INVALID_AMOUNT"]
    assert await _mutate(gql, PAY_K, "pay", variables) == refused
    assert await _keys(db) == {"pay-zero"}
    fixed = await _mutate(gql, PAY_K, "pay", {**variables, "amount": 10})
    assert _codes(fixed) == [REUSED]
    assert await scalar(db, "SELECT count(*) FROM payments") == 0


# -- a used key with another request -----------------------------------------------------


async def test_same_key_with_another_input_or_mutation_is_refused(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await funded(gql, "alice", 1_000)
    await funded(gql, "bob", 0)
    await funded(gql, "carol", 0)
    original = {"from": "alice", "to": "bob", "amount": 300, "ts": 2_000, "key": "k"}
    first = await _mutate(gql, TRANSFER_K, "transfer", original)
    assert first["errors"] == []
    entries = await entry_count(db)

    others: list[tuple[str, str, dict[str, Any]]] = [
        ("transfer", TRANSFER_K, {**original, "amount": 301}),
        ("transfer", TRANSFER_K, {**original, "to": "carol"}),
        ("transfer", TRANSFER_K, {**original, "ts": 2_001}),
        ("transfer", TRANSFER_K, {**original, "ts": None}),
        ("deposit", DEPOSIT_K, {"id": "alice", "amount": 300, "ts": 2_000, "key": "k"}),
        ("pay", PAY_K, {"id": "alice", "amount": 300, "ts": 2_000, "key": "k"}),
        ("createAccount", CREATE_K, {"id": "dave", "ts": 2_000, "key": "k"}),
        ("mergeAccounts", MERGE_K, {"id": "bob", "absorbed": "carol", "ts": 2_000, "key": "k"}),
    ]
    for name, document, variables in others:
        payload = await _mutate(gql, document, name, variables)
        assert _codes(payload) == [REUSED], (name, variables, payload)
        assert payload["errors"][0]["field"] == KEY_FIELD
        assert all(value is None for key, value in payload.items() if key != "errors"), payload

    assert await entry_count(db) == entries
    assert await account(gql, "dave") is None
    assert await account(gql, "carol") == {"id": "carol", "balance": 0, "outgoing": 0}
    assert await scalar(db, "SELECT count(*) FROM payments") == 0
    assert await balance(gql, "alice") == 700
    # The key still answers its own request with the stored outcome.
    assert await _mutate(gql, TRANSFER_K, "transfer", original) == first
    await audit()


async def test_keys_are_global_not_per_account(gql: GraphQLClient, db: Db) -> None:
    await funded(gql, "alice", 100)
    await funded(gql, "bob", 100)
    first = await _mutate(
        gql, DEPOSIT_K, "deposit", {"id": "alice", "amount": 5, "ts": 2_000, "key": "shared"}
    )
    assert first["errors"] == []
    other = await _mutate(
        gql, DEPOSIT_K, "deposit", {"id": "bob", "amount": 5, "ts": 2_000, "key": "shared"}
    )
    assert _codes(other) == [REUSED]
    assert await balance(gql, "bob") == 100


# -- invalid keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["", "k" * 129, "line\nbreak", "tab\there", "bell\x07", "\x00"],
    ids=["empty", "129-chars", "newline", "tab", "bell", "nul"],
)
async def test_invalid_key_is_refused_and_nothing_is_stored(
    gql: GraphQLClient, db: Db, key: str
) -> None:
    await funded(gql, "alice", 1_000)
    await funded(gql, "bob", 0)
    entries = await entry_count(db)
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("createAccount", CREATE_K, {"id": "carol", "ts": 2_000, "key": key}),
        ("deposit", DEPOSIT_K, {"id": "alice", "amount": 5, "ts": 2_000, "key": key}),
        (
            "transfer",
            TRANSFER_K,
            {"from": "alice", "to": "bob", "amount": 5, "ts": 2_000, "key": key},
        ),
        ("pay", PAY_K, {"id": "alice", "amount": 5, "ts": 2_000, "key": key}),
        ("mergeAccounts", MERGE_K, {"id": "alice", "absorbed": "bob", "ts": 2_000, "key": key}),
    ]
    for name, document, variables in attempts:
        payload = await _mutate(gql, document, name, variables)
        assert _codes(payload) == ["INVALID_IDEMPOTENCY_KEY"], (name, payload)
        assert payload["errors"][0]["field"] == KEY_FIELD
    assert await _keys(db) == set()
    assert await entry_count(db) == entries
    assert await account(gql, "carol") is None
    assert await account(gql, "bob") == {"id": "bob", "balance": 0, "outgoing": 0}
    assert await balance(gql, "alice") == 1_000


async def test_longest_and_unicode_keys_are_valid(gql: GraphQLClient, db: Db) -> None:
    await funded(gql, "alice", 0)
    longest, unicode = "k" * 128, "clé café ☕ 42"
    for amount, key in [(1, longest), (2, unicode)]:
        variables = {"id": "alice", "amount": amount, "ts": 2_000, "key": key}
        first = await _mutate(gql, DEPOSIT_K, "deposit", variables)
        assert first["errors"] == []
        assert await _mutate(gql, DEPOSIT_K, "deposit", variables) == first
    assert await _keys(db) == {longest, unicode}
    assert await balance(gql, "alice") == 3


@pytest.mark.parametrize(
    ("document", "variables"),
    [
        (DEPOSIT_K, {"id": "alice", "amount": -5, "ts": 2_000, "key": "early"}),
        (DEPOSIT_K, {"id": "alice", "amount": 1.5, "ts": 2_000, "key": "early"}),
        (DEPOSIT_K, {"id": "alice", "amount": 5, "ts": "soon", "key": "early"}),
        (DEPOSIT_K, {"id": "alice", "amount": 5, "ts": 2_000, "key": 42}),
        (
            DEPOSIT_K.replace("balance\n", "balance nope\n"),
            {"id": "alice", "amount": 5, "ts": 2_000, "key": "early"},
        ),
        ("mutation { deposit(input: {", {"key": "early"}),
    ],
    ids=["negative-money", "float-money", "string-timestamp", "int-key", "bad-field", "syntax"],
)
async def test_request_refused_before_the_ledger_stores_no_key(
    gql: GraphQLClient, db: Db, document: str, variables: dict[str, Any]
) -> None:
    await funded(gql, "alice", 0)
    body = await gql.post(document, variables)
    assert body.get("errors"), body
    assert not body.get("data"), body
    assert await _keys(db) == set()
    # The key is still free: a valid request with it runs.
    ok = await _mutate(
        gql, DEPOSIT_K, "deposit", {"id": "alice", "amount": 5, "ts": 2_000, "key": "early"}
    )
    assert ok["errors"] == []
    assert await balance(gql, "alice") == 5


# -- concurrent duplicates ---------------------------------------------------------------


async def test_concurrent_duplicates_run_exactly_once(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await funded(gql, "alice", 1_000)
    await funded(gql, "bob", 0)
    variables = {"from": "alice", "to": "bob", "amount": 123, "ts": 2_000, "key": "dup"}
    bodies = await asyncio.gather(*(gql.post(TRANSFER_K, variables) for _ in range(32)))
    for body in bodies:
        assert "errors" not in body, body["errors"]
    first = bodies[0]["data"]["transfer"]
    assert first["errors"] == [], first
    assert first["balance"] == 877
    assert all(body == bodies[0] for body in bodies), [b for b in bodies if b != bodies[0]]
    assert await entry_count(db, "TRANSFER_OUT") == 1
    assert await entry_count(db, "TRANSFER_IN") == 1
    assert await balance(gql, "alice") == 877
    assert await balance(gql, "bob") == 123
    assert await _keys(db) == {"dup"}
    await audit()


async def test_concurrent_duplicates_of_a_payment_take_one_number(
    gql: GraphQLClient, db: Db, audit: Audit
) -> None:
    await funded(gql, "alice", 1_000)
    variables = {"id": "alice", "amount": 100, "ts": 2_000, "key": "pay-dup"}
    bodies = await asyncio.gather(*(gql.post(PAY_K, variables) for _ in range(32)))
    for body in bodies:
        assert "errors" not in body, body["errors"]
    assert all(body == bodies[0] for body in bodies), [b for b in bodies if b != bodies[0]]
    assert bodies[0]["data"]["pay"]["payment"]["id"] == "payment1"
    next_payment = await _mutate(gql, PAY_K, "pay", {**variables, "key": "pay-next"})
    assert next_payment["payment"]["id"] == "payment2"
    assert await scalar(db, "SELECT count(*) FROM payments") == 2
    await audit()


# -- pruning -----------------------------------------------------------------------------


async def _deposit_keyed(gql: GraphQLClient, key: str) -> dict[str, Any]:
    """Deposit 10 into alice at the server's "now", under `key`."""
    payload = await _mutate(gql, DEPOSIT_K, "deposit", {"id": "alice", "amount": 10, "key": key})
    assert payload["errors"] == [], payload
    return payload


async def _age(db: Db, keys: list[str], days: int) -> None:
    await db.execute(
        "UPDATE idempotency_keys SET created_at = now() - make_interval(days => %s)"
        " WHERE key = ANY(%s)",
        (days, keys),
    )


async def _prune_cli(database_url: str, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(BIN),
        "prune-keys",
        "--database-url",
        database_url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = output.decode()
    assert process.returncode == 0, text[-3000:]
    return text


async def test_prune_keys_cli_deletes_old_keys_and_keeps_recent_ones(
    gql: GraphQLClient, db: Db, database_url: str, audit: Audit
) -> None:
    await funded(gql, "alice", 0)
    old = [f"old-{i}" for i in range(3)]
    recent = [f"recent-{i}" for i in range(3)]
    almost = "six-days-old"
    first = {key: await _deposit_keyed(gql, key) for key in [*old, *recent, almost]}
    await _age(db, old, 8)
    await _age(db, [almost], 6)

    output = await _prune_cli(database_url)
    assert await _keys(db) == {*recent, almost}, output

    # A longer retention than a key's age keeps it (one under 7 days is refused:
    # tests/test_cli_rough_edges.py).
    await _age(db, [recent[0]], 20)
    await _prune_cli(database_url, "--older-than-days", "30")
    assert recent[0] in await _keys(db)
    await _prune_cli(database_url, "--older-than-days", "7")
    assert await _keys(db) == {*recent[1:], almost}

    # A pruned key is free again: its request runs as a new one.
    balance_before = await balance(gql, "alice")
    rerun = await _deposit_keyed(gql, old[0])
    assert rerun["entry"]["id"] != first[old[0]]["entry"]["id"]
    assert rerun["balance"] == balance_before + 10
    assert await balance(gql, "alice") == balance_before + 10
    # While a recent key still replays.
    replay = await _deposit_keyed(gql, recent[1])
    assert replay == first[recent[1]]
    assert replay["balance"] == 50
    assert await balance(gql, "alice") == balance_before + 10
    await audit()


async def test_server_sweeper_prunes_old_keys(
    gql: GraphQLClient, make_client: MakeClient, db: Db
) -> None:
    await funded(gql, "alice", 0)
    for key in ["old-a", "old-b", "new-a"]:
        await _deposit_keyed(gql, key)
    await _age(db, ["old-a", "old-b"], 8)
    # A server with its sweeper on prunes when it starts, then once per prune interval.
    await make_client(ClockMode.CLIENT, sweeper_enabled=True)
    keys = await _keys(db)
    for _ in range(100):
        if keys == {"new-a"}:
            break
        await asyncio.sleep(0.05)
        keys = await _keys(db)
    assert keys == {"new-a"}


async def test_replay_changes_nothing_in_history(gql: GraphQLClient, db: Db) -> None:
    await funded(gql, "alice", 1_000)
    await funded(gql, "bob", 0)
    variables = {"from": "alice", "to": "bob", "amount": 10, "ts": 2_000, "key": "hist"}
    await _mutate(gql, TRANSFER_K, "transfer", variables)
    before = await scalar(db, "SELECT coalesce(max(id), 0) FROM entries")
    await _mutate(gql, TRANSFER_K, "transfer", variables)
    assert await scalar(db, "SELECT coalesce(max(id), 0) FROM entries") == before
    # An unkeyed transfer of the same input is a new request.
    assert (await transfer(gql, "alice", "bob", 10, 2_000))["errors"] == []
    assert await balance(gql, "bob") == 20
