"""Access control attacked from outside (in-process app, real PostgreSQL): odd credentials,
JWT claims that are almost right, forbidden operations in disguise, and what a CUSTOMER
can infer about accounts outside its scope."""

import time
from typing import Any

import httpx
import jwt
import pytest

from bank_graphql.ledger import ClockMode, Role
from tests.access_fixtures import (
    JWT_SECRET,
    Access,
    Db,
    access_fixture,  # noqa: F401 - registers the `access` fixture
    changed_tables,
    forbidden_problem,
    state,
)
from tests.operations import TRANSFER, create, deposit, funded

TYPENAME = {"query": "{ __typename }"}
UNAUTHENTICATED = (
    "a valid credential is required: send an API key or a JWT as Authorization: Bearer <token>"
)


def _token(**claims: Any) -> str:
    base: dict[str, Any] = {"sub": "mallory", "role": "reader", "exp": int(time.time()) + 600}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, JWT_SECRET)


def _unauthenticated_problem(response: httpx.Response, *tokens: str) -> str | None:
    if response.status_code != 401:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    if response.headers.get("www-authenticate") != "Bearer":
        return f"WWW-Authenticate: {response.headers.get('www-authenticate')}"
    body = response.json()
    expected = {
        "data": None,
        "errors": [{"message": UNAUTHENTICATED, "extensions": {"code": "UNAUTHENTICATED"}}],
    }
    if body != expected:
        return f"body {body}"
    leaked = [t for t in tokens if t and t in response.text]
    return f"token echoed: {leaked}" if leaked else None


async def _raw_post(
    access: Access, headers: list[tuple[str, str]], body: dict[str, Any] = TYPENAME
) -> httpx.Response:
    assert access.http is not None
    # A list of pairs (the same header name may be sent twice), values as bytes (any octet).
    raw = [(name.encode(), value.encode("utf-8")) for name, value in headers]
    request = access.http.build_request("POST", "/graphql", json=body, headers=raw)
    if not headers:  # not even the shared client's own ADMIN key
        del request.headers["authorization"]
    return await access.http.send(request)


# --- credentials --------------------------------------------------------------------------


async def test_a_role_claim_that_is_no_role_name_is_refused(access: Access) -> None:
    """`role` must be one of admin, operator, customer, reader. Strings that only turn into
    one through Unicode case mapping (dotless i, long s) are no role: 401."""
    await access.start()
    problems = {}
    for role, accounts in (
        ("adm\u0131n", None),  # dotless i: "ADMIN" once upper-cased
        ("cu\u017ftomer", ["acct-1"]),  # long s: "CUSTOMER" once upper-cased
        ("\u0131", None),
    ):
        token = _token(role=role, accounts=accounts)
        response = await _raw_post(access, [("authorization", f"Bearer {token}")])
        problem = _unauthenticated_problem(response, token)
        if problem is not None:
            problems[role] = problem
    assert problems == {}


async def test_a_customer_jwt_without_any_account_is_refused(access: Access) -> None:
    """A CUSTOMER must be limited to accounts; `accounts: []` limits it to none, which an API
    key may not be (`keys create` refuses an empty list). The same credential as a JWT must
    not be accepted either."""
    await access.start()
    token = _token(role="customer", accounts=[])
    response = await _raw_post(access, [("authorization", f"Bearer {token}")])
    assert _unauthenticated_problem(response, token) is None


async def test_two_authorization_headers_are_refused(access: Access) -> None:
    """An `Authorization` header may appear once (RFC 9110, 5.3). With two, which one a
    proxy checked and which one the server uses may differ: no credential, 401."""
    admin = await access.credential("key", Role.ADMIN)
    customer = await access.credential("key", Role.CUSTOMER, ["acct-1"])
    await access.start()
    pairs = [
        (f"Bearer {admin.token}", "Bearer junk"),
        ("Bearer junk", f"Bearer {admin.token}"),
        (f"Bearer {admin.token}", f"Bearer {customer.token}"),
        (f"Bearer {customer.token}", f"Bearer {admin.token}"),
    ]
    problems = []
    for first, second in pairs:
        response = await _raw_post(access, [("authorization", first), ("authorization", second)])
        problem = _unauthenticated_problem(response, admin.token, customer.token)
        if problem is not None:
            problems.append((first[:20], second[:20], problem))
    assert problems == []


