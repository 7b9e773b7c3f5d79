"""The dashboard in a real headless browser, against ``relevanz demo`` as a user starts it.

Debian's ``chromium`` and ``chromium-driver`` drive the page (``.ci/run``
installs them).  Without them the test is skipped, saying why, except with
``CI=true``, where a missing browser fails the run.  The screenshot of the
paused dashboard is kept in ``test-artifacts/``; with ``RELEVANZ_SCREENSHOTS``
set, a PNG of each view goes into that folder too (the README's pictures).

The demo runs the built-in campaign book with ``interest-follow-up`` in
approval mode, so that proposals wait in the page for a person.
"""

from __future__ import annotations

import contextlib
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
from selenium.common.exceptions import TimeoutException

from schemas.codec import decode
from schemas.topics import INPUT_TOPICS
from streams.broker import free_port
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
RELEVANZ = str(Path(sys.executable).parent / "relevanz")
BOOK = ROOT / "deploy" / "campaigns.toml"
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
            broker = re.search(r"embedded broker on (\S+),", text)
            if len(found) == 3 and broker:
                found["broker"] = broker.group(1)
                for name in ("dashboard", "operator token", "viewer token"):  # said once
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

    def post(self, path: str, token: str) -> tuple[int, Any]:
        request = urllib.request.Request(self.base + path, data=b"{}", method="POST",  # noqa: S310
                                         headers={"Authorization": f"Bearer {token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def send_triggers(self, trigger_id: str) -> int:
        """How many send triggers with ``trigger_id`` the demo's broker holds."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.lines["broker"],
                             "group.id": "dashboard-test", "enable.auto.commit": False})
        try:
            topics = consumer.list_topics(timeout=10).topics
            (name,) = [t for t in topics if t.endswith("send-triggers")]
            consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING)
                             for p in topics[name].partitions])
            ends = {p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                    for p in topics[name].partitions}
            seen: dict[int, int] = {p: 0 for p in ends}
            found = 0
            deadline = time.monotonic() + 30
            while any(seen[p] < ends[p] for p in ends) and time.monotonic() < deadline:
                for message in consumer.consume(500, 0.5):
                    assert message.error() is None, message.error()
                    seen[message.partition()] = message.offset() + 1
                    found += decode(message.value())["trigger_id"] == trigger_id
            assert all(seen[p] >= ends[p] for p in ends), "the topic was not read to its end"
            return found
        finally:
            consumer.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    tmp_path = tmp_path_factory.mktemp("demo")
    stderr = tmp_path / "demo.err"
    book = tmp_path / "campaigns.toml"
    text = BOOK.read_text()
    assert text.count("approval = false") == 1  # on interest-follow-up
    book.write_text(text.replace("approval = false", "approval = true"))
    env = {**os.environ, "RELEVANZ_WEB_PORT": str(free_port()), "RELEVANZ_CAMPAIGNS": str(book)}
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


def _screenshot(driver: Any, name: str, element_id: str | None = None) -> None:
    """A PNG of the page (or one element) into ``RELEVANZ_SCREENSHOTS`` when it is set."""
    folder = os.environ.get("RELEVANZ_SCREENSHOTS")
    if folder and element_id is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        element = driver.find_element("id", element_id)
        driver.execute_script("arguments[0].scrollIntoView()", element)
        assert element.screenshot(str(Path(folder) / f"{name}.png"))
    elif folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, max(700, min(int(height) + 40, 1500)))  # no blank tail
        try:
            assert driver.save_screenshot(str(Path(folder) / f"{name}.png"))
        finally:
            driver.set_window_size(1280, 1600)


def _open_tab(driver: Any, view: str) -> None:
    driver.find_element("css selector", f'.tab[data-view="{view}"]').click()


def _open_proposals(driver: Any, count: int = 1) -> list[Any]:
    _open_tab(driver, "proposals")
    return list(_wait(driver, lambda d: (lambda cards: cards if len(cards) >= count else False)(
        d.find_elements("css selector", "#proposals .proposal:not(.resolved)")),
        f"{count} open proposals in the page", timeout_s=90))


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
    # A row for every partition of every input topic.
    assert len(rows) == len(INPUT_TOPICS) * Settings.from_env({}).partitions
    _wait(browser, lambda d: d.find_elements("css selector", "#chart-throughput polyline"),
          "the throughput chart", timeout_s=40)
    _wait(browser, lambda d: d.find_elements("css selector", "#chart-lag polyline"),
          "the lag chart")  # the lag is unknown until the group has committed
    # The campaign table lists the book's campaigns; the model table the learned models.
    _wait(browser, lambda d: "interest-follow-up" in _text(d, "campaigns"), "the campaigns")
    assert len(browser.find_elements("css selector", "#campaigns tr")) == 4
    _wait(browser, lambda d: "content-policy" in _text(d, "models"), "the model table")
    assert "-0" not in _text(browser, "models")  # a model without labels has no figures yet
    # Charts people can read: a unit on the y axis, UTC times on the x axis.
    for chart, unit in (("chart-throughput", "events/s"), ("chart-lag", "messages behind"),
                        ("chart-auc", "ROC AUC"), ("chart-logloss", "log loss")):
        drawn = browser.find_element("id", chart).get_attribute("textContent")
        assert unit in drawn, (chart, drawn)
        if chart.startswith("chart-t") or chart == "chart-lag":
            assert " UTC" in drawn, (chart, drawn)
    _wait(browser, lambda d: len(d.find_elements("css selector", "#uplift-charts svg")) == 4,
          "an uplift chart per campaign", timeout_s=40)
    uplift = browser.find_element("id", "uplift-charts").get_attribute("textContent")
    assert "interval" in uplift
    assert "-0" not in uplift
    if os.environ.get("RELEVANZ_SCREENSHOTS"):  # a few points on every chart for the picture
        with contextlib.suppress(TimeoutException):
            _wait(browser, lambda d: d.find_elements("css selector", "#uplift-charts polygon"),
                  "an uplift band", timeout_s=60)
    _screenshot(browser, "overview")
    _screenshot(browser, "campaigns", "campaigns-panel")

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


def test_an_operator_approves_a_proposal_in_the_page(browser: Any, demo: Demo) -> None:
    operator = demo.lines["operator token"]
    browser.get(f"{demo.base}/dashboard#token={operator}")
    _wait(browser, lambda d: _text(d, "role") == "signed in as operator", "the board")
    first, second, third = _open_proposals(browser, 3)[:3]
    # What a person needs to judge it: who, what, where, when and why.
    text = first.text
    for part in ("Why:", " UTC", "customer", "content"):
        assert part in text
    assert first.find_elements("css selector", ".reasons li")
    chosen = first.get_attribute("data-proposal-id")
    _screenshot(browser, "proposals")
    first.find_element("css selector", "button.approve").click()
    _wait(browser, lambda d: first.find_element("css selector", ".answer").text.startswith(
        "approved"), "the approval's answer in the card")
    assert demo.send_triggers(chosen) == 1  # exactly one send trigger went out
    assert _text(browser, "proposal-error") == ""

    # Answered elsewhere (here: over the API) before the click: the page shows that answer.
    other = second.get_attribute("data-proposal-id")
    status, _ = demo.post(f"/v1/proposals/{other}/reject", operator)
    assert status == 200
    if not second.find_element("css selector", "button.approve").get_attribute("disabled"):
        second.find_element("css selector", "button.approve").click()
    _wait(browser, lambda d: second.find_element("css selector", ".answer").text.startswith(
        "rejected"), "the answer given elsewhere")
    assert _text(browser, "proposal-error") == ""
    assert demo.send_triggers(other) == 0
    assert demo.send_triggers(chosen) == 1

    # Rejected in the page, with a reason: kept with the proposal, nothing sent.
    rejected = third.get_attribute("data-proposal-id")
    third.find_element("css selector", ".reject-reason").send_keys("wrong audience")
    third.find_element("css selector", "button.reject").click()
    _wait(browser, lambda d: "wrong audience" in third.find_element(
        "css selector", ".answer").text, "the rejection's answer")
    status, listed = demo.get("/v1/proposals?status=rejected&limit=1000", operator)
    assert status == 200
    assert [p["note"] for p in listed["proposals"] if p["proposal_id"] == rejected] == [
        "wrong audience"]
    assert demo.send_triggers(rejected) == 0


def test_a_viewer_sees_proposals_but_cannot_approve(browser: Any, demo: Demo) -> None:
    browser.get(f"{demo.base}/dashboard#token={demo.lines['viewer token']}")
    _wait(browser, lambda d: _text(d, "role") == "signed in as viewer", "the viewer board")
    (card, *_) = _open_proposals(browser)
    assert card.find_element("css selector", "button.approve").get_attribute("disabled")
    assert card.find_element("css selector", "button.reject").get_attribute("disabled")
    assert "an operator token answers them" in card.text


def test_a_customer_lookup_shows_why_and_erasure_needs_a_confirmation(
        browser: Any, demo: Demo) -> None:
    operator = demo.lines["operator token"]
    browser.get(f"{demo.base}/dashboard#token={operator}")
    _wait(browser, lambda d: _text(d, "role") == "signed in as operator", "the board")
    (card, *_) = _open_proposals(browser)
    customer = card.find_element("css selector", ".customer-ref").text
    card.find_element("css selector", ".customer-ref").click()  # "why this customer got this"
    _wait(browser, lambda d: d.find_elements("css selector", "#customer-decisions .reasons li"),
          "the reasons of the customer's decisions")
    reasons = _text(browser, "customer-decisions")
    assert "tag " in reasons  # the trigger, in words
    assert "consent:" in reasons
    assert "granted" in _text(browser, "customer-consent")
    assert browser.find_element("id", "customer-id").get_attribute("value") == customer
    _screenshot(browser, "customer")

    browser.find_element("id", "customer-erase").click()
    assert browser.find_element("id", "erase-confirm").is_displayed()
    browser.find_element("id", "erase-no").click()  # changed their mind: nothing happens
    assert not browser.find_element("id", "erase-confirm").is_displayed()
    assert demo.get(f"/v1/customers/{customer}", operator)[0] == 200
    browser.find_element("id", "customer-erase").click()
    browser.find_element("id", "erase-yes").click()
    _wait(browser, lambda d: _text(d, "customer-note").startswith("Erasure requested"),
          "the erasure's answer")
    deadline = time.monotonic() + 30
    while demo.get(f"/v1/customers/{customer}", operator)[0] != 404:
        assert time.monotonic() < deadline, "the worker did not erase the customer"
        time.sleep(0.3)
