"""Fixtures: a real PostgreSQL, a fresh database per test cloned from a template, an HTTP
client talking to the app through ASGI (the app's lifespan runs for real), and real
`bank-graphql serve` processes."""

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from bank_graphql.edge.app import create_app
from bank_graphql.edge.settings import Settings
from bank_graphql.ledger import (
    ClockMode,
    KeyRingLimits,
    LiveLimits,
    Role,
    audit_books,
    create_api_key,
    migrate,
)
from tests.servers import Serve, Server, launch

TEMPLATE = f"bank_template_{os.getpid()}"


def _with_database(url: str, name: str) -> str:
    return psycopg.conninfo.make_conninfo(url, dbname=name)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A PostgreSQL server: BANK_TEST_DATABASE_URL when set, else an embedded one."""
    url = os.environ.get("BANK_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from bank_graphql.ops.embedded import EmbeddedPostgres

    # Not under pytest's temporary folders: another pytest run on this machine may delete
    # older ones while this session's PostgreSQL still lives there.
    with tempfile.TemporaryDirectory(prefix="bank-graphql-test-pg-") as folder:
        embedded = EmbeddedPostgres(Path(folder) / "data")
        url = embedded.start()
        try:
            yield _with_database(url, "postgres")
        finally:
            embedded.stop()


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    """A database built once from schema.sql; every test clones it."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(TEMPLATE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    migrate(_with_database(server_url, TEMPLATE))
    yield TEMPLATE
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(TEMPLATE)))


@contextmanager
def cloned_database(server_url: str, template: str, prefix: str = "bank_test") -> Iterator[str]:
    """A database of its own, cloned from `template`; dropped afterwards, even while a server
    still holds connections to it."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    try:
        yield _with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def database_url(server_url: str, template_db: str) -> Iterator[str]:
    with cloned_database(server_url, template_db) as url:
        yield url


class GraphQLClient:
    """Posts operations with variables; `ok` insists on no GraphQL errors."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def post(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.http.post("/graphql", json={"query": query, "variables": variables})
        body: dict[str, Any] = response.json()
        return body

    async def ok(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = await self.post(query, variables)
        assert "errors" not in body, body["errors"]
        data: dict[str, Any] = body["data"]
        return data

    async def error_codes(self, query: str, variables: dict[str, Any] | None = None) -> list[str]:
        body = await self.post(query, variables)
        assert body.get("errors"), body
        return [e["extensions"]["code"] for e in body["errors"]]


MakeClient = Callable[..., Awaitable[GraphQLClient]]


async def issue_key(
    database_url: str,
    role: Role = Role.ADMIN,
    accounts: list[str] | None = None,
    *,
    expires_in_days: int | None = None,
) -> str:
    """A new API key in the database at `database_url` (the key itself)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        _, key = await create_api_key(
            conn, role, accounts=accounts, name="tests", expires_in_days=expires_in_days
        )
    return key


QUIET_KEY_RING = KeyRingLimits(poll_interval_s=3600, last_used_write_interval_s=3600)
QUIET_LIVE = LiveLimits(sequence_interval_s=3600, wake_interval_s=3600)


async def admin_headers(database_url: str) -> dict[str, str]:
    """The header of a new ADMIN key, for tests that build the app themselves."""
    return {"Authorization": f"Bearer {await issue_key(database_url)}"}


@pytest.fixture
async def make_client(database_url: str) -> AsyncIterator[MakeClient]:
    """Start the app (its lifespan, pool and all) with the given settings; stop it after.
    Access control is on: the client sends an ADMIN key made for it (`key=` another one,
    `key=None` none). Like the sweeper, the key ring's background work is slowed to a
    crawl (keys are read at start, and again when an unknown key is seen), and so is the
    live feed's sequencing: tests counting round trips see only their own;
    `key_ring=KeyRingLimits()` and `live=LiveLimits()` restore them."""
    stacks: list[Any] = []
    admin_key = await issue_key(database_url)

    async def make(
        clock: ClockMode = ClockMode.CLIENT, key: str | None = admin_key, **overrides: Any
    ) -> GraphQLClient:
        settings = Settings(
            database_url=database_url,
            clock=clock,
            sweeper_enabled=False,
            key_ring=QUIET_KEY_RING,
            live=QUIET_LIVE,
        )
        for name, value in overrides.items():
            settings = _replace(settings, name, value)
        app = create_app(settings)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers
        )
        stacks.append((lifespan, http))
        return GraphQLClient(http)

    yield make
    for lifespan, http in reversed(stacks):
        await http.aclose()
        await lifespan.__aexit__(None, None, None)


def _replace(settings: Settings, key: str, value: Any) -> Settings:
    from dataclasses import replace

    return replace(settings, **{key: value})


@pytest.fixture
async def gql(make_client: MakeClient) -> GraphQLClient:
    """A client of a server on the client clock: tests pick every timestamp themselves."""
    return await make_client(ClockMode.CLIENT)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A direct connection, for looking at what the API wrote and auditing the books."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
async def audit(db: psycopg.AsyncConnection[Any]) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        assert await audit_books(db) == []

    return check


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Start `bank-graphql serve` (tests/servers.py) and wait until it is healthy; after the
    test, SIGTERM every server it started that is still running."""
    started: list[Server] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        healthy_s: float = 60,
        fd_limit: int | None = None,
        auth: bool = False,
    ) -> Server:
        log = tmp_path / f"server-{len(started)}.log"
        server = launch(*args, log=log, env=env, fd_limit=fd_limit, auth=auth)
        started.append(server)
        server.wait_healthy(healthy_s)
        return server

    yield start
    for server in started:
        server.stop()
