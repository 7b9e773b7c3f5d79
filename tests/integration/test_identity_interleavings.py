"""Identity links: replay rebuilds what live processing built, and erasure leaves nothing.

Random page views (each visitor with or without cookie consent throughout:
a withdrawal racing the link is the documented bound of
:mod:`agents.core.visitors`), identity links (a
visitor to one of two customers, the second claim refused), customer
consents and erasures go through the stages as the worker wires them
(``streams.app.build_stage`` behind :class:`IdentityStage`), on the embedded
SQLite store: the topics interleave at random (each in its own order), and
the ``visitor_merges`` the visitor side emits are read back, as the
customer's owner reads them, at a random later point.  Then the store is
reset, as ``relevanz replay`` does (the forget-list stays), and the same
logs, the merges written live included, are read again in another random
interleaving, without publishing.

Expected: the same customer profiles (the events profiled, interests,
consent, parked events) and the same visitor rows; an erased customer has
no row, and neither have the visitors linked to it, nor their ledger entries.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.core.visitors import VisitorRules
from agents.pipeline.identity_stage import IdentityStage
from schemas.records import (
    ConsentChanged,
    ContentPublished,
    ContentVariant,
    IdentityLink,
    PageView,
    Record,
    VisitorMerged,
)
from schemas.topics import TOPICS
from schemas.validation import Limits
from streams.app import build_stage
from streams.privacy import Pseudonyms
from streams.settings import Settings
from streams.store import BatchWrite, Store, open_store
from streams.store.codec import CUSTOMER_TABLES

NOW = datetime(2026, 6, 1, tzinfo=UTC)
START = NOW - timedelta(days=1)
CUSTOMERS = ("c1", "c2")
VISITORS = ("v1", "v2", "v3")
#: The erasure of a customer comes after every other event (minutes).
ERASED_AT = 100
INPUTS = ("page_views", "identity_links", "consents")
CONTENT = [ContentPublished(
    event_id=f"i-{topic}", content_id=f"{topic}-1", occurred_at=START - timedelta(days=1),
    schema_version=1, topics=[topic], channels=["web"], slots=["hero"],
    variants=[ContentVariant(language="de", title=topic, url=f"https://shop.example/{topic}")],
    default_language="de") for topic in ("golf", "travel", "fashion")]


def at(minute: int) -> datetime:
    return START + timedelta(minutes=minute)


def page_views(consenting: frozenset[str]) -> st.SearchStrategy[PageView]:
    """Page views; those of ``consenting`` visitors carry profiling consent."""
    return st.builds(lambda n, vid, minute, topic, seconds: PageView(
            event_id=f"pv-{n}", visitor_id=vid, occurred_at=at(minute), schema_version=1,
            session_id=f"s-{vid}", url=f"https://shop.example/{topic}", page_type="product",
            device="mobile", content_id=f"{topic}-1", engagement_seconds=seconds,
            consent=["profiling"] if vid in consenting else []),
        st.integers(0, 10**6), st.sampled_from(VISITORS), st.integers(0, 60),
        st.sampled_from(("golf", "travel", "fashion")),
        st.one_of(st.none(), st.floats(0, 600)))
links = st.builds(
    lambda n, vid, cid, minute: IdentityLink(
        event_id=f"l-{n}", visitor_id=vid, customer_id=cid, occurred_at=at(minute),
        schema_version=1, source="login"),
    st.integers(0, 10**6), st.sampled_from(VISITORS), st.sampled_from(CUSTOMERS),
    st.integers(0, 60))
consents = st.builds(
    lambda n, cid, minute, action: ConsentChanged(
        event_id=f"k-{n}", customer_id=cid, occurred_at=at(minute), schema_version=1,
        action=action, purposes=["profiling", "personalisation"], source="banner"),
    st.integers(0, 10**6), st.sampled_from(CUSTOMERS), st.integers(0, 60),
    st.sampled_from(("granted", "granted", "revoked")))


def _unique(records: list[Any]) -> list[Any]:
    return list({r.event_id: r for r in records}.values())


def _key(record: Record) -> tuple[str, str]:
    topic = {PageView: "page_views", IdentityLink: "identity_links",
             VisitorMerged: "visitor_merges"}.get(type(record), "consents")
    field = TOPICS[topic].key
    assert field is not None
    return getattr(record, field), record.event_id


async def _run(stage: IdentityStage, logs: dict[str, list[Record]], data: st.DataObject,
               feed_back: bool) -> list[VisitorMerged]:
    """Read ``logs`` in a random interleaving and batching; returns the merges emitted.

    With ``feed_back`` the merges emitted join the ``visitor_merges`` log as they
    are written (live); otherwise that log is read as given (replay).
    """
    position = dict.fromkeys(logs, 0)
    emitted: list[VisitorMerged] = []
    while True:
        open_topics = [t for t in logs if position[t] < len(logs[t])]
        if not open_topics:
            return emitted
        batch: list[Record] = []
        for _ in range(data.draw(st.integers(1, 6), label="batch size")):
            open_topics = [t for t in logs if position[t] < len(logs[t])]
            if not open_topics:
                break
            topic = data.draw(st.sampled_from(open_topics), label="topic")
            batch.append(logs[topic][position[topic]])
            position[topic] += 1
        outputs, failed = await stage.apply(batch, NOW)
        assert all(isinstance(batch[i], IdentityLink) for i in failed), failed
        await stage.commit(
            BatchWrite(events=[_key(r) for i, r in enumerate(batch) if i not in failed]), NOW)
        merges = [m for topic, _, m in outputs
                  if topic == "visitor_merges" and isinstance(m, VisitorMerged)]
        emitted.extend(merges)
        if feed_back:
            logs["visitor_merges"].extend(merges)


async def _snapshot(store: Store) -> dict[str, Any]:
    customers = {s.customer_id: s async for s in store.iter_customers(NOW)}
    return {
        "customers": {cid: (
            sorted((h.event_id, h.kind) for h in s.history),
            {t: sorted(i.recent) for t, i in s.interests.items()},
            s.consent, sorted(e.event_id for e in s.parked))
            for cid, s in sorted(customers.items())},
        "visitors": await store.load_visitor_profiles(VISITORS, NOW),
    }


def _rows_naming(path: Path, ids: Sequence[str]) -> int:
    db = sqlite3.connect(path)
    try:
        total = 0
        for i in ids:
            for table in (*CUSTOMER_TABLES, "customer_decisions", "visitors_by_customer"):
                total += db.execute(f"SELECT COUNT(*) FROM {table} WHERE customer_id = ?",  # noqa: S608 - constant names
                                    (i,)).fetchone()[0]
            total += db.execute("SELECT COUNT(*) FROM visitors WHERE visitor_id = ? "
                                "OR customer_id = ?", (i, i)).fetchone()[0]
            total += db.execute("SELECT COUNT(*) FROM event_ledger WHERE partition_key = ?",
                                (i,)).fetchone()[0]
            total += db.execute("SELECT COUNT(*) FROM visitor_sessions WHERE visitor_id = ?",
                                (i,)).fetchone()[0]
        return int(total)
    finally:
        db.close()


async def _stage(config: Settings, store: Store, emit: bool) -> IdentityStage:
    customers = build_stage(config, store, Limits(), emit=emit)
    customers.forget_list.pseudonyms = Pseudonyms(await store.pseudonym_key())
    customers.forget_list.replace(await store.forgotten())
    stage = IdentityStage(customers, VisitorRules())
    await stage.apply(CONTENT, NOW)
    await stage.commit(BatchWrite(events=[(c.content_id, c.event_id) for c in CONTENT]), NOW)
    return stage


async def _check(tmp: Path, views: list[PageView], linked: list[IdentityLink],
                 decided: list[ConsentChanged], erased: set[str], data: st.DataObject) -> None:
    path = tmp / "store.db"
    config = Settings(store_url=f"embedded:{path}", consent_default=frozenset())
    erasures = [ConsentChanged(event_id=f"erase-{cid}", customer_id=cid,
                               occurred_at=at(ERASED_AT), schema_version=1,
                               action="erasure_requested", purposes=[], source="operator")
                for cid in sorted(erased)]
    logs: dict[str, list[Record]] = {
        "page_views": list(views), "identity_links": list(linked),
        "consents": sorted(decided, key=lambda r: r.occurred_at) + erasures,
        "visitor_merges": []}
    store = open_store(config)
    await store.open()
    try:
        await _run(await _stage(config, store, emit=True), logs, data, feed_back=True)
        live = await _snapshot(store)
        await store.reset()
        await _run(await _stage(config, store, emit=False),
                   {t: list(log) for t, log in logs.items()}, data, feed_back=False)
        replayed = await _snapshot(store)
    finally:
        await store.close()
    assert replayed == live
    for cid in erased:
        # The visitors this customer won: the first link of a visitor (in the topic) wins.
        first: dict[str, str] = {}
        for link in linked:
            first.setdefault(link.visitor_id, link.customer_id)
        claimed = sorted(vid for vid, owner in first.items() if owner == cid)
        assert _rows_naming(path, [cid, *claimed]) == 0, (cid, claimed)
        assert cid not in live["customers"]
        assert not set(claimed) & set(live["visitors"])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(views=st.frozensets(st.sampled_from(VISITORS)).flatmap(
           lambda consenting: st.lists(page_views(consenting), max_size=14)).map(_unique),
       linked=st.lists(links, max_size=4).map(_unique),
       decided=st.lists(consents, max_size=4).map(_unique),
       erased=st.sets(st.sampled_from(CUSTOMERS)), data=st.data())
def test_replay_rebuilds_the_merged_profiles_and_erasure_leaves_no_trace(
        tmp_path_factory: Any, views: list[PageView], linked: list[IdentityLink],
        decided: list[ConsentChanged], erased: set[str], data: st.DataObject) -> None:
    tmp = tmp_path_factory.mktemp("identity")
    asyncio.run(_check(tmp, views, linked, decided, erased, data))
