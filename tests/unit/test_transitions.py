from __future__ import annotations

from payments_svc.domain.enums import TERMINAL_STATUSES
from payments_svc.domain.enums import PaymentStatus as S
from payments_svc.domain.transitions import ALLOWED_TRANSITIONS, can_transition, is_paid_after_end


def test_every_status_has_a_row_and_terminal_statuses_are_final():
    assert set(ALLOWED_TRANSITIONS) == set(S) - {S.UNSPECIFIED}
    for status in TERMINAL_STATUSES:
        assert ALLOWED_TRANSITIONS[status] == frozenset()


def test_no_status_moves_backwards():
    assert not can_transition(S.PROCESSING, S.PENDING)
    assert not can_transition(S.PAID, S.CANCELED)
    assert can_transition(S.PENDING, S.PROCESSING) and can_transition(S.PROCESSING, S.PAID)


def test_paid_after_an_end_needs_attention():
    assert is_paid_after_end(S.CANCELED, S.PAID) and is_paid_after_end(S.EXPIRED, S.PAID)
    assert not is_paid_after_end(S.PENDING, S.PAID)
