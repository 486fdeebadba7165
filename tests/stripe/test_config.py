"""STRIPE_* settings: parsed at start-up, a misconfigured Stripe stops `serve` with a
message naming the variable, and secrets never show in reprs or messages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from payments_svc.config import ConfigError, load_settings
from payments_svc.container import build_providers
from payments_svc.domain.enums import ProviderType

from ..support import REPO, base_env

KEY = "sk_test_secret_value_123"


def settings(**env):
    return load_settings({"PAYMENTS_ENV": "test", **env})


def test_stripe_is_enabled_by_its_secret_key_and_becomes_the_default_provider():
    assert settings().stripe is None
    s = settings(STRIPE_SECRET_KEY=KEY, STRIPE_WEBHOOK_SECRET=" whsec_new , whsec_old ", STRIPE_HTTP_TIMEOUT_SECONDS="7",
                 STRIPE_SIGNATURE_TOLERANCE_SECONDS="120", STRIPE_API_BASE="http://127.0.0.1:1234/")
    assert s.stripe.webhook_secrets == ("whsec_new", "whsec_old")
    assert (s.stripe.http_timeout_seconds, s.stripe.signature_tolerance_seconds) == (7.0, 120)
    assert s.stripe.api_base == "http://127.0.0.1:1234"
    assert settings(STRIPE_SECRET_KEY=KEY, STRIPE_WEBHOOK_SECRET="whsec_x").stripe.api_base == "https://api.stripe.com"
    registry = build_providers(s)
    assert registry.default == ProviderType.STRIPE and ProviderType.SANDBOX in registry.enabled
    for secret in (KEY, "whsec_new", "whsec_old"):
        assert secret not in repr(s) and secret not in repr(s.stripe)


@pytest.mark.parametrize(("env", "message"), [
    ({"STRIPE_SECRET_KEY": KEY}, "STRIPE_WEBHOOK_SECRET is required when STRIPE_SECRET_KEY is set"),
    ({"STRIPE_WEBHOOK_SECRET": "whsec_x"}, "STRIPE_WEBHOOK_SECRET is set but STRIPE_SECRET_KEY is not"),
    ({"STRIPE_SECRET_KEY": "pk_test_abc", "STRIPE_WEBHOOK_SECRET": "whsec_x"}, "publishable key"),
    ({"STRIPE_SECRET_KEY": "abc", "STRIPE_WEBHOOK_SECRET": "whsec_x"}, "must be a Stripe secret key"),
    ({"STRIPE_SECRET_KEY": KEY, "STRIPE_WEBHOOK_SECRET": "whsec_x,secret"}, "secret #2 does not start with whsec_"),
    ({"STRIPE_SECRET_KEY": KEY, "STRIPE_WEBHOOK_SECRET": "whsec_x", "STRIPE_API_BASE": "api.stripe.com"}, "STRIPE_API_BASE"),
    ({"STRIPE_SECRET_KEY": KEY, "STRIPE_WEBHOOK_SECRET": "whsec_x", "STRIPE_HTTP_TIMEOUT_SECONDS": "0"},
     "STRIPE_HTTP_TIMEOUT_SECONDS must be > 0"),
    ({"STRIPE_SECRET_KEY": KEY, "STRIPE_WEBHOOK_SECRET": "whsec_x", "STRIPE_SIGNATURE_TOLERANCE_SECONDS": "5m"},
     "STRIPE_SIGNATURE_TOLERANCE_SECONDS must be an integer"),
])
def test_misconfigured_stripe_fails_loudly(env, message):
    with pytest.raises(ConfigError, match=message) as failed:
        settings(**env)
    for value in env.values():
        if value.startswith(("sk_", "pk_")):
            assert value not in str(failed.value)


def test_serve_refuses_to_start_with_stripe_misconfigured(tmp_path):
    env = base_env(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}", STRIPE_SECRET_KEY=KEY)
    done = subprocess.run([sys.executable, "-m", "payments_svc", "serve"], env=env, capture_output=True, text=True,
                          cwd=str(REPO), timeout=60)
    assert done.returncode != 0
    assert "STRIPE_WEBHOOK_SECRET is required when STRIPE_SECRET_KEY is set" in done.stderr
    assert KEY not in done.stderr + done.stdout
