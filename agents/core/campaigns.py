"""Campaign definitions: the campaign book and its TOML file.

A :class:`CampaignBook` is everything the engine follows when it contacts
customers: the :class:`Campaign` list, contact caps per channel across all
campaigns, quiet hours, the arbitration window, how long proposals wait for
an operator, the attribution window of the statistics, and the parameters of
the trigger rules (:mod:`agents.core.triggers`).  :data:`DEFAULT_BOOK` is used
when no file is configured; ``deploy/campaigns.toml`` is the same book as a
commented file (a test keeps the two equal), and the README describes every
key.

:func:`parse_campaigns` reads a book from TOML text (``streams.campaign_file``
reads the file) and checks it with the one validator of configuration files
(:mod:`agents.core.config_file`).  Every problem raises
:class:`CampaignFileError` (that validator's error) with one line naming the
file, the campaign and the key; unknown keys are refused, so a typo never
passes silently.

>>> book = parse_campaigns('''
... [[campaigns]]
... id = "spring"
... trigger = "tag_assigned"
... channels = ["email"]
... caps = [{ max = 1, per = "7x" }]
... ''', "campaigns.toml")
Traceback (most recent call last):
...
agents.core.config_file.ConfigFileError: campaigns.toml: campaign 'spring': caps[0]:
"per" must be a duration like "7d" or "12h", got '7x'
>>> DEFAULT_BOOK.campaign("interest-follow-up").channels
('email', 'push', 'sms')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from functools import cached_property
from typing import Any

from agents.core import config_file as check
from agents.core.config_file import ConfigFileError
from agents.core.customer import CustomerState

#: What can start a campaign's send (see :mod:`agents.core.triggers`).
TRIGGERS = ("tag_assigned", "browse_abandonment", "cross_sell", "win_back")
#: What a campaign is judged on first (its statistics report all three).
GOALS = ("clicks", "conversions", "revenue")
#: Channels a campaign may send on (those of :data:`schemas.records.CHANNELS`).
CHANNELS = ("email", "push", "sms", "web", "app")
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_LONGEST = timedelta(days=3650)


#: A campaign file is not usable; the message names the file, campaign and key (one
#: error for both configuration files: see :mod:`agents.core.config_file`).
CampaignFileError = ConfigFileError


@dataclass(frozen=True)
class Cap:
    """At most ``max`` sends within any ``per`` (on ``channel``; None: on any channel)."""

    channel: str | None
    max: int
    per: timedelta

    def describe(self) -> str:
        """``email 2 per 7d``: the cap in words."""
        return f"{self.channel or 'any channel'} {self.max} per {format_duration(self.per)}"


@dataclass(frozen=True)
class QuietHours:
    """Local times of day when nothing is sent: from ``start`` up to ``end``.

    ``start`` after ``end`` wraps midnight (21:00-08:00).

    >>> night = QuietHours(time(21), time(8))
    >>> night.covers(time(23, 30)), night.covers(time(7, 59)), night.covers(time(8))
    (True, True, False)
    """

    start: time
    end: time

    def covers(self, moment: time) -> bool:
        """True when the local time ``moment`` is quiet."""
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def describe(self) -> str:
        """``21:00-08:00``."""
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True)
class AudienceRule:
    """Who a campaign may contact; every condition set must hold (empty: anyone).

    Tags are the customer's currently assigned interest tags; countries,
    languages and attributes come from CRM master data (a customer without
    master data fails any condition on it); orders count the customer's
    purchases.

    >>> from datetime import UTC, datetime
    >>> from agents.core.customer import AssignedTag
    >>> at = datetime(2026, 3, 1, tzinfo=UTC)
    >>> golfer = CustomerState("c-1", tags={"golf-fans": AssignedTag("golf", at, "e1")})
    >>> AudienceRule(tags_any=frozenset({"golf-fans"})).refusal(golfer) is None
    True
    >>> AudienceRule(min_orders=1).refusal(golfer)
    'orders 0 below min_orders 1'
    """

    tags_any: frozenset[str] = frozenset()
    tags_all: frozenset[str] = frozenset()
    countries: frozenset[str] = frozenset()
    languages: frozenset[str] = frozenset()
    min_orders: int | None = None
    max_orders: int | None = None
    #: CRM attributes that must have exactly these values.
    attributes: Mapping[str, str] = field(default_factory=dict)

    def refusal(self, state: CustomerState) -> str | None:
        """Why ``state`` is outside the audience, or None when it is inside."""
        tags = state.tags
        if self.tags_any and not self.tags_any & tags.keys():
            return f"no tag of {', '.join(sorted(self.tags_any))}"
        missing = sorted(self.tags_all - tags.keys())
        if missing:
            return f"tag {missing[0]} missing"
        master = state.master
        if self.countries and (master is None or master.country not in self.countries):
            return f"country {master.country if master else None} not in audience"
        if self.languages and (master is None or master.language not in self.languages):
            return f"language {master.language if master else None} not in audience"
        orders = state.purchases.orders
        if self.min_orders is not None and orders < self.min_orders:
            return f"orders {orders} below min_orders {self.min_orders}"
        if self.max_orders is not None and orders > self.max_orders:
            return f"orders {orders} above max_orders {self.max_orders}"
        for key, value in sorted(self.attributes.items()):
            have = master.attributes.get(key) if master else None
            if have != value:
                return f"attribute {key} is {have!r}, not {value!r}"
        return None


@dataclass(frozen=True)
class Campaign:
    """One campaign: when it may contact whom, how, with what, and how it is measured."""

    campaign_id: str
    trigger: str
    #: Tried in order; the first the customer allows and no cap blocks is used.
    channels: tuple[str, ...]
    goal: str = "clicks"
    description: str = ""
    #: Higher wins arbitration; the candidate's strength, then campaign id and key break ties.
    priority: int = 0
    #: Catalogue items the campaign may send (empty: any item on the trigger's topic).
    content: tuple[str, ...] = ()
    #: Topics whose triggers the campaign takes (empty: all).
    topics: tuple[str, ...] = ()
    audience: AudienceRule = AudienceRule()
    #: This campaign's own caps, counted over its sends only.
    caps: tuple[Cap, ...] = ()
    #: Share of customers (0 to 0.5) who never get this campaign's sends, for uplift.
    holdout_share: float = 0.0
    #: Sends become proposals that an operator approves.
    approval: bool = False
    #: From the trigger to the earliest send time (None: the trigger rule's own).
    delay: timedelta | None = None
    starts: datetime | None = None
    ends: datetime | None = None

    def runs_at(self, at: datetime) -> bool:
        """True when ``at`` lies within the campaign's schedule."""
        return (self.starts is None or self.starts <= at) and (self.ends is None or at < self.ends)


