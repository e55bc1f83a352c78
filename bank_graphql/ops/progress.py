"""A progress bar on stderr for the commands that may run long (export, backup, audit): drawn
only when stderr is a terminal, so logs and pipes never receive one."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from tqdm import tqdm


class Progress(Protocol):
    def update(self, n: float | None = 1) -> object: ...


@contextmanager
def progress(total: int | None, unit: str, *, shown: bool = True) -> Iterator[Progress]:
    """Something to `update(n)` as `n` more of `total` units are done (`total` None: a
    count without an end). Nothing is drawn unless `shown` and stderr is a terminal."""
    bar = tqdm(
        total=total,
        unit=f" {unit}",
        disable=not (shown and sys.stderr.isatty()),
        file=sys.stderr,
        dynamic_ncols=True,  # follows the terminal's width as it is resized
    )
    try:
        yield bar
    finally:
        bar.close()
