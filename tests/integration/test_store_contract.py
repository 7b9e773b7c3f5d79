"""The store contract: every implementation of :class:`streams.store.Store` passes it.

Each test runs against the embedded store (a fresh SQLite file) and against
Apache Cassandra: the session's node (``cassandra_hosts``: one started for the
session, or the cluster ``RELEVANZ_CASSANDRA_HOSTS`` names), one keyspace per
test session, created with ``migrate`` and dropped at the end (other
``RELEVANZ_*`` settings such as ``RELEVANZ_CASSANDRA_LOCAL_DC`` are read from
the environment as usual).
The tests know nothing of the implementation: the same expectations hold for
both.  Customer ids carry a per-test prefix, because the Cassandra keyspace is
shared by the whole session.

Expectations in short: a saved state loads as ``normalise(state)`` (UTC,
milliseconds floored); a save replaces; history and ledger entries expire
at the ``now`` of the read; saving twice is a no-op; erasure removes
everything including ledger entries.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.core.customer import (
    AssignedTag,
    ConsentEntry,
    CustomerPredictions,
    CustomerState,
    Interaction,
    MasterData,
    PendingSend,
    PurchaseFigures,
    TopicInterest,
)
from agents.core.visitors import ViewedPage, VisitorState
from streams.errors import StoreUnavailable
from streams.settings import Settings
from streams.store import (
    BatchWrite,
    CampaignCounts,
    Store,
    StoredDecision,
    StoredProposal,
    open_store,
)
from streams.store.codec import normalise
from streams.store.visitor_rows import normalise_visitor
from tests.customer_strategies import customer_states, ms_times

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
YEAR_S = 365 * 86400.0
#: Retention long enough that no generated history entry expires before NOW.
FOREVER_S = 100 * YEAR_S
LEDGER_TTL_S = 30 * 86400.0


# -- fixtures ----------------------------------------------------------------------


def _cassandra_settings(hosts: str, keyspace: str) -> Settings:
    return Settings.from_env().with_(store_url=f"cassandra://{hosts}/{keyspace}")


def _keyspace() -> str:
    return f"relevanz_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def cassandra_keyspaces(cassandra_hosts: str) -> Iterator[list[str]]:
    """Keyspaces created by this session; dropped at its end."""
    created: list[str] = []
    yield created
    if created:
        from streams.store.cassandra import CassandraStore

        cluster = CassandraStore(_cassandra_settings(cassandra_hosts, created[0])).new_cluster()
        try:
            session = cluster.connect()
            for keyspace in created:
                session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
        finally:
            cluster.shutdown()


@pytest.fixture(scope="session")
def cassandra_keyspace(cassandra_hosts: str, cassandra_keyspaces: list[str]) -> str:
    """The keyspace most tests share, migrated once."""
    keyspace = _keyspace()
    cassandra_keyspaces.append(keyspace)
    # First asked for by an async fixture, whose event loop is running: migrate on a
    # loop of its own in another thread.
    migrate = open_store(_cassandra_settings(cassandra_hosts, keyspace)).migrate
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, migrate()).result()
    return keyspace


IMPLEMENTATIONS = [
    pytest.param("embedded"),
    pytest.param("cassandra", marks=pytest.mark.cassandra),
]


@pytest.fixture(params=IMPLEMENTATIONS)
def fresh_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """Makes stores on an empty location (new file, new keyspace): no schema yet."""
    kind: str = request.param
    created: list[str] = (request.getfixturevalue("cassandra_keyspaces")
                          if kind == "cassandra" else [])
    hosts: str = request.getfixturevalue("cassandra_hosts") if kind == "cassandra" else ""

    def make() -> Store:
        if kind == "embedded":
            return open_store(Settings(store_url=f"embedded:{tmp_path / uuid.uuid4().hex}.db"))
        keyspace = _keyspace()
        created.append(keyspace)
        return open_store(_cassandra_settings(hosts, keyspace))

    return make


@pytest.fixture(params=IMPLEMENTATIONS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open store with its schema in place."""
    kind: str = request.param
    if kind == "embedded":
        opened = open_store(Settings(store_url=f"embedded:{tmp_path / 'store.db'}"))
    else:
        opened = open_store(_cassandra_settings(request.getfixturevalue("cassandra_hosts"),
                                                request.getfixturevalue("cassandra_keyspace")))
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
def cid() -> Callable[[str], str]:
    """Customer ids unique to this test (the Cassandra keyspace is shared)."""
    prefix = uuid.uuid4().hex[:8]
    return lambda name: f"{prefix}-{name}"


