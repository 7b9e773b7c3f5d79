"""Customers gone quiet: the win-back checks the event-time watermark passes.

A customer's silence is not an event, so nothing read from a topic would
ever start a win-back for a customer who stopped for good.  :class:`QuietWatch`
keeps, per customer the worker has applied an event for, the next check of
:func:`agents.core.triggers.quiet_checks` (7, 14, ... days after their latest
event) in a heap of due times; once the worker's event-time watermark is
``grace`` past a check, :meth:`QuietWatch.due` hands it out as a
:class:`~agents.core.triggers.WentQuiet` for the customer stage to decide as
of the check's time (:func:`agents.core.engine.went_quiet`), and
:meth:`QuietWatch.again` schedules the next one.

- **Replay fires them the same.** Checks depend on event times only; the
  win-back's key and ids are built from the check's day, so a replay or a
  redelivered batch makes the same trigger, which the contact log in the
  stored customer state refuses as a ``duplicate`` rather than sending twice.
- **Late events.** An event of the customer dated before a check and read
  before the watermark is ``grace`` past it makes the check stale (nothing
  fires); one read later than that cannot withdraw a win-back already sent.
- **Bounded.** At most :attr:`QuietWatch.max_watched` customers are watched
  (one heap entry each: an event moves no entry, a stale one is moved to count
  from the latest event when it comes up); beyond that the
  least recently active are dropped and counted in :attr:`QuietWatch.dropped`.
- **Crashes and restarts.** What a check needs (the customer's latest event
  time and contact log) is in the stored customer state, written with the
  batch that fired it; the heap is an in-memory index over it.  Checks taken
  in a batch that fails are put back by :meth:`rollback`, so a retried batch
  fires them once.  A worker that owns every partition of the customer-keyed
  input topics (one worker) rebuilds the index from the stored states with
  :meth:`QuietWatch.rebuild` when its partitions are assigned, so a restart
  loses no check (a check the run before decided comes up again: a win-back
  it sent is refused by the stored contact log as a ``duplicate``).  With
  several workers it is not rebuilt, as a worker cannot tell which stored
  customers its share of the partitions owns: checks of customers who stay
  quiet after a restart wait for their next event (a due-list kept per
  partition in the store would close this).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from agents.core.customer import CustomerState
from agents.core.triggers import WentQuiet, quiet_checks


class QuietWatch:
    """The next win-back check of every watched customer, by due time."""

    def __init__(self, grace: timedelta = timedelta(days=1), max_watched: int = 200_000
                 ) -> None:
        self.grace = grace
        self.max_watched = max_watched
        #: Customer id -> the latest event time their checks count from, least recent first.
        self._watched: OrderedDict[str, datetime] = OrderedDict()
        #: (check time, customer id, latest event time): a heap; stale entries are skipped.
        self._due: list[tuple[datetime, str, datetime]] = []
        #: Entries taken since the last commit (put back on rollback).
        self._taken: list[tuple[datetime, str, datetime]] = []
        #: The entries in the heap, so none is pushed twice (a retried batch).
        self._queued: set[tuple[datetime, str, datetime]] = set()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._watched)

    def seen(self, customer_id: str, last_event_at: datetime | None) -> None:
        """The customer's latest event time is now ``last_event_at``: checks count from it."""
        if last_event_at is None:
            return
        known = self._watched.get(customer_id)
        if known is not None and known >= last_event_at:
            return  # an older event read late: the checks stay where they are
        self._watched[customer_id] = last_event_at
        self._watched.move_to_end(customer_id)
        if known is None:
            # A watched customer has one entry in the heap already: when it comes up
            # stale, the check is moved to count from their latest event then (so an
            # event costs no heap push).
            first = quiet_checks(last_event_at)
            if first is not None:
                self._push((first, customer_id, last_event_at))
        while len(self._watched) > self.max_watched:
            self._watched.popitem(last=False)
            self.dropped += 1
        if len(self._due) > 2 * len(self._watched) + 1024:
            self._due = [e for e in self._due if self._watched.get(e[1]) == e[2]]
            heapq.heapify(self._due)
            self._queued = set(self._due)

    def forget(self, customer_id: str) -> None:
        """No more checks for the customer (erasure, or no consent to profiling)."""
        self._watched.pop(customer_id, None)

    def due(self, watermark: datetime | None) -> list[WentQuiet]:
        """The checks ``grace`` or more behind ``watermark``, by time then customer."""
        found: list[WentQuiet] = []
        if watermark is None:
            return found
        until = watermark - self.grace
        while self._due and self._due[0][0] <= until:
            entry = heapq.heappop(self._due)
            self._queued.discard(entry)
            at, cid, last = entry
            latest = self._watched.get(cid)
            if latest != last:
                if latest is not None:  # active since: count from their latest event
                    following = quiet_checks(latest)
                    if following is not None:
                        self._push((following, cid, latest))
                continue  # else dropped or forgotten
            self._taken.append(entry)
            found.append(WentQuiet(cid, at, last))
        return found

    def again(self, quiet: WentQuiet) -> None:
        """Schedule the check after ``quiet`` (none past the last check)."""
        if self._watched.get(quiet.customer_id) != quiet.last_event_at:
            return
        following = quiet_checks(quiet.last_event_at, quiet.occurred_at)
        if following is None:
            del self._watched[quiet.customer_id]  # checked for the last time
        else:
            self._push((following, quiet.customer_id, quiet.last_event_at))

    def _push(self, entry: tuple[datetime, str, datetime]) -> None:
        if entry not in self._queued:
            self._queued.add(entry)
            heapq.heappush(self._due, entry)

    def commit(self) -> None:
        """The batch that took checks was written: they are done."""
        self._taken.clear()

    def rollback(self) -> None:
        """The batch failed: its checks are due again (a retry takes them anew)."""
        for entry in self._taken:
            self._watched.setdefault(entry[1], entry[2])
            self._push(entry)
        self._taken.clear()

    async def rebuild(self, customers: AsyncIterator[CustomerState]) -> int:
        """Watch every customer of ``customers`` that has predictions; returns how many."""
        count = 0
        async for state in customers:
            if state.predictions is not None and state.last_event_at is not None:
                self.seen(state.customer_id, state.last_event_at)
                count += 1
        return count
