"""What `bank-graphql serve` prints as it starts. On a terminal (a pseudo-terminal here): short
log lines, none of the embedded PostgreSQL's setup output, and once the server answers one
banner with its URLs, its database, its clock and the ADMIN key a first start created. Under
a pipe: JSON lines only. Real processes, stopped with SIGTERM."""

import json
import os
import re
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg
import pytest

from bank_graphql.edge.logs import resolve_log_format
from bank_graphql.ops.banner import masked_url
from bank_graphql.ops.cli import main
from tests.conftest import cloned_database
from tests.servers import BIN, free_port

ANSI = re.compile(r"\x1b|\\u001b")
BANNER = re.compile(r"\n  bank-graphql \S+ is ready\n(?:.*\n)*?  Ctrl-C stops the server\.\n")
SETUP_CHATTER = ("initdb", "pg_ctl", "Running commandline", "You can now start", "XDG_RUNTIME_DIR")
TYPENAME = {"query": "{ __typename }"}


def _environment() -> dict[str, str]:
    """The test's environment without the server's variables, nor a runtime folder (as in a
    root shell or a container)."""
    return {
        **{
            k: v
            for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "XDG_RUNTIME_DIR"} and not k.startswith("BANK_")
        },
        "TERM": "xterm-256color",
    }


class Terminal:
    """`bank-graphql serve` with a pseudo-terminal as its stdin, stdout and stderr."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        master, slave = os.openpty()
        self.process = subprocess.Popen(
            [str(BIN), "serve", "--host", "127.0.0.1", "--port", str(self.port), *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=_environment(),
            start_new_session=True,
        )
        os.close(slave)
        self._master = master
        self.seen = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def read_until(self, pattern: re.Pattern[str], timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while not (found := pattern.search(self.seen)):
            assert time.monotonic() < deadline, f"not printed in {timeout_s}s:\n{self.seen}"
            if not self._read(0.5):
                assert self.process.poll() is None, f"exited:\n{self.seen}"
        return found.group(0)

    def _read(self, wait_s: float) -> bool:
        ready, _, _ = select.select([self._master], [], [], wait_s)
        if not ready:
            return False
        try:
            chunk = os.read(self._master, 65536)
        except OSError:  # the other side closed
            return False
        self.seen += chunk.decode(errors="replace").replace("\r\n", "\n")
        return bool(chunk)

    def stop(self) -> int:
        """SIGTERM, then everything it prints until it exits."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while self.process.poll() is None and time.monotonic() < deadline:
            self._read(0.2)
        if self.process.poll() is None:
            self.process.kill()
        code = self.process.wait(timeout=10)
        while self._read(0):
            pass
        os.close(self._master)
        return code


def _stop_postgres_left_in(data_dir: Path) -> None:
    """After a failed test only: fast-stop a PostgreSQL still running on `data_dir`."""
    pid_file = data_dir / "postmaster.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().split()[0])
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        for _ in range(100):
            if not pid_file.exists():
                return
            time.sleep(0.1)


