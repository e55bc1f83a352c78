"""`bank-graphql backup` and `restore`: a restored ledger is the one backed up, whole, auditing
clean and going on, in a new database of a server or in a new embedded data folder (the
server's PostgreSQL and the embedded one of another version); a restore is all or nothing."""

import asyncio
import json
import re
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from bank_graphql.edge.app import create_app
from bank_graphql.edge.settings import Settings
from bank_graphql.ledger import ClockMode, audit_books
from bank_graphql.ops.embedded import EmbeddedPostgres
from bank_graphql.ops.pg_tools import tool
from tests.conftest import QUIET_KEY_RING, GraphQLClient, cloned_database
from tests.operations import DAY_MS, balance, deposit
from tests.test_export import busy_ledger, command, many_entries, run_command

# Filled in by the restore from the server's own transaction numbers: compared on their own.
FEED_TABLES = ("feed", "feed_state")
FRESH_CLUSTER_XID = 2_000
"""Above the transaction numbers of a newly made cluster (a fresh embedded one starts near 750)."""


def contents(url: str) -> dict[str, Any]:
    """Every row of every table of the ledger (the live feed's apart), and every sequence."""
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
        found: dict[str, Any] = {
            name: sorted(
                conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(name))).fetchall(),
                key=repr,
            )
            for (name,) in tables
            if name not in FEED_TABLES
        }
        found["sequences"] = conn.execute(
            "SELECT sequencename, last_value FROM pg_sequences ORDER BY 1"
        ).fetchall()
    assert {"accounts", "entries", "payments", "idempotency_keys"} <= found.keys()
    return found


def feed(url: str) -> list[tuple[int, int]]:
    with psycopg.connect(url) as conn:
        return [
            (int(p), int(e))
            for p, e in conn.execute("SELECT position, entry_id FROM feed ORDER BY position")
        ]


