"""The identity stage: anonymous visitors, identity links and their merge into customers.

It sits in front of the customer stage (:mod:`agents.pipeline.customer_stage`)
and hands it every record, after doing its own part:

- **Visitor side** (``page_views`` and ``identity_links``, keyed by
  ``visitor_id``): the visitor's profile is loaded, changed by
  :mod:`agents.core.visitors` and saved at commit.  An identity link, and
  every later page view of a linked visitor, emits a :class:`VisitorMerged`
  on the customer-keyed ``visitor_merges`` topic.
- **Customer side** (``visitor_merges``, keyed by ``customer_id``): each
  merged page becomes a ``web`` click of the customer and goes through the
  customer stage, so the customer's consent decides, as of each page's time,
  whether it is profiled; a bounce (under :data:`BOUNCE_S` of engagement) is
  not an interest and is left out.  The merge's own ``event_id`` is the
  ledger key, so a redelivered merge changes nothing.

Bad input and its outcome:

- a page view of an unknown visitor creates the visitor;
- a link from a visitor to itself, to an id that is itself a stored
  visitor's, or to a second customer after a first: a dead letter with the
  reason (the first link on the visitor's partition wins);
- a link to, or a merge into, an erased customer: dropped without a trace,
  and the visitor is erased as well (its rows deleted, its id on the
  forget-list): the person asked to be forgotten;
- any later event of an erased visitor id: dropped without a trace
  (counted as ``forgotten``).

Erasing a customer erases the visitors linked to it at commit: their rows,
ledger and outbox entries go, and their ids go on the forget-list (as
``visitor:<id>``, so they never share a pseudonym with a customer id), so
their later page views are never profiled again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from agents.core.visitors import (
    Merge,
    Outcome,
    ViewedPage,
    VisitorRules,
    VisitorState,
    apply_link,
    apply_page_view,
    expires_at,
)
from agents.ingest import Output
from agents.pipeline.customer_stage import CustomerStage
from schemas.records import (
    Clicked,
    ContentPublished,
    CustomerErased,
    IdentityLink,
    MergedPage,
    PageView,
    Record,
    VisitorMerged,
)
from streams.store import BatchWrite, EventKey

#: Engagement below this many seconds is a bounce: it is not merged as an interest.
BOUNCE_S = 5.0


def visitor_key(visitor_id: str) -> str:
    """The forget-list name of a visitor id (apart from customer ids)."""
    return f"visitor:{visitor_id}"


@dataclass
class IdentityStage:
    """Visitors and identity links in front of the customer stage (see the module doc)."""

    customers: CustomerStage
    rules: VisitorRules = field(default_factory=VisitorRules)
    #: Visitor states changed in the current batch, saved at commit.
    _visitors: dict[str, VisitorState] = field(default_factory=dict)
    #: Visitors to erase at commit, with the event time of the erasure behind it.
    _erase: dict[str, datetime] = field(default_factory=dict)
    #: Ledger keys of the current batch that must not be recorded (dropped without a trace).
    _unrecorded: set[EventKey] = field(default_factory=set)
    #: Customers erased in the current batch, with the time of the request.
    _erased: dict[str, datetime] = field(default_factory=dict)

    async def apply(self, records: Sequence[Record], now: datetime
                    ) -> tuple[list[Output], dict[int, str]]:
        """Apply new records; the messages to emit and, by position, why a record failed."""
        outputs: list[Output] = []
        failed: dict[int, str] = {}
        visitor_side = [i for i, r in enumerate(records) if isinstance(r, PageView | IdentityLink)]
        if visitor_side:
            for record in records:  # a page view sees the items of its own batch
                if isinstance(record, ContentPublished):
                    self.customers.catalogue.learn(record)
            outputs.extend(await self._apply_visitors(records, visitor_side, failed, now))
        # Page views go on too (the customer stage's session models read them).
        # (Not those of an erased visitor: nothing of it is kept, its session neither.)
        rest = [i for i, r in enumerate(records)
                if not isinstance(r, VisitorMerged | IdentityLink)
                and not (isinstance(r, PageView)
                         and (r.visitor_id, r.event_id) in self._unrecorded)]
        emitted, rest_failed = await self.customers.apply([records[i] for i in rest], now)
        outputs.extend(emitted)
        failed.update({rest[n]: reason for n, reason in rest_failed.items()})
        for topic, _, message in emitted:
            if topic == "customer-erased" and isinstance(message, CustomerErased):
                self._erased[message.customer_id] = message.requested_at
        merges = [i for i, r in enumerate(records) if isinstance(r, VisitorMerged)]
        if merges:
            clicks: list[Clicked] = []
            origin: list[int] = []
            for i in merges:
                merged = records[i]
                assert isinstance(merged, VisitorMerged)
                erased = self._erased.get(merged.customer_id) or \
                    self.customers.forget_list.requested_at(merged.customer_id)
                if erased is not None:
                    # Into an erased customer: nothing of it is kept, and the visitor goes too.
                    self.customers.accounting.forgotten += 1
                    self._unrecorded.add((merged.customer_id, merged.event_id))
                    self._erase[merged.visitor_id] = max(erased, merged.occurred_at)
                    continue
                for click in _clicks(merged):
                    clicks.append(click)
                    origin.append(i)
            emitted, merge_failed = await self.customers.apply(clicks, now)
            outputs.extend(emitted)
            for n, reason in merge_failed.items():
                failed.setdefault(origin[n], reason)
        return outputs, failed

    async def _apply_visitors(self, records: Sequence[Record], positions: list[int],
                              failed: dict[int, str], now: datetime) -> list[Output]:
        store = self.customers.cache.store
        forget = self.customers.forget_list
        mine = [r for i in positions if isinstance(r := records[i], PageView | IdentityLink)]
        wanted = {r.visitor_id for r in mine}
        # Links to an id that is a stored visitor's: a link between two visitors.
        targets = {r.customer_id for r in mine if isinstance(r, IdentityLink)}
        missing = (wanted | targets) - self._visitors.keys()
        loaded = await store.load_visitor_profiles(sorted(missing), now) if missing else {}
        known_visitors = {t for t in targets if t in loaded or t in self._visitors}
        for vid, state in loaded.items():
            if vid in wanted:
                self._visitors.setdefault(vid, state)
        outputs: list[Output] = []
        # In the order read: the first link on the visitor's partition wins, so links are
        # never reordered (a page view read late goes to the customer all the same).
        for i in positions:
            record = records[i]
            assert isinstance(record, PageView | IdentityLink)
            vid = record.visitor_id
            if forget.requested_at(visitor_key(vid)) is not None or vid in self._erase:
                self.customers.accounting.forgotten += 1
                self._unrecorded.add((vid, record.event_id))
                continue
            state = self._visitors.get(vid) or VisitorState(vid)
            outcome: Outcome
            if isinstance(record, PageView):
                topics = (self.customers.catalogue.topics_of(record.content_id)
                          if record.content_id else None)
                outcome = apply_page_view(state, record, topics, self.rules)
            else:
                if record.customer_id in known_visitors:
                    failed[i] = (f"customer_id: {record.customer_id!r} is a visitor id, not a "
                                 "customer's; a visitor links to a customer id from the CRM "
                                 "or shop account, never to another visitor")
                    continue
                outcome = apply_link(state, record)
                # (A second claim is refused whether or not its customer was erased since,
                # so that replay, which knows the erasure from the start, decides the same.)
                erased = forget.requested_at(record.customer_id)
                if outcome.merge is not None and erased is not None:
                    self.customers.accounting.forgotten += 1
                    self._unrecorded.add((vid, record.event_id))
                    self._erase[vid] = max(erased, record.occurred_at)
                    self._visitors.pop(vid, None)
                    continue
            if outcome.refused is not None:
                failed[i] = f"{outcome.refused.field}: {outcome.refused.reason}"
                continue
            self._visitors[vid] = outcome.state
            if outcome.merge is not None:
                outputs.append(("visitor_merges", outcome.merge.customer_id.encode(),
                                _merged(outcome.merge)))
        return outputs

    def rollback(self) -> None:
        """Forget what ``apply`` changed (the batch is retried)."""
        self._visitors.clear()
        self._erase.clear()
        self._unrecorded.clear()
        self._erased.clear()
        self.customers.rollback()

    async def commit(self, batch: BatchWrite, now: datetime) -> None:
        """Save the visitors, erase those that must go, then commit the customer stage."""
        store = self.customers.cache.store
        forget = self.customers.forget_list
        for cid, requested_at in self._erased.items():
            for vid in await store.linked_visitors(cid, now):
                self._erase[vid] = max(requested_at, self._erase.get(vid, requested_at))
        for vid in self._erase:
            self._visitors.pop(vid, None)
        if self._visitors:
            await store.save_visitor_profiles(
                [(state, expires_at(state, self.rules) or now)
                 for state in self._visitors.values()], now)
        for vid, at in self._erase.items():
            await store.forget(forget.pseudonyms.ref(visitor_key(vid)), at)
        await self.customers.commit(
            replace(batch, events=[k for k in batch.events if k not in self._unrecorded]), now)
        # After the customer stage's write, which may hold their session state: what
        # leads here (an erasure, a dropped link or merge) is never recorded, so a crash
        # in between brings it back and this runs again.
        if self._erase:
            await store.delete_visitor_profiles(sorted(self._erase))
            await store.delete_visitors(sorted(self._erase))  # their session state
        for vid, at in self._erase.items():
            forget.add(visitor_key(vid), at)
        self._visitors.clear()
        self._erase.clear()
        self._unrecorded.clear()
        self._erased.clear()


def _merged(merge: Merge) -> VisitorMerged:
    return VisitorMerged(
        event_id=merge.event_id, customer_id=merge.customer_id, visitor_id=merge.visitor_id,
        occurred_at=merge.occurred_at, schema_version=1, link_event_id=merge.link_event_id,
        pages=[_merged_page(p) for p in merge.pages])


def _merged_page(page: ViewedPage) -> MergedPage:
    return MergedPage(view_id=page.view_id, occurred_at=page.occurred_at,
                      session_id=page.session_id, url=page.url, page_type=page.page_type,
                      content_id=page.content_id, topics=list(page.topics),
                      engagement_seconds=page.engagement_seconds)


def _clicks(merged: VisitorMerged) -> list[Clicked]:
    """The customer's clicks for a merge's pages (bounces left out)."""
    return [Clicked(event_id=f"{merged.event_id}:{n}", customer_id=merged.customer_id,
                    occurred_at=page.occurred_at, schema_version=1, content_id=page.content_id,
                    url=page.url, topics=list(page.topics), channel="web",
                    session_id=page.session_id)
            for n, page in enumerate(merged.pages)
            if page.engagement_seconds is None or page.engagement_seconds >= BOUNCE_S]
