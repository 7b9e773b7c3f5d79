"""The customer-state stage: profile, consent, purchases, history and interest tags.

Called by the ingest agent with each batch's new, valid records.  It reads
the batch's customers through the cache in one store call, applies every
record with the pure core (:func:`agents.core.profile.apply_event`), and
returns the interest-tag changes to emit.  Content items feed the catalogue
that maps clicked content to topics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from agents.core.interests import TagChange
from agents.core.profile import CustomerRules, apply_event
from agents.ingest import Output
from schemas.records import ContentPublished, InterestTagChanged, Record
from streams.catalogue import Catalogue
from streams.customer_cache import CustomerCache
from streams.logs import customer_ref
from streams.store import EventKey

log = structlog.get_logger(__name__)



@dataclass
class CustomerStage:
    """Applies customer events to cached state; emits interest-tag changes."""

    cache: CustomerCache
    rules: CustomerRules
    ledger_ttl_s: float
    history_ttl_s: float
    catalogue: Catalogue
    tag_changes: int = 0

    async def apply(self, records: Sequence[Record], now: datetime
                    ) -> tuple[list[Output], dict[int, str]]:
        """Apply new records in order; returns the messages they cause and the
        reason for each record (by position) that the core failed to apply."""
        for record in records:
            if isinstance(record, ContentPublished):
                self.catalogue.learn(record)
        customer_ids = [r.customer_id for r in records if not isinstance(r, ContentPublished)]
        states = await self.cache.get_many(customer_ids, now)
        outputs: list[Output] = []
        failed: dict[int, str] = {}
        for position, record in enumerate(records):
            if isinstance(record, ContentPublished):
                continue
            cid: str = record.customer_id
            content_id = getattr(record, "content_id", None)
            topics = self.catalogue.topics_of(content_id) if content_id else None
            try:
                state, changes = apply_event(states[cid], record, self.rules, topics)
            except Exception as exc:
                log.exception("apply_failed", customer=customer_ref(cid),
                              event_id=record.event_id)
                failed[position] = (f"could not be applied ({type(exc).__name__}: {exc}); "
                                    "please report this message to the Relevanz maintainers")
                continue
            states[cid] = state
            self.cache.put(state)
            outputs.extend(("interest-tags", cid.encode(), _tag_record(cid, c)) for c in changes)
        self.tag_changes += len(outputs)
        return outputs, failed

    def rollback(self) -> None:
        """Undo what ``apply`` changed since the last commit (the batch will be retried)."""
        self.cache.discard_changes()

    async def commit(self, events: Sequence[EventKey], now: datetime) -> None:
        """Write the batch's state changes and ledger entries in one store call."""
        await self.cache.flush(events, now, self.ledger_ttl_s, self.history_ttl_s)


def _tag_record(customer_id: str, change: TagChange) -> InterestTagChanged:
    return InterestTagChanged(
        # Unique per customer and change, and the same when replayed.
        event_id=f"{customer_id}:{change.tag}:{change.change}:{change.at.isoformat()}",
        customer_id=customer_id,
        occurred_at=change.at,
        schema_version=1,
        tag=change.tag,
        topic=change.topic,
        change=change.change,
        score=change.score,
        caused_by=change.caused_by,
    )

