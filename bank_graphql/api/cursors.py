"""Opaque Relay cursors: base64 of a tagged key. Clients must not build or read them.

A cursor is taken back only when it decodes to a key the server could have given: the tag
of its connection, then an account id, or a timestamp and an id in their ranges. Anything
else is `BAD_USER_INPUT` before any SQL runs (PostgreSQL would refuse a NUL byte in text,
or a number beyond bigint, as an internal error).
"""

import base64
import binascii
import re

from bank_graphql.api.errors import ApiError, bad_input
from bank_graphql.ledger.domain.rules import MAX_TIMESTAMP_MS, is_account_id

# The longest cursor the server gives holds "a:" and a 64-character id: 88 characters.
_CURSOR_LENGTH_MAX = 100
# Row ids are bigint identities (from 1); digits in canonical form, no sign or spaces.
_NUMBER = re.compile(r"0|[1-9][0-9]{0,18}")
_ROW_ID_MAX = 2**63 - 1


def encode(tag: str, *parts: int | str) -> str:
    raw = ":".join([tag, *map(str, parts)])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def account_key(cursor: str) -> tuple[str]:
    (account_id,) = _parts("a", cursor, 1)
    if not is_account_id(account_id):
        raise _invalid(cursor)
    return (account_id,)


def entry_key(cursor: str) -> tuple[int, int]:
    ts, entry_id = _parts("e", cursor, 2)
    return _number(ts, 0, MAX_TIMESTAMP_MS, cursor), _number(entry_id, 1, _ROW_ID_MAX, cursor)


def feed_key(cursor: str) -> int:
    (position,) = _parts("f", cursor, 1)
    return _number(position, 0, _ROW_ID_MAX, cursor)


def payment_key(cursor: str) -> tuple[int]:
    (payment_id,) = _parts("p", cursor, 1)
    return (_number(payment_id, 1, _ROW_ID_MAX, cursor),)


def _parts(tag: str, cursor: str, count: int) -> list[str]:
    if not 0 < len(cursor) <= _CURSOR_LENGTH_MAX:
        raise _invalid(cursor)
    try:
        unpadded = cursor.rstrip("=").encode("ascii")
        raw = base64.b64decode(unpadded + b"=" * (-len(unpadded) % 4), b"-_", validate=True)
        found_tag, *parts = raw.decode("ascii").split(":", count)
    except (ValueError, binascii.Error):  # not ASCII, not base64 or not ASCII inside
        raise _invalid(cursor) from None
    if found_tag != tag or len(parts) != count:
        raise _invalid(cursor)
    return parts


def _number(text: str, low: int, high: int, cursor: str) -> int:
    if not _NUMBER.fullmatch(text) or not low <= int(text) <= high:
        raise _invalid(cursor)
    return int(text)


def _invalid(cursor: str) -> ApiError:
    shown = cursor if len(cursor) <= 40 else cursor[:37] + "..."
    return bad_input(f"invalid cursor: {shown!r}")
