"""What every command shares: its settings (a configuration error is a clear CLI error,
logging is configured before the command does anything) and one clear line, never a
traceback, when the setup stops it (configuration, a port in use, the database
unreachable or not migrated).

Imported by cli.py, so it imports nothing heavy at module level: `payments-svc --help`
must not load the service."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from .config import Settings

T = TypeVar("T")


def command_settings() -> Settings:
    from .config import ConfigError, load_settings
    from .logs import configure_logging

    try:
        settings = load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    configure_logging(settings.log_level)
    return settings


def run_command(settings: Settings, coro: Coroutine[Any, Any, T]) -> T:
    """Runs a command's coroutine; setup failures become one line on stderr and exit 1."""
    from .config import ConfigError, redact_url
    from .db.migrate import MigrationError

    try:
        return _run(coro, uvloop=settings.uvloop)
    except (ConfigError, MigrationError) as exc:  # the message names the setting or the step to take
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        cause = _database_cause(exc)
        if cause is None:
            raise  # a bug: its traceback is wanted
        raise click.ClickException(f"database unavailable ({redact_url(settings.database_url)}): {cause}") from None


def _run(coro: Coroutine[Any, Any, T], *, uvloop: bool) -> T:
    """asyncio.run on uvloop (libuv: the scheduling and socket work of every request
    costs less CPU) unless PAYMENTS_UVLOOP=false asks for asyncio's own loop."""
    if not uvloop:
        return asyncio.run(coro)
    import uvloop as _uvloop

    with asyncio.Runner(loop_factory=_uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _database_cause(exc: BaseException) -> str | None:
    """The database driver's message on one line (without SQLAlchemy's SQL echo and
    links), if `exc` is, or was raised from, a database or connection error."""
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, SQLAlchemyError | OSError):  # OSError: the driver's connect, a timeout
            cause = seen.orig if isinstance(seen, DBAPIError) and seen.orig is not None else seen
            return " ".join(str(cause).split()) or type(cause).__name__
        seen = seen.__cause__ or seen.__context__
    return None
