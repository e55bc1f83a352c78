"""The Strawberry schema: types, scalars, and the rules every request runs through, whichever
transport (HTTP or WebSocket) brought it (api/operation.py)."""

import logging
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from bank_graphql.api.codes import ErrorCode
from bank_graphql.api.documents import DocumentCache, DocumentRules
from bank_graphql.api.errors import error_code
from bank_graphql.api.events import EventExecutor
from bank_graphql.api.limits import QueryLimits, validation_rules
from bank_graphql.api.mutation import Mutation
from bank_graphql.api.operation import Execution, Observer, OperationRunner
from bank_graphql.api.operation_rules import OperationRules
from bank_graphql.api.query import Query
from bank_graphql.api.scalars import SCALARS
from bank_graphql.api.subscription import Subscription
from bank_graphql.api.trusted import TrustedDocuments

log = logging.getLogger(__name__)


class BankSchema(strawberry.Schema):
    """The schema, its document cache, and `runner`, the short path of HTTP operations."""

    def __init__(
        self, limits: QueryLimits, observe: Observer | None, trusted: TrustedDocuments
    ) -> None:
        self.limits = limits
        self.documents = DocumentCache()
        self.trusted = trusted
        super().__init__(
            query=Query,
            mutation=Mutation,
            subscription=Subscription,
            config=StrawberryConfig(scalar_map=SCALARS),
            execution_context_class=EventExecutor,
            extensions=[lambda: OperationRules(lambda: self.documents, execution)],
        )
        rules = DocumentRules(
            self._schema, validation_rules(limits), limits.tokens_max, limits.introspection
        )
        execution = Execution(rules, EventExecutor, self.process_errors, observe)
        self.runner = OperationRunner(lambda: self.documents, execution)

    def document_errors(self, text: str) -> list[GraphQLError]:
        """Why `text` could not run here as a document, whoever sends it (none: it can)."""
        try:
            return list(self.documents.prepare(text, self.runner.rules).errors or ())
        except GraphQLError as error:
            return [error]

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
    limits: QueryLimits | None = None,
    observe: Observer | None = None,
    trusted: TrustedDocuments | None = None,
) -> BankSchema:
    """The schema; `observe` (the edge's request log and metrics) hears of every operation;
    `trusted`: the documents a client may name by id (this release's own by default)."""
    return BankSchema(limits or QueryLimits(), observe, trusted or TrustedDocuments())


# The schema as a module attribute, for `strawberry export-schema bank_graphql.api.schema`.
schema = build_schema()
