"""What every bench phase needs: throwaway databases and a server process.

Everything here cleans up after itself: databases are dropped and servers terminated on
every exit path (the caller holds them in `try/finally` or an `ExitStack`).
"""

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from bench import auth

REPO = Path(__file__).resolve().parent.parent
SERVER_START_TIMEOUT_S = 60.0
SERVER_STOP_TIMEOUT_S = 20.0
DATABASE_LIST_MAX = 1000  # one run never creates more databases than this


def with_database(server_url: str, name: str) -> str:
    """The conninfo of database `name` on the server of `server_url`."""
    return psycopg.conninfo.make_conninfo(server_url, dbname=name)


def database_name(conninfo: str) -> str:
    name = psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"]
    assert isinstance(name, str)
    return name


class Databases:
    """Uniquely named databases on one PostgreSQL server; `close()` drops every one left."""

    def __init__(self, server_url: str, run_id: str) -> None:
        self.server_url = server_url
        self._run_id = run_id
        self._names: list[str] = []
        self._counter = itertools.count(1)

    def create(self, label: str) -> str:
        """Create an empty database and return its conninfo."""
        if len(self._names) >= DATABASE_LIST_MAX:
            raise RuntimeError("too many bench databases in one run")
        name = f"bench_{self._run_id}_{next(self._counter)}_{label}"
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self._names.append(name)
        return with_database(self.server_url, name)

    def drop(self, conninfo: str) -> None:
        name = database_name(conninfo)
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        if name in self._names:
            self._names.remove(name)

    def close(self) -> None:
        for name in list(self._names):
            try:
                self.drop(with_database(self.server_url, name))
            except psycopg.Error as exc:  # keep dropping the others
                print(f"bench: could not drop database {name}: {exc}", file=sys.stderr)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """`bank-graphql serve` in its own process group, on loopback, logging to a file."""

    database_url: str
    workers: int
    log_path: Path
    clock: str = "system"
    log_level: str = "warning"
    env: Mapping[str, str] = field(default_factory=dict)
    auth: bool = True
    """Access control on, with an ADMIN key made for the bench (a server from before access
    control runs without)."""
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        """Start the server and wait until GET /health answers 200; returns the base URL."""
        self.port = self.port or free_port()
        command = [
            str(REPO / ".venv" / "bin" / "bank-graphql"),
            "serve",
            "--database-url",
            self.database_url,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--clock",
            self.clock,
            "--no-graphiql",
            # At "info" every request logs a line: by default measure the server without it.
            "--log-level",
            self.log_level,
        ]
        command += self._credential(command[0])
        env = {**os.environ, **self.env}
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"server exited at start:\n{self.log_tail()}")
            if _health_ok(self.base_url):
                return self.base_url
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not healthy in {SERVER_START_TIMEOUT_S} s:\n{self.log_tail()}")

    def _credential(self, cli: str) -> list[str]:
        """Flags for access control, and the key bench requests carry (bench/auth.py)."""
        if not auth.supports_auth(Path(cli)):
            auth.use(None)
            return []
        if not self.auth:
            auth.use(None)
            return ["--no-auth"]
        auth.use(auth.create_admin_key(Path(cli), self.database_url))
        return []

    def pids(self) -> list[int]:
        """The server process and its workers."""
        if self._proc is None or self._proc.poll() is not None:
            return []
        try:
            parent = psutil.Process(self._proc.pid)
            return [parent.pid, *(c.pid for c in parent.children(recursive=True))]
        except psutil.Error:
            return []

    def stop(self) -> None:
        """SIGTERM, wait for a graceful exit, then SIGKILL whatever of its group is left."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                print("bench: server ignored SIGTERM, killing it", file=sys.stderr)
        # The group id is the server's pid (start_new_session): workers left behind die too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def listening_pids(port: int) -> list[int]:
    """A server we did not start: the processes listening on its port, and their children."""
    pids: set[int] = set()
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            on_port = getattr(conn.laddr, "port", None) == port
            if conn.status == psutil.CONN_LISTEN and on_port and conn.pid is not None:
                pids.add(conn.pid)
    for pid in list(pids):
        with contextlib.suppress(psutil.Error):
            pids.update(c.pid for c in psutil.Process(pid).children(recursive=True))
    return sorted(pids)


def _health_ok(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False
