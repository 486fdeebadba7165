"""GetPaymentStats: a caller's (or one buyer's, by customer_ref) payments over a time
range: counts and amounts by status and currency, conversion (paid / created) and
refunds. Amounts are summed per currency only: never across currencies."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..auth.caller import Caller
from ..clock import utcnow
from ..db.engine import Database
from ..domain.enums import PaymentStatus
from ..domain.errors import PermissionDeniedError, ValidationError
from ..domain.time_range import check_order
from ..repository.stats import StatsRepository, StatusGroup

DEFAULT_RANGE = timedelta(days=30)
MAX_RANGE = timedelta(days=366)


@dataclass(frozen=True, slots=True)
class PaymentStats:
    caller_service: str
    customer_ref: str
    since: datetime
    until: datetime
    by_status: list[StatusGroup]
    created: int
    paid: int
    refunded_cents_by_currency: dict[str, int] = field(default_factory=dict)

    @property
    def conversion(self) -> float:
        return self.paid / self.created if self.created else 0.0


async def payment_stats(db: Database, caller: Caller, *, caller_service: str, customer_ref: str,
                        since: datetime | None, until: datetime | None) -> PaymentStats:
    caller_service = caller_service.strip() or caller.service_name
    if not caller.may_act_for(caller_service):
        raise PermissionDeniedError(f"this api key may not read payments of caller_service {caller_service!r}",
                                    field="caller_service")
    customer_ref = customer_ref.strip()
    if len(customer_ref) > 255:
        raise ValidationError("customer_ref is longer than 255 characters", field="customer_ref")
    until = until or utcnow()
    since = since or until - DEFAULT_RANGE
    check_order(since, until)
    if until - since > MAX_RANGE:
        raise ValidationError("the range may span at most 366 days; ask for several ranges", field="since")
    async with db.read() as conn:
        groups = await StatsRepository(conn).by_status(caller_service, customer_ref, since, until)
    refunded: dict[str, int] = defaultdict(int)
    for group in groups:
        if group.refunded_cents:
            refunded[group.currency] += group.refunded_cents
    return PaymentStats(
        caller_service=caller_service, customer_ref=customer_ref, since=since, until=until, by_status=groups,
        created=sum(g.count for g in groups), paid=sum(g.count for g in groups if g.status == PaymentStatus.PAID),
        refunded_cents_by_currency=dict(refunded),
    )
