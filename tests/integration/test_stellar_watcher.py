"""`payments-svc stellar watch` as a real process, on SQLite and MariaDB, against
FakeHorizon in a thread: what an operator sees when the feed cannot be read. A stream
that cannot connect is a warning at once; a refused feed (here: the testnet was reset
under the stored cursor) is an error log, /healthz 503 and the refused gauge 1 on the
worker and exit status 1 for the one-off, until the operator resets the cursor."""

from __future__ import annotations

import aiohttp
import pytest
import sqlalchemy as sa
from stellar_sdk import Keypair, Network

from payments_svc.config import load_settings
from payments_svc.db.engine import open_database
from payments_svc.db.tables import stellar_cursors

from ..fakes.horizon_server import FakeHorizon
from ..jobs.helpers import JobProcess, eventually, run_cli
from ..support import base_env, free_port, wait_until


@pytest.fixture
def horizon():
    fake = FakeHorizon(sse_retry_ms=50, keepalive_interval=0.5)
    fake.start_in_thread()
    yield fake
    fake.stop_thread()


@pytest.fixture
async def stellar_env(database, tmp_path, horizon):
    shop = Keypair.random()
    horizon.create_account(shop)
    env = base_env(
        database.url, PYTHONUNBUFFERED="1", STELLAR_HORIZON_URL=horizon.url,
        STELLAR_NETWORK_PASSPHRASE=Network.TESTNET_NETWORK_PASSPHRASE, STELLAR_RECEIVING_ACCOUNT=shop.public_key,
        STELLAR_ASSETS="XLM:native", STELLAR_SILENCE_TIMEOUT_SECONDS="300",  # far longer than any wait below
        STELLAR_BACKOFF_MIN_SECONDS="0.1", STELLAR_BACKOFF_MAX_SECONDS="0.5", PAYMENTS_METRICS_PORT=str(free_port()),
    )
    code, _, err = await run_cli(env, "db", "migrate")
    assert code == 0, err
    return env


def events(watcher: JobProcess, name: str) -> list[dict]:
    return [line for line in watcher.logs() if line.get("event") == name]


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            return response.status, await response.text()


async def test_a_stream_that_cannot_connect_is_a_warning_at_once(stellar_env, horizon, tmp_path):
    horizon.refuse_streams()  # paging works, every stream connection is reset
    watcher = await JobProcess(stellar_env, ("stellar", "watch", "--worker"), tmp_path / "watcher.log").start()
    try:
        await eventually(lambda: any("cannot connect" in e["error"] for e in events(watcher, "stellar_watch_retrying")))
        warning = events(watcher, "stellar_watch_retrying")[0]
        assert warning["level"] == "warning" and "ServerDisconnectedError" in warning["error"]
        horizon.refuse_streams(False)
        await eventually(lambda: horizon.stream_count == 1)
    finally:
        watcher.signal()
        assert await watcher.wait() == 0, watcher.log_path.read_text()


async def test_a_refused_feed_is_loud_until_the_operator_resets_the_cursor(stellar_env, horizon, tmp_path):
    port = stellar_env["PAYMENTS_METRICS_PORT"]
    watcher = await JobProcess(stellar_env, ("stellar", "watch", "--worker"), tmp_path / "watcher.log").start()
    try:
        await eventually(lambda: horizon.stream_count == 1)
        assert await get(f"http://127.0.0.1:{port}/healthz") == (200, '{"status": "ok"}')
        await _cursor_set_to(stellar_env, str((horizon.latest_ledger + 1000) << 32))  # e.g. a testnet reset
        horizon.drop_streams()

        await wait_until(lambda: _healthz_is(port, 503), timeout=20)
        _, body = await get(f"http://127.0.0.1:{port}/healthz")
        assert "the Stellar feed is refused: the stored cursor" in body and "beyond Horizon's history" in body
        _, exposition = await get(f"http://127.0.0.1:{port}/metrics")
        assert "payments_stellar_feed_refused 1.0" in exposition
        refused = events(watcher, "stellar_feed_refused")[0]
        assert refused["level"] == "error" and "a network reset, a wrong STELLAR_START_CURSOR" in refused["error"]

        one_off_env = {k: v for k, v in stellar_env.items() if k != "PAYMENTS_METRICS_PORT"}  # the worker has it
        one_off, out, err = await run_cli(one_off_env, "stellar", "watch")
        assert one_off == 1 and out == ""
        assert "Error: the Stellar feed is refused: the stored cursor" in err and '"event": "stellar_feed_refused"' in err

        await _delete_cursor(stellar_env)  # the runbook's fix: start over at STELLAR_START_CURSOR
        await wait_until(lambda: _healthz_is(port, 200), timeout=20)
        assert "payments_stellar_feed_refused 0.0" in (await get(f"http://127.0.0.1:{port}/metrics"))[1]
        assert (await run_cli(one_off_env, "stellar", "watch"))[0] == 0
    finally:
        watcher.signal()
        assert await watcher.wait() == 0, watcher.log_path.read_text()


async def test_a_start_cursor_horizon_cannot_page_from_stops_the_command_at_start_up(stellar_env):
    code, _, err = await run_cli(dict(stellar_env, STELLAR_START_CURSOR=str(2**63)), "stellar", "watch", "--worker")
    assert code == 1 and "STELLAR_START_CURSOR must be a paging token (0 to 9223372036854775807)" in err


async def test_one_off_watch_exits_non_zero_when_horizon_rate_limits(stellar_env, horizon):
    horizon.rate_limit(retry_after=30)
    code, _, err = await run_cli(stellar_env, "stellar", "watch")
    assert code == 1 and "Error: Horizon unavailable: HTTP 429 from Horizon: Rate Limit Exceeded" in err
    assert (await run_cli(stellar_env, "stellar", "watch"))[0] == 0


async def _healthz_is(port: str, status: int) -> bool:
    try:
        return (await get(f"http://127.0.0.1:{port}/healthz"))[0] == status
    except aiohttp.ClientError:
        return False


async def _cursor_set_to(env: dict[str, str], token: str) -> None:
    db = open_database(load_settings(env))
    try:
        async with db.transaction() as conn:
            await conn.execute(sa.update(stellar_cursors).values(paging_token=token))
    finally:
        await db.close()


async def _delete_cursor(env: dict[str, str]) -> None:
    db = open_database(load_settings(env))
    try:
        async with db.transaction() as conn:
            await conn.execute(stellar_cursors.delete())
    finally:
        await db.close()
