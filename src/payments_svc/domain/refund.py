"""Refunds: the ledger of every provider refund of a payment, ours and those made at
the provider (a dashboard), from which refunded_cents and refundable_cents follow."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum


class RefundStatus(IntEnum):
    """Numbers are stored and sent (proto RefundStatus)."""

    UNSPECIFIED = 0
    PENDING = 1  # asked for, or under way at the provider
    SUCCEEDED = 10
    FAILED = 20  # refused, or returned by the bank after it had succeeded
    CANCELED = 30

    @property
    def rank(self) -> int:
        """Refunds only move forward (pending → succeeded → failed/canceled; never
        back), so a late or replayed snapshot with a lower rank is stale."""
        return {RefundStatus.PENDING: 0, RefundStatus.SUCCEEDED: 1}.get(self, 2)

    @property
    def holds_money(self) -> bool:
        """Counts against what is left to refund."""
        return self in (RefundStatus.PENDING, RefundStatus.SUCCEEDED)


# The refund reasons Stripe knows; an empty reason is allowed.
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")


@dataclass(slots=True)
class Refund:
    id: int
    payment_id: int
    request_id: str | None  # None: made at the provider, not through the API
    request_fingerprint: str | None
    amount_cents: int
    reason: str | None
    status: RefundStatus
    provider_refund_id: str | None
    failure_reason: str | None
    error_code: str | None  # the error kind when the provider refused our request
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RefundCommand:
    payment_id: int
    request_id: str
    amount_cents: int  # 0: everything still refundable
    reason: str

    def fingerprint(self) -> str:
        body = {"amount_cents": self.amount_cents, "reason": self.reason}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def refund_totals(amount_cents: int, refunds: list[Refund]) -> tuple[int, int]:
    """(refunded_cents, refundable_cents): money returned, and what may still be
    asked for (refunds under way hold their amount until they fail)."""
    refunded = sum(r.amount_cents for r in refunds if r.status == RefundStatus.SUCCEEDED)
    held = sum(r.amount_cents for r in refunds if r.status.holds_money)
    return refunded, max(0, amount_cents - held)
