"""Settings, frozen once at start, read from the environment (the CLI's flags write it).

Every limit carries its unit at the end of its name.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from bank_graphql.api.limits import QueryLimits
from bank_graphql.ledger import ClockMode, PoolLimits, SweepLimits, WriteLimits

BODY_BYTES_MAX_DEFAULT = 1_048_576


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    clock: ClockMode = ClockMode.SYSTEM
    pool: PoolLimits = field(default_factory=PoolLimits)
    writes: WriteLimits = field(default_factory=WriteLimits)
    sweeper: SweepLimits = field(default_factory=SweepLimits)
    queries: QueryLimits = field(default_factory=QueryLimits)
    body_bytes_max: int = BODY_BYTES_MAX_DEFAULT
    graphiql: bool = True
    cors_origins: tuple[str, ...] = ()
    """Browser origins allowed to call the API cross-site; none by default."""
    sweeper_enabled: bool = True


def _flag(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def settings_from_env(environ: Mapping[str, str] = os.environ) -> Settings:
    def get(name: str, default: object) -> str:
        return environ.get(name) or str(default)

    pool, sweeper, queries = PoolLimits(), SweepLimits(), QueryLimits()
    database_url = environ.get("DATABASE_URL")
    if not database_url:
        raise RuntimeError("DATABASE_URL is not set (`bank-graphql serve` sets it for you)")
    return Settings(
        database_url=database_url,
        clock=ClockMode(get("BANK_CLOCK", ClockMode.SYSTEM.value)),
        pool=PoolLimits(
            min_size=int(get("BANK_POOL_MIN_SIZE", pool.min_size)),
            max_size=int(get("BANK_POOL_MAX_SIZE", pool.max_size)),
            pool_timeout_s=float(get("BANK_POOL_TIMEOUT_S", pool.pool_timeout_s)),
            statement_timeout_ms=int(get("BANK_STATEMENT_TIMEOUT_MS", pool.statement_timeout_ms)),
            lock_timeout_ms=int(get("BANK_LOCK_TIMEOUT_MS", pool.lock_timeout_ms)),
        ),
        sweeper=SweepLimits(
            batch_max=int(get("BANK_SWEEPER_BATCH_MAX", sweeper.batch_max)),
            interval_s=float(get("BANK_SWEEPER_INTERVAL_S", sweeper.interval_s)),
            key_retention_days=int(get("BANK_KEY_RETENTION_DAYS", sweeper.key_retention_days)),
        ),
        queries=QueryLimits(
            depth_max=int(get("BANK_QUERY_DEPTH_MAX", queries.depth_max)),
            tokens_max=int(get("BANK_QUERY_TOKENS_MAX", queries.tokens_max)),
            aliases_max=int(get("BANK_QUERY_ALIASES_MAX", queries.aliases_max)),
            cost_max=int(get("BANK_QUERY_COST_MAX", queries.cost_max)),
            introspection=_flag(get("BANK_INTROSPECTION", "1")),
        ),
        body_bytes_max=int(get("BANK_BODY_BYTES_MAX", BODY_BYTES_MAX_DEFAULT)),
        graphiql=_flag(get("BANK_GRAPHIQL", "1")),
        cors_origins=tuple(o.strip() for o in get("BANK_CORS_ORIGINS", "").split(",") if o.strip()),
    )
