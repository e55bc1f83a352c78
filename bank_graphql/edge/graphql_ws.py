"""GraphQL over WebSocket (`graphql-transport-ws` only) through the same schema as HTTP:
the same limits, error codes, masking, log line and metrics per operation.

A frame the protocol does not allow (not text, not a JSON object, a wrong or missing
field) closes the socket with 4400 and a short reason. Bounds on what one connection may
spend: `OPERATIONS_PER_CONNECTION_MAX` operations at once, `connection_init` within
`CONNECTION_INIT_TIMEOUT_S`, ids up to `OPERATION_ID_CHARS_MAX` characters; a frame's
size is bounded by the server's WebSocket message limit.
"""

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing, suppress
from typing import Any, cast

from graphql import GraphQLError
from starlette.websockets import WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import (
    NonJsonMessageReceived,
    NonTextMessageReceived,
    WebSocketDisconnected,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    Message,
    SubscribeMessage,
)
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError

from bank_graphql.api.codes import ErrorCode
from bank_graphql.api.context import Context
from bank_graphql.api.errors import ApiError
from bank_graphql.api.schema import BankSchema
from bank_graphql.edge.auth import Authenticator, Credential, authorization_of
from bank_graphql.edge.http_errors import dump_json, load_json, record_refusal
from bank_graphql.edge.ws_messages import (
    coded_error,
    ends_live,
    error_message,
    next_message,
    protocol_error,
)

log = logging.getLogger(__name__)

OPERATIONS_PER_CONNECTION_MAX = 10
CONNECTION_INIT_TIMEOUT_S = 10
CREDENTIAL_CHECK_INTERVAL_S = 0.25
"""How often an open connection's credential is checked again (revocation, expiry)."""

# Close codes of the protocol, as error codes in the request log and the error metric.
_CLOSE_CODES = {
    4400: ErrorCode.BAD_REQUEST,
    4401: ErrorCode.UNAUTHORIZED,
    4403: ErrorCode.FORBIDDEN,
    4406: ErrorCode.SUBPROTOCOL_NOT_ACCEPTABLE,
    4408: ErrorCode.CONNECTION_INIT_TIMEOUT,
    4409: ErrorCode.OPERATION_ID_IN_USE,
    4429: ErrorCode.TOO_MANY_INITIALISATION_REQUESTS,
}


