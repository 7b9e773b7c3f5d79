"""The low watermark: how far event time has got on every input partition.

A worker reads several topics (and partitions of each), each in its own
order and at its own pace, so the newest event time it has seen on one
partition says nothing about what another still holds: a consents topic
read ahead of the purchases would move a clock driven by the newest time
past purchases not read yet.  The clock that opens the outcome models'
examples, closes decision windows and fires win-back checks is therefore a
*low watermark* (as Kafka Streams and Flink keep one):

- every input partition (any hashable name: ``(topic, partition)`` in the
  worker) has a *progress*, the newest event time read from it;
- the watermark is the smallest progress over the partitions that still
  have something to read (their end offset is past the last message read,
  or past the offset reading starts from).  A partition that is caught up,
  read to its end offset, does not hold it back, or an idle topic would
  stop the clock for good; a partition whose end offset is not known
  counts as caught up;
- a partition with something to read that has not been read from yet holds
  the watermark where it is (its event times are not known);
- a partition that has delivered nothing for :attr:`LowWatermark.idle_batches`
  batches in a row (counted by :meth:`LowWatermark.settle`) no longer holds
  it, whatever its end offset says: offsets that never deliver a message
  (transaction markers, a log emptied by retention) cannot stop the clock;
- when no partition holds it, the watermark is the largest progress:
  everything written so far has been read;
- it never goes back.  A partition that has data again (its end offset
  moved) holds the watermark where it is until it is read past it.

An event dated before the watermark as it stood when it was read is *late*
(:attr:`LowWatermark.late`): the examples, windows and checks the watermark
already passed were decided without it (each consumer of the clock says what
that means for it).  A message at or below a partition's last read offset is
a redelivery and neither moves the progress nor counts as late.

>>> from datetime import UTC, datetime
>>> day = lambda d: datetime(2026, 1, d, tzinfo=UTC)
>>> w = LowWatermark()
>>> w.read("consents", 0, day(9)), w.read("purchases", 0, day(2))
(False, False)
>>> w.settle({"consents": 5, "purchases": 7}).value.day  # both have more: the slower
2
>>> w.read("purchases", 6, day(8)), w.settle({"consents": 5, "purchases": 7}).value.day
(False, 9)
>>> w.read("purchases", 7, day(3)), w.late            # dated before the watermark
(True, 1)
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

#: Earlier than any event time ingest accepts (none before 1900): the clock to hold
#: back to while a partition with data has not been read yet, its times unknown.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)


@dataclass
class LowWatermark:
    """Event-time progress per input partition and the low watermark over them."""

    #: Partition -> the newest event time read from it.
    _progress: dict[Hashable, datetime] = field(default_factory=dict)
    #: Partition -> the last offset read from it (a message without event time included).
    _offsets: dict[Hashable, int] = field(default_factory=dict)
    #: Partition -> its end offset as last told (the offset after its last message).
    _ends: dict[Hashable, int | None] = field(default_factory=dict)
    #: Partition -> the offset reading it starts from (for partitions not read yet).
    _starts: dict[Hashable, int] = field(default_factory=dict)
    #: Partition -> batches settled since it last delivered a message (or was told of).
    _quiet: dict[Hashable, int] = field(default_factory=dict)
    #: Batches without a message after which a partition no longer holds the watermark.
    idle_batches: int = 1000
    #: The watermark: no event dated before it is expected any more (None: nothing read).
    value: datetime | None = None
    #: Events read dated before the watermark as it stood then.
    late: int = 0

    def read(self, partition: Hashable, offset: int, at: datetime | None) -> bool:
        """An event at ``at`` read from ``partition`` at ``offset`` (``at`` None: a message
        with no event time, a dead letter); True when it is late."""
        last = self._offsets.get(partition)
        if last is not None and offset <= last:
            return False  # redelivered: counted the first time
        self._offsets[partition] = offset
        self._quiet[partition] = 0
        if at is None:
            return False
        late = self.value is not None and at < self.value
        if late:
            self.late += 1
        known = self._progress.get(partition)
        self._progress[partition] = at if known is None else max(known, at)
        return late

    def partitions(self) -> list[Hashable]:
        """The partitions read from so far."""
        return list(self._offsets)

    def settle(self, ends: Mapping[Hashable, int | None],
               starts: Mapping[Hashable, int] | None = None) -> LowWatermark:
        """End of a batch: take the partitions' end offsets (``ends``; None: unknown) and,
        for those not read yet, the offsets reading starts from (``starts``; default 0),
        and move the watermark; returns ``self``."""
        self._ends.update(ends)
        self._starts.update(starts or {})
        for partition in ends:
            self._quiet.setdefault(partition, 0)
        behind = [p for p in self._quiet if self._behind(p)]
        for partition in self._quiet:
            self._quiet[partition] += 1
        if any(p not in self._progress for p in behind):
            return self  # a partition with data not read yet: its times are not known
        if behind:
            candidate = min(self._progress[p] for p in behind)
        elif self._progress:
            candidate = max(self._progress.values())
        else:
            return self
        if self.value is None or candidate > self.value:
            self.value = candidate
        return self

    def _behind(self, partition: Hashable) -> bool:
        """Whether ``partition`` still has something to read (and is not idle)."""
        end = self._ends.get(partition)
        if end is None or self._quiet.get(partition, 0) >= self.idle_batches:
            return False
        last = self._offsets.get(partition)
        return end > (self._starts.get(partition, 0) if last is None else last + 1)

    def forget(self) -> None:
        """The partitions moved (a rebalance): track afresh; the watermark stays."""
        for known in (self._progress, self._offsets, self._ends, self._starts, self._quiet):
            known.clear()

    @property
    def holding(self) -> datetime | None:
        """What waits on the clock may be kept until: the watermark, or :data:`EARLIEST`
        while nothing can be said yet (a partition with data is not read yet).

        >>> w = LowWatermark()
        >>> w.read("purchases", 0, datetime(2026, 1, 2, tzinfo=UTC))
        False
        >>> w.settle({"purchases": 9, "consents": 3}).holding == EARLIEST
        True
        """
        if self.value is None and self._progress:
            return EARLIEST
        return self.value

    @property
    def newest(self) -> datetime | None:
        """The newest event time read from any partition."""
        return max(self._progress.values(), default=None)

    def behind(self) -> int:
        """Partitions with something left to read (those that can hold the watermark)."""
        return sum(1 for partition in self._quiet if self._behind(partition))
