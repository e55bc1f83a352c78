"""Credentials for the access-control tests: API keys and JWTs of every role, optionally
limited to accounts, and GraphQL callers that send one of them to an in-process app.

Test modules register the fixture by importing it:
`from tests.access_fixtures import access_fixture  # noqa: F401`, then take `access: Access`.

Keys are created before the app starts wherever possible (the app loads its key ring at
start); a key made later is waited for (`Access.credential` polls `viewer` until it works).
"""

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from bank_graphql.ledger import ClockMode, Role
from tests.conftest import GraphQLClient, MakeClient
from tests.db_helpers import table_rows

Db = psycopg.AsyncConnection[Any]

JWT_SECRET = "access-tests: an HS256 secret of well over thirty-two bytes"
KINDS = ("key", "jwt")
"""The two kinds of credential; tests parametrize over them."""

VIEWER = "query { viewer { principal role accounts } }"


@dataclass(frozen=True)
class Credential:
    kind: str
    """"key" or "jwt" ("none": access control off, no credential)."""
    token: str
    principal: str
    """As `viewer.principal` and `LedgerEntry.actor` name it."""
    role: Role
    accounts: tuple[str, ...] | None


class Caller(GraphQLClient):
    """A GraphQL client whose every request carries `credential` (as a per-request header,
    over an httpx client it shares with the other callers of the same app)."""

    def __init__(self, http: httpx.AsyncClient, credential: Credential | None) -> None:
        super().__init__(http)
        self.credential = credential
        self.seen: list[str] = []
        """Every response body this caller got, as text (for leak checks)."""

    def headers(self) -> dict[str, str]:
        if self.credential is None:
            return {}
        return {"authorization": f"Bearer {self.credential.token}"}

    async def response(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        operation_name: str | None = None,
    ) -> httpx.Response:
        body: dict[str, Any] = {"query": query, "variables": variables}
        if operation_name is not None:
            body["operationName"] = operation_name
        response = await self.http.post("/graphql", json=body, headers=self.headers())
        self.seen.append(response.text)
        return response

    async def post(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.response(query, variables)
        assert response.status_code == 200, (response.status_code, response.text)
        body: dict[str, Any] = response.json()
        return body

    async def get(self, path: str) -> httpx.Response:
        response = await self.http.get(path, headers=self.headers())
        self.seen.append(response.text)
        return response


class Access:
    """Issues credentials in the test's database and starts the app they talk to."""

    def __init__(self, db: Db, make_client: MakeClient) -> None:
        self.db = db
        self.make_client = make_client
        self.http: httpx.AsyncClient | None = None
        self._subjects = 0

    async def credential(
        self, kind: str, role: Role, accounts: list[str] | None = None, *, expires_s: int = 3600
    ) -> Credential:
        """A new credential of `kind` ("key" or "jwt") for `role`, limited to `accounts`."""
        scope = None if accounts is None else tuple(accounts)
        if kind == "key":
            from bank_graphql.ledger import create_api_key

            key, token = await create_api_key(
                self.db, role, accounts=accounts, name=f"test {role.value}", expires_in_days=None
            )
            credential = Credential("key", token, f"key:{key.id}", role, scope)
            if self.http is not None:
                await self._wait_until_known(credential)
            return credential
        assert kind == "jwt", kind
        import jwt

        self._subjects += 1
        subject = f"user-{role.value.lower()}-{self._subjects}"
        claims: dict[str, Any] = {
            "sub": subject,
            "role": role.value.lower(),
            "exp": int(time.time()) + expires_s,
        }
        if accounts is not None:
            claims["accounts"] = list(accounts)
        token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
        return Credential("jwt", token, f"jwt:{subject}", role, scope)

    async def start(self, clock: ClockMode = ClockMode.CLIENT, **overrides: Any) -> None:
        """Start the app (access control on, JWTs with JWT_SECRET unless overridden)."""
        from bank_graphql.edge.settings import JwtSettings

        overrides.setdefault("jwt", JwtSettings(secret=JWT_SECRET))
        client = await self.make_client(clock, **overrides)
        self.http = client.http

    def caller(self, credential: Credential | None) -> Caller:
        assert self.http is not None, "start() the app first"
        return Caller(self.http, credential)

    async def _wait_until_known(self, credential: Credential, timeout_s: float = 3.0) -> None:
        """A key made while the app runs is known to it within a moment (its key ring
        reloads); wait for that rather than fail on the first request."""
        caller = self.caller(credential)
        deadline = time.monotonic() + timeout_s
        while True:
            response = await caller.response(VIEWER)
            if response.status_code != 401 or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.05)


@pytest.fixture(name="access")
async def access_fixture(db: Db, make_client: MakeClient) -> Access:
    return Access(db, make_client)


# -- what a test compares -------------------------------------------------------------------

_API_KEYS = (
    "SELECT id, name, role, accounts, hash, created_at, expires_at, revoked_at, revision "
    "FROM api_keys ORDER BY id"
)


async def state(db: Db) -> dict[str, list[tuple[Any, ...]]]:
    """Every row a request could change: tests/db_helpers.TABLES and the API keys (but
    their last-used times, which a request is meant to touch)."""
    rows = await table_rows(db)
    cursor = await db.execute(_API_KEYS)
    rows["api_keys"] = list(await cursor.fetchall())
    return rows


async def changed_tables(db: Db, before: dict[str, list[tuple[Any, ...]]]) -> list[str]:
    after = await state(db)
    return [name for name in before if before[name] != after[name]]


def forbidden_problem(response: httpx.Response) -> str | None:
    """Why `response` is not a whole-request FORBIDDEN refusal (HTTP 200, `data` null or
    absent, every error coded FORBIDDEN), or None when it is one."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    body = response.json()
    codes = [e.get("extensions", {}).get("code") for e in body.get("errors") or []]
    if not codes or set(codes) != {"FORBIDDEN"}:
        return f"error codes {codes}: {json.dumps(body)[:300]}"
    if body.get("data") is not None:
        return f"data is not null: {json.dumps(body)[:300]}"
    return None


def substituted(body: object, replace: dict[str, str]) -> object:
    """`body` with each id in `replace` swapped for its value (to compare an answer about
    one account with the answer about another)."""
    text = json.dumps(body, sort_keys=True)
    for old, new in replace.items():
        text = text.replace(old, new)
    loaded: object = json.loads(text)
    return loaded


def payload(body: dict[str, Any], name: str) -> dict[str, Any]:
    assert "errors" not in body, body["errors"]
    value: dict[str, Any] = body["data"][name]
    return value
