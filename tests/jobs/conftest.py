from __future__ import annotations

import pytest

from ..conftest import ALL_BACKENDS
from ..support import new_database


@pytest.fixture(params=ALL_BACKENDS)
def database(request, tmp_path):
    """conftest's `database`, on PostgreSQL as well."""
    db = new_database(request.param, tmp_path)
    yield db
    db.drop()
