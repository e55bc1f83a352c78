"""The command line, run as a user would: `bank-graphql serve` with and without a URL."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

BIN = Path(sys.executable).with_name("bank-graphql")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(base: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0].decode()[-3000:]
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server at {base} not healthy after {timeout_s}s")


def _stop(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, output.decode()


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    clean_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.Popen(
        [str(BIN), "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**clean_env, **(env or {})},
    )


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


def test_serve_with_no_url_runs_an_embedded_postgres_and_stops_it(tmp_path: Path) -> None:
    port, data_dir = _free_port(), tmp_path / "data"
    process = _serve("--port", str(port), "--data-dir", str(data_dir))
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, process, timeout_s=90)
        created = httpx.post(
            f"{base}/graphql",
            json={"query": 'mutation { createAccount(input: {id: "first"}) { errors { code } } }'},
        ).json()
        assert created == {"data": {"createAccount": {"errors": []}}}
        page = httpx.get(f"{base}/graphql", headers={"Accept": "text/html"})
        assert "graphiql" in page.text.lower()
    finally:
        code, output = _stop(process)
    assert code == 0, output[-3000:]
    assert str(data_dir.resolve()) in output  # where the data lives is printed at start
    assert not (data_dir / "postmaster.pid").exists(), "embedded PostgreSQL still running"


def test_serve_with_two_workers_on_a_database_url(database_url: str) -> None:
    port = _free_port()
    process = _serve("--port", str(port), "--workers", "2", "--database-url", database_url)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, process, timeout_s=60)
        for i in range(6):
            body = httpx.post(
                f"{base}/graphql",
                json={
                    "query": "mutation($id: ID!) { createAccount(input: {id: $id}) "
                    "{ errors { code } } }",
                    "variables": {"id": f"w{i}"},
                },
            ).json()
            assert body["data"]["createAccount"]["errors"] == []
    finally:
        code, output = _stop(process)
    assert code == 0, output[-3000:]


@pytest.mark.parametrize("clock", ["sundial"])
def test_serve_refuses_an_unknown_clock(clock: str) -> None:
    result = subprocess.run([str(BIN), "serve", "--clock", clock], capture_output=True, text=True)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
