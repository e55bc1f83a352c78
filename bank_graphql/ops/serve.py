"""`bank-graphql serve`: the embedded or given database brought up to date, then uvicorn with
the bounded HTTP edge, its logs, and on a terminal a banner once it answers."""

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import FrameType
from typing import cast

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from bank_graphql.edge.http_server import BoundedHttpToolsProtocol, fit_to_open_files
from bank_graphql.edge.logs import LOG_FORMATS, configure_logging, resolve_log_format
from bank_graphql.edge.settings import settings_from_env
from bank_graphql.ledger import ClockMode, SchemaVersionError, migrate, require_current
from bank_graphql.ops.access import (
    access_env,
    add_access_options,
    create_admin_key_if_none,
    print_admin_key,
)
from bank_graphql.ops.banner import Banner, ReadyNotice, when_answering
from bank_graphql.ops.database import (
    add_database_options,
    add_pooler_options,
    check_pooler_options,
    pooler_env,
    refuse,
)
from bank_graphql.ops.documents import add_trusted_options, trusted_env
from bank_graphql.ops.replica import add_replica_options, replica_env
from bank_graphql.ops.settings_env import env, env_flag

# Open files a worker needs besides its client connections: its pool, listening socket,
# log and the files Python itself holds.
FILES_RESERVED = 64

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")

log = logging.getLogger("bank_graphql")


def add_serve_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    serve_cmd = commands.add_parser("serve", help="run the GraphQL server")
    _add_serve_options(serve_cmd)
    serve_cmd.set_defaults(run=serve)


def _add_serve_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--host",
        default=env("BANK_HOST", "127.0.0.1"),
        help="address to listen on (env BANK_HOST, default 127.0.0.1)",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=env("BANK_PORT", "8000"),
        help="port to listen on (env BANK_PORT, default 8000)",
    )
    add_database_options(serve)
    add_pooler_options(serve)
    add_replica_options(serve)
    serve.add_argument(
        "--clock",
        choices=[m.value for m in ClockMode],
        default=env("BANK_CLOCK", ClockMode.SYSTEM.value),
        help="'system': now is the server's clock; 'client': now is the latest "
        "timestamp a mutation used (env BANK_CLOCK, default system)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=env("BANK_WORKERS", "1"),
        help="worker processes (env BANK_WORKERS, default 1)",
    )
    serve.add_argument(
        "--no-graphiql",
        action="store_true",
        default=os.environ.get("BANK_GRAPHIQL", "1") == "0",
        help="do not serve the GraphiQL page at GET /graphql (env BANK_GRAPHIQL=0)",
    )
    serve.add_argument(
        "--no-migrate",
        action="store_true",
        default=env_flag("BANK_NO_MIGRATE"),
        help="refuse to start on a database whose schema is older than this release, "
        "instead of migrating it (env BANK_NO_MIGRATE=1)",
    )
    _add_edge_options(serve)
    add_access_options(serve)
    add_trusted_options(serve)


def _add_edge_options(serve: argparse.ArgumentParser) -> None:
    """How the server faces its clients: shutdown grace, introspection, CORS, connections, logs."""
    serve.add_argument(
        "--shutdown-timeout-s",
        type=float,
        default=env("BANK_SHUTDOWN_TIMEOUT_S", "10"),
        help="on SIGTERM, how long in-flight requests may take to finish "
        "(env BANK_SHUTDOWN_TIMEOUT_S, default 10)",
    )
    serve.add_argument(
        "--no-introspection",
        action="store_true",
        default=os.environ.get("BANK_INTROSPECTION", "1") == "0",
        help="refuse introspection queries (env BANK_INTROSPECTION=0)",
    )
    serve.add_argument(
        "--cors-origins",
        default=env("BANK_CORS_ORIGINS", ""),
        metavar="ORIGINS",
        help="comma-separated browser origins allowed to call the API; none by default "
        "(env BANK_CORS_ORIGINS)",
    )
    serve.add_argument(
        "--connections-max",
        type=int,
        default=env("BANK_CONNECTIONS_MAX", "1000"),
        help="open connections per worker, websockets included; further ones are refused "
        "with 503, and it is kept below the open-files limit (env BANK_CONNECTIONS_MAX, "
        "default 1000)",
    )
    serve.add_argument(
        "--log-level",
        type=_one_of(LOG_LEVELS, "BANK_LOG_LEVEL"),
        default=env("BANK_LOG_LEVEL", "info"),
        choices=LOG_LEVELS,
        help="log level (env BANK_LOG_LEVEL, default info)",
    )
    serve.add_argument(
        "--log-format",
        type=_one_of(LOG_FORMATS, "BANK_LOG_FORMAT"),
        default=env("BANK_LOG_FORMAT", "auto"),
        choices=LOG_FORMATS,
        help="'json': one JSON object per line; 'text': short lines for a person; 'auto': "
        "text when stderr is a terminal, else json (env BANK_LOG_FORMAT, default auto)",
    )


def _one_of(values: tuple[str, ...], variable: str) -> Callable[[str], str]:
    """A flag's check, applied by argparse to the default read from `variable` too (its
    `choices` are not): a bad value is argparse's one-line error, never a traceback."""

    def check(text: str) -> str:
        if text.strip().lower() not in values:
            raise argparse.ArgumentTypeError(
                f"must be one of {', '.join(values)} (env {variable}), not {text!r}"
            )
        return text.strip().lower()

    return check