@dataclass(frozen=True)
class TriggerParameters:
    """Thresholds of the trigger rules (see :mod:`agents.core.triggers`)."""

    #: Browse abandonment: clicks on one topic within ``browse_window``, no order since ...
    browse_clicks: int = 3
    browse_window: timedelta = timedelta(days=2)
    #: ... and the send this long after the last of them, withdrawn if an order comes first.
    browse_wait: timedelta = timedelta(hours=24)
    #: Win-back: churn risk from which a customer is won back.
    win_back_churn: float = 0.7
    #: Cross-sell: orders in which both products were bought, at least.
    cross_sell_support: int = 3
    #: Cross-sell: from the order to the send, unless the campaign sets ``delay``.
    cross_sell_delay: timedelta = timedelta(days=2)


@dataclass(frozen=True)
class CampaignBook:
    """Every campaign and the rules across them."""

    campaigns: tuple[Campaign, ...] = ()
    #: Contact caps per channel across all campaigns.
    caps: tuple[Cap, ...] = ()
    #: In the customer's time zone (None: none); nights are quiet unless a book says not.
    quiet_hours: QuietHours | None = QuietHours(time(21), time(8))
    #: At most one send per customer within this much of another (0: off).
    arbitration_window: timedelta = timedelta(hours=24)
    #: How long a proposal waits for an operator (never past its send time).
    proposal_ttl: timedelta = timedelta(hours=24)
    #: How long after a send a click or order counts for its campaign.
    attribution_window: timedelta = timedelta(hours=24)
    triggers: TriggerParameters = TriggerParameters()

    def campaign(self, campaign_id: str) -> Campaign:
        """The campaign with ``campaign_id`` (KeyError when there is none)."""
        for campaign in self.campaigns:
            if campaign.campaign_id == campaign_id:
                return campaign
        raise KeyError(campaign_id)

    def with_trigger(self, trigger: str) -> tuple[Campaign, ...]:
        """The campaigns started by ``trigger``, in file order."""
        return self._by_trigger.get(trigger, ())

    @cached_property
    def _by_trigger(self) -> dict[str, tuple[Campaign, ...]]:
        # Asked several times per event: grouped once per book (a book never changes).
        grouped: dict[str, list[Campaign]] = {}
        for campaign in self.campaigns:
            grouped.setdefault(campaign.trigger, []).append(campaign)
        return {trigger: tuple(campaigns) for trigger, campaigns in grouped.items()}

    @property
    def retention(self) -> timedelta:
        """How long past sends stay in the contact log: the longest cap or window."""
        periods = [cap.per for cap in self.caps]
        periods += [cap.per for c in self.campaigns for cap in c.caps]
        return max([self.arbitration_window, self.attribution_window, *periods])


