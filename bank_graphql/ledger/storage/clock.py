"""The two clocks of the ledger: the server's wall clock, or the clients' own timeline."""

import time
from enum import StrEnum

from bank_graphql.ledger.storage.database import Conn


class ClockMode(StrEnum):
    SYSTEM = "system"
    """"Now" is the server's clock; timestamps later than now are refused."""
    CLIENT = "client"
    """"Now" is the greatest timestamp any successful mutation has used (simulation, replay)."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


async def read_now(conn: Conn, mode: ClockMode) -> int:
    if mode is ClockMode.SYSTEM:
        return wall_clock_ms()
    cursor = await conn.execute("SELECT now_ms FROM client_clock")
    row = await cursor.fetchone()
    assert row is not None, "schema.sql inserts the client_clock row"
    return int(row[0])


async def advance_client_clock(conn: Conn, timestamp: int) -> None:
    """Move the client clock forward to `timestamp`; locks its row only when it moves."""
    await conn.execute(
        "UPDATE client_clock SET now_ms = %(ts)s WHERE now_ms < %(ts)s", {"ts": timestamp}
    )