def full_state(customer_id: str, at: datetime = NOW - DAY) -> CustomerState:
    """A state with every part filled, in UTC milliseconds (stored exactly)."""
    return CustomerState(
        customer_id=customer_id,
        master=MasterData(locale="de-DE", language="de", time_zone="Europe/Berlin",
                          updated_at=at, country="DE", birth_year=1984, gender="f",
                          attributes={"tier": "gold", "städte": "Köln, Zürich"}),
        consent={"email": ConsentEntry(True, at, "web form", "consent"),
                 "profiling": ConsentEntry(False, at - DAY, "crm", "consent")},
        interests={"fashion": TopicInterest(2.75, at, [at - 2 * DAY, at - DAY, at]),
                   "travel": TopicInterest(0.5, at - DAY, [])},
        tags={"fashion-trends": AssignedTag("fashion", at, "e-3")},
        purchases=PurchaseFigures(orders=2, revenue=129.9, first_at=at - 30 * DAY, last_at=at),
        history=[Interaction(at - 2 * DAY, "e-1", "click", "summer-sale", "c-7"),
                 Interaction(at - DAY, "e-2", "purchase", None, None, 99.95),
                 Interaction(at, "e-3", "click", "boots", None)],
        last_event_at=at,
        pending=[PendingSend("t-1", "follow-up:t-1", "email", at + DAY, "follow-up", "boots")],
        predictions=CustomerPredictions(0.125, 0.75, 19, at, {19: 2.5, 163: 0.25}, at - DAY),
    )


async def _load(store: Store, customer_id: str, now: datetime = NOW) -> CustomerState | None:
    return (await store.load_customers([customer_id], now)).get(customer_id)


async def _save(store: Store, *states: CustomerState, events: tuple[tuple[str, str], ...] = (),
                now: datetime = NOW, history_ttl_s: float = FOREVER_S) -> None:
    await store.write_batch(BatchWrite(list(states), list(events)), now, LEDGER_TTL_S,
                            history_ttl_s)


# -- customer state ----------------------------------------------------------------


async def test_a_full_state_round_trips_exactly(store: Store, cid: Callable[[str], str]) -> None:
    state = full_state(cid("full"))
    await _save(store, state)
    loaded = await _load(store, state.customer_id)
    assert loaded == state
    assert loaded is not None
    assert loaded.last_event_at is not None
    assert loaded.last_event_at.utcoffset() == timedelta(0)


async def test_unknown_customers_are_absent(store: Store, cid: Callable[[str], str]) -> None:
    assert await store.load_customers([cid("nobody"), cid("no-one")], NOW) == {}
    assert await store.load_customers([], NOW) == {}


async def test_an_empty_state_is_stored_as_a_customer(store: Store,
                                                      cid: Callable[[str], str]) -> None:
    state = CustomerState(cid("empty"))
    await _save(store, state)
    assert await _load(store, state.customer_id) == state


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=customer_states(customer_ids=st.text(min_size=1, max_size=8)))
async def test_a_saved_state_loads_as_its_normalised_self(
        store: Store, cid: Callable[[str], str], state: CustomerState) -> None:
    state = replace(state, customer_id=cid(state.customer_id))
    await _save(store, state)
    assert await _load(store, state.customer_id) == normalise(state)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=customer_states(customer_ids=st.just("delta")), other=customer_states(),
       data=st.data())
async def test_a_save_of_a_changed_state_given_the_stored_one_loads_as_the_changed_state(
        store: Store, cid: Callable[[str], str], before: CustomerState, other: CustomerState,
        data: st.DataObject) -> None:
    # As the core changes a history: some entries kept (the same objects), some dropped,
    # some new; the rest of the state may change too.
    before = replace(before, customer_id=cid(f"delta-{uuid.uuid4().hex[:6]}"))
    kept = [e for e in before.history if data.draw(st.booleans())]
    known = {(e.occurred_at, e.event_id) for e in kept}
    new = [e for e in other.history if (e.occurred_at, e.event_id) not in known]
    history = sorted([*kept, *new], key=lambda e: (e.occurred_at, e.event_id))
    after = replace(other, customer_id=before.customer_id, history=history)
    await _save(store, before)
    await store.write_batch(BatchWrite([after], previous={before.customer_id: before}),
                            NOW, LEDGER_TTL_S, FOREVER_S)
    assert await _load(store, after.customer_id) == normalise(after)


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=customer_states(customer_ids=st.text(min_size=1, max_size=8), at=ms_times()))
async def test_millisecond_utc_states_round_trip_unchanged(
        store: Store, cid: Callable[[str], str], state: CustomerState) -> None:
    state = replace(state, customer_id=cid(state.customer_id))
    await _save(store, state)
    assert await _load(store, state.customer_id) == state


