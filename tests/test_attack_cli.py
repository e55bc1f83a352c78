"""A database URL that cannot be parsed or reached: every command says so in one line and
exits 2, never a traceback; for `audit`, never its status 1, which says the books do not
balance."""

import os
import subprocess

import pytest

from tests.servers import BIN


@pytest.mark.parametrize(
    ("command", "url", "said"),
    [
        ("audit", "postgresql://postgres@127.0.0.1:9/bank", "connection failed"),
        ("audit", "not a url", 'missing "=" after "not"'),
        ("migrate", "postgresql://postgres@127.0.0.1:9/bank", "connection failed"),
    ],
)
def test_a_database_that_cannot_be_used_is_refused_in_one_line(
    command: str, url: str, said: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(
        [str(BIN), command, "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"bank-graphql {command}: ")
    assert said in result.stderr
