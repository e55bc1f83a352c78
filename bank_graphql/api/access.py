"""The credential as GraphQL sees it: `viewer`, and the check that refuses a request holding
an operation its role may not run, whole and before anything runs.

Which role may run what is the ledger's rule (ledger/domain/access.py); here only the
document's root fields are named as the operations they are.
"""

from collections.abc import Iterator

import strawberry
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
)
from strawberry.extensions import SchemaExtension

from bank_graphql.api.codes import ErrorCode
from bank_graphql.api.context import Context
from bank_graphql.ledger import Operation, Principal, Role

GraphQLRole = strawberry.enum(Role, name="Role", description="What a credential may do.")

_MUTATIONS = {
    "createAccount": Operation.CREATE_ACCOUNT,
    "deposit": Operation.DEPOSIT,
    "transfer": Operation.TRANSFER,
    "transferBatch": Operation.TRANSFER,
    "pay": Operation.TRANSFER,
    "mergeAccounts": Operation.MERGE,
}


@strawberry.type(description="The credential behind this request.")
class Viewer:
    principal: str = strawberry.field(
        description="Who is asking, as LedgerEntry.actor records it: `key:<key id>` or "
        "`jwt:<subject>` (`anonymous` when access control is off)."
    )
    role: GraphQLRole  # type: ignore[valid-type]
    accounts: list[strawberry.ID] | None = strawberry.field(
        description="The accounts this credential is limited to, by id; null when it is "
        "not limited."
    )

    @classmethod
    def of(cls, principal: Principal) -> "Viewer":
        scope = principal.scope
        return cls(
            principal=principal.name,
            role=principal.role,
            accounts=None if scope is None else [strawberry.ID(a) for a in scope],
        )


def _root_fields(
    selection_set: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    spread: set[str],
) -> Iterator[str]:
    """Names of the root fields a selection set selects, fragments followed (each once)."""
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            yield selection.name.value
        elif isinstance(selection, InlineFragmentNode):
            yield from _root_fields(selection.selection_set, fragments, spread)
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in spread:
            spread.add(selection.name.value)
            fragment = fragments.get(selection.name.value)
            if fragment is not None:
                yield from _root_fields(fragment.selection_set, fragments, spread)


def operations_of(document: DocumentNode) -> set[Operation]:
    """What the operations of `document` would do, as operations of the table: all of them,
    not only the one a request names (ACCESS.md: a request *holding* a forbidden operation
    is refused whole)."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    found: set[Operation] = set()
    for operation in document.definitions:
        if not isinstance(operation, OperationDefinitionNode):
            continue
        if operation.operation is not OperationType.MUTATION:
            found.add(Operation.READ)
            continue
        names = _root_fields(operation.selection_set, fragments, set())
        found.update(_MUTATIONS[name] for name in names if name in _MUTATIONS)
    return found


class AccessCheck(SchemaExtension):
    """Refuses, before execution, a valid request holding any operation its credential may
    not run: one FORBIDDEN error, no data, nothing changed."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        request = context.context
        document = context.graphql_document
        if not context.pre_execution_errors and document is not None:
            assert isinstance(request, Context)
            principal = request.principal
            refused = sorted(op for op in operations_of(document) if not principal.may(op))
            if refused:
                message = (
                    f"this credential ({principal.role.value}"
                    f"{', limited to accounts' if principal.accounts is not None else ''}) "
                    f"may not run {', '.join(refused)}"
                )
                extensions = {"code": ErrorCode.FORBIDDEN.value}
                context.pre_execution_errors = [GraphQLError(message, extensions=extensions)]
        yield