async def test_times_come_back_in_utc_with_milliseconds_floored(
        store: Store, cid: Callable[[str], str]) -> None:
    berlin = datetime(2025, 6, 1, 14, 30, 15, 123999, tzinfo=timezone(timedelta(hours=2)))
    before_1970 = datetime(1965, 3, 1, 0, 0, 0, 999, tzinfo=UTC)
    state = CustomerState(cid("times"), last_event_at=berlin,
                          purchases=PurchaseFigures(1, 10.0, before_1970, berlin))
    await _save(store, state)
    loaded = await _load(store, state.customer_id)
    assert loaded is not None
    assert loaded.last_event_at == datetime(2025, 6, 1, 12, 30, 15, 123000, tzinfo=UTC)
    assert loaded.last_event_at.tzinfo is not None
    assert loaded.last_event_at.utcoffset() == timedelta(0)
    assert loaded.purchases.first_at == datetime(1965, 3, 1, tzinfo=UTC)


async def test_saving_replaces_the_stored_state(store: Store, cid: Callable[[str], str]) -> None:
    before = full_state(cid("replace"))
    await _save(store, before)
    after = replace(
        before,
        master=None,
        consent={"email": ConsentEntry(False, NOW, "unsubscribe link", "consent")},
        interests={"travel": TopicInterest(0.25, NOW, [NOW])},
        tags={},
        purchases=PurchaseFigures(),
        history=[before.history[1], Interaction(NOW, "e-4", "click", "boots")],
        last_event_at=NOW,
    )
    await _save(store, after)
    assert await _load(store, before.customer_id) == after
    await _save(store, CustomerState(before.customer_id))
    assert await _load(store, before.customer_id) == CustomerState(before.customer_id)


async def test_a_save_given_the_stored_state_writes_the_same_result(
        store: Store, cid: Callable[[str], str]) -> None:
    # The worker passes what the store holds so a save may write only new history rows.
    before = full_state(cid("delta"))
    await _save(store, before)
    newer = Interaction(NOW - timedelta(hours=1), "e-4", "click", "sandals", None)
    after = replace(before, history=[*before.history[1:], newer],
                    tags={}, last_event_at=NOW - timedelta(hours=1))
    await store.write_batch(BatchWrite([after], previous={before.customer_id: before}),
                            NOW, LEDGER_TTL_S, FOREVER_S)
    assert await _load(store, before.customer_id) == after
    # Equal entries that are other objects are rewritten, not lost.
    again = replace(after, history=[replace(e) for e in after.history])
    await store.write_batch(BatchWrite([again], previous={after.customer_id: after}),
                            NOW, LEDGER_TTL_S, FOREVER_S)
    assert await _load(store, before.customer_id) == after


async def test_the_last_state_of_a_customer_in_one_save_wins(
        store: Store, cid: Callable[[str], str]) -> None:
    first = full_state(cid("twice"))
    second = replace(first, tags={}, history=first.history[:1])
    await _save(store, first, second)
    assert await _load(store, first.customer_id) == second


async def test_saving_the_same_state_twice_changes_nothing(
        store: Store, cid: Callable[[str], str]) -> None:
    state = full_state(cid("idempotent"))
    events = ((state.customer_id, "e-3"),)
    await _save(store, state, events=events)
    await _save(store, state, events=events)
    assert await _load(store, state.customer_id) == state
    assert await store.seen_events(list(events), NOW) == set(events)


async def test_history_past_retention_is_not_written_and_entries_expire(
        store: Store, cid: Callable[[str], str]) -> None:
    retention_s = 30 * 86400.0
    # Live traffic: the customer's latest event is now.
    state = replace(full_state(cid("retention")), last_event_at=NOW, history=[
        Interaction(NOW - 40 * DAY, "too-old", "click"),
        Interaction(NOW - 30 * DAY, "just-expired", "click"),
        Interaction(NOW - 20 * DAY, "older", "click"),
        Interaction(NOW - DAY, "recent", "click"),
    ])
    await _save(store, state, history_ttl_s=retention_s)

    async def history_at(now: datetime) -> list[str]:
        loaded = await _load(store, state.customer_id, now)
        assert loaded is not None, "the customer outlives its history"
        return [entry.event_id for entry in loaded.history]

    assert await history_at(NOW) == ["older", "recent"]
    assert await history_at(NOW + 10 * DAY - timedelta(milliseconds=1)) == ["older", "recent"]
    assert await history_at(NOW + 10 * DAY) == ["recent"]
    assert await history_at(NOW + 365 * DAY) == []
    # Physically purging what expired by then keeps the rest as it was.
    assert await store.purge_expired(NOW + 365 * DAY) >= 0
    assert await history_at(NOW + 365 * DAY) == []
    loaded = await _load(store, state.customer_id, NOW + 365 * DAY)
    assert loaded == replace(state, history=[])


