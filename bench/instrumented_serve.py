"""`payments-svc serve` (one process) with every MariaDB round trip counted, for
`bench/run.py --profile`. Nothing in src/ changes: the driver's command method and
SQLAlchemy's pool events are wrapped from here.

On SIGUSR1 the counts so far are appended as one JSON line to $BENCH_COUNTS_FILE and
reset, so the profile run brackets each scenario with two signals.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import sys

counts: collections.Counter = collections.Counter()
statements: collections.Counter = collections.Counter()
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
_LIST = re.compile(r"\((?:\?, )+\?\)")


def _shape(text: str) -> str:
    """The statement with its literal values (the driver interpolates them) replaced by ?."""
    shape = _NUMBER.sub("?", _STRING.sub("?", " ".join(text.split())))
    return _LIST.sub("(?, ...)", shape)[:200]


def _install() -> None:
    import aiomysql.connection
    import asyncmy.connection
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    # Both drivers send every command through Connection._execute_command(command, sql).
    for connection in (asyncmy.connection, aiomysql.connection):
        connection.Connection._execute_command = _counting(connection.Connection._execute_command)
    event.listen(Pool, "checkout", lambda *a: counts.update(["pool.checkout"]))
    event.listen(Pool, "checkin", lambda *a: counts.update(["pool.checkin"]))
    event.listen(Pool, "connect", lambda *a: counts.update(["pool.new_connection"]))
    event.listen(Pool, "reset", lambda *a: counts.update(["pool.reset_on_return"]))


def _counting(original):
    async def counted(self, command, sql):
        text = sql.decode("utf-8", "replace") if isinstance(sql, (bytes, bytearray)) else str(sql)
        if command == 3:  # COM_QUERY
            verb = text.lstrip().split(None, 1)[0].upper() if text.strip() else "EMPTY"
            if verb == "SET":
                verb = text.strip()[:40]
            counts["round_trips"] += 1
            counts["sql." + verb] += 1
            statements[_shape(text)] += 1
        else:
            counts["round_trips"] += 1
            counts[f"command.{command}"] += 1
        return await original(self, command, sql)

    return counted


def _dump(signum, frame) -> None:
    with open(os.environ["BENCH_COUNTS_FILE"], "a") as f:
        f.write(json.dumps({"counts": dict(counts), "statements": dict(statements)}) + "\n")
    counts.clear()
    statements.clear()


if __name__ == "__main__":
    _install()
    signal.signal(signal.SIGUSR1, _dump)
    from payments_svc.cli import main

    sys.exit(main(["serve"]))
