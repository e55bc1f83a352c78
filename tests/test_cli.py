"""The command line, run as a user would: `bank-graphql serve` with and without a URL."""

import os
import subprocess
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