def entry_ids(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [int(i) for (i,) in conn.execute("SELECT id FROM entries ORDER BY id")]


async def check_restored(
    source: dict[str, Any], source_feed: list[tuple[int, int]], url: str
) -> None:
    """Identical to the backup, auditing clean, still append-only, and its feed whole."""
    assert contents(url) == source
    restored_feed = feed(url)
    # What the backup's feed held, then the entries it had not reached yet, in id order.
    assert restored_feed[: len(source_feed)] == source_feed
    assert [e for _, e in restored_feed] == [e for _, e in source_feed] + [
        i for i in entry_ids(url) if i not in {e for _, e in source_feed}
    ]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        assert await audit_books(conn) == []
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            await conn.execute("UPDATE entries SET amount = amount + 1")
        cursor = await conn.execute(
            "SELECT horizon <= pg_snapshot_xmin(pg_current_snapshot()) FROM feed_state"
        )
        assert await cursor.fetchone() == (True,), "the feed counts in this server's numbers"


def _age_cluster(server_url: str) -> None:
    """Transactions until the cluster has lived longer than a new one, as one in production
    has: a restore into a new cluster then starts behind the backup's transaction numbers."""
    xid = 0
    with psycopg.connect(server_url, autocommit=True) as conn:
        while xid < FRESH_CLUSTER_XID:
            row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
            xid = int(row[0]) if row else FRESH_CLUSTER_XID


async def _backed_up_ledger(
    gql: GraphQLClient, server_url: str, database_url: str, backup: Path, capsys: Any
) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    """A ledger with real activity, its live feed sequenced as a server does but for the last
    entry, backed up into `backup`: (the ledger's contents, its feed)."""
    await busy_ledger(gql)
    _age_cluster(server_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT ledger_sequence_feed(5000)")
    assert (await deposit(gql, "bob", 3, ts=5_000 + DAY_MS))["errors"] == []
    status, out, err = await command(
        ["backup", "--database-url", database_url, "--to", str(backup)], capsys
    )
    assert (status, err) == (0, ""), err
    assert out.startswith(f"backup written to {backup} ("), out
    source_feed = feed(database_url)
    assert len(source_feed) < len(entry_ids(database_url)), "an entry not sequenced yet"
    return contents(database_url), source_feed


@asynccontextmanager
async def ledger_app(url: str) -> AsyncIterator[GraphQLClient]:
    """The server's app on `url`, its live feed sequencing as a server's does."""
    settings = Settings(
        database_url=url,
        clock=ClockMode.CLIENT,
        sweeper_enabled=False,
        auth=False,
        key_ring=QUIET_KEY_RING,
    )
    app = create_app(settings)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield GraphQLClient(http)
    finally:
        await lifespan.__aexit__(None, None, None)


async def wait_sequenced(url: str, entry_id: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while entry_id not in {e for _, e in feed(url)}:
        assert time.monotonic() < deadline, f"entry {entry_id} never reached the live feed"
        await asyncio.sleep(0.05)


async def _goes_on_beside_its_server(folder: Path, url: str, again: Path, capsys: Any) -> None:
    """New entries on a restored embedded ledger reach the live feed; export and backup run
    on the data folder of the running server and leave its database up."""
    async with ledger_app(url) as api:
        written = await deposit(api, "bob", 7, ts=6_000 + DAY_MS)
        assert written["errors"] == []
        await wait_sequenced(url, int(written["entry"]["id"]))
        export = ["export", "--data-dir", str(folder), "--account", "bob", "--format", "jsonl"]
        status, out, _ = await command(export, capsys)
        assert status == 0
        assert json.loads(out.splitlines()[-1])["id"] == written["entry"]["id"]
        status, _, _ = await command(
            ["backup", "--data-dir", str(folder), "--to", str(again)], capsys
        )
        assert status == 0
        assert await balance(api, "bob") == written["balance"]
    async with await psycopg.AsyncConnection.connect(url) as conn:
        assert await audit_books(conn) == []


async def test_a_backup_restores_exactly_into_a_new_database_and_a_new_data_folder(
    gql: GraphQLClient, server_url: str, database_url: str, tmp_path: Path, capsys: Any
) -> None:
    backup = tmp_path / "ledger.backup"
    source, source_feed = await _backed_up_ledger(gql, server_url, database_url, backup, capsys)
    with cloned_database(server_url, "template0", prefix="bank_restored") as restored:
        status, out, err = await command(
            ["restore", "--database-url", restored, "--from", str(backup)], capsys
        )
        assert (status, out, err) == (0, f"restored {backup}\n", "")
        await check_restored(source, source_feed, restored)

    # Not under pytest's temporary folders, whose modes another pytest run may reset while
    # PostgreSQL (as a user of its own) works in them.
    with tempfile.TemporaryDirectory(prefix="bank-graphql-test-restore-") as parent:
        folder = Path(parent) / "data"
        embedded = EmbeddedPostgres(folder)  # a new folder: an empty database
        url = embedded.start()
        try:
            restore = ["restore", "--data-dir", str(folder), "--from", str(backup)]
            assert await command(restore, capsys) == (0, f"restored {backup}\n", "")
            await check_restored(source, source_feed, url)
            again = tmp_path / "again.backup"
            await _goes_on_beside_its_server(folder, url, again, capsys)
            # The embedded ledger's own backup, into the server (the other way round).
            with cloned_database(server_url, "template0", prefix="bank_restored") as restored:
                restore = ["restore", "--database-url", restored, "--from", str(again)]
                assert (await command(restore, capsys))[0] == 0
                await check_restored(contents(url), feed(url), restored)
        finally:
            embedded.stop()


def _one_line(status: int, out: str, err: str, command: str) -> str:
    """The refusal's line, once checked to be one line with exit status 2."""
    assert (status, out) == (2, ""), err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"bank-graphql {command}: "), err
    return err


def test_restore_refuses_a_database_that_holds_anything(
    database_url: str, tmp_path: Path, capsys: Any
) -> None:
    backup = tmp_path / "ledger.backup"
    assert (
        run_command(["backup", "--database-url", database_url, "--to", str(backup)], capsys)[0] == 0
    )
    before = contents(database_url)
    restore = ["restore", "--database-url", database_url, "--from", str(backup)]
    said = _one_line(*run_command(restore, capsys), "restore")
    assert "not empty" in said
    assert "a new --data-dir, or a new database" in said
    assert contents(database_url) == before


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("missing.backup", None, "cannot read"),
        ("folder.backup", "a folder", "cannot read"),
        ("empty.backup", b"", "is not a readable backup"),
        ("text.backup", b"SELECT 1;\n" * 100, "is not a readable backup"),
    ],
)
def test_restore_refuses_a_file_that_is_no_backup_and_touches_nothing(
    name: str, content: bytes | str | None, said: str, tmp_path: Path, capsys: Any
) -> None:
    source = tmp_path / name
    if content == "a folder":
        source.mkdir()
    elif isinstance(content, bytes):
        source.write_bytes(content)
    folder = tmp_path / "data"
    restore = ["restore", "--data-dir", str(folder), "--from", str(source)]
    assert said in _one_line(*run_command(restore, capsys), "restore")
    assert not folder.exists(), "no database was made"


