"""The Stellar part of GetSystemStatus: the stored cursor's ledger (a paging token's high
32 bits) against Horizon's latest, and what is reported when Horizon does not answer."""

from __future__ import annotations

import dataclasses

import pytest
from aiohttp import web

from payments_svc.providers.stellar.settings import StellarSettings
from payments_svc.service.system_status import _cursor_states

from ..support import free_port

ACCOUNT = "G" + "A" * 55


@pytest.fixture
async def horizon():
    async def root(request):
        return web.json_response({"history_latest_ledger": 1_000_120})

    app = web.Application()
    app.router.add_get("/", root)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def settings(horizon_url: str):
    stellar = StellarSettings(horizon_url=horizon_url, network_passphrase="Test", receiving_account=ACCOUNT, assets=())
    return dataclasses.make_dataclass("S", [("stellar", StellarSettings)])(stellar)


async def test_the_cursor_lag_in_ledgers_and_seconds(horizon):
    token = str((1_000_000 << 32) + 7)  # an operation in ledger 1,000,000
    [state] = await _cursor_states(settings(horizon), [(ACCOUNT, token, None)])
    assert (state.cursor_ledger, state.latest_ledger, state.ledgers_behind, state.seconds_behind, state.problem) == (
        1_000_000, 1_000_120, 120, 600.0, "")


async def test_horizon_away_is_reported_not_raised():
    [state] = await _cursor_states(settings(f"http://127.0.0.1:{free_port()}"), [(ACCOUNT, str(5 << 32), None)])
    assert (state.cursor_ledger, state.latest_ledger, state.ledgers_behind) == (5, 0, 0)
    assert state.problem.startswith("Horizon's latest ledger is unknown: ClientConnectorError")
