"""Settings, frozen once at start, read from the environment (the CLI's flags write it).

Every limit carries its unit at the end of its name.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from bank_graphql.api.limits import QueryLimits
from bank_graphql.edge.http_limits import HttpLimits
from bank_graphql.ledger import (
    ClockMode,
    KeyRingLimits,
    LiveLimits,
    PoolLimits,
    ReplicaLimits,
    SweepLimits,
    WriteLimits,
)

BODY_BYTES_MAX_DEFAULT = 1_048_576


@dataclass(frozen=True, slots=True)
class JwtSettings:
    """JWTs from an identity provider; off unless a secret or a public key is given."""

    secret: str | None = None
    """HS256."""
    public_key_pem: str | None = None
    """RS256, ES256 or EdDSA, by the key's type."""
    issuer: str | None = None
    audience: str | None = None
    subject_claim: str = "sub"
    role_claim: str = "role"
    accounts_claim: str = "accounts"

    @property
    def enabled(self) -> bool:
        return self.secret is not None or self.public_key_pem is not None


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    direct_database_url: str | None = None
    """Straight to PostgreSQL when `database_url` is a pooler in transaction mode: the live
    feeds' LISTEN needs a session of its own."""
    read_database_url: str | None = None
    """A streaming replica of the database, for reads of history once it has caught up."""
    replica: ReplicaLimits = field(default_factory=ReplicaLimits)
    clock: ClockMode = ClockMode.SYSTEM
    pool: PoolLimits = field(default_factory=PoolLimits)
    writes: WriteLimits = field(default_factory=WriteLimits)
    sweeper: SweepLimits = field(default_factory=SweepLimits)
    queries: QueryLimits = field(default_factory=QueryLimits)
    body_bytes_max: int = BODY_BYTES_MAX_DEFAULT
    """A request body, and a websocket message."""
    http: HttpLimits = field(default_factory=HttpLimits)
    graphiql: bool = True
    cors_origins: tuple[str, ...] = ()
    """Browser origins allowed to call the API cross-site; none by default."""
    sweeper_enabled: bool = True
    auth: bool = True
    """Access control; off, every request is ADMIN as `anonymous`."""
    jwt: JwtSettings = field(default_factory=JwtSettings)
    key_ring: KeyRingLimits = field(default_factory=KeyRingLimits)
    live: LiveLimits = field(default_factory=LiveLimits)
    trusted_documents: str | None = None
    """A manifest of documents clients may name by id, besides this release's own."""
    trusted_only: bool = False
    """Run only trusted documents, named by id or sent as their exact text."""


