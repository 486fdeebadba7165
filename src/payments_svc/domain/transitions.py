"""The one table of allowed status changes.

Terminal statuses are final. Every writer (create, cancel, provider events, jobs)
asks this table; the repository then applies the change with a conditional UPDATE
on the status it read, so two writers can never both win.
"""

from __future__ import annotations

from .enums import PaymentStatus as S

ALLOWED_TRANSITIONS: dict[S, frozenset[S]] = {
    S.CREATED: frozenset({S.PENDING, S.PROCESSING, S.PAID, S.FAILED, S.CANCELED, S.EXPIRED}),
    S.PENDING: frozenset({S.PROCESSING, S.PAID, S.FAILED, S.CANCELED, S.EXPIRED}),
    S.PROCESSING: frozenset({S.PAID, S.FAILED, S.CANCELED, S.EXPIRED}),
    S.PAID: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELED: frozenset(),
    S.EXPIRED: frozenset(),
}


def can_transition(old: S, new: S) -> bool:
    return new in ALLOWED_TRANSITIONS[old]


def is_paid_after_end(old: S, new: S) -> bool:
    """Money reported taken for a payment we already ended: record it for an operator."""
    return new == S.PAID and old in (S.CANCELED, S.EXPIRED, S.FAILED)
