"""The Starlette application: routes, and a lifespan that owns the pool and the sweeper."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from bank_graphql.api.schema import build_schema
from bank_graphql.graphql_view import GraphQLEndpoint
from bank_graphql.ledger import Ledger, Sweeper, open_pool
from bank_graphql.settings import Settings, settings_from_env

log = logging.getLogger(__name__)


async def health(request: Request) -> JSONResponse:
    ledger: Ledger = request.app.state.ledger
    if await ledger.ping():
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "unavailable"}, status_code=503)


def create_app(settings: Settings) -> Starlette:
    endpoint = GraphQLEndpoint(
        build_schema(), graphql_ide="graphiql" if settings.graphiql else None
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await open_pool(settings.database_url, settings.pool)
        ledger = Ledger(pool, settings.clock, settings.writes, settings.sweeper)
        sweeper = Sweeper(pool, settings.clock, settings.sweeper)
        if settings.sweeper_enabled:
            sweeper.start()
        app.state.ledger = ledger
        try:
            yield
        finally:
            await sweeper.stop()
            await pool.close()

    return Starlette(
        routes=[
            # Route, not Mount: a Mount would redirect /graphql to /graphql/.
            Route("/graphql", endpoint),
            WebSocketRoute("/graphql", endpoint),
            Route("/health", health),
        ],
        lifespan=lifespan,
    )


def app_from_env() -> Starlette:
    """Factory for uvicorn workers: `bank-graphql serve` passes its settings in the env."""
    return create_app(settings_from_env())