async def test_odd_credentials_all_get_the_one_401(access: Access, db: Db) -> None:
    """Every malformed, forged or almost-right credential: the same 401, the token never
    echoed, nothing changed."""
    admin = await access.credential("key", Role.ADMIN)
    other = await access.credential("key", Role.READER)
    await access.start()
    before = await state(db)
    key_id, secret = admin.token.split("_")[1], admin.token.split("_")[2]
    other_id, other_secret = other.token.split("_")[1], other.token.split("_")[2]
    changed = admin.token[:-1] + ("0" if admin.token[-1] != "0" else "1")
    now = int(time.time())
    tokens = {
        "changed last char": changed,
        "upper-case hex": admin.token[:17] + secret.upper(),
        "id of one, secret of another": f"bgk_{key_id}_{other_secret}",
        "id of another, secret of one": f"bgk_{other_id}_{secret}",
        "key of another database": "bgk_" + "q" * 12 + "_" + "ab" * 32,
        "no prefix": f"{key_id}_{secret}",
        "other prefix": f"BGK_{key_id}_{secret}",
        "trailing junk": admin.token + "x",
        "unicode": admin.token[:-1] + "\u00e9",
        "nul": admin.token + "\x00",
        "jwt alg none": jwt.encode(
            {"sub": "m", "role": "admin", "exp": now + 60},
            None,  # type: ignore[arg-type]
            "none",
        ),
        "jwt other secret": jwt.encode(
            {"sub": "m", "role": "admin", "exp": now + 60}, JWT_SECRET + "!", "HS256"
        ),
        "jwt no exp": _token(role="admin", exp=None),
        "jwt expired": _token(role="admin", exp=now - 300),
        "jwt nbf future": _token(role="admin", nbf=now + 600),
        "jwt unknown role": _token(role="root"),
        "jwt role not a string": _token(role=["admin"]),
        "jwt accounts not a list": _token(role="customer", accounts="acct-1"),
        "jwt accounts of non-strings": _token(role="customer", accounts=[1, 2]),
        "jwt accounts huge": _token(role="customer", accounts=[f"a{i}" for i in range(5_000)]),
        "jwt sub missing": _token(role="admin", sub=None),
        "jwt sub not a string": _token(role="admin", sub=42),
        "jwt customer without accounts": _token(role="customer"),
    }
    headers: dict[str, list[tuple[str, str]]] = {
        name: [("authorization", f"Bearer {token}")] for name, token in tokens.items()
    }
    headers.update(
        {
            "none": [],
            "empty": [("authorization", "")],
            "scheme only": [("authorization", "Bearer")],
            "basic": [("authorization", f"Basic {admin.token}")],
            "token only": [("authorization", admin.token)],
            "other scheme name": [("authorization", f"Bearerx {admin.token}")],
            "tab": [("authorization", f"Bearer\t{admin.token}")],
            "very long": [("authorization", "Bearer " + "A" * 100_000)],
            "key split by a space": [
                ("authorization", f"Bearer {admin.token[:20]} {admin.token[20:]}")
            ],
        }
    )
    create_doc = {
        "query": 'mutation { createAccount(input: {id: "intruder"}) { errors { code } } }'
    }
    problems = {}
    for name, header in headers.items():
        for body in (TYPENAME, create_doc):
            response = await _raw_post(access, header, body)
            problem = _unauthenticated_problem(response, admin.token, other.token, secret)
            if problem is not None:
                problems[name] = problem
    assert problems == {}
    assert await changed_tables(db, before) == []


# --- roles ----------------------------------------------------------------------------------

_DEPOSIT_ARGS = 'deposit(input: {accountId: "acct-1", amount: 5})'
_DEPOSIT_BARE = f"{_DEPOSIT_ARGS} {{ errors {{ code }} }}"
DISGUISED = {
    "alias": f"mutation {{ harmless: {_DEPOSIT_BARE} }}",
    "fragment": f"mutation {{ ...F }} fragment F on Mutation {{ {_DEPOSIT_BARE} }}",
    "nested inline fragments": (
        f"mutation {{ ... on Mutation {{ ... {{ ... on Mutation {{ {_DEPOSIT_BARE} }} }} }} }}"
    ),
    "fragment through fragment": (
        f"mutation {{ ...A }} fragment A on Mutation {{ ...B }} "
        f"fragment B on Mutation {{ {_DEPOSIT_BARE} }}"
    ),
    "skipped": f"mutation {{ __typename {_DEPOSIT_ARGS} @skip(if: true) {{ __typename }} }}",
    "skipped by a variable": (
        "mutation($no: Boolean = false) { __typename "
        f"{_DEPOSIT_ARGS} @include(if: $no) {{ __typename }} }}"
    ),
}


