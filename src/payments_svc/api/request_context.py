"""The authenticated caller of the request being served (set by the adapters' auth step)."""

from __future__ import annotations

from contextvars import ContextVar

from ..auth.caller import Caller

current_caller: ContextVar[Caller] = ContextVar("current_caller")
