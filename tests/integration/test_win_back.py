"""Win-back fires as event time passes, in a real worker on the embedded broker.

A customer orders and goes quiet; other customers' events move the worker's
event-time watermark past the customer's first quiet check (7 days after
their order, plus a day's grace).  The win-back send trigger must appear on
``send-triggers`` exactly once, without any further event of the customer,
and a replay of the same input must fire the same trigger (same id) into the
rebuilt contact log.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.codec import decode, pack
from streams.app import build_worker
from streams.broker import EmbeddedBroker
from streams.cli.replay import run_replay
from streams.settings import Settings
from streams.store import open_store
from tests.harness import consume_all, eventually, isolated_settings, produce_raw
from tests.integration.conftest import stop_or_explain

T0 = datetime(2026, 1, 5, 10, tzinfo=UTC)

#: One campaign, win-back, with a threshold any churn risk passes (the test is about
#: when the rule is asked, not about the model) and no holdout.
BOOK = """
quiet_hours = "21:00-08:00"
[triggers.win_back]
churn_risk = 0.01
[[campaigns]]
id = "win-back"
description = "A customer likely to leave."
trigger = "win_back"
goal = "conversions"
channels = ["email"]
priority = 40
holdout_share = 0.0
"""

ITEM = ("content", b"golf-1", pack({
    "event_id": "i1", "content_id": "golf-1", "schema_version": 1,
    "occurred_at": (T0 - timedelta(days=30)).isoformat(),
    "topics": ["sports"], "channels": ["email"], "slots": ["newsletter-block"],
    "variants": [{"language": "de", "title": "Golfreise", "url": "https://shop.example/g"}],
    "default_language": "de"}))


def order(customer: str, event_id: str, at: datetime) -> tuple[str, bytes, bytes]:
    return ("purchases", customer.encode(), pack({
        "event_id": event_id, "customer_id": customer, "schema_version": 1,
        "occurred_at": at.isoformat(), "order_id": f"o-{event_id}", "total": 20.0,
        "currency": "EUR", "items": [{"product_id": "p1", "quantity": 1, "unit_price": 20.0,
                                      "topics": ["sports"]}]}))


def click(customer: str, event_id: str, at: datetime) -> tuple[str, bytes, bytes]:
    return ("clicks", customer.encode(), pack({
        "event_id": event_id, "customer_id": customer, "schema_version": 1,
        "occurred_at": at.isoformat(), "content_id": "golf-1"}))


#: Alice orders once and goes quiet; Bob clicks every day for 12 days.
INPUT = [ITEM, order("alice", "a1", T0)] + [
    click("bob", f"b{day}", T0 + timedelta(days=day, minutes=5)) for day in range(1, 13)]


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    book = tmp_path / "campaigns.toml"
    book.write_text(BOOK)
    return isolated_settings(broker.bootstrap_servers, tmp_path, campaigns_path=str(book),
                             explore=0.0, holdout_share=0.0)


def _win_backs(settings: Settings, at_least: int) -> list[dict[str, object]]:
    triggers = [decode(m.value()) for m in consume_all(settings, "send-triggers", at_least)]
    return [t for t in triggers if t["campaign_id"] == "win-back"]


async def test_a_quiet_customer_is_won_back_once_as_the_watermark_passes(
        settings: Settings) -> None:
    worker = build_worker(settings)
    await worker.start()
    try:
        produce_raw(settings, INPUT)
        await eventually(lambda: worker.accounting.events_in >= len(INPUT), 90, "the input")
        await eventually(lambda: worker.accounting.send_triggers >= 1, 60, "the win-back")
        # Bob's events again, redelivered or re-sent: no second win-back.
        produce_raw(settings, INPUT[2:])
        await eventually(lambda: worker.accounting.duplicates >= len(INPUT) - 2, 60,
                         "the duplicates")
    finally:
        await stop_or_explain(worker.stop(), "the worker to stop")
    (sent,) = _win_backs(settings, 1)
    assert sent["customer_id"] == "alice"
    # Decided as of the check (7 days after the order), not as of Bob's latest event.
    assert sent["created_at"] == (T0 + timedelta(days=7)).isoformat()
    assert any(str(r).startswith("win-back: quiet for 7 days") for r in sent["reasons"])

    # A replay of the same topics rebuilds the same contact log: the same trigger.
    store = open_store(settings)
    await store.open()
    try:
        (live,) = (await store.load_customers(["alice"], T0)).values()
    finally:
        await store.close()
    assert [p.trigger_id for p in live.pending] == [sent["trigger_id"]]
    counts = await run_replay(settings, lambda _: None)
    assert counts["send_triggers"] == 1
    store = open_store(settings)
    await store.open()
    try:
        (rebuilt,) = (await store.load_customers(["alice"], T0)).values()
    finally:
        await store.close()
    assert [p.trigger_id for p in rebuilt.pending] == [sent["trigger_id"]]


async def test_a_restarted_worker_still_wins_back_a_customer_who_stayed_quiet(
        settings: Settings) -> None:
    """The index of due checks is in memory: a worker started after Alice's order was
    applied rebuilds it from the stored customers, so the watermark still passing her
    first check fires the win-back, without any further event of hers."""
    before, after = INPUT[:5], INPUT[5:]  # Bob's clicks up to day 3, then the rest
    first = build_worker(settings)
    await first.start()
    try:
        produce_raw(settings, before)
        await eventually(lambda: first.accounting.events_in >= len(before), 90, "the input")
    finally:
        await stop_or_explain(first.stop(), "the first worker to stop")
    assert first.accounting.send_triggers == 0
    second = build_worker(settings)
    await second.start()
    try:
        produce_raw(settings, after)
        await eventually(lambda: second.accounting.events_in >= len(after), 90, "the rest")
        await eventually(lambda: second.accounting.send_triggers >= 1, 60, "the win-back")
    finally:
        await stop_or_explain(second.stop(), "the second worker to stop")
    (sent,) = _win_backs(settings, 1)
    assert sent["customer_id"] == "alice"
    assert sent["created_at"] == (T0 + timedelta(days=7)).isoformat()
