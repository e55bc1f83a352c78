"""A command run with its stderr on a pseudo-terminal, as a person at a terminal runs it."""

import fcntl
import os
import pty
import struct
import subprocess
import termios
from collections.abc import Sequence


def on_a_terminal(command: Sequence[str], *, timeout_s: float = 60) -> tuple[int, bytes]:
    """Run `command` with stderr on a 100-column terminal (stdout and stdin elsewhere);
    its exit status and everything it drew there."""
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    with subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal
    ) as process:
        os.close(terminal)
        drawn = b""
        while True:
            try:
                piece = os.read(main, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not piece:
                break
            drawn += piece
        process.wait(timeout=timeout_s)
    os.close(main)
    return process.returncode, drawn
