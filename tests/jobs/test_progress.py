"""A one-off job run by a person in a terminal shows its progress there (one line,
rewritten as items end); run with its output going to a file or a pipe (cron, logs), it
prints only its log lines."""

from __future__ import annotations

import asyncio
import os
import pty
import sys
import threading

from ..support import REPO, new_database
from .helpers import Receiver, job_env, migrate_database, run_cli, seed_due_callbacks


async def run_in_terminal(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Runs the command with a pseudo-terminal as its stdin, stdout and stderr."""
    main, secondary = pty.openpty()
    chunks: list[bytes] = []

    def read_all() -> None:
        while True:
            try:
                data = os.read(main, 4096)
            except OSError:  # EIO: the terminal's last writer is gone
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "payments_svc", *args, env=env, cwd=str(REPO),
                                                stdin=secondary, stdout=secondary, stderr=secondary)
    os.close(secondary)
    code = await asyncio.wait_for(proc.wait(), 60)
    await asyncio.to_thread(reader.join, 10)
    os.close(main)
    return code, b"".join(chunks).decode()


async def test_a_one_off_batch_shows_progress_in_a_terminal_only(tmp_path):
    database = new_database("sqlite", tmp_path)
    await migrate_database(database.url)
    receiver = await Receiver(responses=[(200, {}), (503, {})]).start()
    try:
        await seed_due_callbacks(database.url, 3, receiver.url())
        env = job_env(database.url, PAYMENTS_JOB_CONCURRENCY="1")
        code, screen = await run_in_terminal(env, "callbacks", "dispatch")
        assert code == 1  # one receiver answer was a 503
        assert "\r\x1b[Kcallbacks_dispatch: 0/3 items, 0 done, 0 failed" in screen
        assert "\r\x1b[Kcallbacks_dispatch: 3/3 items, 2 done, 1 failed" in screen, repr(screen)

        await seed_due_callbacks(database.url, 2, receiver.url())
        code, out, err = await run_cli(env, "callbacks", "dispatch")  # pipes, as under cron
        assert code == 0 and "items" not in out + err and "\x1b" not in out + err
    finally:
        await receiver.stop()
