"""Deposits, transfers and payments: what they write, every refusal, the Money scalar, and
the outgoing totals that topSpenders ranks."""

import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest

from bank_graphql.ledger import ClockMode
from tests.conftest import GraphQLClient, MakeClient
from tests.db_helpers import scalar, table_rows
from tests.operations import (
    DAY_MS,
    DEPOSIT,
    HISTORY,
    MAX_MONEY,
    PAY,
    TOP_SPENDERS,
    TRANSFER,
    balance,
    create,
    deposit,
    funded,
    pay,
    transfer,
)

Audit = Callable[[], Awaitable[None]]

ACCOUNT = """
query($id: ID!) { account(id: $id) { balance outgoing } }"""

# Each mutation's document (tests/operations.py), keyed by the field its payload answers under.
DOCUMENTS = {"deposit": DEPOSIT, "transfer": TRANSFER, "pay": PAY}


async def _history(gql: GraphQLClient, account_id: str) -> list[dict[str, Any]]:
    data = await gql.ok(HISTORY, {"id": account_id, "first": 100})
    return [edge["node"] for edge in data["account"]["transactions"]["edges"]]


async def _books(
    gql: GraphQLClient, db: psycopg.AsyncConnection[Any], ids: list[str]
) -> dict[str, Any]:
    """Everything a refused mutation must leave as it was."""
    return {
        "accounts": {a: (await gql.ok(ACCOUNT, {"id": a}))["account"] for a in ids},
        "histories": {a: await _history(gql, a) for a in ids},
        "tables": await table_rows(db),
    }


async def _refused(
    gql: GraphQLClient, mutation: str, variables: dict[str, Any]
) -> list[dict[str, Any]]:
    """Run a mutation expected to be refused; its payload holds only the errors."""
    data = await gql.ok(DOCUMENTS[mutation], variables)
    payload: dict[str, Any] = data[mutation]
    assert payload["errors"], payload
    assert all(value is None for key, value in payload.items() if key != "errors"), payload
    assert all(e["message"] for e in payload["errors"]), payload
    return [{"code": e["code"], "field": e["field"]} for e in payload["errors"]]


def _error(code: str, field: str) -> list[dict[str, Any]]:
    return [{"code": code, "field": ["input", field]}]


# -- successes -----------------------------------------------------------------------------


async def test_deposit_writes_one_deposit_entry(gql: GraphQLClient, audit: Audit) -> None:
    await funded(gql, "alice", 0, ts=1_000)

    first = await deposit(gql, "alice", 250, 2_000)
    second = await deposit(gql, "alice", 100, 2_000)  # an equal timestamp is fine

    assert first["errors"] == []
    assert first["balance"] == 250
    assert first["account"] == {"id": "alice"}
    entry = first["entry"]
    assert entry["id"]
    assert {k: v for k, v in entry.items() if k != "id"} == {
        "accountId": "alice",
        "timestamp": 2_000,
        "kind": "DEPOSIT",
        "amount": 250,
        "balanceAfter": 250,
        "counterpartyId": None,
        "paymentId": None,
    }
    assert second["errors"] == []
    assert second["balance"] == 350
    assert second["entry"]["balanceAfter"] == 350
    assert second["entry"]["id"] != entry["id"]
    history = await _history(gql, "alice")
    assert [(e["id"], e["kind"], e["balanceAfter"]) for e in history] == [
        (entry["id"], "DEPOSIT", 250),
        (second["entry"]["id"], "DEPOSIT", 350),
    ]
    assert await balance(gql, "alice") == 350
    await audit()


async def test_transfer_writes_out_and_in_entries_naming_each_other(
    gql: GraphQLClient, audit: Audit
) -> None:
    await funded(gql, "alice", 1_000)
    await funded(gql, "bob", 40)

    moved = await transfer(gql, "alice", "bob", 300, 2_000)

    assert moved["errors"] == []
    assert moved["balance"] == 700
    assert moved["sourceAccount"] == {"id": "alice"}
    assert moved["targetAccount"] == {"id": "bob"}
    out = moved["entry"]
    assert {k: v for k, v in out.items() if k != "id"} == {
        "accountId": "alice",
        "timestamp": 2_000,
        "kind": "TRANSFER_OUT",
        "amount": 300,
        "balanceAfter": 700,
        "counterpartyId": "bob",
    }
    assert (await _history(gql, "alice"))[-1]["id"] == out["id"]
    incoming = (await _history(gql, "bob"))[-1]
    assert incoming["id"] != out["id"]
    assert {k: v for k, v in incoming.items() if k != "id"} == {
        "timestamp": 2_000,
        "kind": "TRANSFER_IN",
        "amount": 300,
        "balanceAfter": 340,
        "counterpartyId": "alice",
        "paymentId": None,
    }
    assert await balance(gql, "alice") == 700
    assert await balance(gql, "bob") == 340
    await audit()


