"""Who may do what (ACCESS.md's table): every role against every operation, with API keys
and with JWTs. A refused request is a GraphQL error coded FORBIDDEN with no data and HTTP
200 (403 for /metrics), and it changed nothing; an allowed one ran.

A request holding any forbidden field is refused whole, however the field is reached
(fragment spread, inline fragment, alias) and whatever else the document holds."""

import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from bank_graphql.ledger import Role
from tests.access_fixtures import (
    JWT_SECRET,
    KINDS,
    VIEWER,
    Access,
    Caller,
    Credential,
    Db,
    access_fixture,  # noqa: F401 - registers the `access` fixture
    changed_tables,
    forbidden_problem,
    state,
)
from tests.operations import (
    ACCOUNT,
    BATCH,
    CREATE,
    DEPOSIT,
    MERGE,
    PAY,
    PAYMENT,
    TOP_SPENDERS,
    TRANSFER,
    batch_item,
    funded,
    pay,
)
from tests.servers import Serve, Server
from tests.test_websocket import PROTOCOL, subscribe, until_done

A1, A2, B1 = "own-1", "own-2", "other-1"
"""A CUSTOMER's credential is limited to A1 and A2; B1 is someone else's."""
NEW = "new-1"

ADMIN, OPERATOR, CUSTOMER, READER = Role.ADMIN, Role.OPERATOR, Role.CUSTOMER, Role.READER
ROLES = (ADMIN, OPERATOR, CUSTOMER, READER)

# Queries: (document, variables, what an allowed answer's data must satisfy).
QUERIES: dict[str, tuple[str, dict[str, Any] | None, Any]] = {
    "account": (ACCOUNT, {"id": A1}, lambda d: d["account"]["id"] == A1),
    "accounts": (
        "query { accounts(first: 100) { nodes { id } } }",
        None,
        lambda d: A1 in [n["id"] for n in d["accounts"]["nodes"]],
    ),
    "payment": (
        PAYMENT,
        {"account": A1, "id": "payment1"},
        lambda d: d["payment"] is not None and d["payment"]["id"] == "payment1",
    ),
    "topSpenders": (
        TOP_SPENDERS,
        {"first": 10},
        lambda d: A1 in [s["accountId"] for s in d["topSpenders"]],
    ),
    "viewer": (VIEWER, None, None),  # checked against the credential
}

# Mutations, in the order a test runs them (the merge last: it ends A2).
MUTATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "createAccount": (CREATE, {"id": NEW}),
    "deposit": (DEPOSIT, {"id": A1, "amount": 100}),
    "transfer": (TRANSFER, {"from": A1, "to": B1, "amount": 10}),
    "transferBatch": (BATCH, {"transfers": [batch_item(A1, B1, 10)], "atomic": False}),
    "pay": (PAY, {"id": A1, "amount": 10}),
    "mergeAccounts": (MERGE, {"a": A1, "b": A2}),
}

ALLOWED: dict[str, set[Role]] = {
    **{name: set(ROLES) for name in QUERIES},
    "metrics": {ADMIN, READER},
    "createAccount": {ADMIN, OPERATOR},
    "deposit": {ADMIN, OPERATOR},
    "transfer": {ADMIN, OPERATOR, CUSTOMER},
    "transferBatch": {ADMIN, OPERATOR, CUSTOMER},
    "pay": {ADMIN, OPERATOR, CUSTOMER},
    "mergeAccounts": {ADMIN},
}
OPERATIONS = [*QUERIES, "metrics", *MUTATIONS]


async def _ledger(access: Access, kind: str, role: Role) -> tuple[Caller, Credential]:
    """Accounts A1, A2, B1 (10 000 each) and payment1 of A1, made by an ADMIN key; the app
    started; a credential of `kind` and `role` (CUSTOMER limited to A1, A2)."""
    admin_key = await access.credential("key", ADMIN)
    credential = await access.credential(kind, role, [A1, A2] if role is CUSTOMER else None)
    await access.start()
    admin = access.caller(admin_key)
    for account_id in (A1, A2, B1):
        await funded(admin, account_id, 10_000)
    assert (await pay(admin, A1, 100))["payment"]["id"] == "payment1"
    return access.caller(credential), credential


async def _query_outcome(caller: Caller, credential: Credential, name: str) -> str:
    document, variables, allowed = QUERIES[name]
    response = await caller.response(document, variables)
    if forbidden_problem(response) is None:
        return "refused"
    body = response.json()
    if response.status_code != 200 or "errors" in body:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    data = body["data"]
    if name == "viewer":
        expected = {
            "principal": credential.principal,
            "role": credential.role.value,
            "accounts": None if credential.accounts is None else sorted(credential.accounts),
        }
        viewer = dict(data["viewer"])
        if viewer.get("accounts") is not None:
            viewer["accounts"] = sorted(viewer["accounts"])
        return "allowed" if viewer == expected else f"viewer {viewer} != {expected}"
    return "allowed" if allowed(data) else f"answered {data}"


