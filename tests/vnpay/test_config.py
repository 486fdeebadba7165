"""VNPAY_* settings: VNPay is enabled by its terminal code, checked at start-up with one
error line naming the variable, defaults to VNPay's sandbox, and never shows its secret."""

from __future__ import annotations

import subprocess
import sys

import pytest

from payments_svc.config import ConfigError, load_settings
from payments_svc.container import build_providers
from payments_svc.domain.enums import ProviderType
from payments_svc.providers.vnpay.settings import VnpayCredentials

from ..support import REPO, base_env

SECRET = "VNPAYHASHSECRETVALUE0123456789AB"


def settings(**env):
    return load_settings({"PAYMENTS_ENV": "test", **env})


def test_vnpay_is_enabled_by_its_terminal_code_with_sandbox_defaults():
    assert settings().vnpay is None
    s = settings(VNPAY_TMN_CODE=" DEMOV210 ", VNPAY_HASH_SECRET=SECRET)
    assert s.vnpay == VnpayCredentials("DEMOV210", SECRET, "https://sandbox.vnpayment.vn/paymentv2/vpcpay.html",
                                       "https://sandbox.vnpayment.vn/merchant_webapi/api/transaction")
    assert SECRET not in repr(s) and SECRET not in repr(s.vnpay)
    live = settings(VNPAY_TMN_CODE="DEMOV210", VNPAY_HASH_SECRET=SECRET,
                    VNPAY_PAYMENT_URL="https://pay.vnpay.vn/vpcpay.html",
                    VNPAY_API_URL="https://merchant.vnpay.vn/merchant_webapi/api/transaction")
    assert (live.vnpay.payment_url, live.vnpay.api_url) == (
        "https://pay.vnpay.vn/vpcpay.html", "https://merchant.vnpay.vn/merchant_webapi/api/transaction")
    registry = build_providers(s)
    assert ProviderType.VNPAY in registry.enabled and registry.default == ProviderType.SANDBOX
    only = build_providers(settings(VNPAY_TMN_CODE="DEMOV210", VNPAY_HASH_SECRET=SECRET, PAYMENTS_SANDBOX_ENABLED="false"))
    assert only.enabled == [ProviderType.VNPAY] and only.default == ProviderType.VNPAY
    assert registry.by_name("vnpay").type == registry.by_name("3").type == ProviderType.VNPAY


@pytest.mark.parametrize(("env", "message"), [
    ({"VNPAY_HASH_SECRET": SECRET}, "VNPAY_HASH_SECRET is set but VNPAY_TMN_CODE is not"),
    ({"VNPAY_TMN_CODE": "DEMOV210"}, "VNPAY_HASH_SECRET is required when VNPAY_TMN_CODE is set"),
    ({"VNPAY_TMN_CODE": "DEMO-210", "VNPAY_HASH_SECRET": SECRET}, "VNPAY_TMN_CODE must be the 8 letters and digits"),
    ({"VNPAY_TMN_CODE": "DEMOV210", "VNPAY_HASH_SECRET": SECRET, "VNPAY_PAYMENT_URL": "sandbox.vnpayment.vn/pay"},
     "VNPAY_PAYMENT_URL must be an absolute http"),
    ({"VNPAY_TMN_CODE": "DEMOV210", "VNPAY_HASH_SECRET": SECRET, "VNPAY_API_URL": "https://x.test/api?a=1"},
     "VNPAY_API_URL must be an absolute http"),
])
def test_misconfigured_vnpay_fails_loudly(env, message):
    with pytest.raises(ConfigError, match=message) as failed:
        settings(**env)
    assert SECRET not in str(failed.value)


def test_serve_refuses_to_start_with_vnpay_misconfigured(tmp_path):
    env = base_env(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}", VNPAY_TMN_CODE="DEMOV210")
    env.pop("VNPAY_HASH_SECRET", None)
    done = subprocess.run([sys.executable, "-m", "payments_svc", "serve"], env=env, capture_output=True, text=True,
                          cwd=str(REPO), timeout=60)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "VNPAY" in line]
    assert len(lines) == 1 and "VNPAY_HASH_SECRET is required when VNPAY_TMN_CODE is set" in lines[0]
