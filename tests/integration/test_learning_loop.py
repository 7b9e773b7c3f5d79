"""The learning loop in a real worker: a decision, its reward, a snapshot, a restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.pipeline.learner import MODEL_ID
from schemas.codec import decode, pack
from streams.app import build_worker
from streams.broker import EmbeddedBroker
from streams.settings import Settings
from tests import events
from tests.events import Raw
from tests.harness import consume_exactly, eventually, isolated_settings, produce_raw

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


def at(minutes: float) -> str:
    return (BASE + timedelta(minutes=minutes)).isoformat()


def click(event_id: str, minutes: float, **extra: object) -> Raw:
    return events.click(event_id, "alice", at=at(minutes), content_id="golf-1", **extra)


ITEM = ("content", b"golf-1", pack({
    "event_id": "i1", "content_id": "golf-1", "schema_version": 1, "occurred_at": at(-600),
    "topics": ["sports"], "channels": ["email"], "slots": ["newsletter-block"],
    "variants": [{"language": "de", "title": "Golfreise", "url": "https://shop.example/g"}],
    "default_language": "de"}))


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    return isolated_settings(broker.bootstrap_servers, tmp_path, explore=0.0, holdout_share=0.0)


async def test_a_reward_is_learnt_saved_and_resumed_after_a_restart(settings: Settings) -> None:
    settings = settings.with_(fetch_wait_ms=42)
    worker = build_worker(settings)
    await worker.start()
    try:
        produce_raw(settings, [ITEM])
        await eventually(lambda: worker.accounting.events_in >= 1, 60, "the catalogue item")
        produce_raw(settings, [click("a1", 1), click("a2", 2), click("a3", 3)])
        await eventually(lambda: worker.accounting.decisions == 1, 60, "the follow-up")
        (decision,) = [decode(m.value()) for m in consume_exactly(settings, "decisions", 1)]
        assert decision["policy"] == "exploit"  # no exploring or holdout in this test
        assert any(reason.startswith("model content-policy@") for reason in decision["reasons"])
        learner = worker.stage.learner if worker.stage else None
        assert learner is not None
        assert learner.open_decisions == 1
        # Faust fixes its fetch wait; the worker sets its own (RELEVANZ_FETCH_WAIT_MS).
        consumer = worker.app.consumer._thread._consumer  # type: ignore[attr-defined]
        assert consumer._fetch_max_wait_ms == settings.fetch_wait_ms
        # The channel reports the click on the mail: it names the decision.
        produce_raw(settings, [click("a4", 30, decision_id=decision["decision_id"])])
        await eventually(lambda: learner.rewards == 1, 60, "the reward")
        assert learner.clicks_rewarded == 1
        assert learner.open_decisions == 0
        quality = learner.quality()
        assert (quality["examples"], quality["clicks"], quality["drifts"]) == (1, 1, 0)
        assert 0.0 < float(quality["log_loss"]) < 10.0  # type: ignore[arg-type]
        learnt = learner.policy.model.weights
    finally:
        await worker.stop()
    snapshot = await _latest(settings)
    assert snapshot is not None

    again = build_worker(settings)
    await again.start()
    try:
        resumed = again.stage.learner if again.stage else None
        assert resumed is not None
        assert resumed.policy.updates == 1
        assert resumed.policy.version == snapshot
        assert resumed.policy.model.weights == learnt
    finally:
        await again.stop()


async def _latest(settings: Settings) -> int | None:
    from streams.store import open_store

    store = open_store(settings)
    await store.open()
    try:
        found = await store.latest_snapshot(MODEL_ID)
        return None if found is None else found.version
    finally:
        await store.close()


async def test_two_workers_saving_in_turn_keep_both_their_learning(tmp_path: Path) -> None:
    from agents.core.learning import PolicyConfig
    from agents.pipeline.learner import Learner
    from streams.store.embedded import EmbeddedStore

    store = EmbeddedStore(tmp_path / "store.db")
    await store.open()
    try:
        def learner() -> Learner:
            return Learner(PolicyConfig(), timedelta(hours=1), timedelta(days=7))

        one, two = learner(), learner()
        await one.load(store)
        await two.load(store)
        one.policy.learn({"affinity": 1.0}, True)
        two.policy.learn({"affinity": 1.0}, True)
        two.policy.learn({"item:n-2": 1.0}, False)
        assert await one.save(store, BASE_UTC) == 1
        assert await two.save(store, BASE_UTC) == 2
        third = learner()
        await third.load(store)
        assert third.policy.updates == 3  # one's update and two's two
        weights = third.policy.model.weights
        assert weights["affinity"] == pytest.approx(
            one.base.model.weights["affinity"] * 2, rel=1e-9)
        assert "item:n-2" in weights
    finally:
        await store.close()


BASE_UTC = datetime(2026, 3, 1, tzinfo=UTC)
