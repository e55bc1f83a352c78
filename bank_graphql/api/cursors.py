"""Opaque Relay cursors: base64 of a tagged key. Clients must not build or read them."""

import base64
import binascii
import re

from bank_graphql.api.errors import bad_input


def encode(tag: str, *parts: int | str) -> str:
    raw = ":".join([tag, *map(str, parts)])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(
    tag: str, cursor: str, kinds: tuple[type[int] | type[str], ...]
) -> tuple[int | str, ...]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.urlsafe_b64decode(padded.encode("ascii")).decode()
        found_tag, *parts = raw.split(":", len(kinds))
        if found_tag != tag or len(parts) != len(kinds):
            raise ValueError(raw)
        return tuple(_part(kind, part) for kind, part in zip(kinds, parts, strict=True))
    except (ValueError, UnicodeError, binascii.Error):
        raise bad_input(f"invalid cursor: {cursor[:80]!r}") from None


# Keys are bigint ids and timestamps: plain digits within PostgreSQL's bigint.
_KEY_NUMBER = re.compile(r"[0-9]{1,19}")
_BIGINT_MAX = 2**63 - 1


def _part(kind: type[int] | type[str], text: str) -> int | str:
    if kind is str:
        return text
    if not _KEY_NUMBER.fullmatch(text) or int(text) > _BIGINT_MAX:
        raise ValueError(text)
    return int(text)
