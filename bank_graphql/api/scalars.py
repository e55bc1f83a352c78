"""Money and Timestamp: JSON integers in 0 .. 2^53-1. Anything else is refused at parse time."""

from typing import NewType

import strawberry
from graphql import IntValueNode, ValueNode
from strawberry.types.scalar import ScalarDefinition

from bank_graphql.ledger.rules import MAX_MONEY, MAX_TIMESTAMP_MS

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
