"""GetSystemStatus / GET /status (keys acting for every caller only): each worker's last
successful batch and backlog, the Stellar cursor's lag behind Horizon, dead callbacks,
and this process's open watchers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import aiohttp

from ..auth.caller import Caller
from ..clock import utcnow
from ..config import Settings
from ..db.engine import Database
from ..domain.errors import PermissionDeniedError
from ..jobs.health import heartbeats
from ..repository.backlogs import BacklogRepository
from ..repository.dead_callbacks import DeadCallbackRepository
from ..repository.deliveries import DeliveryRepository

HORIZON_TIMEOUT_SECONDS = 3.0
LEDGER_SECONDS = 5  # Stellar closes a ledger about every 5 s: the lag in seconds is estimated from it
WORKERS = ("callbacks_dispatch", "reconcile", "expire_pending")


@dataclass(frozen=True, slots=True)
class WorkerState:
    name: str
    last_success_at: datetime | None
    seconds_since_success: float
    backlog: int
    problem: str  # empty: healthy


@dataclass(frozen=True, slots=True)
class CursorState:
    account: str
    paging_token: str
    cursor_ledger: int
    latest_ledger: int  # 0: Horizon did not answer (see problem)
    problem: str

    @property
    def ledgers_behind(self) -> int:
        return max(0, self.latest_ledger - self.cursor_ledger) if self.latest_ledger else 0

    @property
    def seconds_behind(self) -> float:
        return float(self.ledgers_behind * LEDGER_SECONDS)


@dataclass(frozen=True, slots=True)
class SystemStatus:
    workers: list[WorkerState]
    stellar_cursors: list[CursorState]
    dead_callbacks: int
    watchers: int


async def system_status(db: Database, settings: Settings, caller: Caller, *, watchers: int) -> SystemStatus:
    if not caller.is_admin:
        raise PermissionDeniedError("the system status is for operators: use a key that acts for every caller (--acts-for '*')")
    now = utcnow()
    beats = await heartbeats(db)
    async with db.read() as conn:
        due, _ = await DeliveryRepository(conn).due_summary(now)
        backlogs = BacklogRepository(conn)
        stale = await backlogs.stale_payments(stale_before=now - timedelta(seconds=settings.reconcile_stale_after_seconds),
                                              now=now)
        overdue = await backlogs.overdue_payments(created_before=now - timedelta(seconds=settings.pending_timeout_seconds))
        cursors = await backlogs.stellar_cursors() if settings.stellar is not None else []
        dead = await DeadCallbackRepository(conn).count_dead()
    workers = [_worker(name, beats.get(name), backlog, now, settings.worker_stale_after_seconds)
               for name, backlog in zip(WORKERS, (due, stale, overdue), strict=True)]
    return SystemStatus(workers, await _cursor_states(settings, cursors), dead, watchers)


def _worker(name: str, beat: tuple | None, backlog: int, now: datetime, stale_after: float) -> WorkerState:
    if beat is None:
        return WorkerState(name, None, 0.0, backlog, "no successful batch recorded: is the worker running?")
    last = beat[0]
    age = (now - last).total_seconds()
    problem = f"no successful batch for {age:.0f} s (more than {stale_after:g} s)" if age > stale_after else ""
    return WorkerState(name, last, age, backlog, problem)


async def _cursor_states(settings: Settings, cursors: list[tuple[str, str, datetime]]) -> list[CursorState]:
    if not cursors:
        return []
    latest, problem = 0, ""
    try:
        timeout = aiohttp.ClientTimeout(total=HORIZON_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(settings.stellar.horizon_url + "/") as response:
            response.raise_for_status()
            latest = int((await response.json())["history_latest_ledger"])
    except (aiohttp.ClientError, TimeoutError, KeyError, ValueError, TypeError) as exc:
        problem = f"Horizon's latest ledger is unknown: {type(exc).__name__}: {exc}"
    # A paging token's high 32 bits are its ledger's sequence number.
    return [CursorState(account, token, int(token) >> 32, latest, problem) for account, token, _ in cursors]
