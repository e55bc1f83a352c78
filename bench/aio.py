"""Running a phase's coroutine, and leaving cleanly on SIGTERM or SIGHUP."""

import asyncio
import signal
from collections.abc import Coroutine
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    # SystemExit unwinds through every `finally`: servers stopped, databases dropped.
    raise SystemExit(128 + signum)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run one phase on uvloop when installed (the client must not be the bottleneck).

    SIGTERM/SIGHUP cancel the phase cleanly (an exception raised inside a transport callback
    would not), then leave as SystemExit like everywhere else.
    """

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        received: list[int] = []

        def stop(signum: int) -> None:
            received.append(signum)
            task.cancel()

        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, stop, signum)
        try:
            return await coro
        except asyncio.CancelledError:
            if received:
                raise SystemExit(128 + received[0]) from None
            raise

    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(guarded())
        return uvloop.run(guarded())
    finally:
        # The loop put SIG_DFL back when it closed: restore the handler of the sync code.
        for signum in STOP_SIGNALS:
            signal.signal(signum, exit_on_signal)
