"""JWTs from an identity provider, verified with PyJWT.

Keys and algorithms: a shared secret verifies HS256 only; a PEM public key verifies the
one algorithm its type implies (RSA: RS256, EC P-256: ES256, Ed25519/Ed448: EdDSA). The
token's header only chooses between the keys configured, so a public key is never used as
an HMAC secret and `alg: none` matches nothing. `exp` is required; issuer and audience
are checked when configured; clocks may differ by `LEEWAY_S`.
"""

import logging
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from bank_graphql.edge.settings import JwtSettings
from bank_graphql.ledger import Principal, Role, credential_problem, principal_problem

log = logging.getLogger(__name__)

TOKEN_CHARS_MAX = 8192
LEEWAY_S = 30
SUBJECT_CHARS_MAX = 200
PRINCIPAL_PREFIX = "jwt:"

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
SECRET_BYTES_MIN = 32
"""HS256 needs a key at least as long as its hash (RFC 7518, 3.2)."""
PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)


def load_public_key(pem: str) -> tuple[PublicKey, str]:
    """The key of a PEM text and the algorithm it verifies; ValueError when it is not a
    public key of a supported type."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise ValueError("not a PEM public key") from exc
    if isinstance(key, rsa.RSAPublicKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = _EC_ALGORITHMS.get(key.curve.name)
        if algorithm is None:
            raise ValueError(f"unsupported elliptic curve {key.curve.name}")
        return key, algorithm
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key, "EdDSA"
    raise ValueError("unsupported public key type (RSA, EC P-256 or Ed25519 expected)")


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    principal: Principal
    expires_at: float
    """`exp`, seconds since the epoch."""


class JwtVerifier:
    """Turns a JWT into a Principal, or None for any token that is not valid. ValueError
    at construction for a secret too short or a public key not supported."""

    def __init__(self, settings: JwtSettings) -> None:
        self._settings = settings
        self._keys: dict[str, Any] = {}
        if settings.secret is not None:
            if len(settings.secret.encode()) < SECRET_BYTES_MIN:
                raise ValueError(f"the JWT secret must be at least {SECRET_BYTES_MIN} bytes")
            self._keys["HS256"] = settings.secret
        if settings.public_key_pem is not None:
            try:
                key, algorithm = load_public_key(settings.public_key_pem)
            except ValueError as exc:
                raise ValueError(f"the JWT public key: {exc}") from None
            self._keys[algorithm] = key

    def verify(self, token: str) -> VerifiedToken | None:
        if len(token) > TOKEN_CHARS_MAX:
            return None
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            if not isinstance(algorithm, str) or algorithm not in self._keys:
                return None
            key = self._keys[algorithm]
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                options={"require": ["exp"], "verify_aud": self._settings.audience is not None},
                issuer=self._settings.issuer,
                audience=self._settings.audience,
                leeway=LEEWAY_S,
            )
        except jwt.PyJWTError:
            return None
        return self._verified(claims)

    def principal(self, token: str) -> Principal | None:
        verified = self.verify(token)
        return None if verified is None else verified.principal

    def _verified(self, claims: dict[str, Any]) -> VerifiedToken | None:
        settings = self._settings
        subject = claims.get(settings.subject_claim)
        role_name = claims.get(settings.role_claim)
        accounts = claims.get(settings.accounts_claim)
        expires_at = claims.get("exp")
        if not isinstance(subject, str) or not 0 < len(subject) <= SUBJECT_CHARS_MAX:
            return None
        if principal_problem(PRINCIPAL_PREFIX + subject) is not None:
            return None
        # ASCII only: "adm\u0131n".upper() is "ADMIN".
        if not isinstance(role_name, str) or not role_name.isascii():
            return None
        if role_name.upper() not in Role.__members__:
            return None
        if accounts is not None and (
            not isinstance(accounts, list) or not all(isinstance(a, str) for a in accounts)
        ):
            return None
        if not isinstance(expires_at, int | float):
            return None
        role = Role(role_name.upper())
        if credential_problem(role, accounts) is not None:
            return None
        scope = None if accounts is None else frozenset(accounts)
        return VerifiedToken(Principal(PRINCIPAL_PREFIX + subject, role, scope), expires_at)
