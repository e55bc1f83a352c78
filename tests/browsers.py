"""Debian's Chromium, headless, reaching 127.0.0.1 only."""

from pathlib import Path
from typing import TYPE_CHECKING

from tests.servers import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

CHROMIUM = Path("/usr/bin/chromium")


def local_chromium(playwright: "Playwright") -> "Browser":
    """Every host but 127.0.0.1 unresolvable, and a proxy where nothing listens for anything
    else: a request that would leak the machine fails instead."""
    closed = free_port()
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        args=[
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            f"--proxy-server=http://127.0.0.1:{closed}",
            "--proxy-bypass-list=127.0.0.1",
        ],
    )
