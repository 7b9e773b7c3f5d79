"""The synthetic traffic generator: contracts, determinism, realism, ground truth."""

from __future__ import annotations

import doctest
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streams.sim.traffic
from schemas.errors import InvalidEvent
from schemas.records import PURPOSES
from schemas.validation import parse_message
from streams.errors import ConfigError
from streams.sim.traffic import (
    LOCALES,
    MALFORMED_KINDS,
    TOPICS,
    Message,
    TrafficConfig,
    TrafficGenerator,
)

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def run(n: int, **fields: object) -> tuple[TrafficGenerator, list[Message]]:
    """A generator whose n-th message occurs at NOW, and its messages."""
    gen = TrafficGenerator(TrafficConfig.ending_at(NOW, n, **fields))
    return gen, list(gen.messages(n))


def parse(m: Message) -> Any:
    """The record of a valid message (Any: tests read fields of several record types)."""
    return parse_message(m.topic, m.key, m.value, now=NOW)


def valid(messages: list[Message]) -> list[Message]:
    """Valid first deliveries, in stream order."""
    return [m for m in messages if m.malformed is None and not m.duplicate]


def test_docstring_examples_run() -> None:
    assert doctest.testmod(streams.sim.traffic).failed == 0


# --- determinism and counting ---------------------------------------------------


def test_same_config_gives_byte_identical_messages() -> None:
    config = TrafficConfig(seed=3, customers=50, malformed_share=0.1, duplicate_share=0.05)
    first = list(TrafficGenerator(config).messages(3000))
    again = TrafficGenerator(config)
    assert list(again.messages(3000)) == first
    assert list(again.messages(3000)) == first  # each call starts the stream over


def test_different_seeds_give_different_messages() -> None:
    a = list(TrafficGenerator(TrafficConfig(seed=1)).messages(500))
    b = list(TrafficGenerator(TrafficConfig(seed=2)).messages(500))
    assert a != b


def test_a_shorter_stream_is_a_prefix_of_a_longer_one() -> None:
    gen = TrafficGenerator(TrafficConfig(seed=5, customers=30))
    assert list(gen.messages(700)) == list(gen.messages(2000))[:700]


@pytest.mark.parametrize("n", [0, 1, 10, 50, 51, 1234])
def test_yields_exactly_n_messages(n: int) -> None:
    gen = TrafficGenerator(TrafficConfig(customers=20, malformed_share=0.3, duplicate_share=0.3))
    assert sum(1 for _ in gen.messages(n)) == n


def test_negative_n_is_refused() -> None:
    with pytest.raises(ValueError, match="n: got -1"):
        TrafficGenerator(TrafficConfig()).messages(-1)


# --- contracts -------------------------------------------------------------------


#: The field each kind of malformed message is rejected for (None: the message as a whole).
REJECTED_FIELD = {
    "garbage-bytes": None, "empty-value": None, "truncated-msgpack": None,
    "invalid-json": None, "not-a-map": None, "oversize": None,
    "key-mismatch": "customer_id", "unknown-version": "schema_version",
    "future-time": "occurred_at", "naive-datetime": "occurred_at",
}


def test_valid_messages_pass_and_every_malformed_kind_fails() -> None:
    _, messages = run(6000, seed=9, customers=80, malformed_share=0.4, json_share=0.3)
    for m in messages:
        if m.malformed is None:
            parse_message(m.topic, m.key, m.value, now=NOW)
            continue
        with pytest.raises(InvalidEvent) as rejected:
            parse_message(m.topic, m.key, m.value, now=NOW)
        if m.malformed in REJECTED_FIELD:
            assert rejected.value.field == REJECTED_FIELD[m.malformed], m
        else:  # a field-level problem names its field
            assert rejected.value.field is not None, m
    kinds = Counter(m.malformed for m in messages if m.malformed)
    assert set(kinds) == set(MALFORMED_KINDS)
    assert Counter(m.topic for m in messages if m.malformed).most_common(1)[0][0] == "clicks"


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    customers=st.integers(1, 6),
    catalogue=st.integers(1, 6),
    topics=st.integers(1, len(TOPICS)),
    malformed=st.floats(0, 0.5),
    duplicate=st.floats(0, 0.5),
    json_share=st.floats(0, 1),
    n=st.integers(0, 400),
)
def test_small_worlds_keep_the_contract(
    seed: int, customers: int, catalogue: int, topics: int, malformed: float,
    duplicate: float, json_share: float, n: int,
) -> None:
    _, messages = run(
        n, seed=seed, customers=customers, catalogue_size=catalogue, topics=TOPICS[:topics],
        malformed_share=malformed, duplicate_share=duplicate, json_share=json_share,
    )
    assert len(messages) == n
    for m in messages:
        if m.malformed is None:
            parse_message(m.topic, m.key, m.value, now=NOW)
        else:
            with pytest.raises(InvalidEvent):
                parse_message(m.topic, m.key, m.value, now=NOW)


