"""Candidates for a slot: which catalogue items may be shown, in which language variant.

An item qualifies for a decision when it is valid at the decision time
(``valid_from`` inclusive, ``valid_until`` exclusive), lists the channel and
lists the slot.  The variant follows the fallback chain: the customer's
language, then the campaign's default language, then the item's default;
the :class:`Candidate` names the step that gave it, so a decision can say
whether it fell back.

>>> from datetime import UTC, datetime
>>> from schemas.records import ContentVariant
>>> at = datetime(2026, 3, 1, tzinfo=UTC)
>>> item = ContentPublished(
...     event_id="e1", content_id="n-1", occurred_at=at, schema_version=1, topics=["golf"],
...     channels=["email"], slots=["newsletter-block"], default_language="de",
...     variants=[ContentVariant(language=lang, title="t", url="u") for lang in ("de", "en")])
>>> [(c.content_id, c.language, c.fallback)
...  for c in candidates([item], "email", "newsletter-block", at, "fr")]
[('n-1', 'de', 'catalogue')]
>>> candidates([item], "push", "newsletter-block", at, "fr")
[]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from agents.core.catalogue import CatalogueIndex
from schemas.records import ContentPublished

Fallback = Literal["campaign", "catalogue", "any"]


@dataclass(frozen=True)
class Candidate:
    """A catalogue item that may be shown, with the variant the customer would get.

    ``fallback`` says which step of the language chain gave the variant:
    None (the customer's own language), ``campaign`` (the campaign's
    default), ``catalogue`` (the item's default) or ``any`` (none of them
    exists; the first variant in language order).
    """

    content_id: str
    topics: tuple[str, ...]
    language: str
    fallback: Fallback | None = None
    campaign_id: str | None = None
    #: Recent clicks on the item relative to the most clicked candidate (0 to 1).
    popularity: float = 0.0


def variant(item: ContentPublished, language: str | None,
            campaign_language: str | None = None) -> tuple[str, Fallback | None]:
    """The variant language for a customer speaking ``language``, and the fallback step used.

    >>> from datetime import UTC, datetime
    >>> from schemas.records import ContentVariant
    >>> item = ContentPublished(
    ...     event_id="e1", content_id="n-1", occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    ...     schema_version=1, topics=["golf"], channels=["email"], slots=["newsletter-block"],
    ...     variants=[ContentVariant(language=lang, title="t", url="u") for lang in ("de", "en")],
    ...     default_language="de")
    >>> variant(item, "en"), variant(item, "fr", "en"), variant(item, "fr"), variant(item, None)
    (('en', None), ('en', 'campaign'), ('de', 'catalogue'), ('de', 'catalogue'))
    """
    languages = {v.language for v in item.variants}
    if language is not None and language in languages:
        return language, None
    if campaign_language is not None and campaign_language in languages:
        return campaign_language, "campaign"
    if item.default_language in languages:
        return item.default_language, "catalogue"
    return sorted(languages)[0], "any"


def is_valid(item: ContentPublished, at: datetime) -> bool:
    """True when ``item`` may be chosen at ``at`` (``valid_until`` is exclusive)."""
    return ((item.valid_from is None or item.valid_from <= at)
            and (item.valid_until is None or at < item.valid_until))


def candidates(catalogue: Iterable[ContentPublished] | CatalogueIndex, channel: str, slot: str,
               at: datetime, language: str | None,
               campaign_languages: Mapping[str, str] | None = None) -> list[Candidate]:
    """The items that may fill ``slot`` on ``channel`` at ``at``, by ``content_id``.

    An item qualifies when it is valid at ``at``, lists ``channel`` and lists
    ``slot``; each comes with its variant for ``language``
    (:func:`variant`; ``campaign_languages`` maps a campaign to its default).
    ``catalogue`` is any collection of items, or a :class:`CatalogueIndex`,
    of which only the items listing the channel and slot are read.
    """
    defaults = campaign_languages or {}
    found = []
    items = (catalogue.offered(channel, slot) if isinstance(catalogue, CatalogueIndex)
             else catalogue)
    for item in items:
        if channel not in item.channels or slot not in item.slots or not is_valid(item, at):
            continue
        campaign = defaults.get(item.campaign_id) if item.campaign_id else None
        lang, fallback = variant(item, language, campaign)
        found.append(Candidate(item.content_id, tuple(item.topics), lang, fallback,
                               item.campaign_id))
    found.sort(key=lambda c: c.content_id)
    return found
