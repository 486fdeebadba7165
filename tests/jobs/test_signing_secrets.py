"""Signing secrets on SQLite and MariaDB: a service's first secret is made once however
many dispatchers (or CLI runs) need it at the same moment; a rotation never lengthens
the life of a secret that already has an end; configured secrets sign after the stored
ones and a secret both stored and configured signs once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import sqlalchemy as sa

from payments_svc.clock import utcnow
from payments_svc.config import load_settings
from payments_svc.db.engine import open_database
from payments_svc.db.tables import signing_secrets
from payments_svc.repository.signing_secrets import SigningSecretRepository, current_signing_secrets

from ..support import base_env
from .helpers import SHOP_SECRET, migrate_database


async def test_concurrent_first_uses_make_one_secret(database):
    await migrate_database(database.url)
    # Separate engines, as separate dispatcher processes would have.
    dbs = [open_database(load_settings(base_env(database.url))) for _ in range(4)]
    try:
        now = utcnow()
        answers = await asyncio.gather(*(
            current_signing_secrets(db, ["shop", "billing"], configured=(), now=now) for db in dbs
        ))
        for service in ("shop", "billing"):
            secrets = {tuple(s.secret for s in answer[service]) for answer in answers}
            assert len(secrets) == 1 and len(next(iter(secrets))) == 1, secrets
            assert sum(answer[service][0].created_now for answer in answers) == 1
        async with dbs[0].read() as conn:
            rows = (await conn.execute(sa.select(signing_secrets.c.caller_service))).scalars().all()
        assert sorted(rows) == ["billing", "shop"]
    finally:
        for db in dbs:
            await db.close()


async def test_rotations_and_configured_secrets(database):
    await migrate_database(database.url)
    db = open_database(load_settings(base_env(database.url)))
    try:
        now = utcnow()
        [first] = (await current_signing_secrets(db, ["shop"], configured=(), now=now))["shop"]
        async with db.transaction() as conn:
            second = await SigningSecretRepository(conn).rotate("shop", grace=timedelta(hours=1), now=now)
        async with db.transaction() as conn:  # a second rotation with a longer grace: `first` still ends in 1 h
            third = await SigningSecretRepository(conn).rotate("shop", grace=timedelta(hours=24), now=now)
        current = (await current_signing_secrets(db, ["shop"], configured=(), now=now))["shop"]
        assert [s.secret for s in current] == [third, second, first.secret]
        assert current[0].expires_at is None
        assert current[1].expires_at == now + timedelta(hours=24) and current[2].expires_at == now + timedelta(hours=1)

        in_two_hours = await current_signing_secrets(db, ["shop"], configured=(), now=now + timedelta(hours=2))
        assert [s.secret for s in in_two_hours["shop"]] == [third, second]

        configured = (("shop", SHOP_SECRET), ("shop", third))
        signing = (await current_signing_secrets(db, ["shop"], configured=configured, now=now))["shop"]
        assert [s.secret for s in signing] == [third, second, first.secret, SHOP_SECRET]
        assert signing[-1].created_at is None  # from the configuration
    finally:
        await db.close()