@pytest.mark.parametrize("name", list(DISGUISED))
async def test_a_disguised_forbidden_mutation_is_refused_whole(
    access: Access, db: Db, name: str
) -> None:
    admin = await access.credential("key", Role.ADMIN)
    reader = await access.credential("key", Role.READER)
    await access.start()
    await funded(access.caller(admin), "acct-1", 100)
    before = await state(db)
    response = await access.caller(reader).response(DISGUISED[name])
    assert forbidden_problem(response) is None
    assert await changed_tables(db, before) == []


async def test_several_operations_naming_the_harmless_one_are_refused(
    access: Access, db: Db
) -> None:
    admin = await access.credential("key", Role.ADMIN)
    customer = await access.credential("jwt", Role.CUSTOMER, ["acct-1"])
    await access.start()
    await funded(access.caller(admin), "acct-1", 100)
    before = await state(db)
    document = f"query Look {{ __typename }} mutation Sneak {{ {_DEPOSIT_BARE} }}"
    response = await access.caller(customer).response(document, operation_name="Look")
    assert forbidden_problem(response) is None
    assert await changed_tables(db, before) == []


async def test_a_reader_batch_of_a_thousand_transfers_is_refused(access: Access, db: Db) -> None:
    admin = await access.credential("key", Role.ADMIN)
    reader = await access.credential("jwt", Role.READER)
    await access.start()
    await funded(access.caller(admin), "acct-1", 5_000)
    await funded(access.caller(admin), "acct-2", 0)
    before = await state(db)
    items = [{"sourceAccountId": "acct-1", "targetAccountId": "acct-2", "amount": 1}] * 1000
    document = """
    mutation($items: [TransferInput!]!) {
      transferBatch(input: {transfers: $items}) { errors { code } }
    }"""
    response = await access.caller(reader).response(document, {"items": items})
    assert forbidden_problem(response) is None
    assert await changed_tables(db, before) == []


# --- scope -------------------------------------------------------------------------------------

A1, B1 = "acct-a1", "acct-b1"
B1_NEWEST = 654_321
NOW = 1_000_000


async def test_a_customer_cannot_time_an_outside_accounts_newest_entry(access: Access) -> None:
    """ACCESS.md: of a transfer's target outside the scope "nothing else about it is shown".
    Yet a transfer refused on its timestamp is refused because of the target's newest entry:
    probing with timestamps (and an amount over the balance, so that no probe ever moves
    money) tells TIMESTAMP_OUT_OF_ORDER below B1's newest entry from INSUFFICIENT_FUNDS at
    or above it, and a binary search finds when B1 last moved, to the millisecond."""
    admin_key = await access.credential("key", Role.ADMIN)
    me_key = await access.credential("key", Role.CUSTOMER, [A1])
    await access.start()
    admin, me = access.caller(admin_key), access.caller(me_key)
    await funded(admin, A1, 100, 1_000)
    await funded(admin, B1, 100, 1_000)
    assert (await deposit(admin, B1, 1, B1_NEWEST))["errors"] == []
    assert (await create(admin, "acct-zz", NOW))["errors"] == []

    async def refused_as(ts: int) -> str:
        body = await me.post(TRANSFER, {"from": A1, "to": B1, "amount": 101, "ts": ts})
        [error] = body["data"]["transfer"]["errors"]
        code: str = error["code"]
        return code

    low, high = 1_000, NOW  # low: answered as funds; high: answered as funds too
    codes = {await refused_as(ts) for ts in (2_000, 400_000, 900_000)}
    # Whatever B1's history, every probe must be answered alike.
    assert len(codes) == 1, (
        f"answers depend on an outside account's history: {sorted(codes)}; "
        f"newest entry found: {await _bisect(refused_as, low, high)}"
    )


