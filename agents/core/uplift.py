"""Measured effect: per-campaign statistics against a holdout group, and their uplift.

Every campaign send is an **exposure**; so is a send a customer in the
campaign's holdout group *would* have got (the engine runs every check, then
records it instead of sending).  Both are kept in the customer's interaction
history (``kind`` ``trigger`` or ``holdout``, dated at the send time, with the
campaign and content), which is how later reactions find them:

- a **click** within the attribution window after an exposure counts for it
  when it carries the trigger's id as ``decision_id``, the campaign's id, or
  the exposure's content (an organic click on that item counts in both
  groups alike); each exposure counts one click at most;
- an **order** within the window counts as a **conversion** of the latest
  exposure of each campaign (each exposure converts once) and adds its
  total to that exposure's **revenue** (every order counts).

Counts are kept per (campaign, variant, group), where the variant is the
content item sent; group is ``treated`` or ``holdout``.  The engine returns
:class:`CampaignCounts` changes for the caller to add to its counters; a cancelled
send (or the holdout exposure such a send would have been) is taken back by
a negative delta.  :func:`uplift` compares the groups per exposure: click
and conversion rates with Newcombe's hybrid score interval for a difference
of two proportions (Wilson score intervals combined), revenue per exposure
with a Welch normal interval.

>>> treated = CampaignCounts(sends=1000, clicks=120, conversions=30, revenue=900.0,
...                            revenue_sq=45000.0)
>>> holdout = CampaignCounts(sends=1000, clicks=80, conversions=25, revenue=700.0,
...                            revenue_sq=35000.0)
>>> u = uplift(treated, holdout, "clicks")
>>> u.rate_treated, u.rate_holdout, round(u.difference, 3), round(u.low, 4), round(u.high, 4)
(0.12, 0.08, 0.04, 0.0137, 0.0664)
>>> u.significant
True
>>> uplift(treated, holdout, "conversions").significant
False
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from statistics import NormalDist
from typing import Any

from agents.core.customer import Interaction
from schemas.records import Clicked, Purchased

GROUPS = ("treated", "holdout")
METRICS = ("clicks", "conversions", "revenue")
#: History kinds that are exposures, and the group of each.
EXPOSURES = {"trigger": "treated", "holdout": "holdout", "proposal": "treated"}


@dataclass(frozen=True)
class CampaignCounts:
    """Counters of one campaign, content variant and group: the one counter type.

    The same value is a change one event caused (the engine's
    :attr:`agents.core.engine.Effects.stats`, with the ``exposure`` it
    belongs to and its event time ``at``), a row the store adds changes up
    in (:meth:`streams.store.Store.add_campaign_stats`) and a total of a
    group (:func:`uplift`, keys left empty).  ``sends`` counts exposures (for
    the holdout, the sends it would have got); ``revenue_sq`` is the sum over
    exposures of each one's revenue squared, for the variance of revenue per
    exposure.  As a change any value may be negative.

    >>> CampaignCounts("spring", "n-1", "treated", sends=1).plus(
    ...     CampaignCounts(clicks=1, revenue=2.5)).as_tuple()
    ('spring', 'n-1', 'treated', 1, 1, 0, 2.5, 0.0)
    """

    campaign_id: str = ""
    #: The content item sent (or that would have been).
    variant: str = ""
    #: ``treated`` or ``holdout``.
    group: str = ""
    sends: int = 0
    clicks: int = 0
    conversions: int = 0
    revenue: float = 0.0
    #: Sum over exposures of (revenue of the exposure) squared.
    revenue_sq: float = 0.0
    #: As a change: the trigger id of the exposure it belongs to.
    exposure: str = ""
    #: As a change: its event time (a send's or exposure's own time is its send time).
    at: datetime | None = None

    def plus(self, other: CampaignCounts) -> CampaignCounts:
        """These counters with ``other``'s counted in (keys and change fields: these)."""
        return replace(self, sends=self.sends + other.sends, clicks=self.clicks + other.clicks,
                       conversions=self.conversions + other.conversions,
                       revenue=self.revenue + other.revenue,
                       revenue_sq=self.revenue_sq + other.revenue_sq)

    def as_tuple(self) -> tuple[str, str, str, int, int, int, float, float]:
        """Keys and counters, in the order of the store's ``campaign_stats`` row."""
        return (self.campaign_id, self.variant, self.group, self.sends, self.clicks,
                self.conversions, self.revenue, self.revenue_sq)


