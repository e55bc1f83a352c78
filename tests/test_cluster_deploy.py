"""deploy/pgbouncer.sh in front of deploy/replica.sh's primary: it pools in transaction mode,
writes its URL, and `stop` leaves nothing running. A script's `stop` refuses another script's
DIR, and pgbouncer.sh refuses an upstream that does not answer, quickly."""

import os
import socket
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.deploy import DEPLOY, replica_pair
from tests.pgbouncer import pgbouncer_binary

pytestmark = pytest.mark.cluster


def _deploy(
    script: str, action: str, folder: Path, upstream: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(DEPLOY / script), action, str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "UPSTREAM": upstream},
    )


def _pgbouncer(action: str, folder: Path, upstream: str) -> None:
    done = _deploy("pgbouncer.sh", action, folder, upstream)
    assert done.returncode == 0, done.stdout + done.stderr


def test_pgbouncer_script_pools_the_primary_and_stops(tmp_path: Path) -> None:
    pgbouncer_binary()
    with replica_pair(tmp_path / "replica") as (primary, _):
        folder = tmp_path / "pooler"
        _pgbouncer("start", folder, primary)
        pid = int((folder / "run" / "pgbouncer.pid").read_text())
        try:
            url = (folder / "pgbouncer.url").read_text().strip()
            with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
                row = conn.execute("SELECT current_setting('port')").fetchone()
            assert row is not None
            assert row[0] == primary.rsplit(":", 1)[1].split("/")[0]
        finally:
            _pgbouncer("stop", folder, primary)
        assert not Path(f"/proc/{pid}").exists(), "PgBouncer still runs after stop"
        assert not (folder / "pgbouncer.url").exists()


def test_stop_refuses_another_scripts_dir(tmp_path: Path) -> None:
    folder = tmp_path / "replica"
    with replica_pair(folder) as (primary, standby):
        for script in ("patroni.sh", "pgbouncer.sh"):
            done = _deploy(script, "stop", folder, primary)
            output = done.stdout + done.stderr
            assert done.returncode == 1, output
            assert output.count("\n") == 1, output
            assert "deploy/replica.sh" in output, output
        for url in (primary, standby):
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        assert (folder / "primary.url").exists()


def test_pgbouncer_refuses_an_unreachable_upstream_quickly(tmp_path: Path) -> None:
    pgbouncer_binary()
    # Bound, not listening: connections to it are refused.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        upstream = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        started = time.monotonic()
        done = _deploy("pgbouncer.sh", "start", tmp_path / "pooler", upstream)
        elapsed = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert output.count("\n") == 1, output
    assert f"127.0.0.1:{port}" in output, output
    assert "PgBouncer" not in output, output
    assert elapsed < 10, f"took {elapsed:.1f}s: {output}"
    assert not (tmp_path / "pooler" / "run").exists()