async def test_transfer_of_the_whole_balance_is_allowed(gql: GraphQLClient, audit: Audit) -> None:
    await funded(gql, "alice", 500)
    await funded(gql, "bob", 0)

    moved = await transfer(gql, "alice", "bob", 500, 2_000)

    assert moved["errors"] == []
    assert moved["balance"] == 0
    assert await balance(gql, "bob") == 500
    await audit()


async def test_pay_writes_a_payment_and_its_entry(gql: GraphQLClient, audit: Audit) -> None:
    await funded(gql, "alice", 10_000)

    paid = await pay(gql, "alice", 1_234, 2_000)

    assert paid["errors"] == []
    assert paid["balance"] == 8_766
    assert paid["account"] == {"id": "alice"}
    assert paid["payment"] == {
        "id": "payment1",
        "accountId": "alice",
        "timestamp": 2_000,
        "amount": 1_234,
        "cashback": 24,  # 1234 * 2 // 100
        "cashbackDueAt": 2_000 + DAY_MS,
        "status": "IN_PROGRESS",
    }
    entry = (await _history(gql, "alice"))[-1]
    assert {k: v for k, v in entry.items() if k != "id"} == {
        "timestamp": 2_000,
        "kind": "PAYMENT",
        "amount": 1_234,
        "balanceAfter": 8_766,
        "counterpartyId": None,
        "paymentId": "payment1",
    }
    await audit()


async def test_pay_of_the_whole_balance_with_a_zero_cashback(
    gql: GraphQLClient, audit: Audit
) -> None:
    await funded(gql, "alice", 49)

    paid = await pay(gql, "alice", 49, 2_000)

    assert paid["errors"] == []
    assert paid["balance"] == 0
    assert paid["payment"]["cashback"] == 0  # 49 * 2 // 100
    assert await balance(gql, "alice") == 0
    await audit()


async def test_payment_ids_count_across_accounts_and_refusals_take_no_number(
    gql: GraphQLClient, db: psycopg.AsyncConnection[Any], audit: Audit
) -> None:
    await funded(gql, "alice", 1_000)
    await funded(gql, "bob", 1_000)

    assert (await pay(gql, "alice", 100, 2_000))["payment"]["id"] == "payment1"
    assert (await pay(gql, "bob", 100, 2_000))["payment"]["id"] == "payment2"
    assert await _refused(gql, "pay", {"id": "alice", "amount": 901, "ts": 2_000}) == _error(
        "INSUFFICIENT_FUNDS", "amount"
    )
    assert await _refused(gql, "pay", {"id": "ghost", "amount": 1, "ts": 2_000}) == _error(
        "ACCOUNT_NOT_FOUND", "accountId"
    )
    assert await _refused(gql, "pay", {"id": "bob", "amount": 0, "ts": 2_000}) == _error(
        "INVALID_AMOUNT", "amount"
    )
    assert (await pay(gql, "bob", 100, 3_000))["payment"]["id"] == "payment3"
    assert (await pay(gql, "alice", 900, 3_000))["payment"]["id"] == "payment4"
    assert await scalar(db, "SELECT count(*) FROM payments") == 4
    await audit()


async def test_mutations_on_the_system_clock_take_the_servers_time(
    make_client: MakeClient,
) -> None:
    gql = await make_client(ClockMode.SYSTEM)
    before = time.time_ns() // 1_000_000
    await funded(gql, "alice", 1_000, ts=None)
    await funded(gql, "bob", 0, ts=None)
    moved = await transfer(gql, "alice", "bob", 100)
    paid = await pay(gql, "alice", 100)
    after = time.time_ns() // 1_000_000

    assert moved["errors"] == []
    assert paid["errors"] == []
    assert before <= moved["entry"]["timestamp"] <= paid["payment"]["timestamp"] <= after
    assert paid["payment"]["cashbackDueAt"] == paid["payment"]["timestamp"] + DAY_MS


