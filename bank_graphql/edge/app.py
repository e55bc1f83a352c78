"""The Starlette application: routes, middleware, and a lifespan that owns the pool, the
background sweeper and the live feeds."""

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from bank_graphql.api.codes import ErrorCode
from bank_graphql.api.schema import build_schema
from bank_graphql.api.trusted import TrustedDocuments, load_manifest, own_documents
from bank_graphql.edge import metrics
from bank_graphql.edge.auth import (
    Authenticator,
    authorization_header,
    forbidden_metrics_response,
    unauthenticated_response,
)
from bank_graphql.edge.graphql_view import GraphQLEndpoint
from bank_graphql.edge.http_errors import error_response
from bank_graphql.edge.http_limits import BodySizeLimit
from bank_graphql.edge.logs import configure_logging
from bank_graphql.edge.media_types import response_media_type
from bank_graphql.edge.observability import record_operation
from bank_graphql.edge.playground import playground_routes
from bank_graphql.edge.settings import Settings, settings_from_env
from bank_graphql.ledger import (
    KeyRing,
    Ledger,
    LiveFeed,
    Operation,
    Replica,
    Sweeper,
    open_pool,
)

log = logging.getLogger(__name__)


async def health(request: Request) -> JSONResponse:
    ledger: Ledger = request.app.state.ledger
    if await ledger.ping():
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "unavailable"}, status_code=503)


async def prometheus_metrics(request: Request) -> Response:
    authenticator: Authenticator = request.app.state.authenticator
    principal = await authenticator.principal(authorization_header(request.headers))
    if principal is None:
        return unauthenticated_response(request.method, response_media_type(request.headers))
    if not principal.may(Operation.METRICS):
        return forbidden_metrics_response(request.method, response_media_type(request.headers))
    stats = request.app.state.ledger.pool.get_stats()
    metrics.POOL_CONNECTIONS.set(stats.get("pool_size", 0))
    metrics.POOL_AVAILABLE.set(stats.get("pool_available", 0))
    metrics.POOL_WAITING.set(stats.get("requests_waiting", 0))
    metrics.SWEEPER_LAG.set(request.app.state.sweeper.lag_ms / 1000)
    metrics.SUBSCRIPTIONS_OPEN.set(request.app.state.ledger.live.subscribers)
    metrics.SUBSCRIPTIONS_ENDED_TOO_SLOW.set(request.app.state.ledger.live.ended_too_slow)
    replica = request.app.state.ledger.replica
    if replica is not None:
        metrics.REPLICA_READS.set(replica.reads)
        metrics.REPLICA_FALLBACKS.set(replica.fallbacks)
    documents = request.app.state.schema.documents
    metrics.DOCUMENTS_PARSED.set(documents.parsed)
    metrics.DOCUMENTS_VALIDATED.set(documents.validated)
    metrics.DOCUMENTS_CACHED.set(len(documents))
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def http_error(request: Request, exc: Exception) -> Response:
    """Routing's own refusals (no such path, a method the route lacks) as coded JSON."""
    assert isinstance(exc, HTTPException)
    routing_codes = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}
    code = routing_codes.get(exc.status_code, ErrorCode.BAD_REQUEST)
    response = error_response(
        exc.status_code,
        code,
        exc.detail,
        method=request.method,
        media_type=response_media_type(request.headers),
    )
    response.headers.update(exc.headers or {})
    return response


async def websocket_not_found(websocket: WebSocket) -> None:
    """A websocket to a path with none: the coded 404 an HTTP request gets, where a bare
    close would answer 403 with no body."""
    response = error_response(404, ErrorCode.NOT_FOUND, "Not Found", method="GET")
    await websocket.send_denial_response(response)


def trusted_documents(settings: Settings) -> TrustedDocuments:
    """This release's own documents, and the operator's manifest if there is one."""
    documents = own_documents()
    if settings.trusted_documents:
        documents.update(load_manifest(Path(settings.trusted_documents)))
    return TrustedDocuments(documents, only=settings.trusted_only)