async def test_a_backfilled_history_is_kept_as_live_traffic_would_have_kept_it(
        store: Store, cid: Callable[[str], str]) -> None:
    retention_s = 365 * 86400.0
    then = datetime(1997, 3, 1, tzinfo=UTC)
    state = replace(full_state(cid("backfill")), last_event_at=then, history=[
        Interaction(then - 400 * DAY, "past-retention", "click"),
        Interaction(then - 300 * DAY, "older", "purchase"),
        Interaction(then, "latest", "click"),
    ])
    # Retention counts from the customer's latest event (1997), not from the wall
    # clock; the store keeps the entries at most the retention after the write.
    await _save(store, state, history_ttl_s=retention_s)
    loaded = await _load(store, state.customer_id, NOW)
    assert loaded is not None
    assert [e.event_id for e in loaded.history] == ["older", "latest"]
    later = await _load(store, state.customer_id, NOW + 65 * DAY + timedelta(milliseconds=1))
    assert later is not None
    assert [e.event_id for e in later.history] == ["latest"]


async def test_many_customers_in_one_save_round_trip(
        store: Store, cid: Callable[[str], str]) -> None:
    states = [full_state(cid(f"bulk-{i:04d}"), at=NOW - i * timedelta(minutes=1))
              for i in range(1000)]
    events = tuple((s.customer_id, f"e-{i}") for i, s in enumerate(states))
    await _save(store, *states, events=events)
    loaded = await store.load_customers([s.customer_id for s in states], NOW)
    assert loaded == {s.customer_id: s for s in states}
    assert await store.seen_events(list(events), NOW) == set(events)


# -- event ledger --------------------------------------------------------------------


async def test_recorded_events_are_seen_until_their_ttl(
        store: Store, cid: Callable[[str], str]) -> None:
    a, b = cid("ledger-a"), cid("ledger-b")
    keys = [(a, "e-1"), (a, "e-2"), (b, "e-1")]
    assert await store.seen_events(keys, NOW) == set()
    await store.record_events(keys[:2], NOW, ttl_s=60)
    assert await store.seen_events(keys, NOW) == set(keys[:2])
    assert await store.seen_events(keys, NOW + timedelta(seconds=59.999)) == set(keys[:2])
    assert await store.seen_events(keys, NOW + timedelta(seconds=60)) == set()
    # Recording again is an upsert: the entry now lives from the new time.
    await store.record_events(keys[:1], NOW + timedelta(seconds=30), ttl_s=60)
    assert await store.seen_events(keys, NOW + timedelta(seconds=75)) == {keys[0]}
    assert await store.seen_events([], NOW) == set()


async def test_saving_states_records_their_events(store: Store,
                                                   cid: Callable[[str], str]) -> None:
    state = full_state(cid("with-events"))
    content_key = (cid("content-summer-sale"), "e-9")
    events = ((state.customer_id, "e-3"), content_key)
    await _save(store, state, events=events)
    assert await store.seen_events(list(events), NOW) == set(events)
    past = NOW + timedelta(seconds=LEDGER_TTL_S)
    assert await store.seen_events(list(events), past) == set()
    # Events may be recorded without any state change.
    await store.write_batch(BatchWrite(events=[(state.customer_id, "e-10")]), NOW,
                            LEDGER_TTL_S, FOREVER_S)
    assert await store.seen_events([(state.customer_id, "e-10")], NOW) == {
        (state.customer_id, "e-10")}


async def test_a_save_adds_the_batchs_counters_and_keeps_its_decisions(
        store: Store, cid: Callable[[str], str]) -> None:
    state, campaign = full_state(cid("counted")), cid("summer")
    made = [StoredDecision(state.customer_id, NOW - timedelta(hours=h), f"d-{h}", bytes([h]))
            for h in (1, 5)]
    for _ in range(2):
        await store.write_batch(BatchWrite(
            [state], [(state.customer_id, "e-1")],
            stats=[CampaignCounts(campaign, "boots", "treated", sends=1, revenue=1.5)],
            decisions=made), NOW, LEDGER_TTL_S, 4 * 3600)
    assert await store.campaign_stats(campaign) == [
        CampaignCounts(campaign, "boots", "treated", 2, 0, 0, 3.0, 0.0)]
    # Kept as record_decisions keeps them, with the history's time to live: d-5 is past it.
    assert await store.recent_decisions(state.customer_id, NOW) == [made[0]]
    assert await store.seen_events([(state.customer_id, "e-1")], NOW) == {
        (state.customer_id, "e-1")}


