"""The pure parts: Standard Webhooks signing (against the spec's published vector and
the test's own verifier), the retry schedule, Retry-After, host patterns, settings."""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta

import pytest

from payments_svc.callback_policy import CallbackDestinations, host_allowed, parse_host_pattern, retry_after_seconds, retry_delay
from payments_svc.config import ConfigError, load_settings
from payments_svc.webhooks_signing import generate_secret, secret_key, signature_header

from .helpers import OLD_SHOP_SECRET, SHOP_SECRET, verify_standard_webhook

# The example of the Standard Webhooks spec and its reference libraries.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_spec_vector():
    assert signature_header([SPEC_SECRET], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_the_tests_verifier_accepts_the_spec_vector_and_rejects_tampering(monkeypatch):
    monkeypatch.setattr("time.time", lambda: SPEC_TIMESTAMP + 10)
    headers = {"webhook-id": SPEC_ID, "webhook-timestamp": str(SPEC_TIMESTAMP), "webhook-signature": SPEC_SIGNATURE}
    assert verify_standard_webhook(SPEC_SECRET, headers, SPEC_BODY)
    assert not verify_standard_webhook(SPEC_SECRET, headers, SPEC_BODY + b" ")
    assert not verify_standard_webhook(SPEC_SECRET, dict(headers, **{"webhook-id": "msg_other"}), SPEC_BODY)
    monkeypatch.setattr("time.time", lambda: SPEC_TIMESTAMP + 301)
    assert not verify_standard_webhook(SPEC_SECRET, headers, SPEC_BODY)  # replayed too late


def test_rotation_signs_with_every_secret():
    ts = int(time.time())
    header = signature_header([SHOP_SECRET, OLD_SHOP_SECRET], "msg_1", ts, b"{}")
    assert len(header.split(" ")) == 2
    base = {"webhook-id": "msg_1", "webhook-timestamp": str(ts), "webhook-signature": header}
    assert verify_standard_webhook(SHOP_SECRET, base, b"{}")
    assert verify_standard_webhook(OLD_SHOP_SECRET, base, b"{}")
    assert not verify_standard_webhook(generate_secret(), base, b"{}")


def test_secrets_are_checked():
    assert len(secret_key(generate_secret())) == 32
    for bad, why in (("abc", "starts with whsec_"), ("whsec_!!", "base64"), ("whsec_" + "QUJD", "24..64 bytes")):
        with pytest.raises(ValueError, match=why):
            secret_key(bad)


def test_default_schedule_is_at_least_eight_attempts_over_at_least_a_day():
    s = load_settings({})
    assert s.callback_max_attempts >= 8
    for seed in range(20):
        rng = random.Random(seed)
        gaps = [retry_delay(n, base=s.callback_retry_interval_seconds, cap=s.callback_retry_max_interval_seconds, rng=rng)
                for n in range(1, s.callback_max_attempts)]
        assert sum(gaps) >= 24 * 3600
    # The floor: every gap is at least half its nominal value, whatever the jitter.
    low = [retry_delay(n, base=300, cap=43200, rng=_Fixed(0.0)) for n in range(1, 10)]
    assert low[:4] == [150, 600, 2400, 9600] and low[4:] == [21600] * 5
    high = [retry_delay(n, base=300, cap=43200, rng=_Fixed(1.0)) for n in range(1, 10)]
    assert high[0] == 300 and high[-1] == 43200
    assert retry_delay(10_000, base=300, cap=43200) <= 43200  # no overflow for absurd counts


class _Fixed(random.Random):
    """uniform(a, b) at a fixed fraction of the way from a to b."""

    def __init__(self, fraction: float):
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a, b):
        return a + (b - a) * self.fraction


def test_retry_after_in_seconds_or_http_date():
    now = datetime(2025, 1, 1, 12, 0, 0)
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds("Wed, 01 Jan 2025 12:01:30 GMT", now) == 90
    assert retry_after_seconds("Wed, 01 Jan 2025 11:00:00 GMT", now) == 0
    assert retry_after_seconds(None, now) is None
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds("-5", now) is None


def test_host_patterns():
    patterns = tuple(parse_host_pattern(p) for p in ("*.internal.example", "127.0.0.1", "Hooks.Example.com", "[::1]"))
    assert host_allowed("billing.internal.example", patterns)
    assert host_allowed("a.b.internal.example", patterns)
    assert not host_allowed("internal.example", patterns)
    assert not host_allowed("evilinternal.example", patterns)
    assert host_allowed("hooks.example.com", patterns) and host_allowed("::1", patterns)
    assert not host_allowed("127.0.0.2", patterns)
    assert host_allowed("anything.example", ())
    destinations = CallbackDestinations(allowed_hosts=patterns)
    assert destinations.url_problem("http://127.0.0.1:8080/x") is None
    assert "'evil.example' is not allowed by PAYMENTS_CALLBACK_ALLOWED_HOSTS" in destinations.url_problem("https://evil.example/cb")
    for bad in ("http://x.example", "*.*.example", "a*.example", "host:80", ""):
        with pytest.raises(ValueError):
            parse_host_pattern(bad)


def test_settings():
    s = load_settings({
        "PAYMENTS_CALLBACK_ALLOWED_HOSTS": "*.internal.example, 127.0.0.1",
        "PAYMENTS_CALLBACK_SIGNING_SECRETS": f"shop={SHOP_SECRET},shop={OLD_SHOP_SECRET},billing={SHOP_SECRET}",
        "PAYMENTS_RECONCILE_BACKOFF": "1s,500ms,2m",
        "PAYMENTS_CALLBACK_MAX_ATTEMPTS": "12",
        "PAYMENTS_CALLBACK_RETRY_INTERVAL_SECONDS": "0.5",
    })
    assert s.callback_allowed_hosts == ("*.internal.example", "127.0.0.1")
    assert [name for name, _ in s.callback_signing_secrets] == ["shop", "shop", "billing"]
    assert SHOP_SECRET not in repr(s)
    assert s.reconcile_backoff_seconds == (1, 0.5, 120)
    assert s.callback_max_attempts == 12 and s.callback_retry_interval_seconds == 0.5
    defaults = load_settings({})
    assert defaults.reconcile_backoff_seconds == (300, 3600, 86400) and defaults.callback_allowed_hosts == ()
    assert timedelta(seconds=defaults.callback_retry_max_interval_seconds) == timedelta(hours=12)
    for env, message in (
        ({"PAYMENTS_CALLBACK_ALLOWED_HOSTS": "https://x.example"}, "PAYMENTS_CALLBACK_ALLOWED_HOSTS"),
        ({"PAYMENTS_CALLBACK_SIGNING_SECRETS": "shop"}, "service=whsec_"),
        ({"PAYMENTS_CALLBACK_SIGNING_SECRETS": "shop=whsec_short"}, "secret of 'shop'"),
        ({"PAYMENTS_RECONCILE_BACKOFF": "5m,soon"}, "PAYMENTS_RECONCILE_BACKOFF"),
        ({"PAYMENTS_JOB_CONCURRENCY": "0"}, "PAYMENTS_JOB_CONCURRENCY"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_settings(env)
