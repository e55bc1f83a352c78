"""The rules of api/operation.py for operations Strawberry runs itself (over WebSocket):
one extension, operation hooks only (nothing wraps each field)."""

import time
from collections.abc import AsyncIterator, Callable, Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from bank_graphql.api.context import Context
from bank_graphql.api.documents import DocumentCache, Prepared
from bank_graphql.api.operation import Execution, OperationRecord, request_errors


class OperationRules(SchemaExtension):
    """The document from the cache, the request's checks, its reads ended with it, and one
    record of it for the observer."""

    def __init__(self, documents: Callable[[], DocumentCache], execution: Execution) -> None:
        self._documents = documents
        self._execution = execution
        self._prepared: Prepared | None = None

    async def on_operation(self) -> AsyncIterator[None]:
        context = self.execution_context
        # Strawberry parses on its own only a document the cache refused as not parsing:
        # with the same limit, to the same error.
        context.parse_options["max_tokens"] = self._execution.rules.tokens_max
        started = time.perf_counter()
        try:
            yield
        except GraphQLError as error:
            self._observe(started, [error])
            raise
        finally:
            request = context.context
            if isinstance(request, Context):
                await request.end_reads()
        self._observe(started)

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query:
            try:
                self._prepared = self._documents().prepare(context.query, self._execution.rules)
                context.graphql_document = self._prepared.document
            except GraphQLError:
                pass  # Strawberry parses it and answers with the error
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        request = context.context
        if self._prepared is not None and isinstance(request, Context):
            name = getattr(context, "_provided_operation_name", None)
            context.pre_execution_errors = request_errors(self._prepared, name, request)
            request.history = self._prepared.history
        yield

    def _observe(self, started: float, raised: list[GraphQLError] | None = None) -> None:
        observe = self._execution.observe
        request = self.execution_context.context
        if observe is None or not isinstance(request, Context):
            return
        context = self.execution_context
        result = context.result
        errors = raised or (result.errors if result else None) or context.pre_execution_errors
        errors = errors or []
        try:
            operation_type = context.operation_type.value
        except RuntimeError:  # no operation to speak of
            operation_type = "unknown"
        record = OperationRecord(
            principal=request.principal.name,
            operation_type=operation_type,
            operation_name=context.operation_name,
            errors=list(errors),
            data=result.data if result else None,
            elapsed_s=time.perf_counter() - started,
        )
        observe(record)