async def _metrics_outcome(caller: Caller) -> str:
    response = await caller.get("/metrics")
    if response.status_code == 200 and "# TYPE" in response.text:
        return "allowed"
    if response.status_code == 403 and "# TYPE" not in response.text:
        return "refused"
    return f"HTTP {response.status_code}: {response.text[:200]}"


async def _mutation_outcome(caller: Caller, db: Db, name: str) -> str:
    document, variables = MUTATIONS[name]
    before = await state(db)
    response = await caller.response(document, variables)
    changed = await changed_tables(db, before)
    problem = forbidden_problem(response)
    if problem is None:
        return "refused" if not changed else f"refused, yet changed {changed}"
    body = response.json()
    if response.status_code != 200 or body.get("errors"):
        return problem
    result = body["data"][name]
    errors = result["errors"] + [e for r in result.get("results", []) for e in r["errors"]]
    if errors or not changed:
        return f"ran, but errors {errors}, changed {changed}"
    return "allowed"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
@pytest.mark.parametrize("kind", KINDS)
async def test_each_role_runs_exactly_what_the_table_allows(
    access: Access, db: Db, kind: str, role: Role
) -> None:
    caller, credential = await _ledger(access, kind, role)
    observed: dict[str, str] = {}
    for name in QUERIES:
        observed[name] = await _query_outcome(caller, credential, name)
    observed["metrics"] = await _metrics_outcome(caller)
    for name in MUTATIONS:
        observed[name] = await _mutation_outcome(caller, db, name)
    expected = {name: "allowed" if role in ALLOWED[name] else "refused" for name in OPERATIONS}
    wrong = {n: f"expected {expected[n]}, got {observed[n]}" for n in OPERATIONS}
    assert observed == expected, {n: w for n, w in wrong.items() if observed[n] != expected[n]}


# -- refused whole, however the forbidden field is reached ----------------------------------

_DEPOSIT_FIELD = f'deposit(input: {{accountId: "{A1}", amount: 5}}) {{ balance errors {{ code }} }}'
_TRANSFER_FIELD = (
    f'transfer(input: {{sourceAccountId: "{A1}", targetAccountId: "{B1}", amount: 7}}) '
    "{ balance errors { code } }"
)
_MERGE_FIELD = (
    f'mergeAccounts(input: {{accountId: "{A1}", absorbedAccountId: "{A2}"}}) '
    "{ balance errors { code } }"
)

# (role, document, operationName): each holds a field the role may not run.
SMUGGLED: dict[str, tuple[Role, str, str | None]] = {
    "allowed transfer then forbidden deposit": (
        CUSTOMER,
        f"mutation {{ {_TRANSFER_FIELD} {_DEPOSIT_FIELD} }}",
        None,
    ),
    "forbidden deposit then allowed transfer": (
        CUSTOMER,
        f"mutation {{ {_DEPOSIT_FIELD} {_TRANSFER_FIELD} }}",
        None,
    ),
    "query and forbidden mutation, the mutation chosen": (
        READER,
        f'query Q {{ account(id: "{A1}") {{ id }} }} mutation M {{ {_DEPOSIT_FIELD} }}',
        "M",
    ),
    "query and forbidden mutation, the query chosen": (
        READER,
        f'query Q {{ account(id: "{A1}") {{ id }} }} mutation M {{ {_DEPOSIT_FIELD} }}',
        "Q",
    ),
    "fragment spread on Mutation": (
        CUSTOMER,
        f"mutation {{ ...F }} fragment F on Mutation {{ {_DEPOSIT_FIELD} }}",
        None,
    ),
    "nested fragment spreads beside an allowed field": (
        CUSTOMER,
        f"mutation {{ {_TRANSFER_FIELD} ...F }} fragment F on Mutation {{ ...G }} "
        f"fragment G on Mutation {{ {_DEPOSIT_FIELD} }}",
        None,
    ),
    "inline fragment on Mutation": (
        CUSTOMER,
        f"mutation {{ ... on Mutation {{ {_DEPOSIT_FIELD} }} }}",
        None,
    ),
    "inline fragment without a type condition": (
        OPERATOR,
        f"mutation {{ {_TRANSFER_FIELD} ... {{ {_MERGE_FIELD} }} }}",
        None,
    ),
    "alias named like an allowed field": (
        CUSTOMER,
        f"mutation {{ transfer: {_DEPOSIT_FIELD} }}",
        None,
    ),
    "alias on a merge beside an allowed transfer": (
        OPERATOR,
        f"mutation {{ ok: {_TRANSFER_FIELD} harmless: {_MERGE_FIELD} }}",
        None,
    ),
}


