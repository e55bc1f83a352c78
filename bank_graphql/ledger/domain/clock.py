"""The two clocks of the ledger: the server's wall clock, or the clients' own timeline."""

import time
from enum import StrEnum


class ClockMode(StrEnum):
    SYSTEM = "system"
    """"Now" is the server's clock; timestamps later than now are refused."""
    CLIENT = "client"
    """"Now" is the greatest timestamp any successful mutation has used (simulation, replay)."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000