@dataclass(frozen=True)
class Uplift:
    """Treated minus holdout for one metric per exposure, with its interval.

    ``difference``, ``low`` and ``high`` are None while a group has no exposure.
    """

    metric: str
    rate_treated: float
    rate_holdout: float
    difference: float | None
    low: float | None
    high: float | None
    confidence: float
    exposures_treated: int
    exposures_holdout: int

    @property
    def significant(self) -> bool:
        """True when the interval lies wholly above or below zero."""
        return self.low is not None and self.high is not None and (
            self.low > 0 or self.high < 0)

    def as_dict(self) -> dict[str, Any]:
        """Plain, rounded values for JSON."""
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def uplift(treated: CampaignCounts, holdout: CampaignCounts, metric: str = "clicks",
           confidence: float = 0.95) -> Uplift:
    """Difference of ``metric`` per exposure between the groups, with a ``confidence`` interval.

    Clicks and conversions are proportions (each exposure counts once);
    their interval is Newcombe's hybrid score interval.  Revenue is a mean;
    its interval is Welch's normal interval.
    """
    if metric not in METRICS:
        raise ValueError(f"metric: {metric!r} is not one of {', '.join(METRICS)}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    n1, n2 = max(treated.sends, 0), max(holdout.sends, 0)
    if metric == "revenue":
        m1, v1 = _mean_var(treated.revenue, treated.revenue_sq, n1)
        m2, v2 = _mean_var(holdout.revenue, holdout.revenue_sq, n2)
        if not n1 or not n2:
            return Uplift(metric, m1, m2, None, None, None, confidence, n1, n2)
        d, se = m1 - m2, math.sqrt(v1 / n1 + v2 / n2)
        return Uplift(metric, m1, m2, d, d - z * se, d + z * se, confidence, n1, n2)
    x1 = min(max(getattr(treated, metric), 0), n1)
    x2 = min(max(getattr(holdout, metric), 0), n2)
    p1, p2 = (x1 / n1 if n1 else 0.0), (x2 / n2 if n2 else 0.0)
    if not n1 or not n2:
        return Uplift(metric, p1, p2, None, None, None, confidence, n1, n2)
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Uplift(metric, p1, p2, d, low, high, confidence, n1, n2)


def wilson(successes: int, trials: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion.

    >>> [round(b, 4) for b in wilson(8, 100, 1.959964)]
    [0.0411, 0.15]
    """
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _mean_var(total: float, squares: float, n: int) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 0.0
    mean = total / n
    var = max(squares - n * mean * mean, 0.0) / (n - 1) if n > 1 else 0.0
    return mean, var


class CampaignStats:
    """Counters per (campaign, variant, group), added up from :class:`CampaignCounts` changes."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, str, str], CampaignCounts] = {}

    def add(self, deltas: Iterable[CampaignCounts]) -> None:
        """Count every delta in."""
        for d in deltas:
            key = (d.campaign_id, d.variant, d.group)
            counters = self.counters.get(key)
            if counters is None:
                counters = CampaignCounts(*key)
            self.counters[key] = counters.plus(d)

    def totals(self, campaign_id: str, group: str) -> CampaignCounts:
        """One group's counters of a campaign, all variants together."""
        total = CampaignCounts(campaign_id, "", group)
        for (campaign, _, g), counters in self.counters.items():
            if campaign == campaign_id and g == group:
                total = total.plus(counters)
        return total

    def report(self, confidence: float = 0.95) -> dict[str, Any]:
        """Per campaign: both groups' totals, the uplift of each metric, per-variant counts."""
        result: dict[str, Any] = {}
        for campaign in sorted({key[0] for key in self.counters}):
            treated, holdout = (self.totals(campaign, g) for g in GROUPS)
            variants: dict[str, dict[str, Any]] = {}
            for (c, variant, group), counters in sorted(self.counters.items()):
                if c == campaign:
                    variants.setdefault(variant, {})[group] = _plain(counters)
            result[campaign] = {
                "treated": _plain(treated), "holdout": _plain(holdout),
                "uplift": {m: uplift(treated, holdout, m, confidence).as_dict()
                           for m in METRICS},
                "variants": variants,
            }
        return result


def _plain(counters: CampaignCounts) -> dict[str, Any]:
    return {"sends": counters.sends, "clicks": counters.clicks,
            "conversions": counters.conversions, "revenue": round(counters.revenue, 2)}


# --- attribution -------------------------------------------------------------------------


def exposure(entry: Interaction, sign: int = 1) -> CampaignCounts:
    """The send (or holdout exposure) recorded as ``entry``, counted (``sign`` -1: taken back)."""
    return CampaignCounts(entry.campaign_id or "", entry.content_id or "", EXPOSURES[entry.kind],
                          sends=sign, exposure=entry.event_id, at=entry.occurred_at)


def attribute(history: Sequence[Interaction], record: Clicked | Purchased,
              window: timedelta) -> list[CampaignCounts]:
    """What ``record`` adds to the campaigns whose exposures in ``history`` it follows.

    ``history`` is the customer's history before the record was applied.
    """
    at = record.occurred_at
    start = bisect_right(history, at - window, key=_occurred_at)
    end = bisect_right(history, at, key=_occurred_at)
    # Most events follow no exposure: find the few there are at C speed first.
    found = [i for i in range(start, end) if history[i].kind in EXPOSURES]
    if not found:
        return []
    latest: dict[str, tuple[int, Interaction]] = {}
    for i in found:
        entry = history[i]
        if entry.campaign_id and _follows(entry, record):
            latest[entry.campaign_id] = (i, entry)
    deltas = []
    for i, entry in latest.values():
        # What this exposure has counted already: the reactions between it and now.
        since = bisect_left(history, entry.occurred_at, lo=0, hi=i + 1, key=_occurred_at)
        earlier = [h for h in history[since:end] if h.event_id != record.event_id]
        group = EXPOSURES[entry.kind]
        base = CampaignCounts(entry.campaign_id or "", entry.content_id or "", group,
                              exposure=entry.event_id, at=at)
        if isinstance(record, Clicked):
            if not any(h.kind == "click" and _same_target(entry, h) for h in earlier):
                deltas.append(replace(base, clicks=1))
            continue
        before = sum(h.amount or 0.0 for h in earlier if h.kind == "purchase")
        first = not any(h.kind == "purchase" for h in earlier)
        total = record.total
        deltas.append(replace(base, conversions=int(first), revenue=total,
                              revenue_sq=(before + total) ** 2 - before ** 2))
    return deltas


def _follows(entry: Interaction, record: Clicked | Purchased) -> bool:
    """True when ``record`` is a reaction to the exposure ``entry``."""
    if record.decision_id is not None and record.decision_id == entry.event_id:
        return True
    if entry.kind == "proposal":
        return False  # whether it went out is not known here: only its own clicks count
    if isinstance(record, Purchased):
        return True
    return ((record.content_id is not None and record.content_id == entry.content_id)
            or (record.campaign_id is not None and record.campaign_id == entry.campaign_id))


def _same_target(entry: Interaction, click: Interaction) -> bool:
    return ((click.content_id is not None and click.content_id == entry.content_id)
            or (click.campaign_id is not None and click.campaign_id == entry.campaign_id))


def _occurred_at(entry: Interaction) -> datetime:
    return entry.occurred_at
