"""The Strawberry schema: types, scalars, and the extensions every request runs through,
whichever transport (HTTP or WebSocket) brought it."""

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from bank_graphql.api.access import AccessCheck
from bank_graphql.api.codes import ErrorCode
from bank_graphql.api.context import Context
from bank_graphql.api.documents import CachedDocuments, DocumentCache
from bank_graphql.api.errors import error_code
from bank_graphql.api.events import EventExecutor
from bank_graphql.api.limits import QueryLimits, limit_extensions
from bank_graphql.api.mutation import Mutation
from bank_graphql.api.query import Query
from bank_graphql.api.scalars import SCALARS
from bank_graphql.api.subscription import Subscription

log = logging.getLogger(__name__)


class EndReadsAfterOperation(SchemaExtension):
    """Give the request's read snapshot (and its connection) back once the operation ends."""

    async def on_operation(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            context = self.execution_context.context
            if isinstance(context, Context):
                await context.end_reads()


class BankSchema(strawberry.Schema):
    def __init__(self, limits: QueryLimits, extensions: Sequence[type[SchemaExtension]]) -> None:
        self.limits = limits
        self.documents = DocumentCache()
        super().__init__(
            query=Query,
            mutation=Mutation,
            subscription=Subscription,
            config=StrawberryConfig(scalar_map=SCALARS),
            execution_context_class=EventExecutor,
            extensions=[
                *limit_extensions(limits),
                lambda: CachedDocuments(self.documents, suggestions=limits.introspection),
                AccessCheck,
                *extensions,
                EndReadsAfterOperation,
            ],
        )

    def _get_custom_context_kwargs(
        self, operation_extensions: dict[str, Any] | None = None, *, sync: bool = False
    ) -> dict[str, Any]:
        # Coercing variables also suggests names ("Did you mean ...?"): those are the
        # schema's, which a server without introspection does not tell.
        kwargs = super()._get_custom_context_kwargs(operation_extensions, sync=sync)
        return {**kwargs, "hide_suggestions": not self.limits.introspection}

    def process_errors(
        self,
        errors: list[GraphQLError],
        execution_context: ExecutionContext | None = None,  # noqa: ARG002 - the base signature
    ) -> None:
        # Client mistakes are the client's business; only unexpected failures are logged,
        # with their stack trace, which never leaves the server.
        for error in errors:
            code = error_code(error)
            if code is ErrorCode.INTERNAL_SERVER_ERROR:
                log.error("unexpected error in %s", error.path, exc_info=error.original_error)
            elif code in {ErrorCode.DATABASE_UNAVAILABLE, ErrorCode.DATABASE_BUSY}:
                log.warning("%s in %s: %s", code.value, error.path, error.original_error)


def build_schema(
    limits: QueryLimits | None = None, extensions: Sequence[type[SchemaExtension]] = ()
) -> BankSchema:
    """The schema; `extensions` (the edge's request log and metrics) run after the limits
    and before the read snapshot ends."""
    return BankSchema(limits or QueryLimits(), extensions)


# The schema as a module attribute, for `strawberry export-schema bank_graphql.api.schema`.
schema = build_schema()
