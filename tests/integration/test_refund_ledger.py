"""The refunds ledger through its repository, on SQLite and MariaDB: every column kept and read
back, lookups by our key and by the provider's refund id (per provider), and the reservation
that keeps refunds together within what was paid."""

from __future__ import annotations

from datetime import timedelta

import pytest

from payments_svc.clock import utcnow
from payments_svc.domain.enums import PaymentStatus, ProviderType
from payments_svc.domain.refund import RefundStatus
from payments_svc.repository.payments import PaymentRepository
from payments_svc.repository.refunds import DuplicateRefundKey, RefundRepository

from .test_payment_service import command
from .test_refunds import SHOP, paid_payment

NOW = utcnow().replace(microsecond=0)
FINGERPRINT = "f0" * 32  # a SHA-256 in hex, as the service stores (CHAR(64): PostgreSQL pads shorter values)


async def test_every_column_is_kept_and_found_by_either_id(container):
    payment = await paid_payment(container.service)
    async with container.db.transaction() as conn:
        repo = RefundRepository(conn)
        ours = await repo.insert(payment_id=payment.id, provider=ProviderType.SANDBOX, amount_cents=300,
                                 status=RefundStatus.PENDING, now=NOW, request_id="r-1", request_fingerprint=FINGERPRINT,
                                 reason="duplicate", provider_refund_id="re_1", failure_reason="not yet")
        theirs = await repo.insert(payment_id=payment.id, provider=ProviderType.SANDBOX, amount_cents=200,
                                   status=RefundStatus.SUCCEEDED, now=NOW, provider_refund_id="re_2")
        with pytest.raises(DuplicateRefundKey):
            await repo.insert(payment_id=payment.id, provider=ProviderType.SANDBOX, amount_cents=1,
                              status=RefundStatus.PENDING, now=NOW, request_id="r-1")
    async with container.db.read() as conn:
        repo = RefundRepository(conn)
        stored = await repo.get(ours.id)
        assert stored == ours and ours.status.name == "PENDING"  # an enum, as read back
        assert (stored.payment_id, stored.request_id, stored.request_fingerprint, stored.amount_cents, stored.reason,
                stored.status, stored.provider_refund_id, stored.failure_reason, stored.error_code) == (
            payment.id, "r-1", FINGERPRINT, 300, "duplicate", RefundStatus.PENDING, "re_1", "not yet", None)
        assert stored.created_at == stored.updated_at == NOW
        assert await repo.get(theirs.id + 1) is None
        assert await repo.find_by_request(payment.id, "r-1") == ours
        assert await repo.find_by_request(payment.id, "r-2") is None
        assert await repo.find_by_request(payment.id + 1, "r-1") is None  # keys are per payment
        assert await repo.find_by_provider_id(ProviderType.SANDBOX, "re_2") == theirs
        assert await repo.find_by_provider_id(ProviderType.SANDBOX, "re_3") is None
        assert await repo.find_by_provider_id(ProviderType.STRIPE, "re_2") is None  # ids are per provider
        assert await repo.list_for_payment(payment.id) == [ours, theirs]
        assert await repo.list_for_payment(payment.id + 1) == []
    async with container.db.transaction() as conn:
        await RefundRepository(conn).update(ours.id, {"status": RefundStatus.FAILED, "error_code": "invalid_argument",
                                                      "updated_at": NOW + timedelta(seconds=5)})
        changed = await RefundRepository(conn).get(ours.id)
    assert (changed.status, changed.error_code, changed.updated_at, changed.created_at) == (
        RefundStatus.FAILED, "invalid_argument", NOW + timedelta(seconds=5), NOW)


async def test_reservations_never_exceed_what_is_left_and_need_a_paid_payment(container):
    payment = await paid_payment(container.service)  # 1500 paid
    other = await paid_payment(container.service, "req-2")
    async with container.db.transaction() as conn:
        repo = RefundRepository(conn)
        assert await repo.reserve(other.id, 100, NOW) is True  # its own refundable_cents only
        assert (await PaymentRepository(conn).get(payment.id)).refundable_cents == 1500
        assert await repo.reserve(payment.id, 1000, NOW) is True
        assert await repo.reserve(payment.id, 501, NOW) is False
        assert await repo.reserve(payment.id, 500, NOW) is True  # exactly what is left
        assert await repo.reserve(payment.id, 1, NOW) is False
        left = await PaymentRepository(conn).get(payment.id)
    assert (left.refundable_cents, left.updated_at) == (0, NOW)

    unpaid = (await container.service.create_payment(SHOP, command("unpaid"))).payment
    assert unpaid.status == PaymentStatus.PENDING
    async with container.db.transaction() as conn:
        assert await RefundRepository(conn).reserve(unpaid.id, 1, NOW) is False

