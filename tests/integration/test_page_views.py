"""Page views through a real worker: sessions in the store, models learning, bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agents.pipeline.sessions import from_blob
from schemas.codec import decode, pack
from streams.app import Worker
from streams.broker import EmbeddedBroker
from streams.settings import Settings
from streams.sim.sessions import SessionConfig, SessionGenerator
from tests.harness import (
    consume_all,
    eventually,
    eventually_async,
    isolated_settings,
    produce_raw,
)

START = datetime.now(UTC) - timedelta(days=2)


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    return isolated_settings(broker.bootstrap_servers, tmp_path)


def view(event_id: str, seconds: float, page_type: str, *, visitor: str = "v-1",
         session: str = "s-1", **extra: Any) -> tuple[str, bytes, bytes]:
    payload = {"event_id": event_id, "visitor_id": visitor, "schema_version": 1,
               "occurred_at": (START + timedelta(seconds=seconds)).isoformat(),
               "session_id": session, "url": f"https://shop.example/{event_id}",
               "page_type": page_type, "device": "mobile",
               "consent": ["personalisation", "profiling"], **extra}
    return ("page_views", visitor.encode(), pack(payload))


async def test_a_visitors_page_views_build_their_session_in_the_store(
        worker: Worker, settings: Settings) -> None:
    produce_raw(settings, [
        view("e1", 0, "home"),
        view("e2", 20, "category", category="shoes"),
        view("e3", 50, "product", category="shoes", content_id="shoe-1", page_view_id="pv3"),
        view("e4", 140, "product", category="shoes", content_id="shoe-1", page_view_id="pv3",
             engagement_seconds=90),
        view("e2", 20, "category", category="shoes"),  # redelivered
        view("e5", 60, "product", engagement_seconds=-3),  # a sender's bug
    ])
    await eventually(lambda: worker.accounting.events_in == 6, 60, "six page views")
    assert worker.accounting.applied == 4
    assert worker.accounting.duplicates == 1
    assert worker.accounting.dead_letters == 1

    async def stored() -> bool:
        return "v-1" in await worker.store.load_visitors(["v-1"], datetime.now(UTC))

    await eventually_async(stored, 30, "the visitor's session stored", poll_s=0.2)
    blob = (await worker.store.load_visitors(["v-1"], datetime.now(UTC)))["v-1"]
    state = from_blob("v-1", blob)
    assert state.session_id == "s-1"
    assert state.summary.pages == 3  # the report on pv3 is not a page of its own
    assert state.summary.engagement == 90
    assert state.summary.recent == ["home", "category:shoes", "product:shoes"]
    assert "shoes" in state.interests
    assert worker.stage is not None
    assert worker.stage.sessions is not None
    assert worker.stage.sessions.models.next_page.hits.examples == 2

    letters = [decode(m.value()) for m in consume_all(settings, "dead-letters", 1)]
    assert [(d["field"], "below the minimum 0" in d["reason"]) for d in letters] == [
        ("engagement_seconds", True)]


async def test_synthetic_sessions_teach_the_worker_the_next_page_and_conversion(
        worker: Worker, settings: Settings) -> None:
    config = SessionConfig(seed=5, visitors=300, start=START - timedelta(days=20))
    generator = SessionGenerator(config)
    messages = [(m.topic, m.key, m.value) for m in generator.messages()]
    produce_raw(settings, messages)
    await eventually(lambda: worker.accounting.events_in == len(messages), 120,
                     f"{len(messages)} page views")
    assert worker.accounting.applied == len(messages)
    assert worker.stage is not None
    sessions = worker.stage.sessions
    assert sessions is not None
    quality = sessions.models.next_page.quality()
    assert quality["hit3"] >= 1.5 * quality["hit3_popular"]
    assert sessions.models.outcomes.conversion.examples > 0
    assert sessions.sessions_ended > 0
