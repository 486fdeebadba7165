"""The claims' edges that tests/jobs/test_claims.py and test_signing_secrets.py leave.
Job claims: a claim returns each payment whole with its reconcile attempts and leases
exactly the rows it returns; a second claimer on PostgreSQL and MariaDB skips the rows a
first one is claiming right now (SKIP LOCKED) instead of waiting for them. Signing secrets:
a first use queues behind a rotation in progress and signs with its secret; which secrets
sign at a moment (an end is exclusive), per service; the rotation's grace window; a
service with configured secrets only gets none stored; the first use's deadlock retries.
Provider objects: which payment a provider's object belongs to, per provider."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

import payments_svc.repository.signing_secrets as signing_module
from payments_svc.db.tables import payments, provider_objects, signing_secrets
from payments_svc.domain.enums import PaymentStatus, ProviderType
from payments_svc.repository.payment_jobs import PaymentJobRepository
from payments_svc.repository.payments import PaymentRepository
from payments_svc.repository.provider_objects import ProviderObjectRepository
from payments_svc.repository.signing_secrets import SigningSecret, SigningSecretRepository, current_signing_secrets

from ..conftest import on_server_databases
from .test_claims import LEASE, NOW, claim, ids, make_payments, set_row

S = PaymentStatus
OLD = NOW - timedelta(hours=1)


async def leases(container) -> dict[int, object]:
    async with container.db.read() as conn:
        rows = await conn.execute(sa.select(payments.c.id, payments.c.job_lease_until))
        return {row.id: row.job_lease_until for row in rows}


async def test_a_claim_returns_each_payment_whole_and_leases_exactly_those_rows(container):
    a, b, c, d = await make_payments(container, 4)
    await set_row(container, a, updated_at=OLD, reconcile_attempts=3, reconcile_next_at=OLD)
    await set_row(container, b, updated_at=OLD, status=S.PROCESSING)  # never checked: first
    await set_row(container, c, updated_at=OLD, status=S.PAID)  # ended: not reconcile's
    await set_row(container, d, updated_at=OLD, reconcile_attempts=1, reconcile_next_at=OLD + timedelta(minutes=1))
    claimed = await claim(container, "reconcile", limit=2)
    assert ids(claimed) == [b, a]
    assert [(cl.reconcile_attempts, cl.lease_until) for cl in claimed] == [(0, LEASE), (3, LEASE)]
    async with container.db.read() as conn:
        stored = [await PaymentRepository(conn).get(pid) for pid in (b, a)]
    assert [cl.payment for cl in claimed] == stored  # every column, read back as the repository reads it
    assert claimed[0].payment.status == S.PROCESSING and claimed[1].payment.status == S.PENDING
    assert await leases(container) == {a: LEASE, b: LEASE, c: None, d: None}
    # The one left over is the next claim's, alone.
    (rest,) = await claim(container, "reconcile", lease_until=LEASE + timedelta(minutes=1))
    assert (rest.payment.id, rest.reconcile_attempts, rest.lease_until) == (d, 1, LEASE + timedelta(minutes=1))
    assert await leases(container) == {a: LEASE, b: LEASE, c: None, d: LEASE + timedelta(minutes=1)}


async def test_a_claim_of_nothing_leases_nothing(container):
    (a,) = await make_payments(container, 1)
    await set_row(container, a, created_at=NOW + timedelta(seconds=1))
    assert await claim(container, "expiry") == []
    assert await claim(container, "creates") == []  # PENDING: its create finished
    assert await leases(container) == {a: None}


# SQLite's write lock serialises claimers: nothing is claimed at the same moment there.
@on_server_databases
async def test_a_second_claimer_skips_the_rows_another_is_claiming(container):
    a, b, c, d = await make_payments(container, 4)
    for pid in (a, b, c, d):
        await set_row(container, pid, created_at=OLD)
    async with container.db.transaction() as first:
        # The first claimer has locked a and b and not committed yet.
        assert ids(await PaymentJobRepository(first).claim_for_expiry(
            provider=ProviderType.SANDBOX, now=NOW, created_before=NOW, limit=2, lease_until=LEASE)) == [a, b]
        second = asyncio.create_task(claim(container, "expiry", limit=2))
        done, _ = await asyncio.wait([second], timeout=2)
    claimed = await second  # (when it waited, the first one's commit has let it go on)
    assert done, "the second claimer waited for the first one's rows instead of skipping them"
    assert ids(claimed) == [c, d]
    assert await leases(container) == {a: LEASE, b: LEASE, c: LEASE, d: LEASE}


# ---- signing secrets ---------------------------------------------------------------------------


async def add_secret(container, service: str, secret: str, *, created_at=OLD, expires_at=None) -> None:
    async with container.db.transaction() as conn:
        await conn.execute(signing_secrets.insert().values(caller_service=service, secret=secret, created_at=created_at,
                                                           expires_at=expires_at))


async def stored_secrets(container) -> list[tuple]:
    s = signing_secrets.c
    async with container.db.read() as conn:
        return [tuple(r) for r in await conn.execute(sa.select(s.caller_service, s.secret, s.expires_at).order_by(s.id))]


async def test_a_first_use_waits_for_a_rotation_in_progress_and_signs_with_its_secret(container):
    db = container.db
    async with db.transaction() as conn:
        rotated = await SigningSecretRepository(conn).rotate("shop", grace=timedelta(hours=1), now=NOW)
        # Another dispatcher's first use of the service, while the rotation is not committed.
        first_use = asyncio.create_task(current_signing_secrets(db, ["shop"], configured=(), now=NOW))
        done, _ = await asyncio.wait([first_use], timeout=0.3)
    signing = await first_use
    assert not done, "the first use did not queue behind the rotation's lock"
    assert signing == {"shop": [SigningSecret(rotated, NOW, None)]}  # not created_now: the rotation made it
    assert await stored_secrets(container) == [("shop", rotated, None)]


async def test_the_secrets_that_sign_at_a_moment_per_service_newest_first(container):
    await add_secret(container, "shop", "s-old", created_at=OLD, expires_at=NOW)  # ends exactly now
    await add_secret(container, "shop", "s-mid", created_at=OLD, expires_at=NOW + timedelta(hours=1))
    await add_secret(container, "shop", "s-new", created_at=NOW)
    await add_secret(container, "billing", "b-1", created_at=OLD)
    await add_secret(container, "other", "o-1", created_at=OLD)
    async with container.db.read() as conn:
        repo = SigningSecretRepository(conn)
        assert await repo.active(["shop", "billing"], NOW) == {
            "shop": [SigningSecret("s-new", NOW, None), SigningSecret("s-mid", OLD, NOW + timedelta(hours=1))],
            "billing": [SigningSecret("b-1", OLD, None)],
        }
        before_its_end = await repo.active(["shop"], NOW - timedelta(microseconds=1))
        assert [s.secret for s in before_its_end["shop"]] == ["s-new", "s-mid", "s-old"]
        assert await repo.active(["nobody"], NOW) == {}


async def test_a_service_whose_secrets_all_ended_gets_a_new_one(container):
    await add_secret(container, "shop", "s-ended", expires_at=NOW)
    await add_secret(container, "billing", "b-1")  # another service's secret is not the shop's
    signing = await current_signing_secrets(container.db, ["shop"], configured=(), now=NOW)
    [made] = signing["shop"]
    assert (made.created_at, made.expires_at, made.created_now) == (NOW, None, True)
    assert made.secret.startswith("whsec_") and made.secret != "s-ended"
    assert await stored_secrets(container) == [("shop", "s-ended", NOW), ("billing", "b-1", None),
                                               ("shop", made.secret, None)]


async def test_a_service_with_configured_secrets_only_gets_none_stored(container):
    await add_secret(container, "billing", "b-1")
    configured = (("shop", "whsec_configured_1"), ("shop", "whsec_configured_2"))
    signing = await current_signing_secrets(container.db, ["shop", "billing", "shop"], configured=configured, now=NOW)
    assert signing == {"shop": [SigningSecret("whsec_configured_1", None, None), SigningSecret("whsec_configured_2", None, None)],
                       "billing": [SigningSecret("b-1", OLD, None)]}
    assert await stored_secrets(container) == [("billing", "b-1", None)]


async def test_a_rotation_ends_the_others_after_the_grace_never_later(container):
    await add_secret(container, "shop", "s-open")
    await add_secret(container, "shop", "s-later", expires_at=NOW + timedelta(hours=5))
    await add_secret(container, "shop", "s-sooner", expires_at=NOW + timedelta(minutes=30))
    await add_secret(container, "billing", "b-1")
    async with container.db.transaction() as conn:
        new = await SigningSecretRepository(conn).rotate("shop", grace=timedelta(hours=1), now=NOW)
    retire_at = NOW + timedelta(hours=1)
    assert await stored_secrets(container) == [
        ("shop", "s-open", retire_at), ("shop", "s-later", retire_at), ("shop", "s-sooner", NOW + timedelta(minutes=30)),
        ("billing", "b-1", None), ("shop", new, None),
    ]


async def test_a_rotation_made_between_the_first_use_and_its_read_is_marked_too(container, monkeypatch):
    """Another process rotates the service just after this one made its first secret: both
    are read back, as stored, and both marked created_now (this call made the service's first)."""
    made_first = signing_module._create_if_none

    async def then_rotated(db, service, now):
        created = await made_first(db, service, now)
        async with db.transaction() as conn:
            await SigningSecretRepository(conn).rotate(service, grace=timedelta(minutes=10), now=now)
        return created

    monkeypatch.setattr(signing_module, "_create_if_none", then_rotated)
    signing = (await current_signing_secrets(container.db, ["shop"], configured=(), now=NOW))["shop"]
    assert [(s.created_at, s.expires_at, s.created_now) for s in signing] == [
        (NOW, None, True), (NOW, NOW + timedelta(minutes=10), True)]


class DriverError(Exception):
    """A MySQL driver error: (errno, message)."""


def driver_error(errno: int) -> OperationalError:
    return OperationalError("INSERT INTO signing_secrets ...", {}, DriverError(errno, "..."))


@pytest.fixture
def first_uses(monkeypatch):
    """create_if_none scripted to fail with the given errors before it succeeds (a
    RuntimeError past them all stops a run that would retry for ever), and the retry
    pauses recorded instead of slept."""
    script = FirstUseScript()

    async def create_if_none(repo, caller_service, now):
        return await script.create_if_none(caller_service, now)

    monkeypatch.setattr(SigningSecretRepository, "create_if_none", create_if_none)
    monkeypatch.setattr(signing_module, "random", script)
    monkeypatch.setattr(signing_module, "asyncio", script)
    return script


class FirstUseScript:
    def __init__(self):
        self.errors: list[Exception] = []
        self.calls = 0
        self.drawn: list[tuple] = []
        self.slept: list[float] = []

    async def create_if_none(self, caller_service, now):
        self.calls += 1
        if self.calls > 12:
            raise RuntimeError("retried past the bound")
        if self.errors:
            raise self.errors.pop(0)
        return True

    def uniform(self, low, high):
        self.drawn.append((low, high))
        return 0.01 * len(self.drawn)

    async def sleep(self, seconds):
        self.slept.append(seconds)


async def test_a_first_use_retries_deadlocks_after_a_short_random_pause(container, first_uses):
    first_uses.errors = [driver_error(1213), driver_error(1213)]
    assert await signing_module._create_if_none(container.db, "shop", NOW) is True
    assert first_uses.calls == 3
    assert first_uses.drawn == [(0.005, 0.05)] * 2 and first_uses.slept == [0.01, 0.02]


async def test_a_first_use_gives_up_after_ten_deadlocks(container, first_uses):
    first_uses.errors = [driver_error(1213) for _ in range(12)]
    with pytest.raises(OperationalError) as failed:
        await signing_module._create_if_none(container.db, "shop", NOW)
    assert failed.value.orig.args[0] == 1213
    assert first_uses.calls == 10 and len(first_uses.slept) == 9


async def test_a_first_use_raises_any_other_error_at_once(container, first_uses):
    first_uses.errors = [driver_error(1366), driver_error(1213)]
    with pytest.raises(OperationalError) as failed:
        await signing_module._create_if_none(container.db, "shop", NOW)
    assert failed.value.orig.args[0] == 1366
    assert first_uses.calls == 1 and first_uses.slept == []


# ---- provider objects --------------------------------------------------------------------------


async def test_a_providers_objects_belong_to_the_payment_that_owns_or_recorded_them(container):
    stripe, sandbox = ProviderType.STRIPE, ProviderType.SANDBOX
    a, b, _ = await make_payments(container, 3)  # the third keeps its own sandbox id
    await set_row(container, a, provider=stripe, provider_payment_id="cs_1")
    await set_row(container, b, provider_payment_id="cs_1")  # the same id at another provider
    long_id = "x" * 300
    async with container.db.transaction() as conn:
        repo = ProviderObjectRepository(conn)
        assert await repo.owners(stripe, []) == set()
        await repo.register(stripe, a, ["pi_1", "in_1", "pi_1"], NOW)  # named twice: recorded once
        await repo.register(sandbox, b, ["pi_1"], NOW + timedelta(seconds=1))  # another provider's object
        await repo.register(stripe, a, ["pi_1", "ch_1"], NOW + timedelta(seconds=2))  # only ch_1 is new
        await repo.register(stripe, a, [long_id], NOW)  # kept to the column's 255 characters
        await repo.register(stripe, a, [long_id], NOW)  # and known as such: not inserted twice
        await repo.register(stripe, a, [], NOW)
        assert await repo.owners(stripe, ["cs_1", "pi_1", "in_1", "ch_1", long_id[:255], "pi_unknown"]) == {
            ("cs_1", a), ("pi_1", a), ("in_1", a), ("ch_1", a), (long_id[:255], a)}
        assert await repo.owners(stripe, ["in_1"]) == {("in_1", a)}  # only the objects asked for
        assert await repo.owners(sandbox, iter(["cs_1", "pi_1", "in_1"])) == {("cs_1", b), ("pi_1", b)}
        assert await repo.owners(ProviderType.VNPAY, ["cs_1", "pi_1"]) == set()
    p = provider_objects.c
    async with container.db.read() as conn:
        rows = (await conn.execute(sa.select(p.provider, p.object_id, p.payment_id, p.created_at))).all()
    assert sorted(tuple(r) for r in rows) == sorted([
        (int(sandbox), "pi_1", b, NOW + timedelta(seconds=1)),
        (int(stripe), "ch_1", a, NOW + timedelta(seconds=2)), (int(stripe), "in_1", a, NOW),
        (int(stripe), "pi_1", a, NOW), (int(stripe), long_id[:255], a, NOW),
    ])
