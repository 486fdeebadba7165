from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import uvloop

from payments_svc.config import load_settings
from payments_svc.container import build_container
from payments_svc.db.migrate import migrate

from .support import base_env, new_database


def pytest_asyncio_loop_factories(config, item):
    """In-process tests run on the event loop the service runs on (uvloop, PAYMENTS_UVLOOP)."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(autouse=True)
def _cached_builders_run_again_for_mutmut_stats():
    """mutmut (make mutate) links each function to the tests that call it, and tests its
    mutants with those only; a functools.cache'd statement builder is called by the first
    test of the session alone. While mutmut collects those links, every test starts with
    the caches empty, so each one that needs a statement builds it."""
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        for module in [m for name, m in sys.modules.items() if name.startswith("payments_svc.")]:
            for value in vars(module).values():
                if callable(getattr(value, "cache_clear", None)) and getattr(value, "__module__", None) == module.__name__:
                    value.cache_clear()


BACKENDS = ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)]
# The integration, jobs and e2e suites run on PostgreSQL too (the rest on SQLite and MariaDB:
# CI time); without a PostgreSQL server those tests skip loudly, under CI=true they fail.
ALL_BACKENDS = [*BACKENDS, pytest.param("postgresql", marks=pytest.mark.postgresql)]
# For what only a server database has (row locks, lock waits): SQLite's one writer holds the whole file.
on_server_databases = pytest.mark.parametrize("database", [b for b in ALL_BACKENDS if b != "sqlite"], indirect=True)


def fresh_database(request, tmp_path):
    """A fresh, empty database on each backend of the fixture's params (dropped afterwards)."""
    db = new_database(request.param, tmp_path)
    yield db
    db.drop()


database = pytest.fixture(params=BACKENDS, name="database")(fresh_database)


@pytest.fixture
def make_container(database, tmp_path):
    """Builds an in-process Container on the migrated test database."""
    containers = []

    async def factory(**env):
        settings = load_settings(base_env(database.url, **env), base_dir=tmp_path)
        container = build_container(settings)
        await migrate(container.db)
        containers.append(container)
        return container

    yield factory
    # Containers are closed by the tests' event loop (see `container` below).


@pytest.fixture
async def container(make_container):
    c = await make_container()
    yield c
    await c.close()


def pytest_collection_modifyitems(config, items):
    """Under `make mutate` (mutmut sets MUTANT_UNDER_TEST and runs in its mutants/ copy), the
    tests covering a mutant run fastest first, as mutmut's first run timed them: the run stops
    at the first failure, so a killed mutant costs the time of its quickest killing test."""
    stats = Path("mutmut-stats.json")
    if not os.environ.get("MUTANT_UNDER_TEST") or not stats.exists():
        return
    durations = json.loads(stats.read_text())["duration_by_test"]
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
