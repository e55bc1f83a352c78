"""Mutation inputs. Every one takes an optional `timestamp` and `idempotencyKey`."""

from collections.abc import Mapping
from typing import Any, TypeVar

import strawberry
from strawberry.types.arguments import InputContext
from strawberry.types.base import (
    StrawberryList,
    StrawberryOptional,
    get_object_definition,
    has_object_definition,
)

from bank_graphql.api.scalars import Money, Timestamp
from bank_graphql.ledger import TransferRequest

T = TypeVar("T", bound=type)


def built_by_plan(cls: T) -> T:
    """Build this input type from its input value by a plan made once.

    Strawberry's own conversion resolves every field's type and GraphQL name on every
    request, which cost more than the rest of a transfer's execution. These inputs hold
    scalars, which graphql-core has coerced already and which pass as they are, and lists
    of such inputs, converted (by their own plans) as Strawberry would.
    """
    definition = get_object_definition(cls, strict=True)
    plan: list[tuple[str, str, Any]] = []

    def from_input(type_: type, value: Mapping[str, Any], context: InputContext) -> Any:
        if not plan:
            plan[:] = [_field_plan(definition, field, context) for field in definition.fields]
        kwargs = {}
        for graphql_name, python_name, nested in plan:
            if graphql_name in value:
                item = value[graphql_name]
                if nested is not None and item is not None:
                    item = context.convert(item, nested, graphql_name)
                kwargs[python_name] = item
        return type_(**kwargs)

    definition.from_input = from_input
    return cls


def _field_plan(definition: Any, field: Any, context: InputContext) -> tuple[str, str, Any]:
    """A field's GraphQL name, Python name, and its type if its value needs converting."""
    resolved = field.resolve_type(type_definition=definition)
    inner = resolved.of_type if isinstance(resolved, StrawberryOptional) else resolved
    nested = isinstance(inner, StrawberryList) or has_object_definition(inner)
    graphql_name = context.config.name_converter.from_field(field)
    return graphql_name, field.python_name, resolved if nested else None


@built_by_plan
@strawberry.input
class CreateAccountInput:
    id: strawberry.ID
    timestamp: Timestamp | None = None
    idempotency_key: str | None = None


@built_by_plan
@strawberry.input
class DepositInput:
    account_id: strawberry.ID
    amount: Money
    timestamp: Timestamp | None = None
    idempotency_key: str | None = None


@built_by_plan
@strawberry.input
class TransferInput:
    source_account_id: strawberry.ID
    target_account_id: strawberry.ID
    amount: Money
    timestamp: Timestamp | None = None
    idempotency_key: str | None = None

    def to_request(self) -> TransferRequest:
        return TransferRequest(
            source_id=str(self.source_account_id),
            target_id=str(self.target_account_id),
            amount=self.amount,
            timestamp=self.timestamp,
            idempotency_key=self.idempotency_key,
        )


@built_by_plan
@strawberry.input
class TransferBatchInput:
    transfers: list[TransferInput]
    atomic: bool = False


@built_by_plan
@strawberry.input
class PayInput:
    account_id: strawberry.ID
    amount: Money
    timestamp: Timestamp | None = None
    idempotency_key: str | None = None


@built_by_plan
@strawberry.input(description="Merge `absorbedAccountId` into `accountId`.")
class MergeAccountsInput:
    account_id: strawberry.ID
    absorbed_account_id: strawberry.ID
    timestamp: Timestamp | None = None
    idempotency_key: str | None = None