async def test_a_batchs_outputs_wait_in_the_outbox_until_marked_published(
        store: Store, cid: Callable[[str], str]) -> None:
    state = full_state(cid("outbox"))
    anchor, other = (state.customer_id, "e-1"), (state.customer_id, "e-2")
    await store.write_batch(BatchWrite([state], [anchor, other],
                                       outbox={anchor: b"\x93outputs"}), NOW, 60.0, FOREVER_S)
    assert await store.seen_events([anchor, other], NOW) == {anchor, other}
    assert await store.unpublished([anchor, other], NOW) == {anchor: b"\x93outputs"}
    # Kept as long as the ledger entry: a redelivery after that is new, not a duplicate.
    assert await store.unpublished([anchor], NOW + timedelta(seconds=59.999)) == {
        anchor: b"\x93outputs"}
    assert await store.unpublished([anchor], NOW + timedelta(seconds=60)) == {}
    await store.mark_published([anchor, (cid("never-stored"), "e-9")])
    assert await store.unpublished([anchor], NOW) == {}
    assert await store.unpublished([], NOW) == {}


async def test_a_save_deletes_the_outbox_entries_published_since_the_last(
        store: Store, cid: Callable[[str], str]) -> None:
    first, second = (cid("pub"), "e-1"), (cid("pub"), "e-2")
    await store.write_batch(BatchWrite(events=[first], outbox={first: b"one"}),
                            NOW, LEDGER_TTL_S, FOREVER_S)
    await store.write_batch(BatchWrite(events=[second], outbox={second: b"two"},
                                       published=[first]), NOW, LEDGER_TTL_S, FOREVER_S)
    assert await store.unpublished([first, second], NOW) == {second: b"two"}
    # Nothing but a deletion is a write too (a batch of duplicates only).
    await store.write_batch(BatchWrite(published=[second]), NOW, LEDGER_TTL_S, FOREVER_S)
    assert await store.unpublished([first, second], NOW) == {}


# -- erasure, listing, snapshots ------------------------------------------------------


async def test_deleting_a_customer_removes_every_trace(
        store: Store, cid: Callable[[str], str]) -> None:
    gone, kept = full_state(cid("erased")), full_state(cid("kept"))
    events = ((gone.customer_id, "e-1"), (gone.customer_id, "e-2"), (kept.customer_id, "e-1"))
    await _save(store, gone, kept, events=events)
    await store.delete_customer(gone.customer_id)
    assert await store.load_customers([gone.customer_id, kept.customer_id], NOW) == {
        kept.customer_id: kept}
    assert await store.seen_events(list(events), NOW) == {(kept.customer_id, "e-1")}
    listed = {s.customer_id async for s in store.iter_customers(NOW)}
    assert gone.customer_id not in listed
    assert kept.customer_id in listed
    await store.delete_customer(gone.customer_id)  # erasing twice is harmless
    # A customer saved again after erasure starts from the new state only.
    fresh = CustomerState(gone.customer_id, last_event_at=NOW)
    await _save(store, fresh)
    assert await _load(store, gone.customer_id) == fresh


async def test_the_ledger_lists_a_customers_events_until_they_expire(
        store: Store, cid: Callable[[str], str]) -> None:
    customer, other = cid("ledger"), cid("ledger-other")
    await store.record_events([(customer, "e-2"), (customer, "e-1"), (other, "e-3")], NOW, 60)
    assert await store.customer_events(customer, NOW) == ["e-1", "e-2"]
    assert await store.customer_events(customer, NOW + timedelta(seconds=61)) == []
    assert await store.customer_events(cid("nobody"), NOW) == []


async def test_the_forget_list_keeps_the_latest_request_and_survives_reset(
        fresh_store: Callable[[], Store], cid: Callable[[str], str]) -> None:
    store = fresh_store()
    await store.migrate()
    await store.open()
    try:
        key = await store.pseudonym_key()
        assert len(key) == 32
        assert await store.pseudonym_key() == key  # made once, then the same
        assert await store.forgotten() == {}
        await store.forget("ref-a", NOW)
        await store.forget("ref-b", NOW - DAY)
        await store.forget("ref-a", NOW + DAY)  # erased again later
        await store.reset()
        assert await store.forgotten() == {"ref-a": NOW + DAY, "ref-b": NOW - DAY}
        assert await store.pseudonym_key() == key
    finally:
        await store.close()


async def test_iter_customers_yields_every_saved_customer_once(
        store: Store, cid: Callable[[str], str]) -> None:
    states = {s.customer_id: s for s in (full_state(cid(f"iter-{i:02d}")) for i in range(23))}
    await _save(store, *states.values())
    seen: list[str] = []
    async for state in store.iter_customers(NOW, batch=5):
        seen.append(state.customer_id)
        if state.customer_id in states:
            assert state == states[state.customer_id]
    assert len(seen) == len(set(seen)), "a customer was listed twice"
    assert set(states) <= set(seen)


