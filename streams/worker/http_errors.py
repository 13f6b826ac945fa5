"""Hostile or broken HTTP requests are answered, not logged as crashes.

aiohttp answers a request it cannot parse (a URL over 8 KB, bytes that are not a URL, a
header too long) with a 400 by itself, and then logs the parse error at ERROR with its
traceback on ``aiohttp.server``: any client could fill the worker's log with tracebacks.
:class:`BadRequestLog` turns those records into one INFO line saying what was answered.
Errors of the worker's own handlers (5xx) keep their traceback.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["BadRequestLog", "valid_user_id"]

MAX_USER_ID = 128  # as the event contract: user_id is 1-128 chars


class BadRequestLog(logging.Filter):
    """On ``aiohttp.server``: a client error (4xx parse error) becomes one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 500) < 500:
            detail = " ".join(str(exc.message).split())[:160]
            record.msg = "answered %d to a malformed request from %s: %s: %s"
            record.args = (exc.code, _remote(record), type(exc).__name__, detail)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True

    @classmethod
    def install(cls, logger: str = "aiohttp.server") -> None:
        """Add the filter to ``logger`` once per process (each app calls this)."""
        target = logging.getLogger(logger)
        if not any(isinstance(f, cls) for f in target.filters):
            target.addFilter(cls())


def _remote(record: logging.LogRecord) -> str:
    args = record.args if isinstance(record.args, tuple) else ()
    return str(args[0]) if args else "?"


def valid_user_id(raw: str) -> bytes:
    """The table key of a user id from a URL; ``ValueError`` saying why when it cannot be one."""
    if not raw:
        raise ValueError("user id is empty")
    if len(raw) > MAX_USER_ID:
        raise ValueError(f"user id is {len(raw)} chars, at most {MAX_USER_ID}")
    try:
        return raw.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("user id is not valid UTF-8") from None
