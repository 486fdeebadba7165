"""The one-off job commands, as deploy/kubernetes/cronjobs/ runs them, against the live
database while the workers run too (overlapping runs are safe): each handles a batch and
exits 0 when nothing in it failed."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from .stack import REPO, payments_svc_command

JOBS = [("callbacks", "dispatch"), ("reconcile",), ("expire", "pending"), ("stellar", "watch")]


@pytest.mark.parametrize("args", JOBS, ids=[" ".join(a) for a in JOBS])
async def test_one_off_run_exits_0(deployment, args):
    if args[0] == "stellar" and "stellar" not in deployment.drivers:
        pytest.skip(f"stellar: {deployment.skipped.get('stellar')}")
    done = await asyncio.to_thread(subprocess.run, [*payments_svc_command(), *args], env=deployment.stack.env,
                                   capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert done.returncode == 0, done.stderr[-3000:]
    if args[0] == "stellar":
        assert "applied" in done.stdout  # "applied N records of G...'s payments"