# -- refusals ------------------------------------------------------------------------------

WHALE = MAX_MONEY - 10


async def _world(gql: GraphQLClient) -> list[str]:
    """alice 900 with 2 cashback pending (payment1), bob 500, whale near the limit; now 1500."""
    await funded(gql, "alice", 1_000, ts=1_000)
    await funded(gql, "bob", 500, ts=1_000)
    await funded(gql, "whale", WHALE, ts=1_000)
    assert (await pay(gql, "alice", 100, 1_500))["payment"]["id"] == "payment1"
    return ["alice", "bob", "whale"]


REFUSALS = [
    pytest.param(
        "deposit",
        {"id": "ghost", "amount": 5},
        "ACCOUNT_NOT_FOUND",
        "accountId",
        id="deposit-ghost",
    ),
    pytest.param(
        "transfer",
        {"from": "ghost", "to": "bob", "amount": 5},
        "ACCOUNT_NOT_FOUND",
        "sourceAccountId",
        id="transfer-from-ghost",
    ),
    pytest.param(
        "transfer",
        {"from": "alice", "to": "ghost", "amount": 5},
        "ACCOUNT_NOT_FOUND",
        "targetAccountId",
        id="transfer-to-ghost",
    ),
    pytest.param(
        "pay", {"id": "ghost", "amount": 5}, "ACCOUNT_NOT_FOUND", "accountId", id="pay-ghost"
    ),
    pytest.param(
        "deposit", {"id": "alice", "amount": 0}, "INVALID_AMOUNT", "amount", id="deposit-zero"
    ),
    pytest.param(
        "transfer",
        {"from": "alice", "to": "bob", "amount": 0},
        "INVALID_AMOUNT",
        "amount",
        id="transfer-zero",
    ),
    pytest.param("pay", {"id": "alice", "amount": 0}, "INVALID_AMOUNT", "amount", id="pay-zero"),
    pytest.param(
        "transfer",
        {"from": "alice", "to": "alice", "amount": 5},
        "SAME_ACCOUNT",
        "targetAccountId",
        id="transfer-to-itself",
    ),
    pytest.param(
        "transfer",
        {"from": "alice", "to": "bob", "amount": 901},
        "INSUFFICIENT_FUNDS",
        "amount",
        id="transfer-too-much",
    ),
    pytest.param(
        # Pending cashback is not money yet: it cannot be spent.
        "pay",
        {"id": "alice", "amount": 901},
        "INSUFFICIENT_FUNDS",
        "amount",
        id="pay-too-much",
    ),
    pytest.param(
        "deposit",
        {"id": "whale", "amount": 11},
        "BALANCE_OVERFLOW",
        "amount",
        id="deposit-overflow",
    ),
    pytest.param(
        "transfer",
        {"from": "bob", "to": "whale", "amount": 11},
        "BALANCE_OVERFLOW",
        "amount",
        id="transfer-target-overflow",
    ),
    pytest.param(
        "deposit",
        {"id": "bad id", "amount": 5},
        "INVALID_ACCOUNT_ID",
        "accountId",
        id="deposit-bad-id",
    ),
    pytest.param(
        "transfer",
        {"from": "-bob", "to": "alice", "amount": 5},
        "INVALID_ACCOUNT_ID",
        "sourceAccountId",
        id="transfer-bad-source-id",
    ),
    pytest.param(
        "transfer",
        {"from": "alice", "to": "b/ob", "amount": 5},
        "INVALID_ACCOUNT_ID",
        "targetAccountId",
        id="transfer-bad-target-id",
    ),
    pytest.param(
        "pay", {"id": "", "amount": 5}, "INVALID_ACCOUNT_ID", "accountId", id="pay-bad-id"
    ),
]


