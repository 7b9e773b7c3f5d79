"""Hot customer state, cached by the worker that owns the customer's partition.

The ingest agent reads states for a batch in one store call, applies the
batch in memory and writes every changed state back in one store call, with
the batch's ledger entries, before the batch is acknowledged.  So nothing is
acknowledged that the store does not hold, and a crash costs at most a
redelivery that the ledger recognises.  Clean states stay cached (bounded,
least recently used first out) so a busy customer is read once, not per
event; the cache is dropped when partitions move to another worker.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from agents.core.customer import CustomerState
from streams.store import BatchWrite, Store


class CustomerCache:
    """Read-through, write-per-batch cache of :class:`CustomerState`."""

    def __init__(self, store: Store, max_customers: int) -> None:
        self.store = store
        self.max_customers = max_customers
        self._states: OrderedDict[str, CustomerState] = OrderedDict()
        self._dirty: dict[str, CustomerState] = {}
        self._dropped: set[str] = set()
        #: What the store holds per customer, as loaded or last written: lets
        #: a save write only the history entries that changed.
        self._stored: dict[str, CustomerState] = {}
        self._invalidate_after_flush = False
        self.loads = 0

    async def get_many(self, customer_ids: Iterable[str], now: datetime
                       ) -> dict[str, CustomerState]:
        """States of ``customer_ids``; unknown customers get an empty state."""
        wanted = list(dict.fromkeys(customer_ids))
        missing = [cid for cid in wanted if cid not in self._states]
        if missing:
            self.loads += len(missing)
            loaded = await self.store.load_customers(missing, now)
            for cid in missing:
                state = loaded.get(cid)
                if state is None:
                    self._states[cid] = CustomerState(cid)
                    self._stored.pop(cid, None)
                else:
                    self._states[cid] = self._stored[cid] = state
        found = {}
        for cid in wanted:
            self._states.move_to_end(cid)
            found[cid] = self._states[cid]
        return found

    def peek(self, customer_id: str) -> CustomerState | None:
        """The cached state, if any, without loading or reordering anything."""
        return self._states.get(customer_id)

    def put(self, state: CustomerState) -> None:
        """Replace a customer's state; it is written at the next :meth:`flush`."""
        self._states[state.customer_id] = state
        self._states.move_to_end(state.customer_id)
        self._dirty[state.customer_id] = state

    def drop(self, customer_id: str) -> None:
        """The customer was erased: cache an empty state and write nothing for it.

        The caller deletes the stored rows; a later event in the same batch
        may ``put`` a new state again.
        """
        self._states[customer_id] = CustomerState(customer_id)
        self._dirty.pop(customer_id, None)
        self._dropped.add(customer_id)
        self._stored.pop(customer_id, None)

    async def flush(self, batch: BatchWrite, now: datetime, ledger_ttl_s: float,
                    history_ttl_s: float) -> int:
        """Write changed states with the rest of ``batch``; returns states written.

        See ``Store.write_batch``: the states and what the store held of them
        are added to ``batch`` here.
        """
        states = list(self._dirty.values())
        if states or not batch.empty:
            previous = {cid: self._stored[cid] for cid in self._dirty if cid in self._stored}
            await self.store.write_batch(replace(batch, states=states, previous=previous),
                                         now, ledger_ttl_s, history_ttl_s)
        self._stored.update(self._dirty)
        self._dirty.clear()
        self._dropped.clear()
        if self._invalidate_after_flush:
            self._states.clear()
            self._stored.clear()
            self._invalidate_after_flush = False
        while len(self._states) > self.max_customers:
            evicted, _ = self._states.popitem(last=False)
            self._stored.pop(evicted, None)
        return len(states)

    def invalidate(self) -> None:
        """Partitions moved: drop clean states now, and everything after the next flush."""
        for customer_id in [c for c in self._states if c not in self._dirty]:
            del self._states[customer_id]
            self._stored.pop(customer_id, None)
        self._invalidate_after_flush = bool(self._dirty or self._dropped)

    def discard_changes(self) -> None:
        """Forget unflushed changes (a failed batch): those customers are re-read."""
        for customer_id in (*self._dirty, *self._dropped):
            self._states.pop(customer_id, None)
            # A failed save may have written part of it: replace in full next time.
            self._stored.pop(customer_id, None)
        self._dirty.clear()
        self._dropped.clear()

    def __len__(self) -> int:
        return len(self._states)
