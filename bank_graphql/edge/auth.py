"""Who is asking: the credential of a request (`Authorization: Bearer <token>`, an API key
or a JWT) as a `Principal`, and the one answer given when there is none.

Every failure (no header, another scheme, a malformed, unknown, revoked or expired key, a
JWT that does not verify) gets the same 401 and the same words: the answer never tells
whether a key id exists, and never repeats the token.
"""

import time
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.responses import Response

from bank_graphql.api.codes import ErrorCode
from bank_graphql.edge.http_errors import error_response
from bank_graphql.edge.jwt_tokens import LEEWAY_S, JwtVerifier
from bank_graphql.edge.media_types import JSON
from bank_graphql.edge.settings import Settings
from bank_graphql.ledger import ANONYMOUS, KEY_PREFIX, KeyRing, Principal, Role

UNAUTHENTICATED_MESSAGE = (
    "a valid credential is required: send an API key or a JWT as Authorization: Bearer <token>"
)
FORBIDDEN_METRICS_MESSAGE = "this credential may not read the metrics"
AUTHORIZATION_CHARS_MAX = 16_384

NOBODY = Principal("unauthenticated", Role.READER, frozenset())
"""The principal of a context no credential stands behind (the GraphiQL page, a websocket
before `connection_init`): it sees no account and may change nothing."""


@dataclass(frozen=True, slots=True)
class Credential:
    """A credential found valid, kept by a websocket connection to check it again."""

    principal: Principal
    token: str | None
    """None when access control is off."""
    expires_at: float | None = None
    """A JWT's `exp` (seconds since the epoch); an API key's state is the key ring's."""


def authorization_header(headers: Headers) -> str | None:
    """The request's one `Authorization` header; None when it has none or several (a proxy
    and the server must never disagree about who is asking)."""
    values = headers.getlist("authorization")
    return values[0] if len(values) == 1 else None


def bearer_token(authorization: str | None) -> str | None:
    """The token of `Bearer <token>` (the scheme in any case), else None."""
    if authorization is None or len(authorization) > AUTHORIZATION_CHARS_MAX:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    # One word: split() breaks at the same whitespace as str.isspace, tested in C.
    if scheme.lower() != "bearer" or len(token.split()) != 1:
        return None
    return token


def authorization_of(payload: Mapping[str, object]) -> str | None:
    """The `Authorization` entry of a websocket's `connection_init` payload (its name in
    any case)."""
    for name, value in payload.items():
        if name.lower() == "authorization":
            return value if isinstance(value, str) else None
    return None


class Authenticator:
    """API keys through the key ring (no I/O), JWTs through the verifier when configured.
    With access control off every request is `ANONYMOUS`."""

    def __init__(self, settings: Settings, key_ring: KeyRing | None) -> None:
        self.enabled = settings.auth
        self._key_ring = key_ring
        self._jwt = JwtVerifier(settings.jwt) if settings.auth and settings.jwt.enabled else None

    async def principal(self, authorization_header: str | None) -> Principal | None:
        credential = await self.credential(authorization_header)
        return None if credential is None else credential.principal

    async def credential(self, authorization_header: str | None) -> Credential | None:
        if not self.enabled:
            return Credential(ANONYMOUS, None)
        token = bearer_token(authorization_header)
        return None if token is None else await self._token_credential(token)

    def still_valid(self, credential: Credential) -> bool:
        """Is a credential accepted earlier still good (not revoked, not expired)?"""
        if credential.token is None:
            return not self.enabled
        if credential.expires_at is not None:
            return time.time() < credential.expires_at + LEEWAY_S
        if self._key_ring is None:
            return False
        return self._key_ring.lookup(credential.token, touch=False) == credential.principal

    async def _token_credential(self, token: str) -> Credential | None:
        if token.startswith(KEY_PREFIX):
            if self._key_ring is None:
                return None
            principal = await self._key_ring.lookup_fresh(token)
            return None if principal is None else Credential(principal, token)
        if self._jwt is None:
            return None
        verified = self._jwt.verify(token)
        if verified is None:
            return None
        return Credential(verified.principal, token, verified.expires_at)


def unauthenticated_response(method: str, media_type: str = JSON) -> Response:
    response = error_response(
        401,
        ErrorCode.UNAUTHENTICATED,
        UNAUTHENTICATED_MESSAGE,
        method=method,
        media_type=media_type,
    )
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def forbidden_metrics_response(method: str, media_type: str = JSON) -> Response:
    return error_response(
        403, ErrorCode.FORBIDDEN, FORBIDDEN_METRICS_MESSAGE, method=method, media_type=media_type
    )
