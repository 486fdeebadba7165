from __future__ import annotations

import pytest

from ..support import new_database

BACKENDS = ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql), "postgresql"]


@pytest.fixture(params=BACKENDS)
def database(request, tmp_path):
    """A new empty database on each backend, PostgreSQL too (dropped afterwards)."""
    target = new_database(request.param, tmp_path)
    yield target
    target.drop()
