"""The dashboard in a real headless browser, against ``relevanz demo`` as a user starts it.

Debian's ``chromium`` and ``chromium-driver`` drive the page (``.ci/run``
installs them).  Without them the test is skipped, saying why, except with
``CI=true``, where a missing browser fails the run.  The screenshot of the
paused dashboard is kept in ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.broker import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
RELEVANZ = str(Path(sys.executable).parent / "relevanz")
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1600")


def _browser_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    missing = "chromium" if not browser else "chromedriver (package chromium-driver)"
    message = f"{missing} is not installed; apt-get install chromium chromium-driver"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs the browser test: {message}")
    pytest.skip(message)


@pytest.fixture
def browser() -> Iterator[Any]:
    binary, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


class Demo:
    """A running ``relevanz demo`` and what it printed."""

    def __init__(self, process: subprocess.Popen[str], stderr: Path):
        self.process = process
        self.stderr = stderr
        self.lines: dict[str, str] = {}

    def wait_for_announcement(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.stderr.read_text()
            found = dict(re.findall(r"^(dashboard|operator token|viewer token): (\S+)",
                                    text, re.MULTILINE))
            if len(found) == 3:
                for name in found:  # said once, not with every progress line
                    assert text.count(f"{name}: ") == 1, text
                self.lines = found
                return
            assert self.process.poll() is None, f"demo exited early: {text}"
            time.sleep(0.2)
        raise AssertionError(f"demo announced no dashboard: {self.stderr.read_text()}")

    @property
    def base(self) -> str:
        return self.lines["dashboard"].split("/dashboard")[0]

    def get(self, path: str, token: str | None) -> tuple[int, Any]:
        request = urllib.request.Request(self.base + path)  # noqa: S310 - loopback URL
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    tmp_path = tmp_path_factory.mktemp("demo")
    stderr = tmp_path / "demo.err"
    env = {**os.environ, "RELEVANZ_WEB_PORT": str(free_port())}
    for name in ("RELEVANZ_OPERATOR_TOKENS", "RELEVANZ_VIEWER_TOKENS"):
        env.pop(name, None)
    with stderr.open("w") as err:
        process = subprocess.Popen([RELEVANZ, "demo", "--rate", "100", "--data-dir",
                                    str(tmp_path / "demo")], env=env, stdout=subprocess.PIPE,
                                   stderr=err, text=True)
    running = Demo(process, stderr)
    try:
        running.wait_for_announcement()
        deadline = time.monotonic() + 60
        while running.get("/ready", None)[0] != 200:
            assert time.monotonic() < deadline, "the demo's worker never became ready"
            time.sleep(0.3)
        yield running
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def _wait(driver: Any, condition: Any, what: str, timeout_s: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.2).until(condition, what)


def _text(driver: Any, element_id: str) -> str:
    return str(driver.find_element("id", element_id).text)


def test_operator_pauses_and_resumes_from_the_dashboard(browser: Any, demo: Demo) -> None:
    operator, viewer = demo.lines["operator token"], demo.lines["viewer token"]
    browser.get(demo.lines["dashboard"])
    _wait(browser, lambda d: d.find_element("id", "board").is_displayed(), "the board")
    assert "#token" not in browser.current_url  # the token left the address bar
    assert _text(browser, "role") == "signed in as operator"
    _wait(browser, lambda d: _text(d, "ready") == "ready", "the worker to show ready")
    _wait(browser, lambda d: _text(d, "pause-state") == "sending", "the pause state")
    # Live numbers: events flow and the partition table fills.
    _wait(browser, lambda d: _text(d, "rate-1m") not in ("\u2013", "0"), "throughput")
    rows = browser.find_elements("css selector", "#partitions tr")
    assert len(rows) == 20
    _wait(browser, lambda d: d.find_elements("css selector", "#chart-throughput polyline"),
          "the throughput chart", timeout_s=40)
    assert browser.find_elements("css selector", "#chart-lag polyline")
    # The campaign table lists the book's campaigns; the model table the learned models.
    _wait(browser, lambda d: "interest-follow-up" in _text(d, "campaigns"), "the campaigns")
    assert len(browser.find_elements("css selector", "#campaigns tr")) == 4
    _wait(browser, lambda d: "content-policy" in _text(d, "models"), "the model table")

    browser.find_element("id", "pause-reason").send_keys("checking the kill switch")
    browser.find_element("id", "pause-all").click()
    _wait(browser, lambda d: _text(d, "pause-state") == "PAUSED", "the page to show PAUSED")
    status, controls = demo.get("/v1/controls", viewer)
    assert status == 200
    assert controls["paused"] is True
    assert controls["changes"][0]["reason"] == "checking the kill switch"
    assert not browser.find_element("id", "resume-all").get_attribute("disabled")
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "dashboard-paused.png"))

    browser.find_element("id", "resume-all").click()
    _wait(browser, lambda d: _text(d, "pause-state") == "sending", "the page to resume")
    assert demo.get("/v1/controls", operator)[1]["paused"] is False

    browser.find_element("id", "pause-campaign").click()  # no campaign id typed yet
    _wait(browser, lambda d: _text(d, "control-error") == "Enter the id of the campaign first.",
          "the missing campaign id")
    browser.find_element("id", "campaign-id").send_keys("spring sale")
    browser.find_element("id", "pause-campaign").click()
    _wait(browser, lambda d: _text(d, "paused-campaigns") == "spring sale", "the campaign pause")
    assert demo.get("/v1/controls", viewer)[1]["paused_campaigns"] == ["spring sale"]
    browser.find_element("id", "resume-campaign").click()
    _wait(browser, lambda d: _text(d, "paused-campaigns") == "none", "the campaign resume")


def test_a_viewer_sees_the_board_but_cannot_pause(browser: Any, demo: Demo) -> None:
    viewer = demo.lines["viewer token"]
    browser.get(f"{demo.base}/dashboard#token={viewer}")
    _wait(browser, lambda d: _text(d, "role") == "signed in as viewer", "the viewer board")
    _wait(browser, lambda d: _text(d, "pause-state") == "sending", "the pause state")
    assert browser.find_element("id", "pause-all").get_attribute("disabled")
    # A wrong token is refused with the sign-in form, not an error page.
    browser.execute_script("sessionStorage.clear()")
    browser.get("about:blank")  # a new document, not a jump to another fragment
    browser.get(f"{demo.base}/dashboard#token=not-a-valid-token-at-all")
    _wait(browser, lambda d: d.find_element("id", "login").is_displayed(), "the sign-in form")
    assert _text(browser, "login-error") == "That token was not accepted."
