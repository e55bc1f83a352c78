"""Logging on stderr, for this process and uvicorn's: one JSON object per line, or short
lines for a person at a terminal."""

import logging
import os
import sys
from typing import Any, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS, merge_record_extra
from pythonjsonlogger.json import JsonFormatter

LOG_FORMATS = ("auto", "json", "text")
"""`auto`: `text` when stderr is a terminal, else `json`."""

# uvicorn passes a copy of some messages with ANSI colours for its own formatter; neither
# format here writes it.
_NOT_FIELDS = frozenset([*RESERVED_ATTRS, "color_message"])


def resolve_log_format(log_format: str, stream: TextIO = sys.stderr) -> str:
    """`json` or `text` for `auto`, `json` or `text`; ValueError for anything else."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    if log_format != "auto":
        return log_format
    return "text" if stream.isatty() else "json"


class TextFormatter(logging.Formatter):
    """`14:03:07 INFO    message key=value ...`: the time, the level, the message and the
    record's own fields (a request line's outcome, duration, ...)."""

    def __init__(self) -> None:
        super().__init__("{asctime} {levelname:<7} {message}", datefmt="%H:%M:%S", style="{")

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = merge_record_extra(record, {}, _NOT_FIELDS)
        line = super().formatMessage(record)
        return " ".join([line, *(f"{key}={value}" for key, value in fields.items())])


def _json_formatter() -> logging.Formatter:
    return JsonFormatter(
        "{asctime}{levelname}{name}{message}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        reserved_attrs=list(_NOT_FIELDS),
    )


def configure_logging(level: str, log_format: str | None = None) -> None:
    """Send every log record to stderr, as JSON or text (`log_format`, else the environment's
    BANK_LOG_FORMAT, which `serve` sets for its workers; `auto` when neither is valid). Safe
    to call more than once."""
    if log_format is None:
        log_format = os.environ.get("BANK_LOG_FORMAT") or "auto"
        if log_format not in LOG_FORMATS:
            log_format = "auto"  # `serve` refuses it; the other commands' logs stay readable
    handler = logging.StreamHandler(sys.stderr)
    text = resolve_log_format(log_format, sys.stderr) == "text"
    handler.setFormatter(TextFormatter() if text else _json_formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Each GraphQL operation logs one line of its own (bank_graphql.requests), and so does
    # each request refused before GraphQL ran; uvicorn's access line would repeat it.
    logging.getLogger("uvicorn.access").disabled = True
