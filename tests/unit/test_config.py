from __future__ import annotations

import pytest

from payments_svc.config import ConfigError, load_settings, mysql_dsn_to_url, redact_url


def test_go_dsn_becomes_an_async_mysql_url():
    assert mysql_dsn_to_url("root:root@tcp(localhost:3306)/payments?parseTime=true") == \
        "mysql+asyncmy://root:root@localhost:3306/payments?charset=utf8mb4"
    assert mysql_dsn_to_url("app:p@ss:w@tcp(db:3307)/pay") == "mysql+asyncmy://app:p%40ss%3Aw@db:3307/pay?charset=utf8mb4"
    assert mysql_dsn_to_url("u@unix(/run/mysqld.sock)/pay").endswith("pay?charset=utf8mb4&unix_socket=%2Frun%2Fmysqld.sock")
    with pytest.raises(ConfigError, match="MYSQL_DSN"):
        mysql_dsn_to_url("nonsense")


def test_database_url_precedence(tmp_path):
    assert load_settings({}, base_dir=tmp_path).database_url == f"sqlite+aiosqlite:///{tmp_path}/var/payments.sqlite3"
    assert load_settings({"MYSQL_DSN": "u:p@tcp(h:1)/d"}).database_url.startswith("mysql+asyncmy://u:p@h:1/d")
    url = load_settings({"MYSQL_DSN": "u:p@tcp(h:1)/d", "PAYMENTS_DATABASE_URL": "mysql://x@y/z"}).database_url
    assert url == "mysql+asyncmy://x@y/z"
    # aiomysql stays selectable by its URL.
    assert load_settings({"PAYMENTS_DATABASE_URL": "mysql+aiomysql://x@y/z"}).database_url == "mysql+aiomysql://x@y/z"


def test_bad_values_fail_loudly_instead_of_falling_back():
    with pytest.raises(ConfigError, match="HTTP_PORT must be an integer"):
        load_settings({"HTTP_PORT": "80a"})
    with pytest.raises(ConfigError, match='invalid LOG_LEVEL "loud"'):
        load_settings({"LOG_LEVEL": "loud"})
    with pytest.raises(ConfigError, match="PAYMENTS_ENV"):
        load_settings({"PAYMENTS_ENV": "staging-ish"})


def test_sandbox_is_off_in_production_unless_enabled():
    assert load_settings({}).sandbox_enabled
    assert not load_settings({"PAYMENTS_ENV": "production"}).sandbox_enabled
    assert load_settings({"PAYMENTS_ENV": "production", "PAYMENTS_SANDBOX_ENABLED": "true"}).sandbox_enabled


def test_secrets_stay_out_of_reprs_and_logs():
    settings = load_settings({"APP_API_KEY": "topsecret", "PAYMENTS_DATABASE_URL": "mysql://u:hunter2@h/d"})
    assert "topsecret" not in repr(settings)
    assert "hunter2" not in redact_url(settings.database_url)