async def test_the_latest_snapshot_is_the_highest_version(
        store: Store, cid: Callable[[str], str]) -> None:
    model, other = cid("affinity"), cid("churn")
    assert await store.latest_snapshot(model) is None
    for version in (1, 3, 2):
        await store.put_snapshot(model, version, f"v{version}".encode(), f"sha-{version}", NOW)
    await store.put_snapshot(other, 9, b"\x00\xff", "sha-o", NOW)
    latest = await store.latest_snapshot(model)
    assert latest is not None
    assert (latest.model_id, latest.version, latest.blob, latest.checksum) == (
        model, 3, b"v3", "sha-3")
    assert latest.created_at == NOW
    assert latest.created_at.utcoffset() == timedelta(0)
    later = NOW + timedelta(hours=1, microseconds=1500)
    await store.put_snapshot(model, 3, b"v3 again", "sha-3b", later)
    latest = await store.latest_snapshot(model)
    assert latest is not None
    assert (latest.blob, latest.checksum) == (b"v3 again", "sha-3b")
    assert latest.created_at == NOW + timedelta(hours=1, milliseconds=1)


async def test_reset_empties_customers_ledger_and_outbox_but_keeps_snapshots(
        fresh_store: Callable[[], Store], cid: Callable[[str], str]) -> None:
    store = fresh_store()  # a keyspace of its own: reset clears everything in it
    await store.migrate()
    await store.open()
    try:
        state = full_state(cid("before-replay"))
        events = ((state.customer_id, "e-1"), (cid("content"), "e-2"))
        await _save(store, state, events=events)
        await store.write_batch(BatchWrite(outbox={events[0]: b"outputs"}),
                                NOW, LEDGER_TTL_S, FOREVER_S)
        await store.put_snapshot("affinity", 1, b"model", "sha", NOW)
        await store.save_visitors({cid("visitor"): b"session"}, NOW, LEDGER_TTL_S)
        await store.reset()
        assert await store.load_visitors([cid("visitor")], NOW) == {}
        assert await _load(store, state.customer_id) is None
        assert await store.seen_events(list(events), NOW) == set()
        assert await store.unpublished(list(events), NOW) == {}
        assert [s async for s in store.iter_customers(NOW)] == []
        snapshot = await store.latest_snapshot("affinity")
        assert snapshot is not None
        assert snapshot.blob == b"model"
        await _save(store, state)
        assert await _load(store, state.customer_id) == state
    finally:
        await store.close()


# -- schema ---------------------------------------------------------------------------


async def test_migrate_is_idempotent_and_keeps_the_data(
        fresh_store: Callable[[], Store], cid: Callable[[str], str]) -> None:
    store = fresh_store()
    try:
        await store.migrate()
        await store.migrate()
        await store.open()
        assert [s async for s in store.iter_customers(NOW)] == []
        assert await store.latest_snapshot("any") is None
        state = full_state(cid("migrated"))
        await _save(store, state, events=((state.customer_id, "e-1"),))
        await store.migrate()
        assert await _load(store, state.customer_id) == state
        assert await store.seen_events([(state.customer_id, "e-1")], NOW) == {
            (state.customer_id, "e-1")}
    finally:
        await store.close()
        await store.close()  # closing twice is harmless


async def _open(store: Store) -> str | None:
    """None when ``open`` succeeds, else the message of its StoreUnavailable."""
    try:
        await store.open()
    except StoreUnavailable as exc:
        return str(exc)
    return None


async def test_opening_without_a_schema_creates_it_or_says_to_migrate(
        fresh_store: Callable[[], Store]) -> None:
    store = fresh_store()
    try:
        refused = await _open(store)
        # The protocol allows either; what it rules out is a store that half works.
        assert refused is None or "run `relevanz store migrate`" in refused
        if refused is None:
            assert await store.load_customers(["anyone"], NOW) == {}
            assert [s async for s in store.iter_customers(NOW)] == []
    finally:
        await store.close()


# -- campaigns -------------------------------------------------------------------------


