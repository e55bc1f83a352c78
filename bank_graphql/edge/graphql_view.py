"""The GraphQL endpoint: Strawberry's ASGI view for WebSocket and the GraphiQL page; GraphQL
requests over HTTP take the short path of edge/graphql_http.py. Errors always carry a code
(formatted by `bank_graphql.api.errors.format_error` on both)."""

from datetime import timedelta
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http.ides import GraphQL_IDE
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from bank_graphql.api.context import Context
from bank_graphql.api.schema import BankSchema
from bank_graphql.edge.auth import NOBODY
from bank_graphql.edge.graphql_http import graphql_over_http
from bank_graphql.edge.graphql_ws import (
    CONNECTION_INIT_TIMEOUT_S,
    OPERATIONS_PER_CONNECTION_MAX,
    TransportWSHandler,
    WebSocketAdapter,
)
from bank_graphql.edge.http_errors import record_disconnect
from bank_graphql.edge.media_types import response_media_type
from bank_graphql.edge.playground import playground_page

PRINCIPAL_SCOPE_KEY = "bank_graphql.principal"
# A GET carrying any of these asks for a document to run, whatever it accepts.
_DOCUMENT_PARAMETERS = {"query", "documentId", "extensions"}


class GraphQLEndpoint(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler
    websocket_adapter_class = WebSocketAdapter

    def __init__(
        self,
        schema: BankSchema,
        graphql_ide: GraphQL_IDE | None = "graphiql",
        allowed_origins: tuple[str, ...] = (),
    ) -> None:
        self.bank_schema = schema
        super().__init__(
            schema,
            graphql_ide=graphql_ide,
            # The legacy `graphql-ws` subprotocol is refused (4406): one protocol to secure.
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            connection_init_wait_timeout=timedelta(seconds=CONNECTION_INIT_TIMEOUT_S),
            max_subscriptions_per_connection=OPERATIONS_PER_CONNECTION_MAX,
            # Browser pages of these origins may open websockets, as CORS lets them post.
            allowed_origins=allowed_origins,
        )

    async def get_context(
        self,
        request: Request | WebSocket,
        response: Any,  # noqa: ARG002 - the base signature
    ) -> Context:
        # A websocket's principal is set when its connection_init is accepted.
        principal = request.scope.get(PRINCIPAL_SCOPE_KEY, NOBODY)
        return Context(ledger=request.app.state.ledger, principal=principal)

    async def render_graphql_ide(self, request: Request) -> Response:  # noqa: ARG002
        return playground_page()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive=receive)
        page_asked = (
            request.method == "GET"
            and not _DOCUMENT_PARAMETERS & request.query_params.keys()
            and self.should_render_graphql_ide(self.request_adapter_class(request))
        )
        if page_asked and self.graphql_ide is not None:
            # The page holds no data: it is served without a credential.
            response = await self.render_graphql_ide(request)
        else:
            media_type = response_media_type(request.headers)
            try:
                response = await graphql_over_http(
                    request, self.bank_schema, media_type, page_asked=page_asked
                )
            except ClientDisconnect:
                record_disconnect(request.method)
                return
        await response(scope, receive, send)
