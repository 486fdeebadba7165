"""Use cases of a payment's status callbacks: reading the delivery state, and
queueing a replay (a new delivery, with a new delivery id, of the current status)."""

from __future__ import annotations

from .. import metrics
from ..auth.caller import Caller
from ..clock import utcnow
from ..db.engine import Database
from ..domain.errors import ErrorKind, PaymentsError
from ..domain.payment import Payment
from ..domain.validation import validate_payment_id
from ..repository.deliveries import CallbackDelivery, DeliveryRepository
from ..repository.events import EventRepository
from ..repository.outbox import OutboxRepository
from ..repository.payments import PaymentRepository
from . import audit
from .dead_callbacks import refresh_dead_metric
from .payments import PaymentService, visible_to


class CallbackService:
    def __init__(self, payments: PaymentService):
        self.payments = payments

    async def get_payment_with_delivery(self, caller: Caller, payment_id: int) -> tuple[Payment, CallbackDelivery | None]:
        """The payment (scoped to the caller, as GetPayment) and its latest callback delivery."""
        validate_payment_id(payment_id)
        async with self.payments.db.read() as conn:
            found = await PaymentRepository(conn).get_with_latest_delivery(payment_id)
        payment, delivery = found or (None, None)
        return visible_to(caller, payment), delivery

    async def replay(self, caller: Caller, payment_id: int) -> tuple[Payment, CallbackDelivery]:
        payment = await self.payments.get_payment(caller, payment_id)
        problem = self.payments.settings.callback_destinations.url_problem(payment.status_callback_url)
        if problem is not None:
            raise PaymentsError(f"{problem}; the callback cannot be delivered", ErrorKind.FAILED_PRECONDITION)
        now = utcnow()
        async with self.payments.db.transaction() as conn:
            delivery_id = await OutboxRepository(conn).enqueue(
                payment_id=payment.id, caller_service=payment.caller_service,
                event_type="payment." + payment.status.name.lower(), payment_status=payment.status, now=now,
            )
            await EventRepository(conn).add(
                payment_id=payment.id, event_type="callback_replay_requested", old_status=payment.status,
                new_status=payment.status, now=now, message=f"{delivery_id} queued",
            )
            delivery = await DeliveryRepository(conn).get_by_delivery_id(delivery_id)
        await audit.record(self.payments.db, caller, audit.CALLBACK_REPLAYED, "payment", payment.id, f"{delivery_id} queued")
        return payment, delivery


async def refresh_outbox_metrics(db: Database) -> None:
    """Sets the outbox gauges from the table (on each scrape, and after each dispatch batch)."""
    now = utcnow()
    async with db.read() as conn:
        due, oldest = await DeliveryRepository(conn).due_summary(now)
    metrics.OUTBOX_DUE.set(due)
    metrics.OUTBOX_OLDEST_DUE_AGE.set((now - oldest).total_seconds() if oldest is not None else 0)
    await refresh_dead_metric(db)
