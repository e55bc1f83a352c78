"""deploy/pgbouncer.sh in front of deploy/replica.sh's primary: it pools in transaction mode,
writes its URL, and `stop` leaves nothing running."""

import os
import subprocess
from pathlib import Path

import psycopg
import pytest

from tests.deploy import DEPLOY, replica_pair
from tests.pgbouncer import pgbouncer_binary

pytestmark = pytest.mark.cluster


def _pgbouncer(action: str, folder: Path, upstream: str) -> None:
    done = subprocess.run(
        ["bash", str(DEPLOY / "pgbouncer.sh"), action, str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "UPSTREAM": upstream},
    )
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