async def _bisect(refused_as: Any, low: int, high: int) -> int:
    """The smallest timestamp not refused as out of order."""
    while low < high:
        middle = (low + high) // 2
        if await refused_as(middle) == "TIMESTAMP_OUT_OF_ORDER":
            low = middle + 1
        else:
            high = middle
    return low


ENTRIES = """
query($id: ID!) {
  account(id: $id) { transactions(first: 100) { nodes { kind counterpartyId actor } } }
}"""


async def test_an_entry_does_not_name_who_acts_for_an_outside_counterparty(
    access: Access,
) -> None:
    """README: an entry of an account in the scope names its counterparty's id, "as a bank
    statement does; nothing else of that account is shown". The TRANSFER_IN entry Bob's
    transfer writes on Alice's account records Bob's principal (his identity provider's
    subject, here his e-mail address): Alice, scoped to her account, must not be shown who
    controls the account the money came from."""
    admin_key = await access.credential("key", Role.ADMIN)
    alice_key = await access.credential("key", Role.CUSTOMER, [A1])
    await access.start()
    bob = jwt.encode(
        {
            "sub": "bob@example.com",
            "role": "customer",
            "accounts": [B1],
            "exp": int(time.time()) + 600,
        },
        JWT_SECRET,
    )
    admin, alice = access.caller(admin_key), access.caller(alice_key)
    await funded(admin, A1, 10, 1_000)
    await funded(admin, B1, 500, 1_000)
    assert access.http is not None
    moved = await access.http.post(
        "/graphql",
        json={"query": TRANSFER, "variables": {"from": B1, "to": A1, "amount": 7}},
        headers={"authorization": f"Bearer {bob}"},
    )
    assert moved.json()["data"]["transfer"]["errors"] == [], moved.text
    nodes = (await alice.ok(ENTRIES, {"id": A1}))["account"]["transactions"]["nodes"]
    [incoming] = [n for n in nodes if n["kind"] == "TRANSFER_IN"]
    assert incoming["counterpartyId"] == B1
    assert "bob@example.com" not in str(incoming), incoming


@pytest.mark.parametrize("subject", ["a\x00b", "\ud800"], ids=["nul", "lone-surrogate"])
async def test_a_jwt_subject_the_ledger_cannot_record_gets_no_internal_error(
    access: Access, subject: str
) -> None:
    """`sub` becomes the principal every entry and idempotency key records. A subject
    PostgreSQL cannot store as text (a NUL, a lone surrogate: valid JSON escapes) must be
    refused as a credential (401), not accepted and then fail every mutation with
    INTERNAL_SERVER_ERROR and a stack trace in the log."""
    admin = await access.credential("key", Role.ADMIN)
    await access.start()
    await funded(access.caller(admin), A1, 100, 1_000)
    token = _token(sub=subject, role="operator")
    document = {
        "query": 'mutation { deposit(input: {accountId: "acct-a1", amount: 1}) '
        "{ errors { code } } }"
    }
    response = await _raw_post(access, [("authorization", f"Bearer {token}")], document)
    if response.status_code == 401:
        return
    assert "INTERNAL_SERVER_ERROR" not in response.text, response.text


GHOST = "acct-ghost"
"""Never created."""


async def test_a_transfer_that_cannot_go_through_does_not_tell_whether_its_target_exists(
    access: Access, db: Db
) -> None:
    """Outside its scope an account does not exist for a CUSTOMER, except that it may pay
    into any open account: a transfer that succeeds does tell that its target exists, at the
    price of the money sent. But a transfer of more than the customer holds, which can
    never succeed and moves nothing, is answered INSUFFICIENT_FUNDS for an open account and
    ACCOUNT_NOT_FOUND for an id never created: a free oracle that enumerates every account
    of the bank without paying a cent."""
    admin_key = await access.credential("key", Role.ADMIN)
    me_key = await access.credential("jwt", Role.CUSTOMER, [A1])
    await access.start()
    admin, me = access.caller(admin_key), access.caller(me_key)
    await funded(admin, A1, 100, 1_000)
    await funded(admin, B1, 100, 1_000)
    before = await state(db)
    answers = {}
    for target in (B1, GHOST):
        body = await me.post(TRANSFER, {"from": A1, "to": target, "amount": 101})
        answers[target] = [e["code"] for e in body["data"]["transfer"]["errors"]]
    assert await changed_tables(db, before) == []
    assert answers[B1] == answers[GHOST], answers


