"""Limits on what one request may ask: depth, tokens, aliases, cost and integer literals.

The cost of an operation is the number of objects it may resolve: a list field counts
its page size (`first`/`last`, 50 by default, the ceiling when given by a variable) times
the number of parents it hangs under; any other object field counts 1 per parent
(connection plumbing, `edges`, `nodes`, `node`, `pageInfo`, is free; so are scalars).
`accounts(first: 100) { nodes { transactions(first: 100) { nodes { id } } } }` costs
10,100; a dashboard of 100 accounts read by alias costs 100. A batch counts one per item
(each is a write), and its `results` count its items again: the length of a literal
`transfers` list, or the batch maximum (1,000) when a variable gives the list, since
validation runs (and is cached) before variables are seen.

Depth counts nested object fields, introspection fields excepted; aliases are counted
over the whole document. All three follow fragments as if expanded, but measure each
fragment once (per batch size), so a document of fragments each spreading the next twice
is measured in linear time.
"""

from dataclasses import dataclass

from graphql import (
    SKIP,
    ASTValidationRule,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    NoSchemaIntrospectionCustomRule,
    ObjectValueNode,
    OperationDefinitionNode,
    OverlappingFieldsCanBeMergedRule,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    ValueNode,
    ValuesOfCorrectTypeRule,
    VisitorAction,
    specified_rules,
)
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from bank_graphql.api.codes import ErrorCode
from bank_graphql.api.query import TOP_SPENDERS_MAX
from bank_graphql.api.scalars import INTEGER_LITERAL_LENGTH_MAX, IntegerLiteralsRule
from bank_graphql.api.types import PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX
from bank_graphql.ledger import WriteLimits


@dataclass(frozen=True, slots=True)
class QueryLimits:
    depth_max: int = 12
    tokens_max: int = 10_000
    aliases_max: int = 250
    cost_max: int = 25_000
    introspection: bool = True
    # graphql-core's units of work (about 2 per pair of fields compared) for checking that
    # fields of one response name can merge: quadratic in repeated fields and fragments.
    # Its own default, 500,000, blocks the event loop for seconds. Documents spend none
    # unless they repeat a response name: 40 copies of a field with a selection spend
    # about 6,000, 30 fragments of 5 shared fields each, spread side by side, 10,000.
    merge_checks_max: int = 20_000


# Fields returning many objects, with the page size a variable may reach at most.
_LIST_FIELDS = {
    "accounts": PAGE_SIZE_MAX,
    "transactions": PAGE_SIZE_MAX,
    "payments": PAGE_SIZE_MAX,
    "topSpenders": TOP_SPENDERS_MAX,
}
# `transferBatch { results }`: one result per item of the batch's `transfers`.
_BATCH_FIELD = "transferBatch"
_BATCH_RESULTS = "results"
BATCH_ITEMS_MAX = WriteLimits().batch_items_max

_CONNECTION_PLUMBING = frozenset({"edges", "nodes", "node", "pageInfo"})


@dataclass(frozen=True, slots=True)
class Measure:
    """What a selection set asks for, under one parent."""

    cost: int = 0
    depth: int = 0
    aliases: int = 0

    def beside(self, other: "Measure") -> "Measure":
        """The measure of two selections of the same selection set."""
        return Measure(
            self.cost + other.cost, max(self.depth, other.depth), self.aliases + other.aliases
        )


class DocumentMeasures:
    """Measures selection sets of one document, following fragment spreads.

    Cost is linear in the number of parents, so a fragment's cost per parent, its depth
    and its aliases are computed once for each batch size it is spread under, then reused.
    Unknown fragments and cycles measure nothing: other rules refuse them.
    """

    def __init__(self, fragments: dict[str, FragmentDefinitionNode]) -> None:
        self._fragments = fragments
        self._known: dict[tuple[str, int], Measure] = {}
        self._on_path: set[tuple[str, int]] = set()

    def of(self, selection_set: SelectionSetNode, items: int) -> Measure:
        """`items`: the number of results a `results` field here would list."""
        total = Measure()
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total = total.beside(self._field(selection, items))
            elif isinstance(selection, InlineFragmentNode):
                total = total.beside(self.of(selection.selection_set, items))
            elif isinstance(selection, FragmentSpreadNode):
                total = total.beside(self._fragment(selection.name.value, items))
        return total

    def _field(self, field: FieldNode, items: int) -> Measure:
        aliases = 0 if field.alias is None else 1
        if field.selection_set is None:
            return Measure(aliases=aliases)  # a scalar: resolved with its parent
        name = field.name.value
        count = max(_rows(field, items), 1)
        batch_items = _batch_items(field) if name == _BATCH_FIELD else 0
        inner = self.of(field.selection_set, batch_items or items)
        # A batch costs each of its items, a write, whether or not its results are asked
        # for: aliased batches cannot multiply the batch cap past the cost limit.
        own = 0 if name in _CONNECTION_PLUMBING else max(count, batch_items)
        depth = 0 if name.startswith("__") else 1 + inner.depth
        return Measure(own + count * inner.cost, depth, aliases + inner.aliases)

    def _fragment(self, name: str, items: int) -> Measure:
        key = (name, items)
        known = self._known.get(key)
        if known is not None:
            return known
        fragment = self._fragments.get(name)
        if fragment is None or key in self._on_path:
            return Measure()
        self._on_path.add(key)
        measure = self.of(fragment.selection_set, items)
        self._on_path.remove(key)
        self._known[key] = measure
        return measure


