"""The command line's own surface: --version, -h, and help that answers without loading
the service (grpc, the providers' SDKs, SQLAlchemy's async engine): each command imports
what it uses when it runs."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version

import click
import pytest
from click.testing import CliRunner

from payments_svc.cli import main

from ..support import REPO

HEAVY = ("grpc", "stripe", "stellar_sdk", "sqlalchemy", "aiohttp", "google.protobuf", "prometheus_client", "structlog")


def all_command_paths(group: click.Group = main, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for name in group.list_commands(click.Context(group)):
        if prefix + (name,) == ("stellar",):
            continue  # another module's command group, loaded only when used (checked below)
        command = group.get_command(None, name)
        paths.append(prefix + (name,))
        if isinstance(command, click.Group):
            paths += all_command_paths(command, prefix + (name,))
    return paths


def test_version_and_short_help():
    runner = CliRunner()
    assert runner.invoke(main, ["--version"], prog_name="payments-svc").output == f"payments-svc {version('payments-svc')}\n"
    long, short = (runner.invoke(main, [flag], prog_name="payments-svc") for flag in ("--help", "-h"))
    assert long.exit_code == short.exit_code == 0 and long.output == short.output
    assert "-h, --help" in runner.invoke(main, ["keys", "create", "-h"], prog_name="payments-svc").output


def test_help_loads_nothing_heavy():
    """Each `--help` in a fresh interpreter, as a person types it: none of the heavy
    libraries is imported."""
    paths = [()] + all_command_paths()
    script = (
        "import json, sys\n"
        "from payments_svc.cli import main\n"
        f"for args in {[list(p) + ['--help'] for p in paths]!r}:\n"
        "    try:\n"
        "        main(args, prog_name='payments-svc')\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == [], f"`--help` imported {loaded}: import them inside the commands that use them"
    assert ("serve",) in paths and ("keys", "signing-secret") in paths and ("callbacks", "dispatch") in paths


def test_commands_loaded_on_use_list_their_own_help():
    listing = CliRunner().invoke(main, ["--help"], prog_name="payments-svc").output
    for name, (_, short_help) in main.lazy.items():
        assert f"  {name} " in listing and short_help in listing
        assert main.get_command(None, name).get_short_help_str(limit=200) == short_help


@pytest.mark.parametrize("args, message", [
    (["--worker", "serve"], "serve does not take --worker"),
    (["serve", "--with-workers", "--processes", "2"], "use it without --processes"),
])
def test_serve_usage_errors(args, message):
    result = CliRunner().invoke(main, args, prog_name="payments-svc")
    assert result.exit_code == 2 and message in result.output
