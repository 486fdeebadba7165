"""Provider accounts with their secrets encrypted: what the CLI and the service call.
Plaintext secrets exist only in memory, between the file they were read from (or the
row they were decrypted from) and the provider that uses them."""

from __future__ import annotations

from dataclasses import dataclass

from ..clock import utcnow
from ..db.engine import Database
from ..domain.enums import ProviderType
from .credentials import AccountCredentials, CredentialsError, check_secrets, split_secrets
from .encryption import VARIABLE, EncryptionKeys, key_id_of
from .repository import SECRET_FIELDS, AccountRow, ProviderAccountRepository


class AccountKeysMissing(Exception):
    """Accounts are stored, or about to be, and PAYMENTS_ENCRYPTION_KEYS is not set."""

    def __init__(self, what: str):
        super().__init__(f"{VARIABLE} is not set, and {what}: set it to id:base64-key "
                         "(e.g. k1:$(openssl rand -base64 32)), the same value every process uses")


@dataclass(frozen=True, slots=True)
class AccountSummary:
    """What `accounts list` shows: never a secret."""

    id: int
    caller_service: str
    provider: ProviderType
    enabled: bool
    settings: dict
    key_ids: tuple[str, ...]  # the encryption keys its secrets are under now
    webhook_secrets: int


def decrypt(keys: EncryptionKeys, row: AccountRow) -> AccountCredentials:
    secret_key = keys.decrypt(row.secret_key, row=row.id, name="secret_key")
    webhook = keys.decrypt(row.webhook_secret, row=row.id, name="webhook_secret") if row.webhook_secret else ""
    return AccountCredentials(row.id, row.caller_service, row.provider, row.settings, secret_key, split_secrets(webhook))


def _encrypted(keys: EncryptionKeys, account_id: int, secret_key: str | None, webhook_secrets: tuple[str, ...] | None) -> dict:
    values = {}
    if secret_key is not None:
        values["secret_key"] = keys.encrypt(secret_key, row=account_id, name="secret_key")
    if webhook_secrets is not None:
        values["webhook_secret"] = keys.encrypt(",".join(webhook_secrets), row=account_id, name="webhook_secret") \
            if webhook_secrets else None
    return values


class AccountStore:
    def __init__(self, db: Database, keys: EncryptionKeys | None):
        self.db = db
        self._keys = keys

    def keys(self, what: str) -> EncryptionKeys:
        if self._keys is None:
            raise AccountKeysMissing(what)
        return self._keys

    async def add(self, caller_service: str, provider: ProviderType, settings: dict, secret_key: str,
                  webhook_secrets: tuple[str, ...]) -> tuple[int, int | None]:
        """The new account's id, and the id of the caller's account it replaces for new payments (if any)."""
        check_secrets(provider, secret_key, webhook_secrets)
        keys = self.keys("a provider account's secrets must be encrypted")
        now = utcnow()
        async with self.db.transaction() as conn:
            repo = ProviderAccountRepository(conn)
            previous = await repo.enabled_for(caller_service, provider)
            account_id = await repo.insert(caller_service, provider, settings, now)
            await repo.set_secrets(account_id, _encrypted(keys, account_id, secret_key, webhook_secrets), now)
        return account_id, previous.id if previous else None

    async def get(self, account_id: int) -> AccountRow | None:
        async with self.db.read() as conn:
            return await ProviderAccountRepository(conn).get(account_id)

    async def enabled_for(self, caller_service: str, provider: ProviderType) -> AccountRow | None:
        async with self.db.read() as conn:
            return await ProviderAccountRepository(conn).enabled_for(caller_service, provider)

    async def rotate(self, account_id: int, secret_key: str | None, webhook_secrets: tuple[str, ...] | None) -> AccountRow:
        if secret_key is None and webhook_secrets is None:
            raise CredentialsError("give a new secret key, a new webhook secret, or both")
        keys = self.keys("the account's secrets must be encrypted")
        async with self.db.transaction() as conn:
            repo = ProviderAccountRepository(conn)
            row = await repo.get(account_id, for_update=True)
            if row is None:
                raise CredentialsError(f"no provider account {account_id}")
            check_secrets(row.provider, secret_key, webhook_secrets)
            await repo.set_secrets(account_id, _encrypted(keys, account_id, secret_key, webhook_secrets), utcnow())
        return row

    async def disable(self, account_id: int) -> bool:
        async with self.db.transaction() as conn:
            return await ProviderAccountRepository(conn).disable(account_id, utcnow())

    async def summaries(self) -> list[AccountSummary]:
        async with self.db.read() as conn:
            rows = await ProviderAccountRepository(conn).list()
        return [AccountSummary(
            r.id, r.caller_service, r.provider, r.enabled, r.settings,
            tuple(sorted({key_id_of(v) for v in (r.secret_key, r.webhook_secret) if v})),
            # Counting needs the plaintext: only when the keys are there.
            len(decrypt(self._keys, r).webhook_secrets) if self._keys and r.webhook_secret else 0,
        ) for r in rows]

    async def reencrypt(self) -> tuple[int, int]:
        """Every secret under the first key: (accounts rewritten, accounts already there).
        One transaction per account, so a run stopped midway is resumed by running it again."""
        keys = self.keys("reencrypt needs the keys")
        async with self.db.read() as conn:
            ids = [r.id for r in await ProviderAccountRepository(conn).list()]
        moved = kept = 0
        for account_id in ids:
            async with self.db.transaction() as conn:
                repo = ProviderAccountRepository(conn)
                row = await repo.get(account_id, for_update=True)
                stored = {name: getattr(row, name) for name in SECRET_FIELDS if getattr(row, name)}
                if all(key_id_of(v) == keys.current for v in stored.values()):
                    kept += 1
                    continue
                plain = {name: keys.decrypt(v, row=account_id, name=name) for name, v in stored.items()}
                await repo.set_secrets(account_id, {name: keys.encrypt(v, row=account_id, name=name)
                                                    for name, v in plain.items()}, utcnow())
                moved += 1
        return moved, kept

    async def check(self) -> int:
        """At start-up: every stored secret decrypts with the configured keys. The number
        of accounts; raises AccountKeysMissing or UndecryptableError."""
        async with self.db.read() as conn:
            rows = await ProviderAccountRepository(conn).list()
        if rows and self._keys is None:
            raise AccountKeysMissing(f"{len(rows)} provider account(s) are stored encrypted (`payments-svc accounts list`)")
        for row in rows:
            decrypt(self._keys, row)
        return len(rows)