def format_duration(span: timedelta) -> str:
    """``7d``, ``12h``, ``1d12h``, ``30m``: the file's notation for ``span``.

    >>> format_duration(timedelta(days=1, hours=12)), format_duration(timedelta(0))
    ('1d12h', '0s')
    """
    seconds = int(span.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


# --- the file -------------------------------------------------------------------------

_BOOK_KEYS = ("quiet_hours", "arbitration_window", "proposal_ttl", "attribution_window",
              "caps", "triggers", "campaigns")
_TRIGGER_KEYS = {"browse_abandonment": ("min_clicks", "window", "wait"),
                 "win_back": ("churn_risk",), "cross_sell": ("min_support", "delay")}
_CAMPAIGN_KEYS = ("id", "description", "goal", "trigger", "channels", "content", "topics",
                  "priority", "audience", "caps", "holdout_share", "approval", "delay",
                  "starts", "ends")
_AUDIENCE_KEYS = ("tags_any", "tags_all", "countries", "languages", "min_orders",
                  "max_orders", "attributes")
_CAP_KEYS = ("channel", "max", "per")


def parse_campaigns(text: str, source: str = "campaigns file") -> CampaignBook:
    """The book in TOML ``text``; ``source`` names the file in error messages."""
    doc = check.load_toml(text, source)
    check.known(doc, _BOOK_KEYS, source)
    default = CampaignBook()
    quiet = doc.get("quiet_hours", default.quiet_hours)
    triggers = check.table(doc.get("triggers", {}), "triggers", source)
    check.known(triggers, tuple(_TRIGGER_KEYS), f"{source}: triggers")
    book = CampaignBook(
        caps=tuple(_cap(c, f"caps[{i}]", source, need_channel=True)
                   for i, c in enumerate(check.tables(doc.get("caps", []), "caps", source))),
        quiet_hours=_quiet(quiet, source),
        arbitration_window=_duration(doc, "arbitration_window", default.arbitration_window,
                                     source, zero=True),
        proposal_ttl=_duration(doc, "proposal_ttl", default.proposal_ttl, source),
        attribution_window=_duration(doc, "attribution_window", default.attribution_window,
                                     source),
        triggers=_trigger_parameters(triggers, source),
    )
    channels = [cap.channel for cap in book.caps]
    if len(set(channels)) != len(channels):
        raise CampaignFileError(f"{source}: caps: more than one cap for a channel; "
                                "give each channel one cap")
    campaigns: list[Campaign] = []
    for i, entry in enumerate(check.tables(doc.get("campaigns", []), "campaigns", source)):
        campaign = _campaign(entry, i, source)
        if any(c.campaign_id == campaign.campaign_id for c in campaigns):
            raise CampaignFileError(
                f"{source}: campaign '{campaign.campaign_id}': id is defined twice")
        campaigns.append(campaign)
    return CampaignBook(tuple(campaigns), book.caps, book.quiet_hours, book.arbitration_window,
                        book.proposal_ttl, book.attribution_window, book.triggers)


def _trigger_parameters(table: dict[str, Any], source: str) -> TriggerParameters:
    d = TriggerParameters()
    browse = check.table(table.get("browse_abandonment", {}), "browse_abandonment",
                    f"{source}: triggers")
    win_back = check.table(table.get("win_back", {}), "win_back", f"{source}: triggers")
    cross = check.table(table.get("cross_sell", {}), "cross_sell", f"{source}: triggers")
    for name, sub in (("browse_abandonment", browse), ("win_back", win_back),
                      ("cross_sell", cross)):
        check.known(sub, _TRIGGER_KEYS[name], f"{source}: triggers.{name}")
    where = f"{source}: triggers.browse_abandonment"
    churn = check.number(win_back.get("churn_risk", d.win_back_churn), "churn_risk",
                         f"{source}: triggers.win_back", 0.0, 1.0, above=True)
    return TriggerParameters(
        browse_clicks=check.whole(browse.get("min_clicks", d.browse_clicks), "min_clicks",
                                  where, 1, 20),
        browse_window=_duration(browse, "window", d.browse_window, where),
        browse_wait=_duration(browse, "wait", d.browse_wait, where, zero=True),
        win_back_churn=churn,
        cross_sell_support=check.whole(cross.get("min_support", d.cross_sell_support),
                                       "min_support", f"{source}: triggers.cross_sell", 1,
                                       10**9),
        cross_sell_delay=_duration(cross, "delay", d.cross_sell_delay,
                                   f"{source}: triggers.cross_sell", zero=True),
    )


def _campaign(entry: dict[str, Any], number: int, source: str) -> Campaign:
    cid = check.name(entry.get("id"), "id", f"{source}: campaigns[{number}]")
    where = f"{source}: campaign '{cid}'"
    check.known(entry, _CAMPAIGN_KEYS, where)
    trigger = entry.get("trigger")
    if trigger not in TRIGGERS:
        raise CampaignFileError(
            f"{where}: trigger must be one of {', '.join(TRIGGERS)}, got {trigger!r}")
    goal = entry.get("goal", "clicks")
    if goal not in GOALS:
        raise CampaignFileError(f"{where}: goal must be one of {', '.join(GOALS)}, got {goal!r}")
    channels = check.strings(entry.get("channels"), "channels", where, choices=CHANNELS)
    if not channels:
        raise CampaignFileError(f"{where}: channels must name at least one channel")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise CampaignFileError(f"{where}: description must be a string, got {description!r}")
    priority = check.whole(entry.get("priority", 0), "priority", where, -1000, 1000)
    share = check.number(entry.get("holdout_share", 0.0), "holdout_share", where, 0.0, 0.5)
    approval = entry.get("approval", False)
    if not isinstance(approval, bool):
        raise CampaignFileError(f"{where}: approval must be true or false, got {approval!r}")
    starts, ends = (_moment(entry.get(key), key, where) for key in ("starts", "ends"))
    if starts is not None and ends is not None and ends <= starts:
        raise CampaignFileError(f"{where}: ends must be after starts")
    caps = tuple(_cap(c, f"caps[{i}]", where, need_channel=False)
                 for i, c in enumerate(check.tables(entry.get("caps", []), "caps", where)))
    return Campaign(
        campaign_id=cid, trigger=trigger, channels=tuple(channels), goal=goal,
        description=description, priority=priority,
        content=tuple(check.strings(entry.get("content", []), "content", where)),
        topics=tuple(check.strings(entry.get("topics", []), "topics", where)),
        audience=_audience(check.table(entry.get("audience", {}), "audience", where), where),
        caps=caps, holdout_share=share, approval=approval,
        delay=_duration(entry, "delay", None, where, zero=True) if "delay" in entry else None,
        starts=starts, ends=ends)


def _audience(table: dict[str, Any], where: str) -> AudienceRule:
    where = f"{where}: audience"
    check.known(table, _AUDIENCE_KEYS, where)
    attributes = check.table(table.get("attributes", {}), "attributes", where)
    for key, value in attributes.items():
        if not isinstance(value, str):
            raise CampaignFileError(
                f"{where}: attributes.{key} must be a string, got {value!r}")
    bounds = {key: (None if key not in table else
                    check.whole(table[key], key, where, 0, 10**9))
              for key in ("min_orders", "max_orders")}
    low, high = bounds["min_orders"], bounds["max_orders"]
    if low is not None and high is not None and high < low:
        raise CampaignFileError(f"{where}: max_orders must be at least min_orders")
    return AudienceRule(
        **{key: frozenset(check.strings(table.get(key, []), key, where))
           for key in ("tags_any", "tags_all", "countries", "languages")},
        min_orders=low, max_orders=high, attributes=dict(attributes))


def _cap(table: dict[str, Any], name: str, where: str, *, need_channel: bool) -> Cap:
    check.known(table, _CAP_KEYS, f"{where}: {name}")
    channel = table.get("channel")
    if channel is None and need_channel:
        raise CampaignFileError(f"{where}: {name}: \"channel\" is missing; a contact cap "
                                "across campaigns is per channel")
    if channel is not None and channel not in CHANNELS:
        raise CampaignFileError(f"{where}: {name}: \"channel\" must be one of "
                                f"{', '.join(CHANNELS)}, got {channel!r}")
    if "max" not in table:
        raise CampaignFileError(f"{where}: {name}: \"max\" is missing")
    count = check.whole(table["max"], f"{name}: \"max\"", where, 1, 10_000)
    if "per" not in table:
        raise CampaignFileError(f"{where}: {name}: \"per\" is missing")
    return Cap(channel, count, _span(table["per"], f"{name}: \"per\"", where, zero=False))


def _quiet(value: object, source: str) -> QuietHours | None:
    if isinstance(value, QuietHours):  # the key is absent: the default
        return value
    if value == "":
        return None
    text = value if isinstance(value, str) else ""
    start, _, end = text.partition("-")
    clocks = [_CLOCK.match(part.strip()) for part in (start, end)]
    if not all(clocks):
        raise CampaignFileError(f"{source}: quiet_hours must be local times like "
                                f"\"21:00-08:00\" (or \"\" for none), got {value!r}")
    a, b = (time(int(m.group(1)), int(m.group(2))) for m in clocks if m)
    if a == b:
        raise CampaignFileError(f"{source}: quiet_hours: start and end are equal; "
                                "use \"\" for no quiet hours")
    return QuietHours(a, b)


def _duration(table: dict[str, Any], key: str, default: timedelta | None, where: str,
              *, zero: bool = False) -> Any:
    if key not in table:
        return default
    return _span(table[key], key, where, zero=zero)


def _span(value: object, key: str, where: str, *, zero: bool) -> timedelta:
    match = _DURATION.match(value) if isinstance(value, str) and value else None
    if match is None:
        raise CampaignFileError(
            f"{where}: {key} must be a duration like \"7d\" or \"12h\", got {value!r}")
    d, h, m, s = (int(g or 0) for g in match.groups())
    span = timedelta(days=d, hours=h, minutes=m, seconds=s)
    if not zero and span <= timedelta(0):
        raise CampaignFileError(f"{where}: {key} must be above 0, got {value!r}")
    if span > _LONGEST:
        raise CampaignFileError(f"{where}: {key} must be at most 3650d, got {value!r}")
    return span


def _moment(value: object, key: str, where: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise CampaignFileError(f"{where}: {key} must be a date and time with an offset, "
                                f"like 2026-03-01T00:00:00+01:00, got {value!r}")
    return value







# --- the built-in book ----------------------------------------------------------------

_DAY = timedelta(days=1)

#: The book used when no campaign file is configured (``deploy/campaigns.toml`` is
#: the same book, commented).
DEFAULT_BOOK = CampaignBook(
    campaigns=(
        Campaign("interest-follow-up", "tag_assigned", ("email", "push", "sms"),
                 goal="clicks", priority=100, holdout_share=0.1,
                 description="Content on the topic of a newly assigned interest tag."),
        Campaign("browse-abandonment", "browse_abandonment", ("email", "push"),
                 goal="conversions", priority=80, holdout_share=0.1,
                 caps=(Cap(None, 1, 7 * _DAY),),
                 description="Browsed a topic repeatedly and bought nothing: a reminder."),
        Campaign("cross-sell", "cross_sell", ("email",), goal="revenue", priority=60,
                 holdout_share=0.1, caps=(Cap(None, 1, 14 * _DAY),),
                 description="After an order: what customers who bought it also bought."),
        Campaign("win-back", "win_back", ("email", "push"), goal="conversions", priority=40,
                 holdout_share=0.2, caps=(Cap(None, 1, 30 * _DAY),),
                 audience=AudienceRule(min_orders=1),
                 description="A customer likely to leave: their favourite topic."),
    ),
    caps=(Cap("email", 2, 7 * _DAY), Cap("push", 3, 7 * _DAY), Cap("sms", 1, 7 * _DAY)),
    quiet_hours=QuietHours(time(21), time(8)),
)
