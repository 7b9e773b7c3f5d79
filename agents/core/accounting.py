"""Where every consumed event went: applied, duplicate or dead-lettered.

The invariant the whole system is tested against::

    events_in == applied + duplicates + dead_letters

"Applied" means accepted and handled for good: it includes the events that
the engine deliberately did not use, counted apart as
``skipped_without_consent`` (no consent for profiling) and ``forgotten``
(events of an erased customer up to the erasure request).

>>> a = Accounting()
>>> a.count_batch(applied=3, duplicates=1, dead_letters=2)
>>> a.balanced, a.events_in
(True, 6)
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass
class Accounting:
    """Running counts of one worker."""

    events_in: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    decisions: int = 0
    send_triggers: int = 0
    #: Of ``applied``: valid events consent did not allow using (no profiling at
    #: their event time), less those applied later (``released_after_consent``).
    skipped_without_consent: int = 0
    #: Events first skipped, then applied when a consent decision dated before them
    #: was read (they count in ``applied`` once, and no longer as skipped).
    released_after_consent: int = 0
    #: Of ``applied``: events of erased customers up to their erasure, left out.
    forgotten: int = 0
    erasures: int = 0
    cancellations: int = 0
    #: Sends of campaigns in approval mode, proposed to an operator instead.
    proposals: int = 0
    #: Send candidates not sent, by reason (capped, quiet, arbitration, holdout, ...).
    refused: dict[str, int] = field(default_factory=dict)
    #: Campaign statistics records published on ``campaign-stats``.
    campaign_reports: int = 0
    #: Dead letters by input topic, then by the contract field that broke (a bounded
    #: label: see :func:`schemas.validation.field_label`), so this never outgrows the contract.
    dead_letters_by_reason: dict[str, dict[str, int]] = field(default_factory=dict)

    def count_batch(self, *, applied: int, duplicates: int, dead_letters: int) -> None:
        """Add one batch's outcome; every event of the batch is in exactly one bucket."""
        self.events_in += applied + duplicates + dead_letters
        self.applied += applied
        self.duplicates += duplicates
        self.dead_letters += dead_letters

    def count_dead_letter(self, topic: str, label: str) -> None:
        """Count one dead letter of logical ``topic`` under its bounded field ``label``.

        >>> a = Accounting()
        >>> a.count_dead_letter("clicks", "other"); a.count_dead_letter("clicks", "other")
        >>> a.dead_letters_by_reason
        {'clicks': {'other': 2}}
        """
        by_field = self.dead_letters_by_reason.setdefault(topic, {})
        by_field[label] = by_field.get(label, 0) + 1

    @property
    def balanced(self) -> bool:
        """True when every consumed event is accounted for."""
        return self.events_in == self.applied + self.duplicates + self.dead_letters

    def as_dict(self) -> dict[str, object]:
        """The counts as plain data (for status output and the demo's JSON line)."""
        return asdict(self)


def first_occurrences(keys: Iterable[K], already_seen: set[K]) -> list[bool]:
    """For each key, True when it is new: not seen before and not earlier in ``keys``.

    >>> first_occurrences(["a", "b", "a", "c"], already_seen={"c"})
    [True, True, False, False]
    """
    seen = set(already_seen)
    flags = []
    for key in keys:
        flags.append(key not in seen)
        seen.add(key)
    return flags
