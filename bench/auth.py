"""The bench's credential: an ADMIN API key made for each cell's database before its server
starts (access control on, the default), or none (`--auth off`: the server runs
`--no-auth`). A server of a commit from before access control takes neither."""

import subprocess
from pathlib import Path

JSON = {"Content-Type": "application/json"}
_token: list[str] = []


def headers() -> dict[str, str]:
    """Headers of every bench request: JSON, and the cell's key when it has one."""
    if not _token:
        return JSON
    return {**JSON, "Authorization": f"Bearer {_token[0]}"}


def use(token: str | None) -> None:
    _token.clear()
    if token:
        _token.append(token)


def supports_auth(cli: Path) -> bool:
    """Does this bank-graphql have access control (a `keys` command)?"""
    done = subprocess.run([str(cli), "keys", "--help"], capture_output=True, timeout=60)
    return done.returncode == 0


def create_admin_key(cli: Path, database_url: str) -> str:
    """A new ADMIN key for the database, migrated first (the CLI prints the key alone on its
    last line)."""
    migrate = [str(cli), "migrate", "--database-url", database_url]
    subprocess.run(migrate, capture_output=True, timeout=120, check=True)
    command = ["keys", "create", "--role", "ADMIN", "--name", "bench"]
    done = subprocess.run(
        [str(cli), *command, "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]
