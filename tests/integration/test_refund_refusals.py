"""A refund the provider refuses, in-process on SQLite and MariaDB: the refund fails for good
with the provider's reason (cut to the column), its amount is released while earlier refunds
keep theirs, and the timeline says which refund was refused and why."""

from __future__ import annotations

import pytest

from payments_svc.domain.errors import ErrorKind, PaymentsError, ProviderError
from payments_svc.domain.refund import RefundCommand, RefundStatus
from payments_svc.providers.base import RefundSnapshot
from payments_svc.repository.refunds import RefundRepository

from .test_refunds import SHOP, paid_payment


async def test_a_refused_refund_releases_only_its_own_amount(container):
    service = container.service
    payment = await paid_payment(service)
    await service.refund_payment(SHOP, RefundCommand(payment.id, "r-ok", 400, ""))
    provider = service.providers.get(payment.provider)
    reason = "charge is disputed " + "x" * 2000

    async def refuse(payment, refund, idempotency_key) -> RefundSnapshot:
        raise ProviderError(reason, retryable=False, kind=ErrorKind.FAILED_PRECONDITION)

    provider.refund = refuse
    with pytest.raises(PaymentsError):
        await service.refund_payment(SHOP, RefundCommand(payment.id, "r-refused", 300, ""))

    after = await service.get_payment(SHOP, payment.id)
    assert (after.refunded_cents, after.refundable_cents) == (400, 1100)  # the first refund still holds its 400
    async with container.db.read() as conn:
        ok, refused = await RefundRepository(conn).list_for_payment(payment.id)
    assert (ok.status, ok.amount_cents) == (RefundStatus.SUCCEEDED, 400)
    assert (refused.status, refused.amount_cents, refused.error_code) == (RefundStatus.FAILED, 300, "failed_precondition")
    assert refused.failure_reason == reason[:1024]
    last = (await service.list_payment_events(SHOP, payment.id, limit=0, after_event_id=0))[-1]
    assert last.event_type == "refund_rejected"
    assert last.message.startswith(f"refund #{refused.id} of 300 refused by the provider: charge is disputed xxx")