def _flag(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def auth_from_env(environ: Mapping[str, str]) -> bool:
    """`BANK_AUTH=off` (or 0, false, no) turns access control off; anything else leaves it on."""
    return environ.get("BANK_AUTH", "on").strip().lower() not in {"0", "off", "false", "no"}


def read_public_key(path: str) -> str:
    """The PEM text of the file at `path`; ValueError saying why when it cannot be read."""
    try:
        with open(path, encoding="ascii") as pem:
            return pem.read(65_536)
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the JWT public key file {path!r}: {exc}") from exc


def jwt_from_env(environ: Mapping[str, str]) -> JwtSettings:
    """BANK_JWT_SECRET, BANK_JWT_PUBLIC_KEY (a file's path), BANK_JWT_ISSUER,
    BANK_JWT_AUDIENCE and BANK_JWT_{SUBJECT,ROLE,ACCOUNTS}_CLAIM."""
    defaults = JwtSettings()
    key_path = environ.get("BANK_JWT_PUBLIC_KEY")
    return JwtSettings(
        secret=environ.get("BANK_JWT_SECRET") or None,
        public_key_pem=read_public_key(key_path) if key_path else None,
        issuer=environ.get("BANK_JWT_ISSUER") or None,
        audience=environ.get("BANK_JWT_AUDIENCE") or None,
        subject_claim=environ.get("BANK_JWT_SUBJECT_CLAIM") or defaults.subject_claim,
        role_claim=environ.get("BANK_JWT_ROLE_CLAIM") or defaults.role_claim,
        accounts_claim=environ.get("BANK_JWT_ACCOUNTS_CLAIM") or defaults.accounts_claim,
    )


def settings_from_env(environ: Mapping[str, str] = os.environ) -> Settings:
    def get(name: str, default: object) -> str:
        return environ.get(name) or str(default)

    def integer(name: str, default: int) -> int:
        value = get(name, default)
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{name}={value!r} is not a whole number") from None

    def number(name: str, default: float) -> float:
        value = get(name, default)
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{name}={value!r} is not a number") from None

    pool, sweeper, queries, http = PoolLimits(), SweepLimits(), QueryLimits(), HttpLimits()
    live = LiveLimits()
    database_url = environ.get("DATABASE_URL")
    if not database_url:
        raise RuntimeError("DATABASE_URL is not set (`bank-graphql serve` sets it for you)")
    return Settings(
        database_url=database_url,
        direct_database_url=environ.get("BANK_DIRECT_DATABASE_URL") or None,
        read_database_url=environ.get("BANK_READ_DATABASE_URL") or None,
        replica=ReplicaLimits(integer("BANK_REPLICA_LAG_MAX_MS", ReplicaLimits().lag_max_ms)),
        clock=ClockMode(get("BANK_CLOCK", ClockMode.SYSTEM.value)),
        pool=PoolLimits(
            min_size=integer("BANK_POOL_MIN_SIZE", pool.min_size),
            max_size=integer("BANK_POOL_MAX_SIZE", pool.max_size),
            pool_timeout_s=number("BANK_POOL_TIMEOUT_S", pool.pool_timeout_s),
            statement_timeout_ms=integer("BANK_STATEMENT_TIMEOUT_MS", pool.statement_timeout_ms),
            lock_timeout_ms=integer("BANK_LOCK_TIMEOUT_MS", pool.lock_timeout_ms),
            transaction_pooler=_flag(get("BANK_PGBOUNCER", "0")),
        ),
        sweeper=SweepLimits(
            batch_max=integer("BANK_SWEEPER_BATCH_MAX", sweeper.batch_max),
            interval_s=number("BANK_SWEEPER_INTERVAL_S", sweeper.interval_s),
            key_retention_days=integer("BANK_KEY_RETENTION_DAYS", sweeper.key_retention_days),
        ),
        queries=QueryLimits(
            depth_max=integer("BANK_QUERY_DEPTH_MAX", queries.depth_max),
            tokens_max=integer("BANK_QUERY_TOKENS_MAX", queries.tokens_max),
            aliases_max=integer("BANK_QUERY_ALIASES_MAX", queries.aliases_max),
            cost_max=integer("BANK_QUERY_COST_MAX", queries.cost_max),
            merge_checks_max=integer("BANK_QUERY_MERGE_CHECKS_MAX", queries.merge_checks_max),
            introspection=_flag(get("BANK_INTROSPECTION", "1")),
        ),
        body_bytes_max=integer("BANK_BODY_BYTES_MAX", BODY_BYTES_MAX_DEFAULT),
        http=HttpLimits(
            header_bytes_max=integer("BANK_HEADER_BYTES_MAX", http.header_bytes_max),
            headers_count_max=integer("BANK_HEADERS_COUNT_MAX", http.headers_count_max),
            url_bytes_max=integer("BANK_URL_BYTES_MAX", http.url_bytes_max),
            header_read_timeout_s=number("BANK_HEADER_READ_TIMEOUT_S", http.header_read_timeout_s),
            body_read_timeout_s=number("BANK_BODY_READ_TIMEOUT_S", http.body_read_timeout_s),
            keep_alive_timeout_s=integer("BANK_KEEP_ALIVE_TIMEOUT_S", http.keep_alive_timeout_s),
            connections_max=integer("BANK_CONNECTIONS_MAX", http.connections_max),
            ws_ping_interval_s=number("BANK_WS_PING_INTERVAL_S", http.ws_ping_interval_s),
            ws_ping_timeout_s=number("BANK_WS_PING_TIMEOUT_S", http.ws_ping_timeout_s),
        ),
        graphiql=_flag(get("BANK_GRAPHIQL", "1")),
        cors_origins=tuple(o.strip() for o in get("BANK_CORS_ORIGINS", "").split(",") if o.strip()),
        auth=auth_from_env(environ),
        jwt=jwt_from_env(environ),
        live=LiveLimits(buffer_max=max(1, integer("BANK_SUBSCRIBER_BUFFER", live.buffer_max))),
        trusted_documents=environ.get("BANK_TRUSTED_DOCUMENTS") or None,
        trusted_only=_flag(get("BANK_TRUSTED_ONLY", "0")),
    )
