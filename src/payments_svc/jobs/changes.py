"""How the jobs turn what a provider reports into a status change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..domain.enums import PaymentStatus
from ..domain.payment import Payment
from ..domain.transitions import can_transition, is_paid_after_end
from ..service.status_changes import StatusChange


def change_to(
    target: PaymentStatus, event_type: str, message: str, values: dict[str, Any] | None = None
) -> Callable[[Payment], StatusChange | None]:
    """A `decide` for PaymentService.change_status: move to `target` if the table
    allows it from the status found then. A payment that ended meanwhile is left
    alone, except that money reported taken after the end is recorded for attention;
    regressions (PROCESSING back to PENDING) are ignored without an event, since a
    job would otherwise record one on every run."""

    def decide(current: Payment) -> StatusChange | None:
        if current.status == target:
            return None
        if can_transition(current.status, target) or is_paid_after_end(current.status, target):
            return StatusChange(target, event_type, values=dict(values or {}), message=message)
        return None

    return decide