@pytest.mark.parametrize(("mutation", "variables", "code", "field"), REFUSALS)
async def test_refused_mutation_names_the_field_and_changes_nothing(
    gql: GraphQLClient,
    db: psycopg.AsyncConnection[Any],
    audit: Audit,
    mutation: str,
    variables: dict[str, Any],
    code: str,
    field: str,
) -> None:
    ids = await _world(gql)
    before = await _books(gql, db, ids)

    errors = await _refused(gql, mutation, {**variables, "ts": 2_000})

    assert errors == _error(code, field)
    assert await _books(gql, db, ids) == before
    # The refusal took no payment number either.
    assert (await pay(gql, "bob", 1, 2_000))["payment"]["id"] == "payment2"
    await audit()


async def test_refusal_timed_after_a_cashback_falls_due_writes_nothing(
    gql: GraphQLClient, db: psycopg.AsyncConnection[Any], audit: Audit
) -> None:
    # On the client clock a mutation may be timed past alice's pending cashback (due at
    # 1500 + DAY_MS) while "now" is still 1500: refused, it may not write that cashback.
    ids = await _world(gql)
    before = await _books(gql, db, ids)
    due = 1_500 + DAY_MS

    attempts = [
        ("transfer", {"from": "alice", "to": "bob", "amount": 903}, "INSUFFICIENT_FUNDS"),
        ("pay", {"id": "alice", "amount": 903}, "INSUFFICIENT_FUNDS"),
        ("transfer", {"from": "alice", "to": "whale", "amount": 11}, "BALANCE_OVERFLOW"),
        ("deposit", {"id": "alice", "amount": MAX_MONEY - 901}, "BALANCE_OVERFLOW"),
    ]
    for mutation, variables, code in attempts:
        errors = await _refused(gql, mutation, {**variables, "ts": due})
        assert errors == _error(code, "amount"), (mutation, errors)

    assert await _books(gql, db, ids) == before
    await audit()


async def test_deposit_up_to_the_limit_and_not_one_more(gql: GraphQLClient, audit: Audit) -> None:
    await funded(gql, "alice", 0)
    await funded(gql, "bob", MAX_MONEY - 5)

    assert (await deposit(gql, "alice", MAX_MONEY, 2_000))["balance"] == MAX_MONEY
    assert (await deposit(gql, "bob", 5, 2_000))["balance"] == MAX_MONEY
    for account_id in ("alice", "bob"):
        errors = await _refused(gql, "deposit", {"id": account_id, "amount": 1, "ts": 2_000})
        assert errors == _error("BALANCE_OVERFLOW", "amount")
        assert await balance(gql, account_id) == MAX_MONEY
    await audit()


async def test_transfer_fills_the_target_to_the_limit_and_not_one_more(
    gql: GraphQLClient, audit: Audit
) -> None:
    await funded(gql, "whale", MAX_MONEY - 10)
    await funded(gql, "bob", 100)

    assert (await transfer(gql, "bob", "whale", 10, 2_000))["balance"] == 90
    errors = await _refused(gql, "transfer", {"from": "bob", "to": "whale", "amount": 1})

    assert errors == _error("BALANCE_OVERFLOW", "amount")
    assert await balance(gql, "whale") == MAX_MONEY
    assert await balance(gql, "bob") == 90
    await audit()


async def _with_pending_cashback(gql: GraphQLClient) -> None:
    """alice: balance 0 and 20 of cashback pending, due at 2000 + DAY_MS."""
    await funded(gql, "alice", 1_000)
    paid = await pay(gql, "alice", 1_000, 2_000)
    assert paid["balance"] == 0
    assert paid["payment"]["cashback"] == 20


async def test_pending_cashback_counts_towards_the_deposit_limit(
    gql: GraphQLClient, audit: Audit
) -> None:
    await _with_pending_cashback(gql)

    errors = await _refused(gql, "deposit", {"id": "alice", "amount": MAX_MONEY - 19, "ts": 3_000})
    assert errors == _error("BALANCE_OVERFLOW", "amount")
    assert await balance(gql, "alice") == 0
    assert (await deposit(gql, "alice", MAX_MONEY - 20, 3_000))["balance"] == MAX_MONEY - 20

    # Once due, the cashback lands exactly on the limit; nothing wraps or is lost.
    await create(gql, "clock", 2_000 + DAY_MS)
    assert await balance(gql, "alice") == MAX_MONEY
    assert (await _history(gql, "alice"))[-1]["kind"] == "CASHBACK"
    await audit()


