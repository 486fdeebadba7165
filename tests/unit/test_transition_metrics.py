"""payments_status_transitions_total{from_status,to_status}: each applied transition is counted
under the status it left and the status it reached (dashboards and alerts split on both)."""

from __future__ import annotations

from datetime import datetime

import pytest
from prometheus_client import REGISTRY

from payments_svc.domain.enums import PaymentMethod, PaymentStatus, PaymentType, ProviderType
from payments_svc.domain.payment import Payment
from payments_svc.service.status_changes import StatusChange, plan_transition

NOW = datetime(2026, 3, 1, 12, 0, 0)


def payment(status: PaymentStatus) -> Payment:
    values = {name: None for name in Payment.__dataclass_fields__}
    values.update(id=7, request_id="r", caller_service="shop", request_fingerprint="f" * 64, resource_type="order",
                  resource_id="o-1", amount_cents=1500, currency="USD", status=status,
                  payment_method=PaymentMethod.HOSTED_CARD, payment_type=PaymentType.ONE_TIME,
                  provider=ProviderType.SANDBOX, provider_callback_hash="h", provider_callback_url="u",
                  status_callback_url="s", refunded_cents=0, refundable_cents=1500, received_cents=0, metadata={},
                  attention_required=False, created_at=NOW, updated_at=NOW)
    return Payment(**values)


def counted() -> dict[tuple[str, str], float]:
    """Every (from_status, to_status) series of the counter, with its value."""
    return {(s.labels["from_status"], s.labels["to_status"]): s.value
            for metric in REGISTRY.collect() if metric.name == "payments_status_transitions"
            for s in metric.samples if s.name == "payments_status_transitions_total"}


@pytest.mark.parametrize("old, new", [
    (PaymentStatus.CREATED, PaymentStatus.PENDING),
    (PaymentStatus.PENDING, PaymentStatus.PAID),
    (PaymentStatus.PROCESSING, PaymentStatus.FAILED),
], ids=lambda status: status.name.lower())
def test_an_applied_transition_is_counted_under_the_status_it_left_and_the_one_it_reached(old, new):
    before = counted()
    transition = plan_transition(payment(old), StatusChange(new, "test_transition"), NOW)
    applied = transition.applied()
    assert (applied.status, applied.updated_at) == (new, NOW)
    after = counted()
    changed = {labels: value - before.get(labels, 0.0) for labels, value in after.items()
               if value != before.get(labels, 0.0)}
    assert changed == {(old.name, new.name): 1.0}


def test_a_planned_transition_is_counted_only_once_applied():
    """A conditional UPDATE that did not apply (another writer won) is no transition."""
    before = counted()
    plan_transition(payment(PaymentStatus.PENDING), StatusChange(PaymentStatus.CANCELED, "test_transition"), NOW)
    assert counted() == before