def _spoil_rows_of(backup: Path, table: str) -> None:
    """Spoil the start of `table`'s rows in a custom-format archive (its table of contents
    intact): pg_restore fails as it begins them, the tables before them restored whole."""
    listing = subprocess.run(
        [tool("pg_restore"), "--list", str(backup)], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(rf"^(\d+); \d+ \d+ TABLE DATA public {table} ", listing, re.MULTILINE)
    assert found, listing
    damaged = bytearray(backup.read_bytes())
    # A block of rows: its kind (1) and the entry's id, then each piece's length and the
    # compressed bytes. Integers are a sign byte and 4 bytes, least significant first.
    block = damaged.index(b"\x01\x00" + int(found.group(1)).to_bytes(4, "little"))
    compressed = block + 1 + 5 + 5
    damaged[compressed : compressed + 2] = b"\x00\x00"
    backup.write_bytes(bytes(damaged))


def test_a_backup_damaged_inside_restores_nothing(
    server_url: str, database_url: str, tmp_path: Path, capsys: Any
) -> None:
    many_entries(database_url, 100)
    backup = tmp_path / "ledger.backup"
    backed_up = run_command(["backup", "--database-url", database_url, "--to", str(backup)], capsys)
    assert backed_up[0] == 0
    _spoil_rows_of(backup, "entries")  # after the accounts'
    with cloned_database(server_url, "template0", prefix="bank_restored") as restored:
        restore = ["restore", "--database-url", restored, "--from", str(backup)]
        said = _one_line(*run_command(restore, capsys), "restore")
        assert "nothing restored: could not uncompress data" in said
        with psycopg.connect(restored) as conn:
            held = conn.execute(
                "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            ).fetchone()
        assert held == (0,)


def test_backup_refuses_a_folder_that_does_not_exist(database_url: str, capsys: Any) -> None:
    argv = ["backup", "--database-url", database_url, "--to", "/nonexistent/ledger.backup"]
    said = _one_line(*run_command(argv, capsys), "backup")
    assert "cannot write in /nonexistent: No such file or directory" in said


def test_backup_refuses_a_data_folder_that_holds_no_database(tmp_path: Path, capsys: Any) -> None:
    argv = ["backup", "--data-dir", str(tmp_path / "none"), "--to", str(tmp_path / "x.backup")]
    assert "no embedded database in" in _one_line(*run_command(argv, capsys), "backup")
    assert list(tmp_path.iterdir()) == [], "no folder made, no file written"


def test_backup_of_a_database_out_of_reach_is_one_line(tmp_path: Path, capsys: Any) -> None:
    target = tmp_path / "ledger.backup"
    argv = ["backup", "--database-url", "postgresql://127.0.0.1:1/none", "--to", str(target)]
    assert "connection" in _one_line(*run_command(argv, capsys), "backup")
    assert list(tmp_path.iterdir()) == [], "no file, whole or partial"
