"""Prometheus metrics of this process (with --workers N, each worker counts its own)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "bank_graphql_requests",
    "GraphQL operations by type and outcome (ok, refused, error)",
    ["operation_type", "outcome"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "bank_graphql_errors",
    "Errors by code: GraphQL error codes and UserError codes",
    ["code"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "bank_graphql_request_duration_seconds",
    "Time to execute a GraphQL operation",
    ["operation_type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
POOL_CONNECTIONS = Gauge(
    "bank_graphql_pool_connections", "Connections the pool holds", registry=REGISTRY
)
POOL_AVAILABLE = Gauge(
    "bank_graphql_pool_available", "Idle connections in the pool", registry=REGISTRY
)
POOL_WAITING = Gauge(
    "bank_graphql_pool_waiting", "Requests waiting for a connection", registry=REGISTRY
)
SWEEPER_LAG = Gauge(
    "bank_graphql_sweeper_lag_seconds",
    "How long the oldest due cashback had waited when the last sweep began",
    registry=REGISTRY,
)
SUBSCRIPTIONS_OPEN = Gauge(
    "bank_graphql_subscriptions_open",
    "Subscriptions open in this process (live feeds)",
    registry=REGISTRY,
)
SUBSCRIPTIONS_ENDED_TOO_SLOW = Gauge(
    "bank_graphql_subscriptions_ended_too_slow",
    "Subscriptions ended since this process started because their reader fell behind",
    registry=REGISTRY,
)
REPLICA_READS = Gauge(
    "bank_graphql_replica_reads",
    "Reads of history the replica served since this process started",
    registry=REGISTRY,
)
REPLICA_FALLBACKS = Gauge(
    "bank_graphql_replica_fallbacks",
    "Reads of history that went to the primary: the replica lagged past its limit or failed",
    registry=REGISTRY,
)
DOCUMENTS_PARSED = Gauge(
    "bank_graphql_documents_parsed",
    "Documents parsed since this process started: a repeated document comes from the cache",
    registry=REGISTRY,
)
DOCUMENTS_VALIDATED = Gauge(
    "bank_graphql_documents_validated",
    "Documents validated since this process started: a repeated one keeps its verdict",
    registry=REGISTRY,
)
DOCUMENTS_CACHED = Gauge(
    "bank_graphql_documents_cached", "Documents in the cache of parsed documents", registry=REGISTRY
)
