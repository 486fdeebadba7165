from __future__ import annotations

import pytest

from ..conftest import ALL_BACKENDS, fresh_database

database = pytest.fixture(params=ALL_BACKENDS, name="database")(fresh_database)  # on PostgreSQL as well
