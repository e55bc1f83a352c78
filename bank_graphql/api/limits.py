"""Limits on what one request may ask: depth, tokens, aliases and cost.

The cost of an operation is the number of objects it may resolve: a list field counts
its page size (`first`/`last`, 50 by default, the ceiling when given by a variable) times
the number of parents it hangs under; any other object field counts 1 per parent
(connection plumbing, `edges`, `nodes`, `node`, `pageInfo`, is free; so are scalars).
`accounts(first: 100) { nodes { transactions(first: 100) { nodes { id } } } }` costs
10,100; a dashboard of 100 accounts read by alias costs 100.
"""

from collections.abc import Callable
from dataclasses import dataclass

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    NoSchemaIntrospectionCustomRule,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)

from bank_graphql.api.query import TOP_SPENDERS_MAX
from bank_graphql.api.types import PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX


@dataclass(frozen=True, slots=True)
class QueryLimits:
    depth_max: int = 12
    tokens_max: int = 10_000
    aliases_max: int = 250
    cost_max: int = 25_000
    introspection: bool = True


# Fields returning many objects, with the page size a variable may reach at most.
_LIST_FIELDS = {
    "accounts": PAGE_SIZE_MAX,
    "transactions": PAGE_SIZE_MAX,
    "payments": PAGE_SIZE_MAX,
    "topSpenders": TOP_SPENDERS_MAX,
}


_CONNECTION_PLUMBING = frozenset({"edges", "nodes", "node", "pageInfo"})


def operation_cost(
    operation: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode]
) -> int:
    def rows(field: FieldNode) -> int:
        ceiling = _LIST_FIELDS.get(field.name.value)
        if ceiling is None:
            return 1
        sizes = [arg.value for arg in field.arguments or () if arg.name.value in {"first", "last"}]
        if not sizes:
            return PAGE_SIZE_DEFAULT
        literal = [int(v.value) for v in sizes if isinstance(v, IntValueNode)]
        return max(literal) if len(literal) == len(sizes) else ceiling

    def cost(selection_set: SelectionSetNode | None, multiplier: int, seen: frozenset[str]) -> int:
        total = 0
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                if selection.selection_set is None:
                    continue  # a scalar: resolved with its parent
                count = multiplier * max(rows(selection), 1)
                if selection.name.value not in _CONNECTION_PLUMBING:
                    total += count
                total += cost(selection.selection_set, count, seen)
            elif isinstance(selection, InlineFragmentNode):
                total += cost(selection.selection_set, multiplier, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = fragments.get(name)
                if fragment is not None and name not in seen:  # cycles: another rule's error
                    total += cost(fragment.selection_set, multiplier, seen | {name})
        return total

    return cost(operation.selection_set, 1, frozenset())


def cost_rule(cost_max: int) -> type[ValidationRule]:
    class QueryCostRule(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self._fragments = {
                d.name.value: d
                for d in context.document.definitions
                if isinstance(d, FragmentDefinitionNode)
            }

        def enter_operation_definition(self, node: OperationDefinitionNode, *_: object) -> None:
            cost = operation_cost(node, self._fragments)
            if cost > cost_max:
                self.report_error(
                    GraphQLError(
                        f"operation may resolve {cost} objects, more than the {cost_max} "
                        "allowed: ask for smaller pages",
                        node,
                        extensions={"code": "QUERY_TOO_COSTLY"},
                    )
                )

    return QueryCostRule


def limit_extensions(limits: QueryLimits) -> list[Callable[[], SchemaExtension]]:
    """Extensions enforcing `limits`.

    The validation rules are built once and shared, so Strawberry's validation cache,
    keyed by the rules, still hits on every repeated query.
    """
    rules = [
        *QueryDepthLimiter(max_depth=limits.depth_max).validation_rules,
        *MaxAliasesLimiter(max_alias_count=limits.aliases_max).validation_rules,
        cost_rule(limits.cost_max),
    ]
    if not limits.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    return [
        lambda: AddValidationRules(rules),
        lambda: MaxTokensLimiter(max_token_count=limits.tokens_max),
    ]
