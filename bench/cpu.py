"""CPU accounting: where the machine's cores went during a measured window."""

import contextlib
import os
import threading
import time
from collections.abc import Iterable

import psutil

CPU_POLL_S = 0.2


def _process_tree(root_pids: Iterable[int]) -> set[int]:
    """The processes and all their descendants, as they are now."""
    pids: set[int] = set()
    for pid in root_pids:
        with contextlib.suppress(psutil.Error):
            pids.add(pid)
            pids.update(c.pid for c in psutil.Process(pid).children(recursive=True))
    return pids


def _serves_database(proc: psutil.Process, database: str) -> bool:
    """A PostgreSQL backend connected to `database`.

    Its title is "postgres: [CLUSTER_NAME: ]USER DATABASE HOST(PORT) STATE".
    """
    with contextlib.suppress(psutil.Error):
        title = " ".join(proc.cmdline())
        return title.startswith("postgres:") and database in title.split()[1:]
    return False


def _cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def wait_for_quiet(busy_cores_max: float, wait_s_max: float) -> dict[str, float]:
    """Wait (at most `wait_s_max`) until the machine was busy for under `busy_cores_max` cores
    during one second: on a shared machine, someone else's test run skews a cell badly.
    """
    cpus = os.cpu_count() or 1
    started = time.monotonic()
    busy = cpus * psutil.cpu_percent(interval=1.0) / 100
    while busy > busy_cores_max and time.monotonic() - started < wait_s_max:
        busy = cpus * psutil.cpu_percent(interval=1.0) / 100
    return {"waited_s": round(time.monotonic() - started, 1), "busy_cores_before": round(busy, 2)}


class CpuMeter:
    """Average cores busy per group over a window: the bench, the server, PostgreSQL, tools.

    "server" is the server processes and all their children (user + system time), read right
    at `start()` and right at `stop()`. "postgres" is every `postgres` process on the machine
    (other users' sessions included), polled every CPU_POLL_S so that backends which exit
    inside the window (pgbench's) still count up to their last poll; "postgres_db" the
    part of it spent by the backends of `database`. "tools" are child processes the bench
    waited for (pgbench); "machine" is the whole machine, out of os.cpu_count() cores, and
    "other" what is left of it: other users' processes, the kernel's own work. After
    `stop()`, `seconds` holds the CPU seconds of each group.
    """

    def __init__(self, server_pids: Iterable[int] = (), database: str | None = None) -> None:
        self._server_roots = set(server_pids)
        self._server_pids = _process_tree(self._server_roots)
        self._database = database
        self._database_backends: set[tuple[int, float]] = set()
        self.seconds: dict[str, float] = {}
        self._first: dict[tuple[int, float], tuple[str, float]] = {}
        self._last: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = 0.0
        self._self_s = 0.0
        self._children_s = 0.0
        self._busy_s = 0.0

    def _poll(self, *, first: bool) -> None:
        self._server_pids |= _process_tree(self._server_roots)
        for proc in psutil.process_iter(["name"]):
            if proc.pid in self._server_pids:
                group = "server"
            elif proc.info["name"] == "postgres":
                group = "postgres"
            else:
                continue
            with contextlib.suppress(psutil.Error):
                key = (proc.pid, proc.create_time())
                cpu = _cpu_s(proc)
                if group == "postgres":
                    self._note_backend(proc, key)
                # A process first seen after the start was born inside the window.
                self._first.setdefault(key, (group, cpu if first else 0.0))
                self._last[key] = cpu

    def _note_backend(self, proc: psutil.Process, key: tuple[int, float]) -> None:
        # Checked until seen: a new backend sets its title only once it has authenticated.
        if key in self._database_backends or not self._database:
            return
        if _serves_database(proc, self._database):
            self._database_backends.add(key)

    def _run(self) -> None:
        for _ in range(10_000_000):
            if self._stop.wait(CPU_POLL_S):
                return
            self._poll(first=False)

    def start(self) -> None:
        self._poll(first=True)
        self._self_s = time.process_time()
        children = os.times()
        self._children_s = children.children_user + children.children_system
        self._busy_s = _busy_s()
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._started_at, 1e-9)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._poll(first=False)
        children = os.times()
        used = {
            "bench": time.process_time() - self._self_s,
            "server": 0.0,
            "postgres": 0.0,
            "tools": children.children_user + children.children_system - self._children_s,
            "machine": _busy_s() - self._busy_s,
            "postgres_db": 0.0,
        }
        for key, (group, first_cpu) in self._first.items():
            spent = self._last.get(key, first_cpu) - first_cpu
            used[group] += spent
            if key in self._database_backends:
                used["postgres_db"] += spent
        # Whatever else kept the machine busy: other users' work, the kernel, the poller.
        # (Clamped at 0: the groups are sampled, the machine total is exact.)
        used["other"] = max(
            0.0, used["machine"] - sum(used[g] for g in ("bench", "server", "postgres", "tools"))
        )
        self.seconds = {group: round(seconds, 4) for group, seconds in used.items()}
        return {group: round(seconds / wall, 2) for group, seconds in used.items()}
