"""The command line, run as a user would: `bank-graphql serve` with and without a URL."""

import hashlib
import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.servers import BIN, Serve


def test_help_explains_every_option() -> None:
    out = subprocess.run(
        [str(BIN), "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in ["--host", "--port", "--database-url", "--clock", "--workers", "--data-dir"]:
        assert option in out
    assert "DATABASE_URL" in out
    assert "BANK_CLOCK" in out


def test_migrate_applies_the_schema_twice_safely(server_url: str) -> None:
    name = f"bank_cli_{os.getpid()}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(server_url, dbname=name)
    try:
        for _ in range(2):
            subprocess.run([str(BIN), "migrate", "--database-url", url], check=True)
        with psycopg.connect(url) as conn:
            tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables").fetchall()}
        assert {"accounts", "entries", "payments", "idempotency_keys"} <= tables
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_serve_with_no_url_runs_an_embedded_postgres_and_stops_it(
    serve: Serve, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = serve("--data-dir", str(data_dir), healthy_s=90)
    created = httpx.post(
        f"{server.base}/graphql",
        json={"query": 'mutation { createAccount(input: {id: "first"}) { errors { code } } }'},
    ).json()
    assert created == {"data": {"createAccount": {"errors": []}}}
    page = httpx.get(f"{server.base}/graphql", headers={"Accept": "text/html"})
    assert "graphiql" in page.text.lower()
    code = server.stop(timeout_s=30)
    assert code == 0, server.output()
    # Where the data lives is printed at start.
    assert str(data_dir.resolve()) in server.log.read_text(errors="replace")
    assert not (data_dir / "postmaster.pid").exists(), "embedded PostgreSQL still running"


def test_serve_with_two_workers_on_a_database_url(serve: Serve, database_url: str) -> None:
    server = serve("--workers", "2", "--database-url", database_url)
    for i in range(6):
        body = httpx.post(
            f"{server.base}/graphql",
            json={
                "query": "mutation($id: ID!) { createAccount(input: {id: $id}) "
                "{ errors { code } } }",
                "variables": {"id": f"w{i}"},
            },
        ).json()
        assert body["data"]["createAccount"]["errors"] == []
    code = server.stop(timeout_s=30)
    assert code == 0, server.output()


@pytest.mark.parametrize("clock", ["sundial"])
def test_serve_refuses_an_unknown_clock(clock: str) -> None:
    result = subprocess.run([str(BIN), "serve", "--clock", clock], capture_output=True, text=True)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


# --- keys ----------------------------------------------------------------------------------

KEY_SHAPE = re.compile(r"bgk_[a-z0-9]{12}_[0-9a-f]{64}")


def keys(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), "keys", *args], capture_output=True, text=True, timeout=120)


def test_keys_create_list_and_revoke_on_a_database(database_url: str) -> None:
    created = keys(
        "create", "--role", "customer", "--accounts", "b2,a1,b2", "--name", "mobile app",
        "--expires-in-days", "30", "--database-url", database_url,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = created.stdout.splitlines()[-1]
    assert KEY_SHAPE.fullmatch(key), created.stdout
    key_id = key.split("_")[1]
    reader = keys("create", "--role", "READER", "--database-url", database_url)
    reader_key = reader.stdout.splitlines()[-1]
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT hash, accounts FROM api_keys WHERE id = %s", (key_id,))
        digest, accounts = stored.fetchone() or (None, None)
    assert digest == hashlib.sha256(key.encode()).digest()  # only the hash is kept
    assert accounts == ["a1", "b2"]

    listed = keys("list", "--database-url", database_url)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == [
        "ID", "NAME", "ROLE", "SCOPE", "CREATED", "LAST", "USED", "EXPIRES", "REVOKED",
    ]  # fmt: skip
    [row] = [line for line in lines if line.startswith(key_id)]
    assert "mobile app" in row
    assert "CUSTOMER" in row
    assert "a1,b2" in row
    assert key not in listed.stdout
    assert reader_key not in listed.stdout
    assert "all" in next(line for line in lines if line.startswith(reader_key.split("_")[1]))

    revoked = keys("revoke", key_id, "--database-url", database_url)
    assert revoked.returncode == 0, revoked.stderr
    [row] = [line for line in keys("list", "--database-url", database_url).stdout.splitlines()
             if line.startswith(key_id)]  # fmt: skip
    assert row.rstrip().endswith("Z")  # a revocation time
    again = keys("revoke", key_id, "--database-url", database_url)
    assert again.returncode == 0  # revoking twice changes nothing
    unknown = keys("revoke", "zzzzzzzzzzzz", "--database-url", database_url)
    assert unknown.returncode == 1
    assert unknown.stderr.count("\n") == 1, unknown.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["create", "--role", "teller"],
        ["create", "--role", "customer"],
        ["create", "--role", "customer", "--accounts", ","],
        ["create", "--role", "reader", "--accounts", "bad id!"],
        ["create", "--role", "reader", "--expires-in-days", "soon"],
        ["create", "--role", "reader", "--expires-in-days", "0"],
        ["create", "--role", "reader", "--name", "x" * 201],
        ["create", "--role", "reader", "--name", "two\nlines"],
        ["create"],
        ["revoke"],
        ["delete"],
    ],
)
def test_keys_refuse_bad_input_with_one_line(args: list[str], database_url: str) -> None:
    result = keys(*args, "--database-url", database_url)
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone() == (0,)


def test_keys_beside_a_server_on_the_embedded_folder(serve: Serve, tmp_path: Path) -> None:
    data_dir = str(tmp_path / "data")
    server = serve("--data-dir", data_dir, healthy_s=90, auth=True)
    admin = server.admin_key
    created = keys("create", "--role", "operator", "--data-dir", data_dir)
    assert created.returncode == 0, created.stderr
    key = created.stdout.splitlines()[-1]
    listed = keys("list", "--data-dir", data_dir).stdout
    assert "first admin key" in listed
    assert key.split("_")[1] in listed
    # The server's database is still running, and the new key works against it.
    deadline = time.monotonic() + 2
    while True:
        answer = httpx.post(
            f"{server.base}/graphql",
            json={"query": "{ __typename }"},
            headers={"Authorization": f"Bearer {key}"},
        )
        if answer.status_code == 200 or time.monotonic() > deadline:
            break
    assert answer.json() == {"data": {"__typename": "Query"}}
    assert httpx.get(f"{server.base}/health").json() == {"status": "ok"}
    assert admin not in listed
    assert server.stop(timeout_s=30) == 0, server.output()
    assert key not in server.log.read_text()