def _rows(field: FieldNode, items: int) -> int:
    """How many objects `field` lists per parent (1 for a field of one object)."""
    name = field.name.value
    if name == _BATCH_RESULTS:
        return items
    ceiling = _LIST_FIELDS.get(name)
    if ceiling is None:
        return 1
    sizes = [arg.value for arg in field.arguments or () if arg.name.value in {"first", "last"}]
    if not sizes:
        return PAGE_SIZE_DEFAULT
    literal = [_integer(value) for value in sizes]
    known = [size for size in literal if size is not None]
    # More than the ceiling is refused when the field resolves, before it lists anything.
    return min(max(known), ceiling) if len(known) == len(sizes) else ceiling


def _batch_items(field: FieldNode) -> int:
    """The items of `transferBatch(input: {transfers: [...]})`; the maximum when unknown."""
    inputs = [a.value for a in field.arguments or () if a.name.value == "input"]
    for entry in inputs[0].fields if inputs and isinstance(inputs[0], ObjectValueNode) else ():
        if entry.name.value == "transfers" and isinstance(entry.value, ListValueNode):
            return min(len(entry.value.values), BATCH_ITEMS_MAX)
        if entry.name.value == "transfers" and isinstance(entry.value, ObjectValueNode):
            return 1  # one item given without brackets is a list of one
    return BATCH_ITEMS_MAX


def _integer(value: ValueNode) -> int | None:
    if isinstance(value, IntValueNode) and len(value.value) <= INTEGER_LITERAL_LENGTH_MAX:
        return int(value.value)
    return None


def limits_rule(limits: QueryLimits) -> type[ValidationRule]:
    """One rule for depth, aliases and cost, measuring the document in one pass."""

    class QueryLimitsRule(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self._measures = DocumentMeasures(
                {
                    d.name.value: d
                    for d in context.document.definitions
                    if isinstance(d, FragmentDefinitionNode)
                }
            )
            self._aliases = 0

        def enter_operation_definition(
            self, node: OperationDefinitionNode, *_: object
        ) -> VisitorAction:
            measure = self._measures.of(node.selection_set, BATCH_ITEMS_MAX)
            self._aliases += measure.aliases
            name = node.name.value if node.name else "anonymous"
            if measure.depth > limits.depth_max:
                self.report_error(
                    GraphQLError(
                        f"'{name}' exceeds maximum operation depth of {limits.depth_max}", node
                    )
                )
            if measure.cost > limits.cost_max:
                self.report_error(
                    GraphQLError(
                        f"operation may resolve {measure.cost} objects, more than the "
                        f"{limits.cost_max} allowed: ask for smaller pages",
                        node,
                        extensions={"code": ErrorCode.QUERY_TOO_COSTLY.value},
                    )
                )
            return SKIP  # measured whole, spreads included

        def enter_fragment_definition(self, *_: object) -> VisitorAction:
            return SKIP  # measured where spread

        def leave_document(self, *_: object) -> None:
            if self._aliases > limits.aliases_max:
                self.report_error(
                    GraphQLError(f"{self._aliases} aliases found. Allowed: {limits.aliases_max}")
                )

    return QueryLimitsRule


def merge_rule(limits: QueryLimits) -> type[ValidationRule]:
    class BoundedOverlapsRule(OverlappingFieldsCanBeMergedRule):
        """graphql-core's rule with a smaller budget; past it, validation is aborted."""

        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self.rule_context.remaining_complexity_budget = limits.merge_checks_max

    return BoundedOverlapsRule


Rule = type[ASTValidationRule]


def validation_rules(limits: QueryLimits) -> tuple[Rule, ...]:
    """The rules every document is validated by: the GraphQL spec's, two of them in our
    stricter versions, Strawberry's own, and the limits. Built once per schema."""
    replacing: dict[Rule, Rule] = {
        ValuesOfCorrectTypeRule: IntegerLiteralsRule,
        OverlappingFieldsCanBeMergedRule: merge_rule(limits),
    }
    added: tuple[Rule, ...] = (
        limits_rule(limits),
        MaybeNullValidationRule,
        OneOfInputValidationRule,
    )
    if not limits.introspection:
        added = (*added, NoSchemaIntrospectionCustomRule)
    return (*(replacing.get(rule, rule) for rule in specified_rules), *added)
