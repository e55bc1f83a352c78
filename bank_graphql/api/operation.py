"""One GraphQL operation, from its text to its result: the rules every request meets, and the
short path HTTP requests take through them.

The rules live here once: the document from the cache (parse, validation and the limits
in it), the choice of operation, subscriptions only over a socket, and the access check.
HTTP runs them straight, then graphql-core's executor; WebSocket operations run them
through `OperationRules`, Strawberry's extension (api/operation_rules.py). Either way the
request's reads end with the operation, and one record of it goes to the observer.
"""

import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard, cast

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    execute,
)
from strawberry.exceptions import MissingQueryError
from strawberry.execution import optimized_is_awaitable
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType as StrawberryOperationType

from bank_graphql.api.codes import ErrorCode
from bank_graphql.api.context import Context
from bank_graphql.api.documents import DocumentCache, DocumentRules, Prepared


@dataclass(frozen=True, slots=True)
class OperationRecord:
    """What an observer learns of one operation: never its variables or inputs."""

    principal: str | None
    operation_type: str  # "query", "mutation", "subscription" or "unknown"
    operation_name: str | None
    errors: list[GraphQLError]
    data: object
    elapsed_s: float


Observer = Callable[[OperationRecord], None]

# A GraphQL request's fields, whichever transport brings it, and the JSON each must be when
# given (null is as if it were absent).
_REQUEST_FIELDS = (
    ("query", str, "a string"),
    ("documentId", str, "a string"),
    ("variables", dict, "an object"),
    ("extensions", dict, "an object"),
    ("operationName", str, "a string"),
)


def misshapen_field(request: Mapping[str, object]) -> tuple[str, str] | None:
    """The first field of `request` that is not the JSON it must be: its name, and what it
    must be; None when every field is right."""
    for name, kind, described in _REQUEST_FIELDS:
        value = request.get(name)
        if value is not None and not isinstance(value, kind):
            return name, described
    return None


def chosen_operation(
    document: DocumentNode, operation_name: str | None
) -> OperationDefinitionNode | None:
    """The operation a request runs: the one named, or the first (Strawberry's choice, which
    `request_errors` refuses when there are several)."""
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and (
            operation_name is None
            or (definition.name is not None and definition.name.value == operation_name)
        ):
            return definition
    return None


def operation_name_of(document: DocumentNode | None, provided: str | None) -> str | None:
    """The name a record shows: the one asked for, or the first operation's own."""
    if provided is not None or document is None:
        return provided
    first = chosen_operation(document, None)
    return first.name.value if first is not None and first.name is not None else None


def _refusal(message: str, code: ErrorCode) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code.value})


def request_errors(
    prepared: Prepared, operation_name: str | None, context: Context
) -> list[GraphQLError]:
    """Why this request may not run, before anything runs (every reason but access, which is
    judged only of a request that may otherwise run): no error means it may."""
    document = prepared.document
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    errors = list(prepared.errors or ())
    if operation_name is None and len(operations) > 1:
        # The GraphQL spec's rule, which Strawberry does not keep (it runs the first one).
        message = "Must provide operation name if query contains multiple operations."
        errors.append(_refusal(message, ErrorCode.BAD_REQUEST))
    named = [o for o in operations if operation_name in (None, o.name and o.name.value)]
    if not context.streaming and any(o.operation is OperationType.SUBSCRIPTION for o in named):
        message = "subscriptions are served over WebSocket (graphql-transport-ws) at this URL"
        errors.append(_refusal(message, ErrorCode.BAD_REQUEST))
    return errors or _access_errors(prepared, context)


def _access_errors(prepared: Prepared, context: Context) -> list[GraphQLError]:
    principal = context.principal
    refused = sorted(op for op in prepared.operations if not principal.may(op))
    if refused:
        # ACCESS.md: a request *holding* an operation its credential may not run is refused
        # whole, whichever operation it names.
        limited = ", limited to accounts" if principal.accounts is not None else ""
        message = (
            f"this credential ({principal.role.value}{limited}) may not run {', '.join(refused)}"
        )
        return [_refusal(message, ErrorCode.FORBIDDEN)]
    return []


# Strawberry's quicker test of resolvers' results, as its own executions use.
_is_awaitable = cast("Callable[[Any], TypeGuard[Awaitable[Any]]]", optimized_is_awaitable)


@dataclass(frozen=True, slots=True)
class Execution:
    """What graphql-core's executor needs besides the request: the schema's own settings."""

    rules: DocumentRules
    executor_class: Any
    process_errors: Callable[[list[GraphQLError]], None]
    observe: Observer | None


class OperationRunner:
    """Runs one operation of an HTTP request."""

    def __init__(self, documents: Callable[[], DocumentCache], execution: Execution) -> None:
        self._documents = documents  # looked up per request: tests swap the cache
        self._execution = execution

    @property
    def rules(self) -> DocumentRules:
        return self._execution.rules

    async def run(
        self,
        query: str | None,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Context,
        allowed: Collection[StrawberryOperationType],
    ) -> ExecutionResult:
        """The result; raises, for the HTTP layer to refuse, a request with no query, no
        such operation, or an operation of a type `allowed` does not hold."""
        if not query:
            raise MissingQueryError
        started = time.perf_counter()
        execution = self._execution
        try:
            prepared = self._documents().prepare(query, execution.rules)
        except GraphQLError as error:  # it does not parse (syntax, too many tokens)
            self._observe(context, started, None, None, ExecutionResult(None, [error]))
            return ExecutionResult(None, [error])
        operation = chosen_operation(prepared.document, operation_name)
        if operation is None:
            raise CannotGetOperationTypeError(operation_name)
        operation_type = StrawberryOperationType(operation.operation.value)
        if operation_type not in allowed:
            raise InvalidOperationTypeError(operation_type)
        try:
            result = await self._execute(prepared, variables, operation_name, context)
        finally:
            await context.end_reads()
        if result.errors:
            execution.process_errors(result.errors)
        name = operation_name_of(prepared.document, operation_name)
        self._observe(context, started, operation_type.value, name, result)
        return result

    async def _execute(
        self,
        prepared: Prepared,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Context,
    ) -> ExecutionResult:
        refused = request_errors(prepared, operation_name, context)
        if refused:
            return ExecutionResult(None, refused)
        context.history = prepared.history
        rules = self._execution.rules
        result = execute(
            rules.schema,
            prepared.document,
            variable_values=variables,
            operation_name=operation_name,
            context_value=context,
            executor_class=self._execution.executor_class,
            is_awaitable=_is_awaitable,
            hide_suggestions=not rules.suggestions,
        )
        return result if isinstance(result, ExecutionResult) else await result

    def _observe(
        self,
        context: Context,
        started: float,
        operation_type: str | None,
        operation_name: str | None,
        result: ExecutionResult,
    ) -> None:
        observe = self._execution.observe
        if observe is not None:
            record = OperationRecord(
                principal=context.principal.name,
                operation_type=operation_type or "unknown",
                operation_name=operation_name,
                errors=result.errors or [],
                data=result.data,
                elapsed_s=time.perf_counter() - started,
            )
            observe(record)
