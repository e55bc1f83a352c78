"""Parsed and validated documents, cached by their text within a budget of bytes.

A client that sends many distinct large documents must not pin memory: the cache counts
what each parsed document costs (its text plus its syntax tree, estimated from its tokens),
evicts the least recently used past the budget, and never keeps a document that alone
would take more than its share.

Validation runs here too, so that one switch decides whether error messages may suggest
names of the schema ("Did you mean ...?"): not when introspection is off. So does the
spec's rule that a document of several operations needs an `operationName`.
"""

from collections.abc import Iterator
from dataclasses import dataclass

from cachetools import LRUCache
from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    validate,
)
from strawberry.extensions import SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule
from strawberry.types import ExecutionContext

from bank_graphql.api.codes import ErrorCode
from bank_graphql.api.context import Context

DOCUMENT_CACHE_BYTES_MAX = 32 * 1024 * 1024
CACHED_DOCUMENT_BYTES_MAX = 1024 * 1024
# What graphql-core's syntax tree holds per token, measured with tracemalloc on documents
# of aliased fields (450-560 bytes), rounded up.
_TREE_BYTES_PER_TOKEN = 600


def document_size_bytes(query: str, document: DocumentNode) -> int:
    """Estimated memory of `document` and its text, `query`."""
    tokens = 0
    token = document.loc.start_token if document.loc else None
    while token is not None:
        tokens += 1
        token = token.next
    return len(query) + tokens * _TREE_BYTES_PER_TOKEN


@dataclass(slots=True)
class _Entry:
    document: DocumentNode
    size_bytes: int
    errors: list[GraphQLError] | None = None  # validation's verdict, once known


class DocumentCache:
    """An LRU cache of documents by their text, bounded by estimated bytes.

    One per schema: a document is valid or not for one set of validation rules.
    """

    def __init__(
        self,
        bytes_max: int = DOCUMENT_CACHE_BYTES_MAX,
        document_bytes_max: int = CACHED_DOCUMENT_BYTES_MAX,
    ) -> None:
        self.bytes_max = bytes_max
        self.document_bytes_max = min(document_bytes_max, bytes_max)
        self._entries: LRUCache[str, _Entry] = LRUCache(
            maxsize=bytes_max, getsizeof=lambda entry: entry.size_bytes
        )

    @property
    def size_bytes(self) -> int:
        return int(self._entries.currsize)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, query: str) -> _Entry | None:
        return self._entries.get(query)

    def add(self, query: str, document: DocumentNode) -> _Entry:
        """Remember `document`, parsed from `query`, unless it is too large to keep."""
        entry = _Entry(document, document_size_bytes(query, document))
        if entry.size_bytes <= self.document_bytes_max:
            self._entries[query] = entry
        return entry


class CachedDocuments(SchemaExtension):
    """Parse through the cache (a syntax error stays a result, as without a cache) and
    validate, with suggestions of schema names only when `suggestions` is on."""

    def __init__(self, cache: DocumentCache, *, suggestions: bool) -> None:
        self.cache = cache
        self.suggestions = suggestions
        self._entry: _Entry | None = None

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        query = context.query
        self._entry = self.cache.get(query) if query else None
        if self._entry is not None:
            context.graphql_document = self._entry.document
        yield
        if self._entry is None and query and context.graphql_document is not None:
            self._entry = self.cache.add(query, context.graphql_document)

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        entry = self._entry
        if entry is not None and entry.errors is not None:
            errors = entry.errors
        else:
            assert context.graphql_document is not None
            errors = self._validate(context.schema._schema, context.graphql_document)
            if entry is not None:
                entry.errors = errors
        context.pre_execution_errors = (
            errors + _unnamed_choice(context) + _subscription_without_socket(context)
        )
        yield

    def _validate(self, schema: GraphQLSchema, document: DocumentNode) -> list[GraphQLError]:
        rules = (
            *self.execution_context.validation_rules,
            MaybeNullValidationRule,
            OneOfInputValidationRule,
        )
        return validate(schema, document, rules, hide_suggestions=not self.suggestions)


def _unnamed_choice(context: ExecutionContext) -> list[GraphQLError]:
    """The GraphQL spec's rule, which Strawberry does not keep (it runs the first one): a
    document with several operations runs only the one `operationName` names."""
    document = context.graphql_document
    if document is None or getattr(context, "_provided_operation_name", None) is not None:
        return []
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if len(operations) < 2:
        return []
    message = "Must provide operation name if query contains multiple operations."
    return [GraphQLError(message, extensions={"code": ErrorCode.BAD_REQUEST.value})]


def _subscription_without_socket(context: ExecutionContext) -> list[GraphQLError]:
    """A subscription runs over the WebSocket only; over HTTP it is the client's mistake."""
    document = context.graphql_document
    request = context.context
    if document is None or not isinstance(request, Context) or request.streaming:
        return []
    name = getattr(context, "_provided_operation_name", None)
    chosen = [
        d
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode)
        and (name is None or (d.name is not None and d.name.value == name))
    ]
    if not any(d.operation is OperationType.SUBSCRIPTION for d in chosen):
        return []
    message = "subscriptions are served over WebSocket (graphql-transport-ws) at this URL"
    return [GraphQLError(message, extensions={"code": ErrorCode.BAD_REQUEST.value})]
