"""The sandbox checkout in a real browser: Debian's Chromium, headless, driven by
Selenium through Debian's chromedriver (named explicitly, so Selenium Manager never
downloads anything). A customer opens checkouts, reads the amounts, clicks Pay on one
and Decline on another; the API then says PAID and FAILED. The page is checked on a
phone-sized screen too, and the browser's own record of its requests shows that it
fetched nothing but our pages (no favicon probe, no external asset).

`make test` installs chromium and chromium-driver when it runs as root; elsewhere
these tests skip saying so, except under CI=true, where they must run. Screenshots are
kept in $TEST_ARTIFACTS_DIR/checkout (else in pytest's temporary directory); their
paths are printed at the end of the run."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from .conftest import FAILED, PAID, PENDING, SCREENSHOTS, Shop

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# What lets Chromium run here: no GPU, no sandbox (root in a container), no network of its own.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,900")
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
WAIT_SECONDS = 30


def _missing_browser() -> str | None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if not missing:
        return None
    return (f"{' and '.join(missing)} missing: install Debian's chromium and chromium-driver "
            "(`make test` does as root: apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, request) -> Path:
    base = os.environ.get("TEST_ARTIFACTS_DIR")
    directory = Path(base) / "checkout" if base else tmp_path_factory.mktemp("checkout-artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    request.config.stash.setdefault(SCREENSHOTS, [])
    return directory


@pytest.fixture(scope="module")
def browser(tmp_path_factory, artifacts):
    problem = _missing_browser()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"the browser tests must run under CI: {problem}")
        pytest.skip(f"!!! BROWSER TESTS SKIPPED: {problem} !!!")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every request the page makes
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(artifacts / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(browser, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT_SECONDS).until(condition, message=f"waiting for {what}")


def text_of(browser, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, element_id).text


def screenshot(browser, request, artifacts: Path, name: str) -> None:
    path = artifacts / f"{name}.png"
    assert browser.save_screenshot(str(path)), path
    request.config.stash[SCREENSHOTS].append(str(path))


def network(browser) -> dict[str, int | None]:
    """The http(s) URLs the browser asked for since the last call, with the status each
    got (Chromium's performance log; its own chrome:// pages are no network)."""
    seen: dict[str, int | None] = {}
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            redirected = message["params"].get("redirectResponse")  # the answer that led here
            if redirected:
                seen[redirected["url"]] = redirected["status"]
            seen.setdefault(message["params"]["request"]["url"], None)
        elif message["method"] == "Network.responseReceived":
            seen[message["params"]["response"]["url"]] = message["params"]["response"]["status"]
    return {url: status for url, status in seen.items() if url.startswith(("http:", "https:"))}


def click(browser, button_id: str, outcome: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    button = browser.find_element(By.ID, button_id)
    button.click()
    wait_for(browser, ec.staleness_of(button), f"the page to leave after {button_id}")
    wait_for(browser, lambda b: b.execute_script("return document.readyState") == "complete", outcome)


def test_a_customer_pays_one_checkout_and_declines_another(shop: Shop, browser, artifacts, request):
    usd = shop.create(amount_cents=123456, currency="usd", resource_type="order", resource_id="A-1001")
    cancel_url = f"{shop.server.http_url}/healthz?back=cart"  # a page of ours: the browser reaches no other site
    jpy = shop.create(amount_cents=123456, currency="jpy", resource_type="subscription", resource_id="plan-pro",
                      cancel_url=cancel_url)
    network(browser)  # start the record here

    browser.get(usd["checkout_url"])
    assert (text_of(browser, "merchant"), text_of(browser, "item")) == ("shop", "order A-1001")
    assert text_of(browser, "amount") == "1,234.56 USD"
    assert text_of(browser, "status") == "PENDING"
    screenshot(browser, request, artifacts, "1-usd-checkout")
    click(browser, "pay", "the receipt")
    assert browser.current_url == usd["checkout_url"]  # no success_url: back to the page, which confirms
    assert text_of(browser, "outcome") == "Payment received. shop has been told."
    assert text_of(browser, "status") == "PAID"
    screenshot(browser, request, artifacts, "2-usd-paid")

    browser.get(jpy["checkout_url"])
    assert text_of(browser, "amount") == "123,456 JPY"
    screenshot(browser, request, artifacts, "3-jpy-checkout")
    # The checkout pages fetched nothing but themselves: no favicon probe, no external asset.
    assert network(browser) == {usd["checkout_url"]: 200, f"{usd['checkout_url']}/pay": 303, jpy["checkout_url"]: 200}

    click(browser, "decline", "the cancel page")
    assert browser.current_url == cancel_url
    assert (shop.get(usd["id"])["status"], shop.get(jpy["id"])["status"]) == (PAID, FAILED)
    assert shop.events(usd["id"])[-1] == "payment.succeeded" and shop.events(jpy["id"])[-1] == "payment.failed"

    # On a page without an icon of its own the browser probes /favicon.ico: a plain 404, never a 400.
    assert {status for url, status in network(browser).items() if url.endswith("/favicon.ico")} <= {404}
    log = shop.server.logs()
    assert "favicon" not in log and not re.search(r"status=[45]\d\d", log), log


def test_the_checkout_fits_a_phone(shop: Shop, browser, artifacts, request):
    payment = shop.create(amount_cents=98765432, currency="krw", resource_type="order", resource_id="M-7")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
    try:
        browser.get(payment["checkout_url"])
        layout = browser.execute_script("""
            const box = id => document.getElementById(id).getBoundingClientRect();
            return {viewport: window.innerWidth, content: document.documentElement.scrollWidth,
                    pay: box('pay').toJSON(), decline: box('decline').toJSON(),
                    font: parseFloat(getComputedStyle(document.body).fontSize)};""")
        screenshot(browser, request, artifacts, "4-phone-checkout")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    # The viewport meta makes the page as wide as the phone (else 980 CSS pixels), with
    # nothing to scroll sideways; the buttons are stacked, Pay on top, wide and tall
    # enough to tap.
    assert layout["viewport"] == PHONE["width"] and layout["content"] <= layout["viewport"], layout
    pay, decline = layout["pay"], layout["decline"]
    assert pay["bottom"] <= decline["top"], layout
    assert pay["width"] >= 0.8 * PHONE["width"] and pay["height"] >= 44, layout
    assert layout["font"] >= 16, layout
    assert text_of(browser, "amount") == "98,765,432 KRW"
    assert shop.get(payment["id"])["status"] == PENDING