INTROSPECT_MUTATIONS = """
{ __type(name: "Mutation") { fields { name args { name type { ...T } } } } }
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }
"""


def _type_ref(ref: dict[str, Any]) -> str:
    if ref["kind"] == "NON_NULL":
        return _type_ref(ref["ofType"]) + "!"
    if ref["kind"] == "LIST":
        return "[" + _type_ref(ref["ofType"]) + "]"
    name: str = ref["name"]
    return name


async def test_every_mutation_of_the_schema_is_refused_to_a_reader(access: Access, db: Db) -> None:
    """The role check names the mutations it knows; one it does not know (a mutation added
    later) must not slip through. Every root field of Mutation, as introspection lists it,
    is FORBIDDEN to a READER (before its missing arguments are even looked at)."""
    reader = await access.credential("key", Role.READER)
    await access.start()
    caller = access.caller(reader)
    fields = (await caller.ok(INTROSPECT_MUTATIONS))["__type"]["fields"]
    assert len(fields) >= 6
    before = await state(db)
    problems = {}
    for field in fields:
        declared = ", ".join(f"${a['name']}: {_type_ref(a['type'])}" for a in field["args"])
        passed = ", ".join(f"{a['name']}: ${a['name']}" for a in field["args"])
        document = (
            f"mutation{f'({declared})' if declared else ''} "
            f"{{ {field['name']}{f'({passed})' if passed else ''} {{ __typename }} }}"
        )
        problem = forbidden_problem(await caller.response(document))
        if problem is not None:
            problems[field["name"]] = problem
    assert problems == {}
    assert await changed_tables(db, before) == []


async def test_the_document_cache_does_not_carry_a_verdict_across_credentials(
    access: Access, db: Db
) -> None:
    """Documents are parsed and validated once per text and cached; the role check must be
    made per request. The same text, alternately from an ADMIN and a READER: each gets its
    own answer."""
    admin_key = await access.credential("key", Role.ADMIN)
    reader_key = await access.credential("jwt", Role.READER)
    await access.start()
    admin, reader = access.caller(admin_key), access.caller(reader_key)
    template = 'mutation {{ createAccount(input: {{id: "{}"}}) {{ errors {{ code }} }} }}'
    for order, account_id in (("admin first", "cache-1"), ("reader first", "cache-2")):
        document = template.format(account_id)
        callers = [admin, reader] if order == "admin first" else [reader, admin]
        for caller in callers + callers:
            response = await caller.response(document)
            if caller is reader:
                assert forbidden_problem(response) is None, order
            else:
                codes = [e["code"] for e in response.json()["data"]["createAccount"]["errors"]]
                assert codes in ([], ["ACCOUNT_ALREADY_EXISTS"]), (order, response.text)
    cursor = await db.execute("SELECT count(*) FROM accounts WHERE id LIKE 'cache-%'")
    assert await cursor.fetchone() == (2,)


async def test_the_timestamp_oracle_works_on_the_system_clock_too(access: Access) -> None:
    """The same probe on the server's clock (production): timestamps in the past are
    allowed, and a binary search over them finds B1's newest entry exactly."""
    admin_key = await access.credential("key", Role.ADMIN)
    me_key = await access.credential("key", Role.CUSTOMER, [A1])
    await access.start(clock=ClockMode.SYSTEM)
    admin, me = access.caller(admin_key), access.caller(me_key)
    start = int(time.time() * 1000) - 3_600_000
    b1_newest = start + 1_234_567
    await funded(admin, A1, 100, start)
    await funded(admin, B1, 100, start)
    assert (await deposit(admin, B1, 1, b1_newest))["errors"] == []

    async def refused_as(ts: int) -> str:
        body = await me.post(TRANSFER, {"from": A1, "to": B1, "amount": 101, "ts": ts})
        [error] = body["data"]["transfer"]["errors"]
        code: str = error["code"]
        return code

    found = await _bisect(refused_as, start, int(time.time() * 1000))
    assert found != b1_newest, "a CUSTOMER timed an outside account's newest entry exactly"
