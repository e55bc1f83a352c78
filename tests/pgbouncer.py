"""A real PgBouncer in transaction pooling mode in front of the tests' PostgreSQL, from
Debian's package (installed when missing and this runs as root). Without it the cluster
tests that need it skip, unless BANK_REQUIRE_CLUSTER=1, which makes them fail."""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.servers import free_port

REQUIRED = os.environ.get("BANK_REQUIRE_CLUSTER") == "1"


def _binary() -> str | None:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if found or os.geteuid() != 0:
        return found
    _apt_get("update", "-qq")
    installed = _apt_get("install", "-y", "-qq", "pgbouncer")
    return shutil.which("pgbouncer", path="/usr/sbin") if installed == 0 else None


def _apt_get(*args: str) -> int:
    done = subprocess.run(
        ["apt-get", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600
    )
    return done.returncode


def pgbouncer_binary() -> str:
    binary = _binary()
    if binary is None:
        message = "pgbouncer is absent (apt-get install pgbouncer)"
        if REQUIRED:
            pytest.fail(f"BANK_REQUIRE_CLUSTER=1 and {message}")
        pytest.skip(message)
    return binary


def _config(upstream: str, folder: Path, port: int) -> Path:
    params = psycopg.conninfo.conninfo_to_dict(upstream)
    host, user = params.get("host", "127.0.0.1"), params.get("user", "postgres")
    target = f"host={host} port={params.get('port', 5432)}"
    (folder / "users.txt").write_text(f'"{user}" ""\n')
    ini = folder / "pgbouncer.ini"
    ini.write_text(
        f"[databases]\n* = {target}\n[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        "pool_mode = transaction\nmax_client_conn = 500\ndefault_pool_size = 20\n"
        f"logfile = {folder / 'pgbouncer.log'}\n"
    )
    return ini


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, log.read_text(errors="replace")[-2000:]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, "pgbouncer did not listen within 30 s"
            time.sleep(0.05)


def _run_as(upstream: str) -> str:
    """PgBouncer refuses to run as root: as root it runs as the owner of PostgreSQL's socket
    folder (so that it may reach it), or as nobody over TCP."""
    host = psycopg.conninfo.conninfo_to_dict(upstream).get("host") or ""
    if str(host).startswith("/"):
        return pwd.getpwuid(os.stat(str(host)).st_uid).pw_name
    return "nobody"


@contextmanager
def running_pgbouncer(upstream: str) -> Iterator[int]:
    """PgBouncer on a free loopback port in front of `upstream`'s server; its port."""
    binary = pgbouncer_binary()
    folder = Path(tempfile.mkdtemp(prefix="bank-graphql-pgbouncer-"))
    port = free_port()
    ini = _config(upstream, folder, port)
    command = [binary, str(ini)]
    if os.geteuid() == 0:
        user = _run_as(upstream)
        account = pwd.getpwnam(user)
        for path in (folder, *folder.iterdir()):
            os.chown(path, account.pw_uid, account.pw_gid)
        command = [
            "setpriv",
            f"--reuid={user}",
            f"--regid={account.pw_gid}",
            "--clear-groups",
            *command,
        ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, process, folder / "pgbouncer.log")
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def through(port: int, database_url: str) -> str:
    """`database_url` with PgBouncer at `port` in front."""
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    params.update(host="127.0.0.1", port=str(port))
    return psycopg.conninfo.make_conninfo(**params)
