"""Reading one environment variable, as every settings module does (config.py, the
providers' settings, resilience/settings.py)."""

from __future__ import annotations

from collections.abc import Mapping


def env_value(env: Mapping[str, str], name: str) -> str | None:
    """The variable's value without surrounding blanks; None when it is unset or blank
    (the reference treats an empty value as unset)."""
    value = env.get(name)
    if value is None:
        return None
    return value.strip() or None