async def test_campaign_counters_add_up_per_variant_and_cohort(
        store: Store, cid: Callable[[str], str]) -> None:
    spring, autumn = cid("spring"), cid("autumn")
    await store.add_campaign_stats([
        CampaignCounts(spring, "boots", "treated", sends=1),
        CampaignCounts(spring, "boots", "treated", clicks=1, conversions=1, revenue=19.99,
                       revenue_sq=399.6),
        CampaignCounts(spring, "boots", "holdout", sends=1),
        CampaignCounts(autumn, "coats", "treated", sends=2),
    ])
    await store.add_campaign_stats([
        CampaignCounts(spring, "boots", "treated", sends=1, revenue=0.01),
        CampaignCounts(spring, "boots", "holdout", sends=-1),  # a cancelled exposure
    ])
    assert await store.campaign_stats(spring) == [
        CampaignCounts(spring, "boots", "holdout", 0, 0, 0, 0.0, 0.0),
        CampaignCounts(spring, "boots", "treated", 2, 1, 1, 20.0, 399.6),
    ]
    every = [c for c in await store.campaign_stats() if c.campaign_id in (spring, autumn)]
    assert [(c.campaign_id, c.variant, c.group, c.sends) for c in every] == sorted([
        (autumn, "coats", "treated", 2), (spring, "boots", "holdout", 0),
        (spring, "boots", "treated", 2)])
    assert await store.campaign_stats(cid("never")) == []


def _proposal(proposal_id: str, minutes: int, status: str = "proposed") -> StoredProposal:
    return StoredProposal(proposal_id, "c-1", "spring", NOW + timedelta(minutes=minutes),
                          NOW + timedelta(days=1), status, b"\x81\xa1t\x01")


async def test_a_proposal_is_stored_once_and_resolved_once(
        store: Store, cid: Callable[[str], str]) -> None:
    first, second = cid("p1"), cid("p2")
    await store.put_proposals([_proposal(first, 1), _proposal(second, 2)])
    await store.put_proposals([_proposal(first, 1, status="approved")])  # redelivered: ignored
    assert await store.proposal(first) == _proposal(first, 1)
    assert await store.proposal(cid("none")) is None
    mine = [p.proposal_id for p in await store.proposals("proposed", limit=1000)
            if p.proposal_id in (first, second)]
    assert mine == [second, first]  # newest first
    assert len(await store.proposals(limit=1)) == 1

    later = NOW + timedelta(hours=1)
    approvals = await asyncio.gather(
        store.resolve_proposal(first, "approved", later, "operator:ab12"),
        store.resolve_proposal(first, "rejected", later, "operator:cd34", "too late"))
    assert sorted(approvals) == [False, True]  # exactly one decision wins
    resolved = await store.proposal(first)
    assert resolved is not None
    assert resolved.status in ("approved", "rejected")
    assert resolved.resolved_at == later
    assert not await store.resolve_proposal(first, "expired", later, None)
    assert [p.proposal_id for p in await store.proposals("proposed", limit=1000)
            if p.proposal_id in (first, second)] == [second]


# -- decisions --------------------------------------------------------------------------


async def test_decisions_are_kept_newest_first_until_they_expire_or_the_customer_goes(
        store: Store, cid: Callable[[str], str]) -> None:
    who = cid("decided")
    made = [StoredDecision(who, NOW - timedelta(hours=h), f"d-{h}", bytes([h]))
            for h in (5, 1, 3)]
    await store.record_decisions(made, NOW, ttl_s=4 * 3600)  # d-5 is past its time: not kept
    assert await store.recent_decisions(who, NOW) == [made[1], made[2]]
    assert await store.recent_decisions(who, NOW, limit=1) == [made[1]]
    assert await store.recent_decisions(who, NOW + timedelta(hours=2)) == [made[1]]
    assert await store.recent_decisions(cid("nobody"), NOW) == []
    await store.delete_customer(who)
    assert await store.recent_decisions(who, NOW) == []


# -- anonymous visitors --------------------------------------------------------------


def _visitor(visitor_id: str, at: datetime = NOW - DAY, customer_id: str | None = None
             ) -> VisitorState:
    pages = [ViewedPage("pv-1", at - DAY, "s-1", "https://shop.example/golf", "product",
                        "golf-1", ("golf", "travel"), 42.5),
             ViewedPage("pv-2", at, "s-2", "https://shop.example/", "home")]
    return VisitorState(visitor_id, pages=[] if customer_id else pages,
                        revoked_at=at - 2 * DAY, last_seen=at, customer_id=customer_id,
                        link_event_id="l-1" if customer_id else None,
                        linked_at=at if customer_id else None)


async def test_a_visitor_round_trips_and_a_save_replaces_it(
        store: Store, cid: Callable[[str], str]) -> None:
    vid = cid("v")
    state = _visitor(vid, NOW - timedelta(microseconds=1500))
    await store.save_visitor_profiles([(state, NOW + DAY)], NOW)
    loaded = await store.load_visitor_profiles([vid, cid("never")], NOW)
    assert loaded == {vid: normalise_visitor(state)}
    linked = _visitor(vid, NOW - DAY, customer_id=cid("c"))
    await store.save_visitor_profiles([(linked, NOW + DAY)], NOW)
    await store.save_visitor_profiles([(linked, NOW + DAY)], NOW)  # twice: no change
    assert await store.load_visitor_profiles([vid], NOW) == {vid: linked}
    assert await store.linked_visitors(cid("c"), NOW) == [vid]