class WebSocketAdapter(ASGIWebSocketAdapter):
    """Frames in: text frames holding JSON. Frames out: JSON in text frames."""

    async def iter_json(
        self,
        *,
        ignore_parsing_errors: bool = False,  # noqa: ARG002 - the base signature
    ) -> AsyncGenerator[object, None]:
        while self.ws.application_state != WebSocketState.DISCONNECTED:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                raise NonTextMessageReceived
            try:
                yield load_json(text)
            except ValueError as exc:
                raise NonJsonMessageReceived from exc

    async def send_json(self, message: Mapping[str, object]) -> None:
        if WebSocketState.DISCONNECTED in (self.ws.application_state, self.ws.client_state):
            raise WebSocketDisconnected
        try:
            await self.ws.send_text(dump_json(message).decode())
        except (WebSocketDisconnect, RuntimeError) as exc:  # closed meanwhile
            raise WebSocketDisconnected from exc

    async def close(self, code: int, reason: str) -> None:
        record_refusal(_CLOSE_CODES.get(code, ErrorCode.BAD_REQUEST), close_code=code)
        # A close frame carries at most 123 bytes of reason.
        reason = reason.encode()[:123].decode(errors="ignore")
        with suppress(RuntimeError):  # already closed
            await self.ws.close(code=code, reason=reason)


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """Each operation gets a context of its own (its own read snapshot), runs through the
    schema like an HTTP request, and its errors go through `format_error`.

    Queries and mutations run to the end, as over HTTP: a client's `complete`, or its
    leaving, only stops their results from being sent.
    """

    context: Context

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.running: set[asyncio.Task[None]] = set()
        self.cancelled: set[asyncio.Task[None]] = set()
        """Running tasks already cancelled: they end at once and hold no slot."""
        self.contexts: dict[str, Context] = {}
        self.credential: Credential | None = None
        self._watch: asyncio.Task[None] | None = None

    @property
    def authenticator(self) -> Authenticator:
        websocket = cast(WebSocketAdapter, self.websocket).ws
        authenticator: Authenticator = websocket.app.state.authenticator
        return authenticator

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        """The credential is in the payload's `Authorization`; none valid: close 4403."""
        if not self.connection_init_received and not self.connection_timed_out:
            payload = message.get("payload") or {}
            credential = await self.authenticator.credential(authorization_of(payload))
            if credential is None:
                self.connection_init_received = True
                if self.connection_init_timeout_task:
                    self.connection_init_timeout_task.cancel()
                await self.websocket.close(code=4403, reason="Forbidden")
                return
            self.credential = credential
            self.context = Context(ledger=self.context.ledger, principal=credential.principal)
            if credential.token is not None:
                self._watch = asyncio.create_task(self._watch_credential(credential))
        await super().handle_connection_init(message)

    async def _watch_credential(self, credential: Credential) -> None:
        """Close the connection (4403) once its credential is revoked or expires."""
        while True:
            await asyncio.sleep(CREDENTIAL_CHECK_INTERVAL_S)
            if not self.authenticator.still_valid(credential):
                await self.websocket.close(code=4403, reason="Forbidden")
                return

    async def handle_message(self, message: Message) -> None:
        problem = protocol_error(message)
        if problem is not None:
            await self.handle_invalid_message(problem)
            return
        if message["type"] == "connection_init" and message.get("payload") is None:
            message = {"type": "connection_init", "payload": {}}
        await super().handle_message(message)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if not self.connection_acknowledged:
            await self.websocket.close(code=4401, reason="Unauthorized")
            return
        if self.credential is None or not self.authenticator.still_valid(self.credential):
            await self.websocket.close(code=4403, reason="Forbidden")
            return
        if message["id"] in self.operations:
            await self.websocket.close(code=4409, reason="an operation with this id is running")
            return
        payload = message["payload"]
        query, refusal = self._query_or_refusal(payload)
        operation = Operation(
            self, message["id"], query, payload.get("variables"), payload.get("operationName")
        )
        if refusal is not None:
            await self.send_message(error_message(operation.id, [refusal]))
            return
        self.operations[operation.id] = operation
        operation.task = asyncio.create_task(self.run_operation(operation))
        self.running.add(operation.task)
        operation.task.add_done_callback(self.running.discard)
        operation.task.add_done_callback(self.cancelled.discard)

    def _query_or_refusal(self, payload: Mapping[str, Any]) -> tuple[str, GraphQLError | None]:
        """The text an operation runs, or why it may not start."""
        try:
            # A document sent by id, and in trusted-only mode a text, as over HTTP: judged
            # before anything parses it.
            query = cast(BankSchema, self.schema).trusted.text(
                payload.get("query"), payload.get("documentId"), payload.get("extensions")
            )
        except ApiError as refused:
            return "", refused.as_graphql_error()
        if not query:  # as HTTP words it
            return "", coded_error(ErrorCode.BAD_REQUEST, "No GraphQL query found in the request")
        if len(self.running - self.cancelled) >= OPERATIONS_PER_CONNECTION_MAX:
            message = (
                f"at most {OPERATIONS_PER_CONNECTION_MAX} operations run at once on one "
                "connection: wait for one to complete"
            )
            return query, coded_error(ErrorCode.TOO_MANY_OPERATIONS, message)
        return query, None

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        context = Context(
            ledger=self.context.ledger, principal=self.context.principal, streaming=True
        )
        self.contexts[operation.id] = context
        try:
            source = await self.schema.stream(
                operation.query,
                variable_values=operation.variables,
                context_value=context,
                operation_name=operation.operation_name,
            )
            # Read the stream to its end, whether or not the client still listens, so that
            # the schema's extensions (the request log line) close as they do over HTTP.
            final: Message | None = cast(Message, {"id": operation.id, "type": "complete"})
            async with aclosing(source):
                async for result in source:
                    if isinstance(result, PreExecutionError) or ends_live(context, result):
                        # `error` ends the operation: no `complete` follows it.
                        errors = cast(ExecutionResult, result).errors
                        await self._send(operation, error_message(operation.id, errors))
                        final = None
                    else:  # incremental delivery (@defer, @stream) is not enabled
                        message = next_message(operation.id, cast(ExecutionResult, result))
                        await self._send(operation, message)
            if final is not None:
                await self._send(operation, final)
        except Exception:
            log.exception("unexpected error in a websocket operation")
            error = coded_error(ErrorCode.INTERNAL_SERVER_ERROR, "unexpected error")
            await self._send(operation, error_message(operation.id, [error]))
        finally:
            self.contexts.pop(operation.id, None)

    async def _send(self, operation: Operation[Context, None], message: Message) -> None:
        try:
            await operation.send_operation_message(message)
        except WebSocketDisconnected:
            operation.completed = True  # the client has gone: nothing more to send it

    async def cleanup_operation(self, operation_id: str) -> None:
        operation = self.operations.pop(operation_id, None)
        if operation is not None:
            operation.completed = True  # send nothing more; the id is free again
            self._end_if_live(operation)

    def _end_if_live(self, operation: Operation[Context, None]) -> None:
        """A subscription never ends by itself: stop it (its generators' `finally` runs).
        An operation not started yet is not started at all; one whose subscription has not
        begun ends as soon as it does."""
        context = self.contexts.get(operation.id)
        if operation.task is None:
            return
        if context is None or context.live:
            operation.task.cancel()
            self.cancelled.add(operation.task)
        else:
            context.ended = True

    async def shutdown(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with suppress(asyncio.CancelledError):
                await self._watch
        await super().shutdown()  # cleanup_operation for each: subscriptions are cancelled
        for task in list(self.running):
            with suppress(Exception, asyncio.CancelledError):
                await task
