"""Opening the schema and key tests' databases (conftest.py makes them), and applying
SQL to them by hand."""

from __future__ import annotations

import sqlite3

from sqlalchemy.engine import make_url

from payments_svc.config import load_settings
from payments_svc.db.engine import Database, open_database

from ..support import _mysql_connect, base_env, postgres_admin


def open_db(url: str) -> Database:
    return open_database(load_settings(base_env(url)))


def apply_sql(target, script: str) -> None:
    """Runs a `db migrate --sql` script the way a DBA would, with the server's own client
    library."""
    if target.backend == "postgresql":
        postgres_admin(script, database=target.name)
    elif target.backend == "sqlite":
        conn = sqlite3.connect(make_url(target.url).database)
        conn.executescript(script)
        conn.close()
    else:
        conn = _mysql_connect(target.name)
        with conn.cursor() as cur:
            for statement in script.split(";\n"):
                if any(line.strip() and not line.strip().startswith("--") for line in statement.splitlines()):
                    cur.execute(statement)
        conn.close()
