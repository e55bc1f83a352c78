"""Idempotency keys: a mutation's key and what it asked for, reduced to a fingerprint.

The database claims the key and replays its stored outcome (`ledger_claim` in the SQL);
here only its shape is checked and its request fingerprinted.
"""

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from bank_graphql.ledger.domain.outcomes import worded
from bank_graphql.ledger.domain.refusals import Refusal, RefusalCode
from bank_graphql.ledger.domain.rules import is_idempotency_key


@dataclass(frozen=True, slots=True)
class KeyedRequest:
    key: str
    operation: str
    fingerprint: str

    @classmethod
    def of(cls, key: str, operation: str, arguments: dict[str, Any]) -> "KeyedRequest":
        canonical = json.dumps([operation, arguments], sort_keys=True, separators=(",", ":"))
        return cls(key, operation, hashlib.sha256(canonical.encode()).hexdigest())


def key_refusal() -> Refusal:
    return Refusal(
        RefusalCode.INVALID_IDEMPOTENCY_KEY,
        "an idempotency key is 1 to 128 printable characters",
        ("idempotencyKey",),
    )


def reuse_refusal(key: KeyedRequest) -> Refusal:
    return worded(RefusalCode.IDEMPOTENCY_KEY_REUSED, "idempotencyKey", key=key.key)


def keyed_request(
    key: str | None, operation: str, **arguments: object
) -> KeyedRequest | Refusal | None:
    """The request's key, None without one, or a refusal of a malformed key."""
    if key is None:
        return None
    if not is_idempotency_key(key):
        return key_refusal()
    return KeyedRequest.of(key, operation, arguments)
