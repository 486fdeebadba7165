"""deployment.md documents every environment variable the code reads (and only those),
each with a default and a meaning."""

from __future__ import annotations

import re

import pytest

import payments_svc.config as config
import payments_svc.providers.stellar.settings as stellar_settings
import payments_svc.providers.stripe.settings as stripe_settings

from .envvars import DOC, ENV_NAME, code_env_vars, doc_table_vars, scan_file


def test_the_scan_sees_every_way_the_code_reads_a_variable(tmp_path):
    module = tmp_path / "sample.py"
    module.write_text(
        "import os\n"
        "NAME = 'FROM_A_CONSTANT'\n"
        "def load(environ):\n"
        "    _int(environ, 'READ_BY_A_HELPER', 1)\n"
        "    _seconds(environ, 'SOME_INTERVAL_MINUTES', 1)\n"
        "    os.environ.get(NAME)\n"
        "    os.getenv('READ_BY_GETENV')\n"
        "    environ['READ_BY_SUBSCRIPT']\n"
        "    headers.get('NOT_THE_ENVIRONMENT')\n"
    )
    assert set(scan_file(module)) == {"FROM_A_CONSTANT", "READ_BY_A_HELPER", "SOME_INTERVAL_MINUTES",
                                      "READ_BY_GETENV", "READ_BY_SUBSCRIPT"}
    module.rename(tmp_path / "config.py")  # where _seconds derives the *_SECONDS form
    assert "SOME_INTERVAL_SECONDS" in scan_file(tmp_path / "config.py")


def test_the_scan_finds_the_variables_known_to_exist():
    found = set(code_env_vars())
    assert {"PAYMENTS_DATABASE_URL", "MYSQL_DSN", "PAYMENTS_SHUTDOWN_DRAIN_SECONDS", "PAYMENTS_PENDING_TIMEOUT_SECONDS",
            "PAYMENTS_SERVE_SHARED_PORTS", "STRIPE_SECRET_KEY", "STELLAR_RECEIVING_ACCOUNT"} <= found


def test_load_settings_reads_no_variable_the_scan_misses(monkeypatch):
    """Runs load_settings with Stripe and Stellar enabled and records every name the
    settings helpers look up: a name computed at run time would show up here."""
    from stellar_sdk import Keypair

    read: set[str] = set()

    def recording(original):
        def wrapper(env, name, *args, **kwargs):
            read.add(name)
            return original(env, name, *args, **kwargs)
        return wrapper

    for module in (config, stripe_settings, stellar_settings):  # each looks env_value up by its own name
        monkeypatch.setattr(module, "env_value", recording(module.env_value))
    settings = config.load_settings({
        "PAYMENTS_DATABASE_URL": "sqlite+aiosqlite:////tmp/unused.sqlite3",
        "STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_WEBHOOK_SECRET": "whsec_x",
        "STELLAR_RECEIVING_ACCOUNT": Keypair.random().public_key, "STELLAR_HORIZON_URL": "http://127.0.0.1:1",
        "STELLAR_NETWORK_PASSPHRASE": "Test SDF Network ; September 2015", "STELLAR_ASSETS": "XLM:native",
    })
    assert settings.stripe is not None and settings.stellar is not None
    assert read, "the recording helpers saw nothing: load_settings no longer uses them"
    missed = read - set(code_env_vars())
    assert not missed, f"read at run time but not found by tests/ops/envvars.py: {sorted(missed)}"


def test_every_variable_the_code_reads_is_documented():
    code = code_env_vars()
    missing = sorted(set(code) - doc_table_vars())
    assert not missing, (
        f"{DOC.name} does not list these variables in a table (first column, in backticks):\n"
        + "\n".join(f"  {name}  (read in {', '.join(sorted(code[name]))})" for name in missing))


def test_the_document_lists_only_variables_the_code_reads():
    stale = sorted(doc_table_vars() - set(code_env_vars()))
    assert not stale, f"{DOC.name} documents variables no code reads (renamed? removed?): {stale}"


def test_every_documented_variable_has_a_default_and_a_meaning():
    problems = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.lstrip().startswith("|") or len(cells) < 3:
            continue
        names = [n for n in re.findall(r"`([^`]+)`", cells[0]) if ENV_NAME.match(n)]
        if names and (not cells[1] or not cells[2]):
            problems.append(line.strip())
    assert not problems, "rows without a default or a meaning:\n" + "\n".join(problems)


@pytest.mark.parametrize("text, expected", [
    ("| `A_B` | 1 | x |", {"A_B"}),
    ("| `A_MINUTES` / `A_SECONDS` | 1 | x |", {"A_MINUTES", "A_SECONDS"}),
    ("| x | `NOT_FIRST_COLUMN` | y |", set()),
    ("|---|---|---|", set()),
    ("`OUTSIDE_TABLE`", set()),
])
def test_the_doc_parser(text, expected):
    assert doc_table_vars(text) == expected
