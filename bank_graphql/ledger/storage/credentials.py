"""API keys: issuing, listing and revoking them, and the in-memory ring a server checks.

A key reads `bgk_<id>_<secret>`: a fixed prefix secret scanners can match, a 12-character
id (shown by `keys list`, recorded as the principal `key:<id>`), and 256 random bits as 64
hex digits. The database holds only the SHA-256 of the whole key: keys are high-entropy,
so a fast hash is enough and one lookup costs a hash and a dict access, no I/O.
"""

import hashlib
import re
import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bank_graphql.ledger.domain.access import Principal, Role, credential_problem
from bank_graphql.ledger.storage.database import Conn

KEY_PREFIX = "bgk_"
KEY_ID_CHARS = 12
KEY_NAME_CHARS_MAX = 200
FIRST_ADMIN_KEY_NAME = "first admin key"
_ID_ALPHABET = string.ascii_lowercase + string.digits
_KEY_SHAPE = re.compile(r"bgk_([a-z0-9]{12})_[0-9a-f]{64}")
# Any constant shared by every server of this schema: first starts queue on it.
_FIRST_KEY_LOCK = 0x62676B5F6B657931

_INSERT = """
INSERT INTO api_keys (id, name, role, accounts, hash, expires_at)
VALUES (%s, %s, %s, %s, %s, now() + make_interval(days => %s))
RETURNING id, name, role, accounts, created_at, expires_at, revoked_at, last_used_at
"""

_LIST = """
SELECT id, name, role, accounts, created_at, expires_at, revoked_at, last_used_at
FROM api_keys ORDER BY created_at, id
"""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What is known of a key, never the key nor its hash."""

    id: str
    name: str
    role: Role
    accounts: tuple[str, ...] | None
    """Sorted; None: not limited."""
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    """Written by the servers every few seconds, not on each request (KeyRing)."""

    @property
    def principal_name(self) -> str:
        return principal_name(self.id)


def principal_name(key_id: str) -> str:
    return f"key:{key_id}"


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_id_of(token: str) -> str | None:
    """The id of a token shaped as a key, else None."""
    found = _KEY_SHAPE.fullmatch(token)
    return found.group(1) if found else None


def _new_key() -> tuple[str, str]:
    key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(KEY_ID_CHARS))
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_hex(32)}"


def _api_key(row: tuple[object, ...]) -> ApiKey:
    key_id, name, role, accounts, created, expires, revoked, used = row
    assert isinstance(accounts, list | None)
    return ApiKey(
        id=str(key_id),
        name=str(name),
        role=Role(str(role)),
        accounts=None if accounts is None else tuple(str(a) for a in accounts),
        created_at=created,  # type: ignore[arg-type]
        expires_at=expires,  # type: ignore[arg-type]
        revoked_at=revoked,  # type: ignore[arg-type]
        last_used_at=used,  # type: ignore[arg-type]
    )


def api_key_problem(
    role: Role, accounts: Sequence[str] | None, name: str, expires_in_days: int | None
) -> str | None:
    """Why a key with these properties cannot be issued, or None."""
    if isinstance(accounts, str):
        return "accounts must be a list of account ids"
    problem = credential_problem(role, accounts)
    if problem is not None:
        return problem
    if len(name) > KEY_NAME_CHARS_MAX:
        return f"a key's name has at most {KEY_NAME_CHARS_MAX} characters"
    if not name.isprintable():
        return "a key's name must be printable text (no line breaks or control characters)"
    if expires_in_days is not None and not 1 <= expires_in_days <= 36_500:
        return "expiry must be between 1 and 36500 days"
    return None


async def create_api_key(
    conn: Conn,
    role: Role,
    *,
    accounts: Sequence[str] | None,
    name: str,
    expires_in_days: int | None,
) -> tuple[ApiKey, str]:
    """Issue a key; returns it with the key itself, which is shown once and never stored.
    ValueError (with a sentence saying why) when the key cannot be issued."""
    problem = api_key_problem(role, accounts, name, expires_in_days)
    if problem is not None:
        raise ValueError(problem)
    scope = None if accounts is None else sorted(set(accounts))
    key_id, key = _new_key()
    cursor = await conn.execute(
        _INSERT, (key_id, name, role.value, scope, key_hash(key), expires_in_days)
    )
    row = await cursor.fetchone()
    assert row is not None
    return _api_key(row), key


async def create_first_admin_key(conn: Conn) -> str | None:
    """An ADMIN key when no key exists yet (its key, shown once), else None. Servers
    starting at once queue on a lock: only the first of them creates one."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_FIRST_KEY_LOCK,))
        if await count_api_keys(conn) > 0:
            return None
        _, key = await create_api_key(
            conn, Role.ADMIN, accounts=None, name=FIRST_ADMIN_KEY_NAME, expires_in_days=None
        )
        return key


async def count_api_keys(conn: Conn) -> int:
    """Keys issued, revoked and expired ones included."""
    cursor = await conn.execute("SELECT count(*) FROM api_keys")
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def list_api_keys(conn: Conn) -> list[ApiKey]:
    cursor = await conn.execute(_LIST)
    return [_api_key(row) for row in await cursor.fetchall()]


async def revoke_api_key(conn: Conn, key_id: str) -> bool:
    """Revoke a key (a revoked one keeps its first revocation time); False when no key has
    this id."""
    cursor = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL RETURNING id",
        (key_id,),
    )
    if await cursor.fetchone() is not None:
        return True
    cursor = await conn.execute("SELECT 1 FROM api_keys WHERE id = %s", (key_id,))
    return await cursor.fetchone() is not None


def key_principal(key_id: str, role: Role, accounts: Sequence[str] | None) -> Principal:
    return Principal(
        principal_name(key_id), role, None if accounts is None else frozenset(accounts)
    )
