"""The scripts of deploy/ for the cluster tests: a primary with a streaming standby, and a
Patroni cluster (etcd and two nodes, one a synchronous standby), each started for a block and
always stopped after it. Debian's packages are installed when missing and this runs as root;
without them the tests that need them skip, unless BANK_REQUIRE_CLUSTER=1, which makes them
fail."""

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.pgbouncer import REQUIRED, _apt_get

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# The programs each script needs, and the Debian package of each.
REPLICA_NEEDS = {str(PG_BIN / "initdb"): "postgresql-15", "psql": "postgresql-client-15"}
PATRONI_NEEDS = {
    **REPLICA_NEEDS,
    "patroni": "patroni",
    "patronictl": "patroni",
    "etcd": "etcd-server",
    "etcdctl": "etcd-client",
}


def _missing(needs: dict[str, str]) -> list[str]:
    return sorted({package for program, package in needs.items() if not shutil.which(program)})


def require(needs: dict[str, str]) -> None:
    """Install the packages of `needs` that are missing (as root); skip, or fail under
    BANK_REQUIRE_CLUSTER=1, when some still are."""
    missing = _missing(needs)
    if missing and os.geteuid() == 0:
        _apt_get("update", "-qq")
        _apt_get("install", "-y", "-qq", *missing)
        missing = _missing(needs)
    if missing:
        message = f"missing Debian packages: {' '.join(missing)}"
        if REQUIRED:
            pytest.fail(f"BANK_REQUIRE_CLUSTER=1 and {message}")
        pytest.skip(message)


def _script(name: str, action: str, folder: Path, timeout_s: float) -> str:
    """Run deploy/`name` `action` `folder`; its output, or a failure with it."""
    done = subprocess.run(
        ["bash", str(DEPLOY / name), action, str(folder)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"deploy/{name} {action} failed:\n{output}{_logs(folder)}"
    return output


def _logs(folder: Path) -> str:
    """The end of each log of `folder`'s services (in `folder`/logs once a script stopped
    them, when their data lived elsewhere)."""
    logs = sorted([*(folder / "logs").glob("*.log"), *(folder / "run").glob("*.log")])
    return "".join(f"\n--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for log in logs)


@contextmanager
def _started(name: str, folder: Path) -> Iterator[None]:
    """deploy/`name` started in `folder` for the block, stopped after it whatever happens
    (a start that failed half-way included)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _script(name, "start", folder, timeout_s=300)
        yield
    finally:
        run = folder / "run"
        if run.is_symlink() or run.exists():
            _script(name, "stop", folder, timeout_s=180)


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def postmaster_pid(data_dir: Path) -> int:
    """The pid of the PostgreSQL running on `data_dir`."""
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


@contextmanager
def replica_pair(folder: Path) -> Iterator[tuple[str, str]]:
    """A primary and its streaming standby (deploy/replica.sh): their URLs."""
    require(REPLICA_NEEDS)
    with _started("replica.sh", folder):
        yield (
            (folder / "primary.url").read_text().strip(),
            (folder / "standby.url").read_text().strip(),
        )


@dataclass(frozen=True)
class Node:
    name: str
    pg_port: int
    rest_port: int


@dataclass(frozen=True)
class PatroniCluster:
    """A cluster of deploy/patroni.sh: `url` reaches whichever node leads."""

    folder: Path
    url: str
    nodes: list[Node]

    @property
    def run(self) -> Path:
        """The folder of the nodes' data, configurations, pids and logs."""
        return (self.folder / "run").resolve()

    def rest(self, node: Node, path: str) -> Any:
        """GET `path` of `node`'s REST API, as JSON."""
        url = f"http://127.0.0.1:{node.rest_port}/{path}"
        with urllib.request.urlopen(url, timeout=2) as answer:
            return json.load(answer)

    def leader(self) -> Node | None:
        """The node the cluster's members name as leader, if any answers."""
        for node in self.nodes:
            try:
                members = self.rest(node, "cluster")["members"]
            except OSError:
                continue
            names = [m["name"] for m in members if m["role"] == "leader"]
            return next((n for n in self.nodes if n.name in names), None)
        return None

    def patroni_pid(self, node: Node) -> int:
        return int((self.run / f"{node.name}.pid").read_text())

    def postmaster_pid(self, node: Node) -> int:
        return postmaster_pid(self.run / node.name)

    def logs(self) -> str:
        """The end of every node's and etcd's log, for failure messages."""
        parts = []
        for log in sorted(self.run.glob("*.log")):
            parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)


@contextmanager
def patroni_cluster(folder: Path) -> Iterator[PatroniCluster]:
    """etcd and two Patroni nodes (deploy/patroni.sh), a leader streaming to a synchronous
    standby, for the block."""
    require(PATRONI_NEEDS)
    with _started("patroni.sh", folder):
        nodes = [
            Node(name, int(pg), int(rest))
            for name, pg, rest in (
                line.split() for line in (folder / "nodes").read_text().splitlines()
            )
        ]
        yield PatroniCluster(folder, (folder / "database.url").read_text().strip(), nodes)