async def test_pending_cashback_counts_towards_the_transfer_target_limit(
    gql: GraphQLClient, audit: Audit
) -> None:
    await _with_pending_cashback(gql)
    await funded(gql, "whale", MAX_MONEY - 19, ts=2_000)

    errors = await _refused(
        gql, "transfer", {"from": "whale", "to": "alice", "amount": MAX_MONEY - 19, "ts": 3_000}
    )
    assert errors == _error("BALANCE_OVERFLOW", "amount")
    assert await balance(gql, "whale") == MAX_MONEY - 19
    assert await balance(gql, "alice") == 0

    moved = await transfer(gql, "whale", "alice", MAX_MONEY - 20, 3_000)
    assert moved["errors"] == []
    assert moved["balance"] == 1
    await create(gql, "clock", 2_000 + DAY_MS)
    assert await balance(gql, "alice") == MAX_MONEY
    await audit()


# -- the Money scalar ----------------------------------------------------------------------

BAD_MONEY_VALUES = [
    pytest.param(-1, id="negative"),
    pytest.param(1.5, id="fraction"),
    pytest.param(1.0, id="float-one"),
    pytest.param("100", id="string"),
    pytest.param(True, id="boolean"),
    pytest.param(None, id="null"),
    pytest.param(2**53, id="2^53"),
    pytest.param(2**64, id="2^64"),
]


@pytest.mark.parametrize("amount", BAD_MONEY_VALUES)
async def test_money_scalar_refuses_bad_variables(
    gql: GraphQLClient, db: psycopg.AsyncConnection[Any], audit: Audit, amount: object
) -> None:
    ids = await _world(gql)
    before = await _books(gql, db, ids)
    attempts = {
        "deposit": {"id": "alice", "amount": amount, "ts": 2_000},
        "transfer": {"from": "alice", "to": "bob", "amount": amount, "ts": 2_000},
        "pay": {"id": "alice", "amount": amount, "ts": 2_000},
    }

    for mutation, variables in attempts.items():
        body = await gql.post(DOCUMENTS[mutation], variables)
        codes = [e["extensions"]["code"] for e in body.get("errors", [])]
        assert codes == ["BAD_USER_INPUT"], (mutation, body)
        assert body.get("data") is None, (mutation, body)

    assert await _books(gql, db, ids) == before
    await audit()


BAD_MONEY_LITERALS = [
    pytest.param("-1", id="negative"),
    pytest.param("1.5", id="fraction"),
    pytest.param("1.0", id="float-one"),
    pytest.param('"100"', id="string"),
    pytest.param("true", id="boolean"),
    pytest.param("null", id="null"),
    pytest.param(str(2**53), id="2^53"),
    pytest.param(str(2**64), id="2^64"),
    pytest.param("9" * 400, id="huge"),
]


@pytest.mark.parametrize("literal", BAD_MONEY_LITERALS)
async def test_money_scalar_refuses_bad_literals(
    gql: GraphQLClient, db: psycopg.AsyncConnection[Any], audit: Audit, literal: str
) -> None:
    ids = await _world(gql)
    before = await _books(gql, db, ids)
    documents = [
        f'mutation {{ deposit(input: {{accountId: "alice", amount: {literal}}}) {{ balance }} }}',
        "mutation { transfer(input: "
        f'{{sourceAccountId: "alice", targetAccountId: "bob", amount: {literal}}}) '
        "{ balance } }",
        f'mutation {{ pay(input: {{accountId: "alice", amount: {literal}}}) {{ balance }} }}',
    ]

    for document in documents:
        body = await gql.post(document)
        codes = [e["extensions"]["code"] for e in body.get("errors", [])]
        assert codes == ["GRAPHQL_VALIDATION_FAILED"], (document, body)
        assert body.get("data") is None, (document, body)

    assert await _books(gql, db, ids) == before
    await audit()


async def test_money_scalar_accepts_the_largest_amount(gql: GraphQLClient, audit: Audit) -> None:
    await funded(gql, "alice", 0)

    data = await gql.ok(
        f'mutation {{ deposit(input: {{accountId: "alice", amount: {MAX_MONEY}}}) {{ balance }} }}'
    )

    assert data["deposit"]["balance"] == MAX_MONEY
    await audit()


