"""Documents parsed and validated once, then served from a cache by their text.

A repeated document costs a dictionary lookup: its syntax tree, validation's verdict and
the operations it holds (for the access check) are all kept with it. `parsed` and
`validated` count the real work, so that /metrics shows the cache hitting.

A client that sends many distinct large documents must not pin memory: the cache counts
what each parsed document costs (its text plus its syntax tree, estimated from its tokens),
evicts the least recently used past the budget, and never keeps a document that alone
would take more than its share.

Validation runs here with one fixed set of rules, so that one switch decides whether error
messages may suggest names of the schema ("Did you mean ...?"): not when introspection is
off.
"""

import sys
from dataclasses import dataclass

from cachetools import LRUCache
from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    SelectionSetNode,
    parse,
    validate,
)

from bank_graphql.api.access import operations_of
from bank_graphql.api.limits import Rule
from bank_graphql.ledger import Operation

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
    return sys.getsizeof(query) + tokens * _TREE_BYTES_PER_TOKEN


_HISTORY_FIELDS = frozenset({"transactions", "payments"})


def _selects_history(selection_set: SelectionSetNode | None) -> bool:
    if selection_set is None:
        return False
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode) and (
            selection.name.value in _HISTORY_FIELDS
            or any(argument.name.value == "at" for argument in selection.arguments or ())
        ):
            return True
        if _selects_history(getattr(selection, "selection_set", None)):
            return True
    return False


def reads_history(document: DocumentNode) -> bool:
    """Does `document` read history: a page of entries or payments, or a value at an
    instant (an `at` argument)? Such reads may go to a replica (Ledger.settle_due_then_snapshot)."""
    return any(_selects_history(getattr(d, "selection_set", None)) for d in document.definitions)


@dataclass(frozen=True, slots=True)
class DocumentRules:
    """How a document is read and checked: the same for every transport."""

    schema: GraphQLSchema
    validation_rules: tuple[Rule, ...]
    tokens_max: int
    suggestions: bool

    def parse(self, query: str) -> DocumentNode:
        """The syntax tree of `query`; a `GraphQLError` if it does not parse."""
        return parse(query, max_tokens=self.tokens_max)

    def validate(self, document: DocumentNode) -> list[GraphQLError]:
        return validate(
            self.schema, document, self.validation_rules, hide_suggestions=not self.suggestions
        )


@dataclass(slots=True)
class Prepared:
    """A parsed document and what is known of it."""

    document: DocumentNode
    size_bytes: int
    errors: list[GraphQLError] | None = None  # validation's verdict, once known
    _operations: frozenset[Operation] | None = None
    _history: bool | None = None

    @property
    def history(self) -> bool:
        """Does the document read history (`reads_history`)?"""
        if self._history is None:
            self._history = reads_history(self.document)
        return self._history

    @property
    def operations(self) -> frozenset[Operation]:
        """What the document's operations would do (every one, not only the one run)."""
        if self._operations is None:
            self._operations = frozenset(operations_of(self.document))
        return self._operations


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
        self.parsed = 0
        self.validated = 0
        self._entries: LRUCache[str, Prepared] = LRUCache(
            maxsize=bytes_max, getsizeof=lambda entry: entry.size_bytes
        )

    @property
    def size_bytes(self) -> int:
        return int(self._entries.currsize)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, query: str) -> Prepared | None:
        return self._entries.get(query)

    def prepare(self, query: str, rules: DocumentRules) -> Prepared:
        """`query` parsed and validated, from the cache when it was seen before; raises the
        `GraphQLError` of a document that does not parse (never cached: it is cheap to
        refuse again, and would otherwise let junk fill the cache)."""
        entry = self._entries.get(query)
        if entry is None:
            self.parsed += 1
            document = rules.parse(query)
            entry = Prepared(document, document_size_bytes(query, document))
            if entry.size_bytes <= self.document_bytes_max:
                self._entries[query] = entry
        if entry.errors is None:
            self.validated += 1
            entry.errors = rules.validate(entry.document)
        return entry