async def test_a_visitor_expires_at_the_time_it_was_saved_with(
        store: Store, cid: Callable[[str], str]) -> None:
    vid, gone = cid("v"), cid("gone")
    await store.save_visitor_profiles([(_visitor(vid, customer_id=cid("c")), NOW + DAY),
                               (_visitor(gone), NOW - timedelta(milliseconds=1))], NOW)
    assert set(await store.load_visitor_profiles([vid, gone], NOW)) == {vid}
    assert await store.load_visitor_profiles([vid], NOW + DAY) == {}
    assert await store.linked_visitors(cid("c"), NOW + DAY) == []


async def test_an_empty_visitor_is_deleted_not_stored(
        store: Store, cid: Callable[[str], str]) -> None:
    vid = cid("v")
    await store.save_visitor_profiles([(_visitor(vid), NOW + DAY)], NOW)
    await store.save_visitor_profiles([(VisitorState(vid, last_seen=NOW), NOW + DAY)], NOW)
    assert await store.load_visitor_profiles([vid], NOW) == {}


async def test_deleting_visitors_removes_their_rows_ledger_and_link(
        store: Store, cid: Callable[[str], str]) -> None:
    vid, other, customer = cid("v"), cid("other"), cid("c")
    await store.save_visitor_profiles([(_visitor(vid, customer_id=customer), NOW + DAY),
                               (_visitor(other), NOW + DAY)], NOW)
    await store.record_events([(vid, "pv-1"), (other, "pv-9")], NOW, LEDGER_TTL_S)
    await store.write_batch(BatchWrite(outbox={(vid, "pv-1"): b"outputs"}),
                            NOW, LEDGER_TTL_S, FOREVER_S)
    await store.delete_visitor_profiles([vid])
    assert set(await store.load_visitor_profiles([vid, other], NOW)) == {other}
    assert await store.linked_visitors(customer, NOW) == []
    assert await store.seen_events([(vid, "pv-1"), (other, "pv-9")], NOW) == {(other, "pv-9")}
    assert await store.unpublished([(vid, "pv-1")], NOW) == {}


async def test_reset_empties_the_visitors(store: Store, cid: Callable[[str], str]) -> None:
    vid = cid("v")
    await store.save_visitor_profiles([(_visitor(vid, customer_id=cid("c")), NOW + DAY)], NOW)
    await store.reset()
    assert await store.load_visitor_profiles([vid], NOW) == {}
    assert await store.linked_visitors(cid("c"), NOW) == []
# -- visitors' sessions ----------------------------------------------------------------


async def test_visitor_sessions_round_trip_are_replaced_and_deleted(
        store: Store, cid: Callable[[str], str]) -> None:
    a, b, never = cid("visitor-a"), cid("visitor-b"), cid("visitor-never")
    assert await store.load_visitors([a, never], NOW) == {}
    await store.save_visitors({a: b"first", b: b"\x00\xff"}, NOW, LEDGER_TTL_S)
    assert await store.load_visitors([a, b, never], NOW) == {a: b"first", b: b"\x00\xff"}
    await store.save_visitors({a: b"second"}, NOW, LEDGER_TTL_S)
    assert await store.load_visitors([a], NOW) == {a: b"second"}
    await store.delete_visitors([a, never])
    assert await store.load_visitors([a, b], NOW) == {b: b"\x00\xff"}
    assert await store.load_visitors([], NOW) == {}


async def test_a_visitor_session_expires_its_ttl_after_its_last_save(
        store: Store, cid: Callable[[str], str]) -> None:
    a = cid("visitor-ttl")
    await store.save_visitors({a: b"state"}, NOW, 3600)
    assert await store.load_visitors([a], NOW + timedelta(seconds=3599)) == {a: b"state"}
    assert await store.load_visitors([a], NOW + timedelta(seconds=3600)) == {}
    await store.save_visitors({a: b"later"}, NOW + timedelta(seconds=1800), 3600)
    assert await store.load_visitors([a], NOW + timedelta(seconds=5000)) == {a: b"later"}


async def test_many_visitors_load_in_one_call(store: Store, cid: Callable[[str], str]) -> None:
    states = {cid(f"visitor-{i}"): str(i).encode() for i in range(250)}
    await store.save_visitors(states, NOW, LEDGER_TTL_S)
    assert await store.load_visitors(list(states), NOW) == states
