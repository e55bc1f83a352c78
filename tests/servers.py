"""`bank-graphql serve` as a real process: on a free loopback port, with a clean environment,
its output in a log file, healthy before a test uses it, and stopped with SIGTERM.

The `serve` fixture (tests/conftest.py) starts them and stops whatever a test left running."""

import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

BIN = Path(sys.executable).with_name("bank-graphql")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Server:
    base: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def admin_key(self) -> str:
        """The ADMIN key a first start with access control on printed (`auth=True`)."""
        found = re.findall(r"admin key: (\S+)", self.log.read_text(errors="replace"))
        assert len(found) == 1, f"expected one admin key line: {self.output()}"
        return found[0]

    def output(self) -> str:
        """The end of what the server printed, for failure messages."""
        return self.log.read_text(errors="replace")[-6000:]

    def wait_healthy(self, timeout_s: float) -> None:
        """Wait until /health answers 200; fail at once if the process exits."""
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.process.poll() is None, self.output()
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (
                f"server not healthy after {timeout_s}s: {self.output()}"
            )
            time.sleep(0.1)

    def stop(self, timeout_s: float = 20) -> int:
        """SIGTERM the server (unless it has exited) and wait up to `timeout_s` for it to exit;
        one still running then is killed. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


def launch(
    *args: str,
    log: Path,
    env: dict[str, str] | None = None,
    fd_limit: int | None = None,
    auth: bool = False,
) -> Server:
    """`bank-graphql serve --host 127.0.0.1 --port <free> *args`, without DATABASE_URL or any
    BANK_* variable of the test's own environment (only those in `env`); `fd_limit` caps the
    process's open files (soft and hard). Without `auth`, with `--no-auth`: these servers are
    for HTTP, faults and websockets, not access control."""
    port = free_port()
    if not auth:
        args = ("--no-auth", *args)
    clean = {
        k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("BANK_")
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN), "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**clean, **(env or {})},
            preexec_fn=None if fd_limit is None else _limit_files(fd_limit),
        )
    return Server(f"http://127.0.0.1:{port}", port, process, log)


def _limit_files(fd_limit: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    return limit


Serve = Callable[..., Server]
"""The `serve` fixture: `serve(*args, env=None, healthy_s=60, fd_limit=None, auth=False)` ->
a healthy Server."""


@contextmanager
def running(*args: str, log: Path, healthy_s: float = 60, auth: bool = False) -> Iterator[Server]:
    """A server launched with `args`, healthy, for the block; stopped after it."""
    server = launch(*args, log=log, auth=auth)
    try:
        server.wait_healthy(healthy_s)
        yield server
    finally:
        server.stop()


def serve_refusal(args: list[str], folder: Path) -> str:
    """What `bank-graphql serve --no-auth *args` says as it refuses to start: one line, and
    exit status 2."""
    done = subprocess.run(
        [str(BIN), "serve", "--no-auth", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=folder,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    return done.stderr