def test_event_ids_are_unique() -> None:
    _, messages = run(5000, customers=40)
    ids = [parse(m).event_id for m in valid(messages)]
    assert len(ids) == len(set(ids))


def test_duplicates_repeat_an_earlier_valid_customer_message() -> None:
    _, messages = run(8000, customers=50, malformed_share=0.1, duplicate_share=0.1)
    earlier: set[tuple[str, bytes | None, bytes]] = set()
    duplicates = 0
    for m in messages:
        if m.duplicate:
            duplicates += 1
            assert m.malformed is None
            assert m.topic != "content"
            assert (m.topic, m.key, m.value) in earlier
        elif m.malformed is None:
            earlier.add((m.topic, m.key, m.value))
    assert duplicates > 0


def test_shares_are_roughly_respected() -> None:
    n = 30_000
    _, messages = run(n)  # defaults: 2 % malformed, 1 % duplicates, 10 % JSON
    assert sum(m.malformed is not None for m in messages) / n == pytest.approx(0.02, abs=0.004)
    assert sum(m.duplicate for m in messages) / n == pytest.approx(0.01, abs=0.003)
    first = valid(messages)
    json_share = sum(m.value.startswith(b"{") for m in first) / len(first)
    assert json_share == pytest.approx(0.1, abs=0.01)


# --- time ------------------------------------------------------------------------


def test_event_time_ticks_from_start_and_ends_at_the_chosen_time() -> None:
    n = 3000
    gen, messages = run(n, mean_gap_s=2.5)
    times = [parse(m).occurred_at
             for m in valid(messages)]
    assert times == sorted(times)
    assert times[0] == gen.config.start
    assert gen.config.span(n) == timedelta(seconds=(n - 1) * 2.5)
    assert max(times) <= NOW


def test_start_must_carry_a_time_zone() -> None:
    with pytest.raises(ConfigError, match="start"):
        TrafficConfig(start=datetime(2026, 1, 1))  # noqa: DTZ001 - naive on purpose


@pytest.mark.parametrize(
    "fields",
    [{"malformed_share": 1.5}, {"malformed_share": 0.6, "duplicate_share": 0.6},
     {"customers": 0}, {"catalogue_size": 0}, {"mean_gap_s": -1.0}, {"topics": ()}],
)
def test_unusable_settings_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        TrafficConfig(**fields)


# --- the simulated world -------------------------------------------------------------


def test_the_catalogue_comes_first_and_matches_the_truth() -> None:
    gen, messages = run(60, catalogue_size=40)
    assert [m.topic for m in messages[:40]] == ["content"] * 40
    assert {m.topic for m in messages[40:]} != {"content"}
    for m in messages[:40]:
        item = parse(m)
        truth = gen.truth.content[item.content_id]
        assert m.key == item.content_id.encode()
        assert tuple(item.topics) == truth.topics
        assert 1 <= len(truth.topics) <= 2
        languages = [v.language for v in item.variants]
        assert item.default_language in languages
        assert 2 <= len(languages) <= 4
    covered = {t for item in gen.truth.content.values() for t in item.topics}
    assert covered == set(TOPICS)


