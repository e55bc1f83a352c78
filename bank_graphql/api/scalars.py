"""Money and Timestamp: JSON integers in 0 .. 2^53-1. Anything else is refused at parse time.

Integer literals of a document are checked for length before any scalar reads them:
Python refuses to read more than 4,300 digits, with a message of its own.
"""

from typing import Any, NewType

import strawberry
from graphql import (
    SKIP,
    GraphQLError,
    IntValueNode,
    ListValueNode,
    ObjectValueNode,
    ValueNode,
    ValuesOfCorrectTypeRule,
    VisitorAction,
)
from strawberry.types.scalar import ScalarDefinition

from bank_graphql.ledger.domain.rules import MAX_MONEY, MAX_TIMESTAMP_MS

Money = NewType("Money", int)
Timestamp = NewType("Timestamp", int)


def _integer_parser(name: str, maximum: int) -> ScalarDefinition:
    message = f"{name} must be a JSON integer from 0 to {maximum}"

    def parse_value(value: object) -> int:
        # bool is an int in Python; floats, even 1.0, never stand for money or time.
        if type(value) is not int or not 0 <= value <= maximum:
            raise ValueError(f"{message}, got {_shown(value)}")
        return value

    def parse_literal(node: ValueNode, _variables: dict[str, object] | None = None) -> int:
        if not isinstance(node, IntValueNode):
            raise ValueError(f"{message}, got a {node.kind.replace('_', ' ')}")
        # Python refuses to read very long digit strings; none of these is in range anyway.
        if len(node.value) > len(str(maximum)):
            raise ValueError(f"{message}, got a number of {len(node.value)} characters")
        return parse_value(int(node.value))

    def serialize(value: object) -> int:
        assert type(value) is int, f"{name} must be an int: {value!r}"
        assert 0 <= value <= maximum, f"{name} out of range: {value}"
        return value

    return strawberry.scalar(
        name=name,
        description=(
            "Money in minor units (cents): a JSON integer, 0 .. 9007199254740991 (2^53 - 1). "
            "Amounts in inputs must be >= 1."
            if name == "Money"
            else "A point in time: milliseconds since the Unix epoch, as a JSON integer "
            "(0 .. 2^53 - 1)."
        ),
        serialize=serialize,
        parse_value=parse_value,
        parse_literal=parse_literal,
    )


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


SCALARS: dict[object, ScalarDefinition] = {
    Money: _integer_parser("Money", MAX_MONEY),
    Timestamp: _integer_parser("Timestamp", MAX_TIMESTAMP_MS),
}


# The longest integer any argument takes is an account id of 64 digits.
INTEGER_LITERAL_LENGTH_MAX = 64


class IntegerLiteralsRule(ValuesOfCorrectTypeRule):
    """graphql-core's check of literal values, refusing over-long integers before any
    scalar reads them (lists and input objects are checked whole, at their outermost)."""

    # SKIP is False: each check below is spelled out rather than chained with `or`.
    def enter_int_value(self, node: IntValueNode, *args: Any) -> VisitorAction:
        if self._refused_long(node):
            return SKIP
        return super().enter_int_value(node, *args)

    def enter_list_value(self, node: ListValueNode, *args: Any) -> VisitorAction:
        if self._refused_long(node):
            return SKIP
        return super().enter_list_value(node, *args)

    def enter_object_value(self, node: ObjectValueNode, *args: Any) -> VisitorAction:
        if self._refused_long(node):
            return SKIP
        return super().enter_object_value(node, *args)

    def _refused_long(self, node: ValueNode) -> bool:
        found = _long_integer(node)
        if found is not None:
            self.report_error(
                GraphQLError(
                    f"an integer of {len(found.value)} characters is longer than any value "
                    f"this API takes (at most {INTEGER_LITERAL_LENGTH_MAX})",
                    found,
                )
            )
        return found is not None


def _long_integer(node: ValueNode) -> IntValueNode | None:
    if isinstance(node, IntValueNode):
        return node if len(node.value) > INTEGER_LITERAL_LENGTH_MAX else None
    if isinstance(node, ListValueNode):
        children = list(node.values)
    else:
        children = [f.value for f in node.fields] if isinstance(node, ObjectValueNode) else []
    return next((found for c in children if (found := _long_integer(c)) is not None), None)
