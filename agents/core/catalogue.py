"""The content catalogue as a mapping with an index by (channel, slot) and by (channel, topic).

A send needs the items on one topic that a channel may show, and a
touchpoint the items for one channel and slot.  Scanning every item for
every decision makes each decision cost as much as the catalogue is large;
:class:`CatalogueIndex` keeps those item lists ready, updated as items are
learnt or forgotten, so a decision only reads the items that can fit it.

It is a ``Mapping[str, ContentPublished]`` (latest version per
``content_id``, in the order items were first learnt), so it can stand in
wherever the catalogue dictionary did.  :func:`on_topic` and :func:`offered`
answer from the index when they are given one and by scanning any other
mapping, with the same items in the same order; a property test holds them
equal.  Validity in time is not indexed (it depends on the decision time):
callers still check ``valid_from`` and ``valid_until``.

>>> from datetime import UTC, datetime
>>> from schemas.records import ContentVariant
>>> def item(cid, topics, channels, at=datetime(2026, 3, 1, tzinfo=UTC)):
...     return ContentPublished(
...         event_id=cid, content_id=cid, occurred_at=at, schema_version=1, topics=topics,
...         channels=channels, slots=["app-card"], default_language="de",
...         variants=[ContentVariant(language="de", title="t", url="u")])
>>> index = CatalogueIndex([item("n-2", ["golf"], ["push"]), item("n-1", ["golf"], ["email"])])
>>> [i.content_id for i in on_topic(index, "push", "golf")]
['n-2']
>>> [i.content_id for i in offered(index, "email", "app-card")]
['n-1']
>>> index.forget("n-2"); [i.content_id for i in on_topic(index, "push", None)]
[]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from schemas.records import ContentPublished

_Bucket = dict[str, ContentPublished]
#: (channel, slot) or (channel, topic); (channel, None) lists every item on the channel.
_Key = tuple[str, str | None]


class CatalogueIndex(Mapping[str, ContentPublished]):
    """Latest item per ``content_id``, indexed by (channel, slot) and (channel, topic).

    :meth:`learn` keeps the newer version by event time (an equal time
    replaces), :meth:`forget` drops an item.  Each index list is kept in
    catalogue order (the order of iteration); an item that moves into a
    list because a new version added a channel or topic is put back in
    its place.
    """

    def __init__(self, items: Iterable[ContentPublished] = ()) -> None:
        self._items: dict[str, ContentPublished] = {}
        #: Position of each item in catalogue order (first learnt, or learnt again after
        #: being forgotten).
        self._seq: dict[str, int] = {}
        self._next = 0
        #: Counts changes: a list read at one version is still current at the same version.
        self.version = 0
        self._by_slot: dict[_Key, _Bucket] = {}
        self._by_topic: dict[_Key, _Bucket] = {}
        #: Ready-made answers, dropped when their list changes.
        self._offered: dict[_Key, tuple[ContentPublished, ...]] = {}
        self._on_topic: dict[_Key, tuple[ContentPublished, ...]] = {}
        for item in items:
            self.learn(item)

    def __getitem__(self, content_id: str) -> ContentPublished:
        return self._items[content_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, content_id: object) -> bool:
        return content_id in self._items

    def learn(self, item: ContentPublished) -> bool:
        """Take ``item`` unless a newer version (by event time) is known; True when taken."""
        cid = item.content_id
        known = self._items.get(cid)
        if known is not None and known.occurred_at > item.occurred_at:
            return False
        if known is None:
            self._seq[cid] = self._next
            self._next += 1
        self._items[cid] = item
        self.version += 1
        old_slots, old_topics = _keys(known) if known is not None else (set(), set())
        new_slots, new_topics = _keys(item)
        self._move(self._by_slot, self._offered, cid, item, old_slots, new_slots,
                   known is not None)
        self._move(self._by_topic, self._on_topic, cid, item, old_topics, new_topics,
                   known is not None)
        return True

    def forget(self, content_id: str) -> None:
        """Drop an item (its tombstone was consumed); unknown ids are ignored."""
        known = self._items.pop(content_id, None)
        if known is None:
            return
        del self._seq[content_id]
        self.version += 1
        slots, topics = _keys(known)
        self._move(self._by_slot, self._offered, content_id, None, slots, set(), True)
        self._move(self._by_topic, self._on_topic, content_id, None, topics, set(), True)

    def offered(self, channel: str, slot: str) -> Sequence[ContentPublished]:
        """Items listing ``channel`` and ``slot``, by ``content_id`` (valid or not)."""
        key = (channel, slot)
        found = self._offered.get(key)
        if found is None:
            bucket = self._by_slot.get(key, {})
            found = self._offered[key] = tuple(bucket[c] for c in sorted(bucket))
        return found

    def on_topic(self, channel: str, topic: str | None) -> Sequence[ContentPublished]:
        """Items listing ``channel`` and ``topic`` (any topic for None), in catalogue order."""
        key = (channel, topic)
        found = self._on_topic.get(key)
        if found is None:
            found = self._on_topic[key] = tuple(self._by_topic.get(key, {}).values())
        return found

    def _move(self, buckets: dict[_Key, _Bucket],
              ready: dict[_Key, tuple[ContentPublished, ...]], cid: str,
              item: ContentPublished | None, old: set[_Key], new: set[_Key], existed: bool
              ) -> None:
        for key in old - new:
            bucket = buckets[key]
            del bucket[cid]
            if not bucket:
                del buckets[key]
            ready.pop(key, None)
        if item is None:
            return
        for key in new:
            bucket = buckets.setdefault(key, {})
            placed = cid in bucket
            bucket[cid] = item  # an item already listed keeps its place
            if existed and not placed and len(bucket) > 1:
                # An older item joined this list: back to catalogue order.
                seq = self._seq
                buckets[key] = dict(sorted(bucket.items(), key=lambda kv: seq[kv[0]]))
            ready.pop(key, None)


def _keys(item: ContentPublished) -> tuple[set[_Key], set[_Key]]:
    """The (channel, slot) and (channel, topic or None) lists ``item`` belongs to."""
    slots: set[_Key] = {(c, s) for c in item.channels for s in item.slots}
    topics: set[_Key] = {(c, t) for c in item.channels for t in item.topics}
    topics.update((c, None) for c in item.channels)
    return slots, topics


def offered(catalogue: Mapping[str, ContentPublished], channel: str, slot: str
            ) -> Sequence[ContentPublished]:
    """Items of ``catalogue`` listing ``channel`` and ``slot``, by ``content_id``.

    From the index of a :class:`CatalogueIndex`, by a scan of any other mapping.
    """
    if isinstance(catalogue, CatalogueIndex):
        return catalogue.offered(channel, slot)
    found = [i for i in catalogue.values() if channel in i.channels and slot in i.slots]
    found.sort(key=lambda i: i.content_id)
    return found


def on_topic(catalogue: Mapping[str, ContentPublished], channel: str, topic: str | None
             ) -> Sequence[ContentPublished]:
    """Items of ``catalogue`` listing ``channel`` and ``topic`` (None: any), in its order.

    From the index of a :class:`CatalogueIndex`, by a scan of any other mapping.
    """
    if isinstance(catalogue, CatalogueIndex):
        return catalogue.on_topic(channel, topic)
    return [i for i in catalogue.values()
            if (topic is None or topic in i.topics) and channel in i.channels]