# -- outgoing and topSpenders --------------------------------------------------------------


async def test_outgoing_counts_transfers_out_and_payments_only(
    gql: GraphQLClient, audit: Audit
) -> None:
    await funded(gql, "alice", 10_000)
    await funded(gql, "bob", 0)
    assert (await deposit(gql, "alice", 500, 2_000))["errors"] == []
    assert (await transfer(gql, "alice", "bob", 300, 2_000))["errors"] == []
    assert (await pay(gql, "alice", 1_000, 2_000))["errors"] == []
    assert (await transfer(gql, "bob", "alice", 100, 3_000))["errors"] == []

    async def account(account_id: str) -> dict[str, Any]:
        data = await gql.ok(ACCOUNT, {"id": account_id})
        value: dict[str, Any] = data["account"]
        return value

    assert await account("alice") == {"balance": 9_300, "outgoing": 1_300}
    assert await account("bob") == {"balance": 200, "outgoing": 100}

    # The cashback (20) lands once due, and outgoing stays as it was.
    assert (await deposit(gql, "bob", 1, 2_000 + DAY_MS))["errors"] == []
    assert await account("alice") == {"balance": 9_320, "outgoing": 1_300}
    assert await account("bob") == {"balance": 201, "outgoing": 100}
    assert (await _history(gql, "alice"))[-1]["kind"] == "CASHBACK"
    spenders = (await gql.ok(TOP_SPENDERS, {"first": 10}))["topSpenders"]
    assert spenders == [
        {"accountId": "alice", "outgoing": 1_300},
        {"accountId": "bob", "outgoing": 100},
    ]
    await audit()


async def _spenders_world(gql: GraphQLClient) -> None:
    """C 700, B 500 and a 500 (a tie), d 100, A and z nothing (A deposited a lot)."""
    for account_id, amount in [("A", 1_000_000), ("B", 500), ("C", 700), ("a", 500), ("d", 100)]:
        await funded(gql, account_id, amount)
    await funded(gql, "z", 0)
    assert (await transfer(gql, "C", "z", 700, 2_000))["errors"] == []
    assert (await transfer(gql, "B", "z", 500, 2_000))["errors"] == []
    assert (await pay(gql, "a", 500, 2_000))["errors"] == []  # 10 of cashback, never counted
    assert (await pay(gql, "d", 100, 2_000))["errors"] == []
    assert (await deposit(gql, "z", 1, 3_000 + DAY_MS))["errors"] == []  # cashback now due


async def test_top_spenders_largest_first_ties_by_id(gql: GraphQLClient, audit: Audit) -> None:
    await _spenders_world(gql)

    everyone = (await gql.ok(TOP_SPENDERS, {"first": 1_000}))["topSpenders"]
    top_two = (await gql.ok(TOP_SPENDERS, {"first": 2}))["topSpenders"]
    top_three = (await gql.ok(TOP_SPENDERS, {"first": 3}))["topSpenders"]

    assert everyone == [
        {"accountId": "C", "outgoing": 700},
        {"accountId": "B", "outgoing": 500},  # 'B' < 'a' in byte order
        {"accountId": "a", "outgoing": 500},
        {"accountId": "d", "outgoing": 100},
        {"accountId": "A", "outgoing": 0},
        {"accountId": "z", "outgoing": 0},
    ]
    assert top_two == everyone[:2]
    assert top_three == everyone[:3]
    assert await balance(gql, "a") == 10  # the cashback was credited, and did not count
    await audit()


async def test_top_spenders_first_zero_is_empty(gql: GraphQLClient) -> None:
    await _spenders_world(gql)

    assert (await gql.ok(TOP_SPENDERS, {"first": 0}))["topSpenders"] == []


@pytest.mark.parametrize("first", [1_001, 10_000, -1])
async def test_top_spenders_first_out_of_range_is_bad_user_input(
    gql: GraphQLClient, first: int
) -> None:
    await funded(gql, "alice", 100)

    body = await gql.post(TOP_SPENDERS, {"first": first})

    assert [e["extensions"]["code"] for e in body.get("errors", [])] == ["BAD_USER_INPUT"], body
    assert body.get("data") is None
