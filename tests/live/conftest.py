from __future__ import annotations

import pytest

from payments_svc.service.watch import WatchHub

from ..conftest import ALL_BACKENDS, fresh_database

database = pytest.fixture(params=ALL_BACKENDS, name="database")(fresh_database)  # on PostgreSQL as well


@pytest.fixture
async def hub(container):
    """The watch hub on the test's container (its module's `container` sets the watch settings)."""
    hub = WatchHub(container.db, container.settings)
    yield hub
    await hub.close()
