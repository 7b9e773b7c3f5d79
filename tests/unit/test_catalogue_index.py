"""The catalogue index answers as a scan would; the policy's shortlist changes no choice."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.core import learning
from agents.core.campaigns import DEFAULT_BOOK
from agents.core.candidates import Candidate, candidates
from agents.core.catalogue import CatalogueIndex, offered, on_topic
from agents.core.engine import _pool
from agents.core.learning import ContentPolicy, Context, PolicyConfig, features
from agents.core.triggers import SendCandidate
from schemas.records import ContentPublished, ContentVariant

AT = datetime(2026, 3, 2, 18, tzinfo=UTC)
CHANNELS = ("email", "push", "web")
SLOTS = ("newsletter-block", "app-card", "web-banner")
TOPICS = ("golf", "books", "travel")


@st.composite
def items(draw: st.DrawFn) -> ContentPublished:
    def some(options: tuple[str, ...]) -> list[str]:
        return draw(st.lists(st.sampled_from(options), min_size=1, max_size=3, unique=True))

    valid_from = draw(st.none() | st.integers(-3, 3).map(lambda d: AT + timedelta(days=d)))
    return ContentPublished(
        event_id="e", content_id=draw(st.sampled_from([f"n-{i}" for i in range(8)])),
        occurred_at=AT - timedelta(days=draw(st.integers(0, 4))), schema_version=1,
        topics=some(TOPICS), channels=some(CHANNELS), slots=some(SLOTS),
        variants=[ContentVariant(language=lang, title="t", url="u") for lang in some(("de", "en"))],
        default_language="de", valid_from=valid_from,
        valid_until=draw(st.none() | st.just(AT + timedelta(days=1))))


#: learn an item, or forget the item with that content id.
steps = st.lists(st.tuples(st.booleans(), items()), max_size=25)


def _replayed(ops: list[tuple[bool, ContentPublished]]) -> tuple[CatalogueIndex, dict[str, Any]]:
    """The index and, beside it, the plain dictionary the catalogue used to be."""
    index, plain = CatalogueIndex(), {}
    for forget, item in ops:
        if forget:
            index.forget(item.content_id)
            plain.pop(item.content_id, None)
        else:
            index.learn(item)
            known = plain.get(item.content_id)
            if known is None or known.occurred_at <= item.occurred_at:
                plain[item.content_id] = item
    return index, plain


@settings(max_examples=300)
@given(steps)
def test_the_index_lists_what_a_scan_finds_in_the_same_order(
        ops: list[tuple[bool, ContentPublished]]) -> None:
    index, plain = _replayed(ops)
    assert list(index.items()) == list(plain.items())
    for channel in CHANNELS:
        for topic in (*TOPICS, None):
            assert list(on_topic(index, channel, topic)) == list(on_topic(plain, channel, topic))
        for slot in SLOTS:
            assert list(offered(index, channel, slot)) == list(offered(plain, channel, slot))


@settings(max_examples=300)
@given(steps, st.integers(-4, 4), st.sampled_from(("de", "en", "fr")))
def test_candidates_and_send_pools_are_the_same_from_the_index(
        ops: list[tuple[bool, ContentPublished]], days: int, language: str) -> None:
    index, plain = _replayed(ops)
    at = AT + timedelta(days=days)
    campaign = DEFAULT_BOOK.campaigns[0]
    for channel in CHANNELS:
        for slot in SLOTS:
            assert (candidates(index, channel, slot, at, language)
                    == candidates(plain.values(), channel, slot, at, language))
        for topic in (*TOPICS, None):
            send = SendCandidate(campaign, "k", topic, at, at, 1.0, "e", ())
            assert _pool(index, send, channel) == _pool(plain, send, channel)


def _trained(n: int, seed: int) -> tuple[ContentPolicy, list[Candidate]]:
    rng = random.Random(seed)
    options = [Candidate(f"n-{i:03d}", (rng.choice(TOPICS),), "de",
                         None if rng.random() < 0.8 else "catalogue") for i in range(n)]
    policy = ContentPolicy(PolicyConfig(explore=0.1, holdout_share=0.0))
    ctx = Context("c-0", "email", "newsletter-block", AT, {"golf": 0.7, "books": 0.3})
    for _ in range(300):
        option = rng.choice(options)
        policy.observe_click(option.content_id, AT - timedelta(hours=rng.randint(0, 72)))
        policy.learn(features(ctx, option), rng.random() < 0.2)
    return policy, options


@pytest.mark.parametrize("seed", range(4))
def test_the_shortlist_changes_no_choice(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    policy, options = _trained(400, seed)
    contexts = [Context(f"c-{i}", "email", "newsletter-block", AT + timedelta(hours=i % 5),
                        shares, frozenset({"travel"}) if i % 3 else frozenset(), {"bias": 1.0},
                        personalise=i % 7 != 0)
                for i, shares in enumerate([{"golf": 1.0}, {"books": 0.5, "travel": 0.5}, {}] * 20)]

    def run() -> list[Any]:
        rng = random.Random(seed)
        return [(policy.choose(ctx, options, rng), rng.random()) for ctx in contexts]

    shortlisted = run()
    monkeypatch.setattr(learning, "SHORTLIST", len(options) + 1)
    assert run() == shortlisted
    assert {choice.policy for choice, _ in shortlisted} >= {"exploit", "neutral", "explore"}


def test_the_model_scores_no_more_than_the_shortlist_when_the_model_tells_items_apart() -> None:
    policy, options = _trained(400, 1)
    ctx = Context("c-1", "email", "newsletter-block", AT, {"golf": 1.0})
    kept = policy.shortlist(ctx, options, policy.popularity.counts(options, AT), neutral=False)
    assert len(kept) == learning.SHORTLIST
    assert kept == sorted(kept)