def _middleware(settings: Settings) -> list[Middleware]:
    """What every HTTP request passes through: the body limit, and CORS when configured."""
    middleware = [
        Middleware(
            BodySizeLimit,
            body_bytes_max=settings.body_bytes_max,
            body_read_timeout_s=settings.http.body_read_timeout_s,
        )
    ]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["content-type", "authorization"],
            )
        )
    return middleware


async def _open_replica(settings: Settings) -> Replica | None:
    if settings.read_database_url is None:
        return None
    # A replica may stop answering altogether: its statements are timed here too. It is
    # reached straight, not through a pooler.
    limits = replace(settings.pool, answer_timeout=True, transaction_pooler=False)
    return Replica(await open_pool(settings.read_database_url, limits), settings.replica)


async def _close_pools(ledger: Ledger) -> None:
    try:
        if ledger.replica is not None:
            await ledger.replica.pool.close()
    finally:
        await ledger.pool.close()


def create_app(settings: Settings) -> "GraphQLFirst":
    endpoint = GraphQLEndpoint(
        build_schema(settings.queries, record_operation, trusted_documents(settings)),
        graphql_ide="graphiql" if settings.graphiql else None,
        allowed_origins=settings.cors_origins,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await open_pool(settings.database_url, settings.pool)
        sweeper = Sweeper(pool, settings.clock, settings.sweeper)
        live = LiveFeed(pool, settings.direct_database_url or settings.database_url, settings.live)
        try:
            replica = await _open_replica(settings)
        except BaseException:
            await pool.close()
            raise
        ledger = Ledger(pool, settings.clock, settings.writes, settings.sweeper, live, replica)
        app.state.ledger = ledger
        app.state.sweeper = sweeper
        app.state.schema = endpoint.bank_schema
        key_ring = KeyRing(pool, settings.key_ring) if settings.auth else None
        try:
            app.state.authenticator = Authenticator(settings, key_ring)
            if key_ring is not None:
                await key_ring.start()
            await live.start()
        except BaseException:
            if key_ring is not None:
                await key_ring.stop()
            await _close_pools(ledger)
            raise
        if settings.sweeper_enabled:
            sweeper.start()
        try:
            yield
        finally:
            await sweeper.stop()
            await live.stop()
            if key_ring is not None:
                await key_ring.stop()
            await _close_pools(ledger)

    middleware = _middleware(settings)
    app = Starlette(
        routes=[
            # HTTP requests to /graphql never get here: GraphQLFirst sends them straight
            # to the endpoint.
            WebSocketRoute("/graphql", endpoint),
            *playground_routes(settings.graphiql),
            Route("/health", health),
            Route("/metrics", prometheus_metrics),
            WebSocketRoute("/{path:path}", websocket_not_found),
        ],
        middleware=middleware,
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    # No redirect from /graphql/ to /graphql: its Location would be built from the Host header.
    app.router.redirect_slashes = False
    graphql: ASGIApp = endpoint
    for layer in reversed(middleware):
        graphql = layer.cls(graphql, *layer.args, **layer.kwargs)
    return GraphQLFirst(app, graphql)


class GraphQLFirst:
    """GraphQL requests over HTTP go straight to the endpoint, through the same middleware
    (body limit, CORS) but not Starlette's error and routing layers, which cost each request
    more than its access check; everything else is Starlette's."""

    def __init__(self, app: Starlette, graphql: ASGIApp) -> None:
        self.app = app
        self.graphql = graphql
        self.state = app.state
        self.router = app.router
        self.routes = app.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/graphql":
            scope["app"] = self.app
            await self.graphql(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def app_from_env() -> "GraphQLFirst":
    """Factory for uvicorn workers: `bank-graphql serve` passes its settings in the env."""
    configure_logging(os.environ.get("BANK_LOG_LEVEL", "info"))
    app = create_app(settings_from_env())
    _settle_heap()
    return app


def _settle_heap() -> None:
    """What every request leaves in place (modules, the schema, its types) is set apart from
    the garbage collector's work: measured, it took the tail off latency (p99 at 32 clients
    from 82-88 ms to 56-72 ms). The collector's thresholds stay as they are: rarer young
    collections let the cyclic garbage of large refused documents pile up by hundreds of
    MB. The server process only: tests build apps by the hundred."""
    gc.collect()
    gc.freeze()