def _works(base: str, key: str) -> bool:
    anonymous = httpx.post(f"{base}/graphql", json=TYPENAME, timeout=10)
    answer = httpx.post(
        f"{base}/graphql", json=TYPENAME, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    return anonymous.status_code == 401 and answer.json() == {"data": {"__typename": "Query"}}


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data folder not under pytest's temporary folders: as root the embedded PostgreSQL
    runs as another user, and another pytest run on this machine closes those folders to
    other users (or deletes older ones) while it still works there."""
    with tempfile.TemporaryDirectory(prefix="bank-graphql-test-banner-") as folder:
        yield Path(folder) / "data"


def test_a_first_embedded_start_on_a_terminal_shows_a_banner_and_no_setup_output(
    data_dir: Path,
) -> None:
    terminal = Terminal("--data-dir", str(data_dir))
    try:
        banner = terminal.read_until(BANNER, timeout_s=120)
        for path in ("/graphql", "/health", "/metrics"):
            assert f"{terminal.base}{path}\n" in banner, banner
        assert re.search(r"GraphiQL +http://\S+/graphql", banner), banner
        assert re.search(rf"data +{re.escape(str(data_dir.resolve()))} ", banner), banner
        assert re.search(r"clock +system", banner), banner
        key = re.findall(r"admin key: (bgk_\S+)", banner)
        assert len(key) == 1, banner
        assert _works(terminal.base, key[0])
    finally:
        code = terminal.stop()
        _stop_postgres_left_in(data_dir)
    output = terminal.seen
    assert code == 0, output
    assert not (data_dir / "postmaster.pid").exists(), "embedded PostgreSQL still running"
    assert output.count("admin key:") == 1, output
    assert len(BANNER.findall(output)) == 1, output
    assert not ANSI.search(output), output
    for chatter in SETUP_CHATTER:
        assert chatter not in output, output
    assert not [line for line in output.splitlines() if line.startswith("{")], output
    if os.geteuid() == 0:
        said = [line for line in output.splitlines() if "as root" in line]
        assert len(said) == 1, output
        assert "system user 'pgserver'" in said[0], said


def _url_with_password(database_url: str, password: str) -> str:
    """The database's URL in URL form, carrying `password`."""
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    user, dbname = quote(str(params.get("user", "postgres"))), quote(str(params["dbname"]))
    host = quote(str(params.get("host", "127.0.0.1")), safe="")
    port = params.get("port", 5432)
    return f"postgresql://{user}:{quote(password)}@/{dbname}?host={host}&port={port}"


def test_a_start_with_a_database_url_on_a_terminal_masks_its_password_and_shows_one_banner(
    server_url: str, template_db: str
) -> None:
    # Under trust authentication any password is accepted; under another, it is the real one.
    secret = str(psycopg.conninfo.conninfo_to_dict(server_url).get("password") or "s3cret-word")
    with cloned_database(server_url, template_db) as database_url:
        url = _url_with_password(database_url, secret)
        terminal = Terminal(
            "--database-url", url, "--workers", "2", "--clock", "client", "--no-graphiql"
        )
        try:
            banner = terminal.read_until(BANNER, timeout_s=90)
            key = re.findall(r"admin key: (bgk_\S+)", banner)
            assert len(key) == 1, banner
            assert _works(terminal.base, key[0])
        finally:
            code = terminal.stop()
    output = terminal.seen
    assert code == 0, output
    assert re.search(r"database +postgresql://\w+:\*\*\*@/", banner), banner
    assert re.search(r"clock +client", banner), banner
    assert re.search(r"workers +2", banner), banner
    assert "GraphiQL" not in banner
    assert secret not in output
    assert len(BANNER.findall(output)) == 1, output  # from the parent, not from each worker
    assert output.count("admin key:") == 1, output
    assert not ANSI.search(output), output
    assert not [line for line in output.splitlines() if line.startswith("{")], output


def test_under_a_pipe_every_log_line_is_json_and_the_key_is_on_stdout(database_url: str) -> None:
    port = free_port()
    process = subprocess.Popen(
        [str(BIN), "serve", "--port", str(port), "--database-url", database_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_environment(),
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert re.search(r"^admin key: bgk_\S+$", stdout, re.MULTILINE), stdout
    assert not ANSI.search(stderr), stderr
    logged = [json.loads(line) for line in stderr.splitlines()]
    assert all(isinstance(line, dict) for line in logged), stderr
    ready = f"GraphQL at http://127.0.0.1:{port}/graphql"
    assert any(line["message"].startswith(ready) for line in logged), stderr
    assert "Application startup complete." in [line["message"] for line in logged]


def test_auto_is_text_on_a_terminal_else_json_and_a_format_asked_for_is_kept(
    tmp_path: Path,
) -> None:
    master, slave = os.openpty()
    with open(slave, "w") as terminal, (tmp_path / "log").open("w") as file:
        assert resolve_log_format("auto", terminal) == "text"
        assert resolve_log_format("auto", file) == "json"
        assert resolve_log_format("json", terminal) == "json"
        assert resolve_log_format("text", file) == "text"
    os.close(master)


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (["--log-format", "xml"], {}, "argument --log-format: must be one of auto, json, text"),
        ([], {"BANK_LOG_FORMAT": "xml"}, "argument --log-format: must be one of auto, json"),
        ([], {"BANK_LOG_LEVEL": "loud"}, "argument --log-level: must be one of critical"),
    ],
)
def test_a_bad_log_format_or_level_is_one_line_and_exit_2(
    args: list[str],
    env: dict[str, str],
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--database-url", "postgresql://127.0.0.1:1/none", *args])
    assert exited.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert said in last
    assert ("loud" if "BANK_LOG_LEVEL" in env else "'xml'") in last


def test_a_conninfo_string_is_shown_with_its_password_masked() -> None:
    shown = masked_url("host=db.example port=5432 dbname=ledger user=bank password=hunter2")
    assert "hunter2" not in shown
    assert "password=***" in shown
    assert (
        masked_url("postgresql://bank@db.example/ledger") == "postgresql://bank@db.example/ledger"
    )