def test_a_short_stream_truncates_the_catalogue() -> None:
    _, messages = run(7, catalogue_size=50)
    assert [m.topic for m in messages] == ["content"] * 7


def test_customers_follow_a_lifecycle_the_engine_must_respect() -> None:
    gen, messages = run(40_000, seed=4, customers=150)
    granted: dict[str, frozenset[str]] = {}
    erased: set[str] = set()
    seen: defaultdict[str, list[str]] = defaultdict(list)
    for m in messages:
        if m.topic == "content" or m.malformed:
            continue
        event = parse(m)
        cid = event.customer_id
        assert cid not in erased, "nothing arrives after an erasure request, not even again"
        if m.duplicate:
            continue
        seen[cid].append(m.topic)
        if m.topic == "consents":
            purposes = frozenset(event.purposes)
            assert purposes <= set(PURPOSES)
            if event.action == "erasure_requested":
                erased.add(cid)
                granted[cid] = frozenset()
            elif event.action == "granted":
                granted[cid] = granted.get(cid, frozenset()) | purposes
            else:
                granted[cid] = granted.get(cid, frozenset()) - purposes
        elif m.topic == "clicks" and event.channel in ("email", "push"):
            assert event.channel in granted[cid]
        elif m.topic == "purchases":
            currency = gen.truth.customers[cid].locale.currency
            assert event.currency == currency
            total = sum(i.quantity * i.unit_price for i in event.items)
            assert event.total == pytest.approx(total)
    assert len(seen) == 150
    assert all(topics[:2] == ["profiles", "consents"] for topics in seen.values())
    assert {"clicks", "purchases", "consents", "profiles"} <= {t for s in seen.values() for t in s}
    assert granted == gen.truth.consents
    assert erased == gen.truth.erased
    assert erased, "a long enough run includes erasure requests"


def test_customers_lapse_after_a_purchase_and_send_nothing_more() -> None:
    """As in BG/NBD: after a purchase a customer may stop for good, so recency
    separates the lapsed from the active."""
    gen, messages = run(30_000, seed=5, customers=300)
    last: dict[str, tuple[int, str]] = {}
    for n, m in enumerate(valid(messages)):
        if m.topic != "content":
            last[parse(m).customer_id] = (n, m.topic)
    lapsed = gen.truth.lapsed
    assert 0.2 * len(last) <= len(lapsed) < len(last)
    # A lapsed customer's last event is the purchase they lapsed after.
    assert all(last[cid][1] == "purchases" for cid in lapsed)
    # ... and lies further back than an active customer's, on average.
    active = [n for cid, (n, _) in last.items() if cid not in lapsed]
    assert sum(last[c][0] for c in lapsed) / len(lapsed) < 0.8 * sum(active) / len(active)
    dropouts = [c.dropout for c in gen.truth.customers.values()]
    assert 0.15 < sum(dropouts) / len(dropouts) < 0.25


def test_clicks_follow_hidden_interests() -> None:
    # Customers lapse (see above): enough of them to judge need a larger audience.
    gen, messages = run(30_000, seed=8, customers=100)
    clicked: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for m in valid(messages):
        if m.topic == "clicks":
            event = parse(m)
            clicked[event.customer_id].update(event.topics)
    judged = [cid for cid, topics in clicked.items() if topics.total() >= 50]
    hits = sum(clicked[cid].most_common(1)[0][0] in gen.truth.customers[cid].top_interests(3)
               for cid in judged)
    assert len(judged) >= 50
    assert hits >= 0.85 * len(judged)


def test_hidden_interests_are_few_and_strong() -> None:
    gen = TrafficGenerator(TrafficConfig(customers=300))
    for c in gen.truth.customers.values():
        assert sum(c.interests.values()) == pytest.approx(1.0)
    strong = [sum(w for t, w in c.interests.items() if t in c.top_interests(4))
              for c in gen.truth.customers.values()]
    assert sorted(strong)[len(strong) // 2] > 0.9
    locales = Counter(c.locale.tag for c in gen.truth.customers.values())
    assert locales.most_common(1)[0][0] == "de-DE"
    assert set(locales) <= {loc.tag for loc in LOCALES}
