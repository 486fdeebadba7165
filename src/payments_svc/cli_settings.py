"""Settings for a command: a configuration error is a clear CLI error, and logging is
configured before the command does anything."""

from __future__ import annotations

import click

from .config import ConfigError, Settings, load_settings
from .logs import configure_logging


def command_settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    configure_logging(settings.log_level)
    return settings
