"""Anonymous visitors end to end: a real worker on the embedded broker and store.

A page view creates a visitor under its cookie consent; an identity link
moves the visitor's profile to the customer through ``visitor_merges``
(under the customer's consent, with the shipped strict default); bad links
are dead letters with their reasons; erasing the customer erases the linked
visitor, and its later page views are not profiled.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from schemas.codec import decode, pack
from streams.api.web import bound_port, build_api, serve
from streams.app import Worker, utc_now
from streams.broker import EmbeddedBroker
from streams.settings import Settings
from tests.harness import consume_all, eventually, isolated_settings, produce_raw
from tests.integration.conftest import stop_or_explain

VIEWER = "viewer-token-0123456789ab"

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)

ITEM = ("content", b"golf-1", pack({
    "event_id": "i1", "content_id": "golf-1", "schema_version": 1,
    "occurred_at": (BASE - timedelta(days=1)).isoformat(), "topics": ["golf"],
    "channels": ["web"], "slots": ["hero"],
    "variants": [{"language": "de", "title": "Golf", "url": "https://shop.example/g"}],
    "default_language": "de"}))


def at(minutes: float) -> str:
    return (BASE + timedelta(minutes=minutes)).isoformat()


def view(event_id: str, visitor: str, minutes: float, *, seconds: float | None = 90.0,
         consent: tuple[str, ...] = ("profiling",)) -> tuple[str, bytes, bytes]:
    payload = {"event_id": event_id, "visitor_id": visitor, "schema_version": 1,
               "occurred_at": at(minutes), "session_id": f"s-{visitor}",
               "url": "https://shop.example/golf", "page_type": "product", "device": "mobile",
               "content_id": "golf-1", "consent": list(consent)}
    if seconds is not None:
        payload["engagement_seconds"] = seconds
    return ("page_views", visitor.encode(), pack(payload))


def link(event_id: str, visitor: str, customer: str, minutes: float
         ) -> tuple[str, bytes, bytes]:
    return ("identity_links", visitor.encode(), pack({
        "event_id": event_id, "visitor_id": visitor, "customer_id": customer,
        "schema_version": 1, "occurred_at": at(minutes), "source": "login"}))


def consent(event_id: str, customer: str, minutes: float, action: str, *purposes: str
            ) -> tuple[str, bytes, bytes]:
    return ("consents", customer.encode(), pack({
        "event_id": event_id, "customer_id": customer, "schema_version": 1,
        "occurred_at": at(minutes), "action": action, "purposes": list(purposes),
        "source": "consent-banner"}))


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    return isolated_settings(broker.bootstrap_servers, tmp_path, consent_default=frozenset(),
                             web_port=0, viewer_tokens=(VIEWER,))


async def test_a_visitor_is_profiled_merged_on_login_and_erased_with_the_customer(
        worker: Worker, settings: Settings) -> None:
    produce_raw(settings, [ITEM, consent("k1", "alice", 0, "granted", "profiling")])
    await eventually(lambda: worker.accounting.events_in >= 2, 60, "catalogue and consent")
    produce_raw(settings, [view("p1", "v1", 1), view("p2", "v1", 2, seconds=None),
                           view("p3", "v2", 1, consent=())])
    await eventually(lambda: worker.accounting.events_in >= 5, 60, "the page views")
    visitors = await worker.store.load_visitor_profiles(["v1", "v2"], utc_now())
    # v1 consented: a profile from the first page view; v2 did not: nothing is kept.
    assert [p.view_id for p in visitors["v1"].pages] == ["p1", "p2"]
    assert visitors["v1"].pages[0].topics == ("golf",)
    assert "v2" not in visitors

    produce_raw(settings, [link("l1", "v1", "alice", 3)])
    # The link, then the merge the worker wrote to visitor_merges and read back.
    await eventually(lambda: worker.accounting.events_in >= 7, 60, "the link and its merge")
    (merged,) = [decode(m.value()) for m in consume_all(settings, "visitor_merges", 1)]
    assert merged["customer_id"] == "alice"
    assert [p["view_id"] for p in merged["pages"]] == ["p1", "p2"]
    alice = (await worker.store.load_customers(["alice"], utc_now()))["alice"]
    assert len(alice.history) == 2
    assert "golf" in alice.interests
    linked = (await worker.store.load_visitor_profiles(["v1"], utc_now()))["v1"]
    assert linked.customer_id == "alice"
    assert linked.pages == []  # they live in the customer now

    # A later page view of the linked visitor goes to alice, under her consent.
    produce_raw(settings, [view("p4", "v1", 4)])
    await eventually(lambda: worker.accounting.events_in >= 9, 60, "the forwarded view")
    alice = (await worker.store.load_customers(["alice"], utc_now()))["alice"]
    assert len(alice.history) == 3

    produce_raw(settings, [consent("e1", "alice", 10, "erasure_requested")])
    await eventually(lambda: worker.accounting.erasures == 1, 60, "the erasure")
    now = utc_now()
    assert await worker.store.load_customers(["alice"], now) == {}
    assert await worker.store.load_visitor_profiles(["v1"], now) == {}
    assert await worker.store.customer_events("v1", now) == []
    forgotten = worker.accounting.forgotten
    produce_raw(settings, [view("p5", "v1", 11)])
    await eventually(lambda: worker.accounting.forgotten == forgotten + 1, 60,
                     "the page view after the erasure")
    assert await worker.store.load_visitor_profiles(["v1"], utc_now()) == {}
    assert await worker.store.load_customers(["alice"], utc_now()) == {}
    assert worker.accounting.balanced


async def test_bad_links_and_engagement_are_dead_letters_with_reasons(
        worker: Worker, settings: Settings) -> None:
    produce_raw(settings, [view("p1", "v1", 1), view("p2", "v2", 1)])
    await eventually(lambda: worker.accounting.events_in >= 2, 60, "the page views")
    produce_raw(settings, [
        link("l1", "v1", "bob", 2),
        link("l2", "v1", "carol", 3),   # a second customer claims v1
        link("l3", "v3", "v3", 3),      # a visitor linked to itself
        link("l4", "v9", "v2", 3),      # a visitor linked to another visitor
        view("p3", "v4", 3, seconds=-5.0),
        view("p4", "v4", 3, seconds=10 * 86400.0),
    ])
    await eventually(lambda: worker.accounting.dead_letters >= 5, 60, "the dead letters")
    reasons = [decode(m.value())["reason"] for m in consume_all(settings, "dead-letters", 5)]
    assert any("already linked to another customer" in r for r in reasons), reasons
    assert any("cannot be linked to itself" in r for r in reasons), reasons
    assert any("is a visitor id" in r for r in reasons), reasons
    assert sum("engagement_seconds" in r for r in reasons) == 2, reasons
    # The first link stands: v1 belongs to bob.
    assert (await worker.store.load_visitor_profiles(["v1"], utc_now()))["v1"].customer_id == "bob"
    await eventually(lambda: worker.accounting.events_in >= 9, 60, "bob's merge")
    assert worker.accounting.balanced


async def test_decide_for_a_session_after_one_page_view_answers_with_reasons(
        worker: Worker, settings: Settings) -> None:
    tea = ("content", b"tea-1", pack({
        "event_id": "i2", "content_id": "tea-1", "schema_version": 1,
        "occurred_at": (BASE - timedelta(days=2)).isoformat(), "topics": ["tea"],
        "channels": ["web"], "slots": ["hero"],
        "variants": [{"language": "de", "title": "Tee", "url": "https://shop.example/t"}],
        "default_language": "de"}))
    golf_2 = ("content", b"golf-2", pack({
        "event_id": "i3", "content_id": "golf-2", "schema_version": 1,
        "occurred_at": (BASE - timedelta(days=3)).isoformat(), "topics": ["golf"],
        "channels": ["web"], "slots": ["hero"],
        "variants": [{"language": "de", "title": "Golf 2", "url": "https://shop.example/g2"}],
        "default_language": "de"}))
    # The catalogue first: a page view read before its item is known has no topics.
    produce_raw(settings, [ITEM, tea, golf_2])
    await eventually(lambda: worker.accounting.events_in >= 3, 60, "the catalogue")
    produce_raw(settings, [view("p1", "v1", 1)])
    await eventually(lambda: worker.accounting.events_in >= 4, 60, "the page view")
    runner = await serve(build_api(worker), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{bound_port(runner)}/v1/decide"
    headers = {"Authorization": f"Bearer {VIEWER}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            async def decide(body: dict[str, str]) -> tuple[int, dict[str, object]]:
                async with session.post(url, json=body) as response:
                    return response.status, await response.json()

            status, answer = await decide({"visitor_id": "v1", "session_id": "s-v1",
                                           "touchpoint": "hero"})
            assert status == 200, answer
            # Interested in golf from one page view; golf-1 was seen in this session.
            assert answer["profile"] == "visitor"
            assert answer["content_id"] == "golf-2"
            assert answer["personalised"] is True
            assert 0 <= answer["conversion_probability"] <= 1  # type: ignore[operator]
            assert any("interest in golf" in r for r in answer["reasons"])  # type: ignore[union-attr]
            # Made-up ids: an answer, not personalised, and nothing is created.
            for body in ({"visitor_id": "made-up", "session_id": "s", "touchpoint": "hero"},
                         {"customer_id": "made-up", "session_id": "s", "touchpoint": "hero"}):
                status, answer = await decide(body)
                assert status == 200, answer
                assert answer["profile"] == "none"
                assert answer["personalised"] is False
            status, answer = await decide({"visitor_id": "v1", "customer_id": "c",
                                           "session_id": "s", "touchpoint": "hero"})
            assert status == 400, answer
    finally:
        await stop_or_explain(runner.cleanup(), "the API to stop")
    now = utc_now()
    assert await worker.store.load_visitor_profiles(["made-up"], now) == {}
    assert await worker.store.load_customers(["made-up"], now) == {}


def page(event_id: str, visitor: str, session: str, minutes: float, page_type: str
         ) -> tuple[str, bytes, bytes]:
    return ("page_views", visitor.encode(), pack({
        "event_id": event_id, "visitor_id": visitor, "schema_version": 1,
        "occurred_at": at(minutes), "session_id": session,
        "url": f"https://shop.example/{page_type}", "page_type": page_type,
        "device": "desktop", "engagement_seconds": 20.0, "consent": ["profiling"]}))


async def test_decide_for_a_session_answers_from_the_worker_s_session_models(
        worker: Worker, settings: Settings) -> None:
    # Many sessions take one path, home -> search -> cart; then a new visitor is on home.
    path = ["home", "search", "cart"]
    produce_raw(settings, [page(f"w{n}-{i}", f"w{n}", f"s-w{n}", n + i * 0.2, kind)
                           for n in range(20) for i, kind in enumerate(path)])
    produce_raw(settings, [page("x-0", "x", "s-x", 30, "home")])
    await eventually(lambda: worker.accounting.events_in >= 61, 60, "the sessions")
    runner = await serve(build_api(worker), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{bound_port(runner)}/v1/decide"
    headers = {"Authorization": f"Bearer {VIEWER}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            async def decide(body: dict[str, str]) -> dict[str, Any]:
                async with session.post(url, json=body) as response:
                    assert response.status == 200, await response.text()
                    answer: dict[str, Any] = await response.json()
                    return answer

            on_home = await decide({"visitor_id": "x", "session_id": "s-x",
                                    "touchpoint": "hero"})
            # Not x's own history (one page): the worker's Markov model of all sessions.
            assert on_home["next_pages_model"] == "markov-backoff"
            assert on_home["next_pages"][0]["page"] == "search"
            assert on_home["next_pages"][0]["probability"] > 0.5
            assert on_home["conversion_model"] == "session-conversion"
            assert 0 <= on_home["conversion_probability"] <= 1
            assert any("after home" in r for r in on_home["reasons"])
            # A session x has not started yet: the model's answer for a session start.
            new = await decide({"visitor_id": "x", "session_id": "s-other",
                                "touchpoint": "hero"})
            assert new["next_pages"][0]["page"] == "home"
            assert any("at a session start" in r for r in new["reasons"])
    finally:
        await stop_or_explain(runner.cleanup(), "the API to stop")
