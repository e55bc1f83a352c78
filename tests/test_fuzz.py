"""Property tests: generated documents, variables and bodies sent through the ASGI app.

Whatever arrives, the server answers below 500 with a JSON body, no stack trace, and a code
on every GraphQL error; and after each run the books balance and no balance is negative.

Each test builds its own app on the test's database and drives it from a private event
loop, so Hypothesis can run many examples against one server and audit once at the end.

CI runs a few dozen examples per property, the same ones every run. For a long search,
`BANK_FUZZ_EXAMPLES=N` runs N random examples per property (tests/test_fuzz_websocket.py
reads it too), e.g. `BANK_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py
--hypothesis-show-statistics`.
"""

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bank_graphql.edge.app import create_app
from bank_graphql.edge.settings import Settings
from bank_graphql.ledger import ClockMode, audit_books
from tests.conftest import admin_headers

T = TypeVar("T")

# Examples per property for a long run on demand; unset, CI's few and fixed ones.
FUZZ_EXAMPLES = int(os.environ.get("BANK_FUZZ_EXAMPLES") or 0)

FUZZ = settings(
    max_examples=80,
    deadline=None,
    derandomize=not FUZZ_EXAMPLES,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

ACCOUNTS = ("alice", "bob", "carol", "dave", "erin", "frank")
SPARES = ("spare1", "spare2", "spare3", "spare4")
START_BALANCE = 1_000_000
STACK_TRACE_MARKERS = ("Traceback", 'File "')


# Each fuzzed server starts with these accounts, funded; OPENED answers each request.
OPEN_FUNDED = (
    "mutation($id: ID!, $amount: Money!) {"
    " c: createAccount(input: {id: $id, timestamp: 1000}) { errors { code } }"
    " d: deposit(input: {accountId: $id, amount: $amount, timestamp: 1000}) { errors { code } } }"
)
OPENED = {"data": {"c": {"errors": []}, "d": {"errors": []}}}


def opening_requests() -> list[dict[str, Any]]:
    return [
        {"query": OPEN_FUNDED, "variables": {"id": account, "amount": START_BALANCE}}
        for account in ACCOUNTS + SPARES
    ]


# --- the harness -------------------------------------------------------------------------


class Server:
    """The app with its lifespan, an httpx client on it, and a loop to drive both."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.runner = asyncio.Runner()
        self.app = create_app(
            Settings(database_url=database_url, clock=ClockMode.CLIENT, sweeper_enabled=False)
        )
        self.lifespan = self.app.router.lifespan_context(self.app)
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://test",
            timeout=30,
            headers=self.runner.run(admin_headers(database_url)),
        )

    def run(self, coroutine: Awaitable[T]) -> T:
        async def wrap() -> T:
            return await coroutine

        return self.runner.run(wrap())

    def start(self) -> None:
        self.run(self.lifespan.__aenter__())
        for request in opening_requests():
            body = self.post_json(request)
            assert body == OPENED, body

    def stop(self) -> None:
        try:
            self.run(self.http.aclose())
            self.run(self.lifespan.__aexit__(None, None, None))
        finally:
            self.runner.close()

    def send(self, **request: Any) -> httpx.Response:
        """POST to /graphql; the app raising (a 500 in a real server) fails the test."""
        request.setdefault("method", "POST")
        request.setdefault("url", "/graphql")
        try:
            return self.run(self.http.request(**request))
        except Exception as exc:
            shown = {k: _short(v) for k, v in request.items()}
            pytest.fail(f"the app raised {exc!r} (a 500) on {shown}")

    def post_json(self, payload: object) -> Any:
        return check_response(self.send(json=payload))

    def audit(self) -> None:
        async def check() -> None:
            async with await psycopg.AsyncConnection.connect(
                self.database_url, autocommit=True
            ) as conn:
                assert await audit_books(conn) == []
                cursor = await conn.execute(
                    "SELECT (SELECT count(*) FROM accounts WHERE balance < 0)"
                    " + (SELECT count(*) FROM entries WHERE balance_after < 0 OR amount < 0)"
                )
                row = await cursor.fetchone()
                assert row == (0,)

        self.run(check())
        # And as the API reports them.
        body = self.post_json({"query": "{ accounts(first: 100) { nodes { id balance } } }"})
        assert "errors" not in body, body
        nodes = body["data"]["accounts"]["nodes"]
        assert nodes
        assert all(node["balance"] is not None and node["balance"] >= 0 for node in nodes), nodes


@pytest.fixture
def server(database_url: str) -> Iterator[Server]:
    server = Server(database_url)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + f"... ({len(text)} chars)"


def check_response(response: httpx.Response) -> Any:
    """Below 500, JSON, no stack trace, every GraphQL error coded; the body, decoded."""
    shown = _short(response.text)
    assert response.status_code < 500, shown
    for marker in STACK_TRACE_MARKERS:
        assert marker not in response.text, shown
    try:
        body = json.loads(response.content)
    except ValueError:
        pytest.fail(f"not JSON ({response.status_code}): {shown}")
    for item in body if isinstance(body, list) else [body]:
        assert isinstance(item, dict), shown
        assert "data" in item or "errors" in item, shown
        for error in item.get("errors") or ():
            assert isinstance(error, dict), shown
            assert isinstance(error.get("message"), str), shown
            code = (error.get("extensions") or {}).get("code")
            assert isinstance(code, str), shown
            assert code, shown
            assert code != "INTERNAL_SERVER_ERROR", shown
        _assert_no_negative_money(item.get("data"), shown)
    return body


_MONEY_FIELDS = {"balance", "balanceAfter", "amount", "outgoing", "cashback"}


def _assert_no_negative_money(data: object, shown: str) -> None:
    if isinstance(data, dict):
        for key, value in data.items():
            if key in _MONEY_FIELDS and isinstance(value, int):
                assert value >= 0, shown
            _assert_no_negative_money(value, shown)
    elif isinstance(data, list):
        for value in data:
            _assert_no_negative_money(value, shown)


def run_property(
    server: Server, prop: Callable[..., None], examples: int = 80, **strategies: Any
) -> None:
    """Run `prop` through Hypothesis (`examples` generated ones, or BANK_FUZZ_EXAMPLES),
    then audit the books."""
    test = settings(FUZZ, max_examples=FUZZ_EXAMPLES or examples)(given(**strategies)(prop))
    test()
    server.audit()


# --- values ------------------------------------------------------------------------------

INT_EDGES = [
    0, 1, -1, 2, 99, 100, 101, 1000, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1,
    2**53 - 2, 2**53 - 1, 2**53, 2**53 + 1, -(2**53), 2**63 - 1, 2**63, -(2**63),
    2**64 - 1, 2**64, -(2**64), 10**30, -(10**30),
]  # fmt: skip

NASTY_TEXT = [
    "", " ", "\x00", "a\x00b", "alice\x00", "\t\n\r", "\x1b[31m", "\u202egnp.exe", "\u200b",
    "\ufeffalice", "مرحبا", "שלום", "😀", "👨\u200d👩\u200d👧", "a" * 64, "a" * 65, "b" * 5000,
    "alice ", " alice", "ALICE", "alice\n", "\uff21lice", "a.b:c@d-e_f", "-alice", "_a", ".",
    "../../etc/passwd", "'; DROP TABLE entries; --", "%s%s%n", "{}", "\\", '"', "null",
    "payment1", "9007199254740992", "NaN", "\U0010ffff", "\ud7ff\ue000",
]  # fmt: skip

# Valid JSON text: no lone surrogates (those are a body test of their own, below).
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80).filter(
    lambda t: "Traceback" not in t and 'File "' not in t
)
ints = st.one_of(
    st.sampled_from(INT_EDGES),
    st.integers(min_value=1, max_value=5_000),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
)
floats = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, 1.5, 100.0, 1e308, -1e308, 5e-324, 2.0**53, 2.0**64]),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts, st.sampled_from(NASTY_TEXT))
junk_json = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)

account_ids = st.one_of(
    st.sampled_from(ACCOUNTS),
    st.sampled_from(ACCOUNTS),
    st.sampled_from(ACCOUNTS),
    st.sampled_from(NASTY_TEXT),
    texts,
    ints,
    st.none(),
    junk_json,
)
amounts = st.one_of(
    st.integers(min_value=1, max_value=10_000),
    st.integers(min_value=1, max_value=10_000),
    st.sampled_from(INT_EDGES),
    ints,
    floats,
    st.none(),
    texts,
    junk_json,
)
timestamps = st.one_of(
    st.none(),
    st.none(),
    st.none(),
    st.integers(min_value=0, max_value=10**7),
    st.sampled_from(INT_EDGES),
    floats,
    junk_json,
)
idempotency_keys = st.one_of(
    st.none(),
    st.none(),
    st.sampled_from(["k1", "k2", "k3"]),
    st.sampled_from(NASTY_TEXT),
    texts,
    ints,
    junk_json,
)


# --- mutations with generated variables --------------------------------------------------

_COMMON = "timestamp: $ts, idempotencyKey: $key"
_PAYLOAD = "errors { code field message }"

MUTATIONS = {
    "createAccount": (
        "mutation($id: ID!, $ts: Timestamp, $key: String) {"
        f" createAccount(input: {{id: $id, {_COMMON}}})"
        f" {{ account {{ id createdAt }} {_PAYLOAD} }} }}",
        ("id", "ts", "key"),
    ),
    "deposit": (
        "mutation($id: ID!, $amount: Money!, $ts: Timestamp, $key: String) {"
        f" deposit(input: {{accountId: $id, amount: $amount, {_COMMON}}})"
        f" {{ balance entry {{ id amount balanceAfter }} {_PAYLOAD} }} }}",
        ("id", "amount", "ts", "key"),
    ),
    "transfer": (
        "mutation($id: ID!, $to: ID!, $amount: Money!, $ts: Timestamp, $key: String) {"
        f" transfer(input: {{sourceAccountId: $id, targetAccountId: $to, amount: $amount,"
        f" {_COMMON}}}) {{ balance targetAccount {{ balance }} {_PAYLOAD} }} }}",
        ("id", "to", "amount", "ts", "key"),
    ),
    "pay": (
        "mutation($id: ID!, $amount: Money!, $ts: Timestamp, $key: String) {"
        f" pay(input: {{accountId: $id, amount: $amount, {_COMMON}}})"
        f" {{ balance payment {{ id amount cashback status }} {_PAYLOAD} }} }}",
        ("id", "amount", "ts", "key"),
    ),
    "mergeAccounts": (
        "mutation($id: ID!, $to: ID!, $ts: Timestamp, $key: String) {"
        f" mergeAccounts(input: {{accountId: $id, absorbedAccountId: $to, {_COMMON}}})"
        f" {{ balance account {{ id outgoing }} {_PAYLOAD} }} }}",
        ("id", "to", "ts", "key"),
    ),
    "transferBatch": (
        "mutation($items: [TransferInput!]!, $atomic: Boolean!) {"
        " transferBatch(input: {transfers: $items, atomic: $atomic}) {"
        f" results {{ balance {_PAYLOAD} }} {_PAYLOAD} }} }}",
        ("items", "atomic"),
    ),
    # Nullable variables where the schema wants non-null: a validation error, not a crash.
    "loose deposit": (
        "mutation($id: ID, $amount: Money, $ts: Timestamp, $key: String) {"
        f" deposit(input: {{accountId: $id, amount: $amount, {_COMMON}}}) {{ {_PAYLOAD} }} }}",
        ("id", "amount", "ts", "key"),
    ),
}


VALID: dict[str, st.SearchStrategy[Any]] = {
    "id": st.sampled_from(ACCOUNTS),
    "to": st.sampled_from(ACCOUNTS),
    "amount": st.integers(min_value=1, max_value=5_000),
    "ts": st.none(),
    "key": st.none(),
    "atomic": st.booleans(),
}


@st.composite
def transfer_items(draw: st.DrawFn, valid: bool) -> Any:
    if not valid and draw(st.integers(0, 9)) == 0:
        return draw(junk_json)
    fuzzed = FUZZED if not valid else VALID
    item = {
        "sourceAccountId": draw(fuzzed["id"]),
        "targetAccountId": draw(fuzzed["to"]),
        "amount": draw(fuzzed["amount"]),
        "timestamp": draw(fuzzed["ts"]),
        "idempotencyKey": draw(fuzzed["key"]),
    }
    if not valid:
        for key in draw(st.sets(st.sampled_from(sorted(item)), max_size=2)):
            del item[key]
    return item


FUZZED: dict[str, st.SearchStrategy[Any]] = {
    "id": account_ids,
    "to": account_ids,
    "amount": amounts,
    "ts": timestamps,
    "key": idempotency_keys,
    "atomic": st.one_of(st.booleans(), st.booleans(), junk_json),
}
VALID["items"] = st.lists(transfer_items(valid=True), max_size=6)
FUZZED["items"] = st.one_of(st.lists(transfer_items(valid=False), max_size=8), junk_json)


@st.composite
def mutation_requests(draw: st.DrawFn) -> dict[str, Any]:
    """Half the time well-formed but for at most one variable, so some mutations succeed."""
    name = draw(st.sampled_from(sorted(MUTATIONS)))
    document, names = MUTATIONS[name]
    if draw(st.booleans()):
        variables = {n: draw(VALID[n]) for n in names}
        if name == "transfer":
            others = [a for a in ACCOUNTS if a != variables["id"]]
            variables["to"] = draw(st.sampled_from(others))
        if name == "mergeAccounts":  # only spares are absorbed, so the others stay open
            variables["to"] = draw(st.sampled_from(SPARES))
        odd = draw(st.sampled_from((None, *names)))
        if odd is not None:
            variables[odd] = draw(FUZZED[odd])
        return {"query": document, "variables": variables}
    variables = {n: draw(FUZZED[n]) for n in names}
    # Sometimes a variable is left out, or an unknown one comes along.
    for missing in draw(st.sets(st.sampled_from(names), max_size=1)):
        del variables[missing]
    if draw(st.integers(0, 3)) == 0:
        variables[draw(texts)] = draw(junk_json)
    return {"query": document, "variables": variables}


def test_generated_mutation_variables(server: Server) -> None:
    @example(
        request={
            "query": MUTATIONS["deposit"][0],
            "variables": {"id": "alice", "amount": 2**53 - 1, "ts": None, "key": None},
        }
    )
    @example(
        request={
            "query": MUTATIONS["transfer"][0],
            "variables": {"id": "alice", "to": "bob", "amount": 2**64, "ts": 2**63, "key": "\x00"},
        }
    )
    def prop(request: dict[str, Any]) -> None:
        body = server.post_json(request)
        for payload in (body.get("data") or {}).values():
            if payload and payload.get("errors") == [] and payload.get("balance") is not None:
                succeeded.append(request)

    succeeded: list[dict[str, Any]] = []
    run_property(server, prop, request=mutation_requests())
    # Some generated mutations went through, money moved, and still the books balance.
    assert len(succeeded) >= 5, succeeded
    body = server.post_json({"query": "{ topSpenders(first: 10) { accountId outgoing } }"})
    assert any(s["outgoing"] > 0 for s in body["data"]["topSpenders"]), body


# --- generated documents -----------------------------------------------------------------

OBJECT_FIELDS: dict[str, dict[str, tuple[str | None, tuple[str, ...]]]] = {
    # field: (type of its selection, or None for a scalar; arguments it takes)
    "Query": {
        "account": ("Account", ("id",)),
        "accounts": ("connection:Account", ("first", "after")),
        "payment": ("Payment", ("accountId", "id")),
        "topSpenders": ("Spender", ("first",)),
        "__typename": (None, ()),
    },
    "Account": {
        "id": (None, ()),
        "createdAt": (None, ()),
        "outgoing": (None, ()),
        "balance": (None, ("at",)),
        "transactions": (
            "connection:LedgerEntry",
            ("first", "after", "last", "before", "from", "to"),
        ),
        "payments": ("connection:Payment", ("first", "after")),
    },
    "LedgerEntry": dict.fromkeys(
        [
            "id",
            "accountId",
            "timestamp",
            "kind",
            "amount",
            "balanceAfter",
            "counterpartyId",
            "paymentId",
        ],
        (None, ()),
    ),
    "Payment": {
        **dict.fromkeys(
            ["id", "accountId", "timestamp", "amount", "cashback", "cashbackDueAt"], (None, ())
        ),
        "status": (None, ("at",)),
    },
    "Spender": {"accountId": (None, ()), "outgoing": (None, ())},
}

literal_strings = st.one_of(st.sampled_from(ACCOUNTS), st.sampled_from(NASTY_TEXT), texts).map(
    # JSON string syntax is GraphQL string syntax, once non-ASCII is escaped.
    lambda s: json.dumps(s)
)
literal_numbers = st.one_of(
    ints.map(str),
    floats.map(repr).filter(lambda s: "inf" not in s and "nan" not in s),
    st.sampled_from(["9" * 40, "-0", "1e400", "0x10", "1_000", "00", "01"]),
)
literals = st.recursive(
    st.one_of(
        literal_strings,
        literal_numbers,
        st.sampled_from(["null", "true", "false", "DEPOSIT", "$undefined", '""" block """']),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(st.sampled_from(["id", "amount", "x"]), inner), max_size=3).map(
            lambda kvs: "{" + ", ".join(f"{k}: {v}" for k, v in kvs) + "}"
        ),
    ),
    max_leaves=4,
)
page_sizes = st.one_of(st.integers(0, 100).map(str), literals)
instants = st.one_of(st.integers(0, 10**7).map(str), literals)
known_ids = st.one_of(st.sampled_from(ACCOUNTS).map(json.dumps), literals)
ARGUMENT_VALUES = {
    "first": page_sizes,
    "last": page_sizes,
    "at": instants,
    "from": instants,
    "to": instants,
    "id": known_ids,
    "accountId": known_ids,
}
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)


REQUIRED_ARGUMENTS = {"account": ("id",), "payment": ("accountId", "id"), "topSpenders": ("first",)}
WELL_FORMED_VALUES = {
    "first": st.integers(0, 100).map(str),
    "last": st.integers(0, 100).map(str),
    "at": st.integers(0, 10**7).map(str),
    "from": st.integers(0, 10**7).map(str),
    "to": st.integers(0, 10**7).map(str),
    "id": st.sampled_from([*ACCOUNTS, "payment1"]).map(json.dumps),
    "accountId": st.sampled_from(ACCOUNTS).map(json.dumps),
    "after": st.just("null"),
    "before": st.just("null"),
}


@st.composite
def selection(draw: st.DrawFn, type_name: str, depth: int, well_formed: bool) -> str:
    """A selection set on `type_name`; when not `well_formed`, with junk in it."""
    if type_name.startswith("connection:"):
        node = type_name.removeprefix("connection:")
        parts = []
        for part in draw(
            st.lists(st.sampled_from(["nodes", "edges", "pageInfo"]), max_size=3, unique=True)
        ):
            if part == "nodes":
                parts.append("nodes " + draw(selection(node, depth - 1, well_formed)))
            elif part == "edges":
                inner = draw(selection(node, depth - 1, well_formed))
                parts.append("edges { cursor node " + inner + " }")
            else:
                parts.append("pageInfo { hasNextPage hasPreviousPage startCursor endCursor }")
        return "{ " + (" ".join(parts) or "__typename") + " }"
    fields = OBJECT_FIELDS[type_name]
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=4, unique=True))
    if not well_formed:
        chosen += draw(st.lists(st.sampled_from(sorted(fields)), max_size=2))
        if draw(st.integers(0, 4)) == 0:
            chosen.append(draw(st.sampled_from(["password", "__schema", "balance(at: 1) { id }"])))
    parts = []
    for i, field in enumerate(chosen):
        target, arguments = fields.get(field, ("Account", ()))
        if well_formed:
            alias = f"f{i}: "
            required = REQUIRED_ARGUMENTS.get(field, ())
            optional = [a for a in arguments if a not in required]
            picked = (
                [*required, *draw(st.lists(st.sampled_from(optional), unique=True))]
                if (optional)
                else list(required)
            )
            values = WELL_FORMED_VALUES
        else:
            alias = draw(names) + ": " if draw(st.integers(0, 3)) == 0 else ""
            picked = draw(st.lists(st.sampled_from(arguments), unique=True)) if arguments else []
            values = ARGUMENT_VALUES
        args = [f"{argument}: {draw(values.get(argument, literals))}" for argument in picked]
        text = alias + field + (f"({', '.join(args)})" if args else "")
        if target is not None:
            text += " " + (
                draw(selection(target, depth - 1, well_formed)) if depth > 0 else "{ __typename }"
            )
        parts.append(text)
    if draw(st.integers(0, 5)) == 0:
        parts.append("... on " + type_name + " { __typename }")
    return "{ " + " ".join(parts) + " }"


REQUIRED_INPUT = {
    "createAccount": ["id"],
    "deposit": ["accountId", "amount"],
    "pay": ["accountId", "amount"],
    "transfer": ["sourceAccountId", "targetAccountId", "amount"],
    "mergeAccounts": ["accountId", "absorbedAccountId"],
}
INPUT_KEYS = [
    "id", "accountId", "sourceAccountId", "targetAccountId", "absorbedAccountId", "amount",
    "timestamp", "idempotencyKey", "bogus",
]  # fmt: skip


@st.composite
def literal_mutation(draw: st.DrawFn) -> str:
    """A mutation with its input written in the document: well-formed or not."""
    field = draw(st.sampled_from(sorted(REQUIRED_INPUT)))
    if draw(st.booleans()):
        keys = REQUIRED_INPUT[field] + draw(
            st.lists(st.sampled_from(["timestamp", "idempotencyKey"]), max_size=1)
        )
    else:
        keys = draw(st.lists(st.sampled_from(INPUT_KEYS), max_size=5, unique=True))
    pairs = []
    for key in keys:
        if key == "id":
            value = draw(st.one_of(names.map(lambda n: json.dumps("n" + n)), literals))
        elif key.endswith("Id"):
            value = draw(known_ids)
        elif key == "amount":
            value = draw(st.one_of(st.integers(1, 10_000).map(str), literals))
        else:
            value = draw(literals)
        pairs.append(f"{key}: {value}")
    return f"{field}(input: {{{', '.join(pairs)}}}) {{ errors {{ code }} }}"


@st.composite
def documents(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        fields = draw(st.lists(literal_mutation(), min_size=1, max_size=3))
        return "mutation { " + " ".join(f"m{i}: {f}" for i, f in enumerate(fields)) + " }"
    body = draw(selection("Query", draw(st.integers(0, 5)), draw(st.booleans())))
    if kind == 1:
        return "query " + draw(names) + " " + body
    return body


def test_generated_documents(server: Server) -> None:
    def prop(document: str) -> None:
        server.post_json({"query": document})

    run_property(server, prop, document=documents())


# --- size: thousands of aliases, deep nesting --------------------------------------------

ALIASED = {
    "typename": "__typename",
    "read": 'account(id: "alice") { balance }',
    "page": "accounts(first: 100) { nodes { id } }",
    "create": 'createAccount(input: {id: "alias$i"}) { errors { code } }',
    "deposit": 'deposit(input: {accountId: "alice", amount: 1}) { balance errors { code } }',
}


def test_thousands_of_aliases(server: Server) -> None:
    before = server.post_json({"query": '{ account(id: "alice") { balance } }'})

    @example(count=251, field="deposit")
    @example(count=5000, field="create")
    def prop(count: int, field: str) -> None:
        operation = "mutation" if field in {"create", "deposit"} else "query"
        body = " ".join(f"a{i}: {ALIASED[field].replace('$i', str(i))}" for i in range(count))
        answer = server.post_json({"query": f"{operation} {{ {body} }}"})
        if count > 250:
            assert answer.get("data") is None, _short(answer)
            assert answer["errors"], _short(answer)

    run_property(
        server,
        prop,
        examples=40,
        count=st.one_of(st.sampled_from([0, 1, 250, 251, 1000, 3000]), st.integers(0, 6000)),
        field=st.sampled_from(sorted(ALIASED)),
    )
    # No refused request wrote anything: creates over the limit made no account.
    after = server.post_json({"query": "{ accounts(first: 100) { nodes { id } } }"})
    created = [
        n["id"] for n in after["data"]["accounts"]["nodes"] if n["id"] not in ACCOUNTS + SPARES
    ]
    assert all(int(account_id.removeprefix("alias")) < 250 for account_id in created), created
    assert before["data"]["account"]["balance"] >= START_BALANCE


NESTINGS: dict[str, Callable[[int], str]] = {
    "fields": lambda d: "{ " + "a { " * d + "id" + " }" * d + " }",
    "connections": lambda d: (
        "{ "
        + "accounts { nodes { transactions { edges { node { " * d
        + "id"
        + " } } } } }" * d
        + " }"
    ),
    "braces": lambda d: "{" * d + "}" * d,
    "inline fragments": lambda d: "{ " + "... on Query { " * d + "__typename" + " }" * d + " }",
    "lists": lambda d: "{ account(id: " + "[" * d + '"alice"' + "]" * d + ") { id } }",
    "objects": lambda d: "{ account(id: " + "{a: " * d + "1" + "}" * d + ") { id } }",
    "variables": lambda d: "query($v: " + "[" * d + "Int" + "]" * d + ") { __typename }",
}


def test_deeply_nested_documents(server: Server) -> None:
    def prop(depth: int, nesting: str) -> None:
        answer = server.post_json({"query": NESTINGS[nesting](depth)})
        # Selection depth: one level per unit of "fields", five per unit of "connections".
        levels = {"fields": depth, "connections": 5 * depth}.get(nesting, 0)
        if levels > 12:
            assert answer.get("data") is None, _short(answer)

    run_property(
        server,
        prop,
        depth=st.one_of(st.sampled_from([12, 13, 100, 1000, 3000]), st.integers(0, 4000)),
        nesting=st.sampled_from(sorted(NESTINGS)),
    )


# --- batches and junk bodies -------------------------------------------------------------

operations = st.one_of(
    mutation_requests(),
    documents().map(lambda d: {"query": d}),
    junk_json,
)


def test_batches(server: Server) -> None:
    def prop(batch: list[Any]) -> None:
        server.post_json(batch)

    run_property(server, prop, examples=40, batch=st.lists(operations, max_size=4))


CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=utf-16",
    "application/graphql",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "multipart/form-data",
    "",
    "\x00",
]

RAW_BODIES = [
    b"",
    b"{",
    b"null",
    b"[]",
    b"[[]]",
    b'{"query": null}',
    b'{"query": "{ __typename }", "variables": {"x": NaN, "y": Infinity, "z": -Infinity}}',
    b'{"query": "{ __typename }", "variables": {"x": 1e999}}',
    b'{"query": "{ __typename }", "variables": {"x": ' + b"9" * 5000 + b"}}",
    b'{"query": "{ __typename }", "query": "{ accounts { nodes { id } } }"}',
    b'\xef\xbb\xbf{"query": "{ __typename }"}',
    b'{"query": "{ __typename }"}\x00',
    b'\xff\xfe{\x00"\x00q\x00',
]


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.binary(max_size=300))
    if kind == 1:
        return draw(st.sampled_from(RAW_BODIES))
    if kind == 2:
        return json.dumps(draw(junk_json)).encode()
    if kind == 3:  # a request, every non-ASCII character escaped
        request = draw(operations)
        return json.dumps(request, ensure_ascii=True).encode()
    text = draw(texts)
    return text.encode("utf-8", "surrogatepass")


def test_junk_bodies(server: Server) -> None:
    def prop(body: bytes, content_type: str) -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        check_response(server.send(content=body, headers=headers))

    run_property(
        server,
        prop,
        body=raw_bodies(),
        content_type=st.sampled_from(CONTENT_TYPES),
    )


def _nested_json(depth: int, where: str) -> bytes:
    value = b"[" * depth + b"]" * depth
    if where == "top":
        return value
    if where == "variables":
        return b'{"query": "{ __typename }", "variables": {"x": ' + value + b"}}"
    return (
        b'{"query": "{ __typename }", "extensions": '
        + b'{"a": ' * depth
        + b"1"
        + b"}" * (depth + 1)
    )


def test_deeply_nested_json_bodies(server: Server) -> None:
    @example(depth=2_000, where="variables")
    def prop(depth: int, where: str) -> None:
        check_response(
            server.send(
                content=_nested_json(depth, where), headers={"Content-Type": "application/json"}
            )
        )

    run_property(
        server,
        prop,
        depth=st.one_of(st.sampled_from([500, 1023, 1024, 1025, 5000]), st.integers(1, 50_000)),
        where=st.sampled_from(["top", "variables", "extensions"]),
    )


SURROGATE_PLACES: dict[str, Callable[[str], dict[str, Any]]] = {
    "operationName": lambda s: {"query": "query A { __typename }", "operationName": s},
    "id variable": lambda s: {
        "query": "query($id: ID!) { account(id: $id) { id } }",
        "variables": {"id": s},
    },
    "create id": lambda s: {"query": MUTATIONS["createAccount"][0], "variables": {"id": s}},
    "idempotency key": lambda s: {
        "query": MUTATIONS["deposit"][0],
        "variables": {"id": "alice", "amount": 1, "key": s},
    },
    "cursor": lambda s: {
        "query": "query($c: String) { accounts(after: $c) { nodes { id } } }",
        "variables": {"c": s},
    },
    "amount": lambda s: {
        "query": MUTATIONS["deposit"][0],
        "variables": {"id": "alice", "amount": s},
    },
    "variable name": lambda s: {"query": "{ __typename }", "variables": {s: 1}},
    "extensions": lambda s: {"query": "{ __typename }", "extensions": {s: s}},
    "query string": lambda s: {"query": "{ account(id: " + json.dumps(s) + ") { id } }"},
    "query field": lambda s: {"query": "{ " + s + " }"},
}


@pytest.mark.parametrize("place", sorted(SURROGATE_PLACES))
def test_lone_surrogates_in_json_escapes(server: Server, place: str) -> None:
    """JSON may spell a lone surrogate (\\ud800); wherever it lands, the answer is coded."""

    def prop(text: str) -> None:
        body = json.dumps(SURROGATE_PLACES[place](text), ensure_ascii=True).encode()
        check_response(server.send(content=body, headers={"Content-Type": "application/json"}))

    run_property(
        server,
        prop,
        examples=15,
        text=st.one_of(
            st.sampled_from(["\ud800", "a\udfff", "\udc00\ud800", "alice\ud83d"]),
            st.text(st.characters(categories=["Cs", "Ll"]), min_size=1, max_size=5),
        ),
    )
