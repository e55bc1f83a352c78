"""Settings, frozen once at start, read from the environment (the CLI's flags write it).

Every limit carries its unit at the end of its name.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from bank_graphql.ledger import ClockMode, PoolLimits, SweepLimits, WriteLimits


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    clock: ClockMode = ClockMode.SYSTEM
    pool: PoolLimits = field(default_factory=PoolLimits)
    writes: WriteLimits = field(default_factory=WriteLimits)
    sweeper: SweepLimits = field(default_factory=SweepLimits)
    graphiql: bool = True
    sweeper_enabled: bool = True


def _flag(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def settings_from_env(environ: Mapping[str, str] = os.environ) -> Settings:
    def get(name: str, default: object) -> str:
        return environ.get(name) or str(default)

    pool, sweeper = PoolLimits(), SweepLimits()
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
        graphiql=_flag(get("BANK_GRAPHIQL", "1")),
    )