@pytest.mark.parametrize("case", list(SMUGGLED))
@pytest.mark.parametrize("kind", KINDS)
async def test_a_forbidden_field_anywhere_refuses_the_whole_request(
    access: Access, db: Db, kind: str, case: str
) -> None:
    role, document, operation_name = SMUGGLED[case]
    caller, _ = await _ledger(access, kind, role)
    before = await state(db)
    response = await caller.response(document, None, operation_name)
    assert forbidden_problem(response) is None, forbidden_problem(response)
    assert await changed_tables(db, before) == []


@pytest.mark.parametrize("role", [OPERATOR, ADMIN], ids=lambda r: r.value)
@pytest.mark.parametrize("kind", KINDS)
async def test_a_scoped_credential_cannot_create_accounts(
    access: Access, db: Db, kind: str, role: Role
) -> None:
    """Even a role that may create accounts may not once limited to some: it would widen
    its own world."""
    admin_key = await access.credential("key", ADMIN)
    scoped = await access.credential(kind, role, [A1, NEW])
    await access.start()
    await funded(access.caller(admin_key), A1, 100)
    caller = access.caller(scoped)
    for account_id in (NEW, "elsewhere-1"):
        before = await state(db)
        response = await caller.response(CREATE, {"id": account_id})
        assert forbidden_problem(response) is None, forbidden_problem(response)
        assert await changed_tables(db, before) == []
    # The same credential may still do what its role allows within its scope.
    body = await caller.post(DEPOSIT, {"id": A1, "amount": 5})
    assert body["data"]["deposit"]["errors"] == [], body


async def test_a_real_server_with_two_workers_holds_the_table(
    access: Access, db: Db, database_url: str, serve: Serve
) -> None:
    """`bank-graphql serve` with access on and JWTs by flag, two worker processes: whichever
    answers, the READER and the CUSTOMER get what the table gives them, no more."""
    keys = [await access.credential("key", role) for role in (ADMIN, READER)]
    customer = await access.credential("jwt", CUSTOMER, [A1])
    server = serve(
        "--database-url",
        database_url,
        "--clock",
        "client",
        "--workers",
        "2",
        "--jwt-secret",
        JWT_SECRET,
        auth=True,
    )
    async with httpx.AsyncClient(base_url=server.base, timeout=10) as http:
        admin, reader, me = (Caller(http, c) for c in (*keys, customer))
        for account_id in (A1, B1):
            await funded(admin, account_id, 1_000)
        for _ in range(4):  # more requests than workers
            before = await state(db)
            for caller in (reader, me):
                refused = await caller.response(*MUTATIONS["deposit"])
                assert forbidden_problem(refused) is None, forbidden_problem(refused)
            assert await changed_tables(db, before) == []
            assert (await reader.get("/metrics")).status_code == 200
            assert (await me.get("/metrics")).status_code == 403
            assert await me.ok(ACCOUNT, {"id": B1}) == {"account": None}
            moved = (await me.ok(TRANSFER, {"from": A1, "to": B1, "amount": 1}))["transfer"]
            assert moved["errors"] == []
            assert moved["targetAccount"] is None
        assert (await reader.ok(ACCOUNT, {"id": B1}))["account"]["balance"] == 1_004

    # Over a websocket, the credential of its connection_init holds for every operation.
    for credential in (keys[1], customer):
        before = await state(db)
        refused = await _over_ws(server, credential.token, *MUTATIONS["deposit"])
        codes = [e["extensions"]["code"] for e in refused.get("errors") or []]
        assert (codes, refused.get("data")) == (["FORBIDDEN"], None), refused
        assert await changed_tables(db, before) == []
        viewer = await _over_ws(server, credential.token, VIEWER, None)
        assert viewer["data"]["viewer"]["principal"] == credential.principal, viewer
    assert await _over_ws(server, customer.token, ACCOUNT, {"id": B1}) == {
        "data": {"account": None}
    }
    moved = await _over_ws(server, customer.token, TRANSFER, {"from": A1, "to": B1, "amount": 1})
    assert moved["data"]["transfer"]["errors"] == [], moved
    assert moved["data"]["transfer"]["targetAccount"] is None


async def _over_ws(
    server: Server, token: str, query: str, variables: dict[str, Any] | None
) -> dict[str, Any]:
    """One operation over a fresh websocket whose connection_init carries `token`, shaped
    like an HTTP answer."""
    url = f"ws://127.0.0.1:{server.port}/graphql"
    async with connect(url, subprotocols=[PROTOCOL]) as ws:  # type: ignore[list-item]
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        await ws.send(json.dumps(init))
        assert json.loads(await ws.recv()) == {"type": "connection_ack"}
        await ws.send(subscribe("op", query, variables))
        messages = await until_done(ws, "op")
    if messages[-1]["type"] == "error":
        return {"data": None, "errors": messages[-1]["payload"]}
    assert [m["type"] for m in messages] == ["next", "complete"], messages
    payload: dict[str, Any] = messages[0]["payload"]
    return payload