def _exit_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    # uvicorn re-raises SIGTERM once it has shut down; exiting through SystemExit lets the
    # `finally` below stop the embedded PostgreSQL.
    raise SystemExit(0)


def _run_uvicorn(args: argparse.Namespace, on_listening: Callable[[int], None]) -> None:
    """uvicorn, as `uvicorn.run` would start it, but on a socket bound here first: its port
    (`--port 0` included) is known, and only this server can answer on it."""
    settings = settings_from_env()  # what each worker reads too, from the variables set above
    limits = fit_to_open_files(settings.http, settings.pool.max_size + FILES_RESERVED)
    protocol = partial(BoundedHttpToolsProtocol, limits=limits)
    config = uvicorn.Config(
        "bank_graphql.edge.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        log_config=None,  # the logging configured here and in each worker
        use_colors=False,
        access_log=False,  # each GraphQL operation logs one line of its own
        timeout_graceful_shutdown=args.shutdown_timeout_s,
        http=cast(type[asyncio.Protocol], protocol),  # uvicorn only calls it
        timeout_keep_alive=limits.keep_alive_timeout_s,
        ws_max_size=settings.body_bytes_max,
        ws_ping_interval=limits.ws_ping_interval_s,
        ws_ping_timeout=limits.ws_ping_timeout_s,
    )
    sock = config.bind_socket()  # an address in use: uvicorn logs it and exits
    on_listening(sock.getsockname()[1])
    if config.workers > 1:
        Multiprocess(config, sockets=[sock]).run()
        return
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _bring_schema_up_to_date(database_url: str, *, migrating: bool) -> None:
    """Migrate an older database (under an advisory lock), or refuse one not at this version."""
    try:
        if migrating:
            migrate(database_url)
        else:
            require_current(database_url)
    except SchemaVersionError as exc:
        refuse("serve", exc)


def serve(args: argparse.Namespace) -> None:
    embedded = None
    database_url: str | None = args.database_url
    try:
        check_pooler_options(args)
        access = {**access_env(args), **trusted_env(args)}
        # What every worker will read, checked once here: a bad value is one line, not a
        # traceback from each worker.
        settings_from_env({**os.environ, "DATABASE_URL": "checked later"})
    except ValueError as exc:
        refuse("serve", exc)
    log_format = resolve_log_format(args.log_format)
    configure_logging(args.log_level, log_format)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    notice: ReadyNotice | None = None
    try:
        if not database_url:
            # Imported only when needed: at import the wheel looks for folders a URL never uses.
            from bank_graphql.ops.embedded import EmbeddedPostgres, EmbeddedPostgresError

            embedded = EmbeddedPostgres(args.data_dir)
            log.info("starting embedded PostgreSQL, data in %s", embedded.data_dir)
            try:
                database_url = embedded.start()
            except EmbeddedPostgresError as exc:
                refuse("serve", exc)
        direct_url, pooler = pooler_env(args, database_url)
        pooler.update(replica_env(args, direct_url))
        _bring_schema_up_to_date(direct_url, migrating=not args.no_migrate)
        admin_key = None if args.no_auth else create_admin_key_if_none(direct_url)
        os.environ.update(
            {**access, **pooler},
            DATABASE_URL=database_url,
            BANK_CLOCK=args.clock,
            BANK_GRAPHIQL="0" if args.no_graphiql else "1",
            BANK_INTROSPECTION="0" if args.no_introspection else "1",
            BANK_CORS_ORIGINS=args.cors_origins,
            BANK_LOG_LEVEL=args.log_level,
            BANK_LOG_FORMAT=log_format,
            BANK_CONNECTIONS_MAX=str(args.connections_max),
        )
        if log_format == "text" and sys.stderr.isatty():
            notice = _ready_notice(args, embedded.data_dir if embedded else None, admin_key)
        elif admin_key is not None:
            print_admin_key(admin_key)
        _run_uvicorn(args, partial(_on_listening, args, notice))
    except KeyboardInterrupt:
        pass  # Ctrl-C while starting; once started, uvicorn has already stopped gracefully
    finally:
        if notice is not None:
            notice.close()
        if embedded is not None:
            embedded.stop()


def _ready_notice(
    args: argparse.Namespace, data_dir: Path | None, admin_key: str | None
) -> ReadyNotice:
    """The banner for a person at a terminal, holding the ADMIN key a first start created."""
    banner = Banner(
        host=args.host,
        port=args.port,
        clock=args.clock,
        graphiql=not args.no_graphiql,
        auth=not args.no_auth,
        workers=args.workers,
        data_dir=data_dir,
        database_url=args.database_url,
        admin_key=admin_key,
    )
    return ReadyNotice(banner)


def _on_listening(args: argparse.Namespace, notice: ReadyNotice | None, port: int) -> None:
    if notice is None:
        log.info("GraphQL at http://%s:%d/graphql (clock: %s)", args.host, port, args.clock)
        return
    when_answering(args.host, port, partial(notice.show, port))
