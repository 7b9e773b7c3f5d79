"""Arbitration: which send candidate goes out, on which channel, when — or why not.

For every :class:`~agents.core.triggers.SendCandidate`, :func:`plan` walks the
checks in order and returns a :class:`Plan` or the :class:`Refusal` of the
first check that failed:

1. ``schedule``: the campaign runs at the candidate's time;
2. ``audience``: the customer is in the campaign's audience;
3. ``duplicate``: no send with the same idempotency key is in the contact log;
4. ``full``: the contact log has room;
5. the send time: the earliest time, moved to the customer's best send
   hour when known, then out of quiet hours in the customer's time zone
   (``quiet`` when that leaves the campaign's schedule, ``stale`` when the
   customer's events have passed it);
   ``purchased``: a browse-abandonment reminder whose customer ordered
   between the click and the send (an order read after the click withdraws
   the reminder; one read before it, though later in event time, refuses it
   here, so both read orders end with no reminder);
6. ``arbitration``: no other send within the arbitration window;
7. per channel, in the campaign's order: consent for the channel
   (``consent``), the caps (``capped``: the channel's cap across campaigns
   and the campaign's own), an item for it (``content``).  The first
   channel that passes is planned; a refusal names the furthest check any
   channel reached.

Caps hold in *every* sliding window: a send at ``t`` is allowed when fewer
than ``max`` sends lie strictly within ``per`` of ``t``, on either side, so
no window of length ``per`` ever holds more than ``max``.  The same check
with the arbitration window keeps sends at least that far apart.

The **contact log** is the customer's ``pending`` list: sends not yet due
(which a revocation cancels) and past sends kept for
:attr:`~agents.core.campaigns.CampaignBook.retention` after the customer's
latest event, so caps count them.  A candidate of a customer in the
campaign's **holdout** (:func:`in_holdout`) is checked against that log plus
the customer's earlier holdout exposures, so both groups are rate-limited
alike.

:func:`rank` orders plans by priority, then the candidate's strength, then
campaign id and key; the engine sends the first that is neither paused nor
held out and refuses the rest as ``arbitration``.  The learned policy picks
the content of the plans that go out (sent, held out or paused), after the
ranking, and does not decide between plans: its scores depend on
what the shared model had learnt from everyone else by then, so ranking by
them would let a replay (which has no live model) rebuild a different
contact log than the sends that went out live (another topic's follow-up,
on another channel, under another idempotency key), and a worker restarted
after a crash (from the model's last snapshot) end with another projection
than an uninterrupted run.  The candidate's strength is its own
expected value; the expected value with the content (score times strength)
is reported with each decision.

>>> from datetime import UTC, datetime, time
>>> from agents.core.campaigns import QuietHours
>>> at = datetime(2026, 3, 2, 21, 30, tzinfo=UTC)  # 22:30 in Berlin
>>> when, reasons = send_time(at, "Europe/Berlin", QuietHours(time(21), time(8)), None)
>>> when.isoformat(), reasons
('2026-03-03T07:00:00+00:00', ['quiet hours 21:00-08:00 Europe/Berlin: moved to 08:00'])
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agents.core.campaigns import Campaign, CampaignBook, QuietHours, format_duration
from agents.core.consent import ConsentPolicy
from agents.core.customer import CustomerState
from agents.core.triggers import SendCandidate, ordered_between

#: Every reason a candidate can be refused for, in the order of the checks.
REFUSALS = ("schedule", "audience", "duplicate", "full", "quiet", "stale", "purchased",
            "arbitration", "consent", "capped", "content", "paused", "holdout")
_TICK = timedelta(microseconds=1)
#: Most sends not yet due per customer: a send the engine could not cancel must not go out.
PENDING_MAX = 50
#: Most entries of a customer's contact log, due or not.
CONTACT_LOG_MAX = 200


@dataclass(frozen=True)
class Refusal:
    """A candidate that is not sent, and why (``reason`` is one of :data:`REFUSALS`)."""

    campaign_id: str
    key: str
    reason: str
    detail: str


@dataclass(frozen=True)
class Contact:
    """One entry of the contact log as the checks see it."""

    send_at: datetime
    channel: str
    campaign_id: str
    idempotency_key: str


@dataclass(frozen=True)
class Plan:
    """A candidate that passed every check: its channel, the items it may send, its time.

    Which of the items goes out is the content policy's choice, asked only for
    the plans that win (or are recorded as holdout or paused): see the module doc.
    """

    candidate: SendCandidate
    channel: str
    #: The items the candidate may send on the channel (never empty).
    items: Sequence[Any] = field(compare=False, repr=False)
    send_at: datetime
    #: The customer is in the campaign's holdout: an exposure, never a send.
    holdout: bool
    #: The rules and caps it passed, in words.
    reasons: tuple[str, ...]

    @property
    def campaign(self) -> Campaign:
        """The candidate's campaign."""
        return self.candidate.campaign


#: The items a candidate may send on a channel (empty when none fits).
FindContent = Callable[[SendCandidate, str], Sequence[Any]]


def trigger_id(customer_id: str, campaign_id: str, key: str, channel: str) -> str:
    """The id of the trigger (and of its decision) for a candidate on ``channel``."""
    return f"{customer_id}:{campaign_id}:{key}:{channel}"


def idempotency_key(customer_id: str, campaign_id: str, key: str) -> str:
    """Campaign, customer and the rule's key: the same whatever the channel, and on replay."""
    return f"{campaign_id}:{customer_id}:{key}"


@lru_cache(maxsize=1 << 16)
def in_holdout(campaign_id: str, customer_id: str, share: float) -> bool:
    """True when the customer is in the campaign's holdout group of size ``share``.

    A keyed hash of the customer id with the campaign id as key: stable,
    independent between campaigns, the same on every worker.

    >>> in_holdout("spring", "c-1", 0.0), in_holdout("spring", "c-1", 1.0)
    (False, True)
    """
    if share <= 0.0:
        return False
    digest = hashlib.blake2b(customer_id.encode(), digest_size=8,
                             key=f"campaign:{campaign_id}".encode()[:64]).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < share


def contact_log(state: CustomerState, *, holdout: bool = False) -> list[Contact]:
    """The customer's contact log; with ``holdout``, their holdout exposures too."""
    log = [Contact(p.send_at, p.channel, p.campaign_id, p.idempotency_key)
           for p in state.pending]
    if holdout:
        cid = state.customer_id
        for entry in state.history:
            if entry.kind == "holdout" and entry.campaign_id:
                prefix = f"{cid}:{entry.campaign_id}:"
                key, _, channel = entry.event_id.removeprefix(prefix).rpartition(":")
                log.append(Contact(entry.occurred_at, channel, entry.campaign_id,
                                   idempotency_key(cid, entry.campaign_id, key)))
    return log


def plan(candidate: SendCandidate, state: CustomerState, book: CampaignBook,
         consent: ConsentPolicy, find: FindContent, *, latest: datetime,
         best_hour: int | None = None) -> Plan | Refusal:
    """The plan for ``candidate``, or why it is refused (see the module doc).

    ``latest`` is the customer's latest event time: nothing is planned
    before it.
    """
    campaign, cid = candidate.campaign, state.customer_id

    def refused(reason: str, detail: str) -> Refusal:
        return Refusal(campaign.campaign_id, candidate.key, reason, detail)

    if not campaign.runs_at(candidate.at):
        return refused("schedule", f"campaign does not run at {candidate.at.isoformat()}")
    outside = campaign.audience.refusal(state)
    if outside is not None:
        return refused("audience", outside)
    holdout = in_holdout(campaign.campaign_id, cid, campaign.holdout_share)
    log = contact_log(state, holdout=holdout)
    key = idempotency_key(cid, campaign.campaign_id, candidate.key)
    if any(c.idempotency_key == key for c in log):
        return refused("duplicate", f"{key} was sent already")
    if (sum(1 for c in log if c.send_at > latest) >= PENDING_MAX
            or len(log) >= CONTACT_LOG_MAX):
        return refused("full", "the contact log is full")
    time_zone = state.master.time_zone if state.master is not None else None
    send_at, reasons = send_time(candidate.earliest, time_zone, book.quiet_hours, best_hour)
    if not campaign.runs_at(send_at):
        moved = any(r.startswith("quiet hours") for r in reasons)
        return refused("quiet" if moved else "schedule",
                       f"send time {send_at.isoformat()} is after the campaign ends")
    if send_at < latest:
        return refused("stale", f"send time {send_at.isoformat()} passed by the "
                                f"customer's latest event {latest.isoformat()}")
    if campaign.trigger == "browse_abandonment" and ordered_between(
            state.history, candidate.at - _TICK, send_at - _TICK):
        return refused("purchased", "an order between the click and the send withdraws it")
    clash = _arbitrated(log, send_at, book.arbitration_window, reasons)
    if clash is not None:
        return refused("arbitration", clash)
    furthest = refused("consent", "no consent for " + ", ".join(campaign.channels))
    for channel in campaign.channels:
        if not consent.may_send(state, channel, candidate.at):
            continue
        # Caps before content; the content itself is chosen only for a plan that wins.
        blocked, passed = check_caps(log, channel, campaign, send_at, book)
        if blocked is not None:
            furthest = _further(furthest, refused("capped", blocked))
            continue
        items = find(candidate, channel)
        if not items:
            furthest = _further(furthest, refused("content", f"no item for {channel}"))
            continue
        return Plan(candidate, channel, items, send_at, holdout,
                    (f"audience of {campaign.campaign_id}: passed", *reasons, *passed))
    return furthest


def _arbitrated(log: Sequence[Contact], send_at: datetime, window: timedelta,
                reasons: list[str]) -> str | None:
    """Why another send within ``window`` of ``send_at`` refuses this one (None: none
    does, and ``reasons`` says so)."""
    near = [c for c in log if abs(c.send_at - send_at) < window]
    if near:
        return (f"{near[0].campaign_id} sends at {near[0].send_at.isoformat()}, within "
                f"{format_duration(window)}")
    if window:
        reasons.append(f"arbitration: no other send within {format_duration(window)}")
    return None


def check_caps(log: Sequence[Contact], channel: str, campaign: Campaign, send_at: datetime,
               book: CampaignBook) -> tuple[str | None, list[str]]:
    """The cap a send on ``channel`` at ``send_at`` would break (None), and those it passes."""
    passed: list[str] = []
    for cap in book.caps:
        if cap.channel != channel:
            continue
        used = sum(1 for c in log if c.channel == channel and abs(c.send_at - send_at) < cap.per)
        if used >= cap.max:
            return f"cap {cap.describe()}: {used} already", passed
        passed.append(f"cap {channel} {used}/{cap.max} per {format_duration(cap.per)} passed")
    if not passed:
        passed.append(f"no contact cap on {channel}")
    for cap in campaign.caps:
        if cap.channel is not None and cap.channel != channel:
            continue
        used = sum(1 for c in log if c.campaign_id == campaign.campaign_id
                   and (cap.channel is None or c.channel == cap.channel)
                   and abs(c.send_at - send_at) < cap.per)
        if used >= cap.max:
            return f"campaign cap {cap.describe()}: {used} already", passed
        passed.append(f"campaign cap {used}/{cap.max} per {format_duration(cap.per)} passed")
    return None, passed


def rank(plans: Sequence[Plan]) -> list[Plan]:
    """Plans best first: priority, then strength, then campaign id and key (see the module doc)."""
    return sorted(plans, key=lambda p: (-p.campaign.priority, -p.candidate.strength,
                                        p.campaign.campaign_id, p.candidate.key))


def send_time(earliest: datetime, time_zone: str | None, quiet: QuietHours | None,
              best_hour: int | None) -> tuple[datetime, list[str]]:
    """When to send from ``earliest`` on: at the best hour, never in quiet hours (UTC).

    The best hour is the next full local hour ``best_hour`` within a day of
    ``earliest``, unless quiet hours cover it.  Reasons say what moved the time.

    >>> at = datetime(2026, 3, 2, 9, 10, tzinfo=UTC)
    >>> send_time(at, "Europe/Berlin", None, 19)
    (datetime.datetime(2026, 3, 2, 18, 0, tzinfo=datetime.timezone.utc),
     ['best send hour 19:00 Europe/Berlin'])
    """
    zone = _zone(time_zone)
    name = str(zone)
    reasons: list[str] = []
    when = earliest.astimezone(UTC)
    if best_hour is not None:
        local = when.astimezone(zone)
        best = local.replace(hour=best_hour, minute=0, second=0, microsecond=0)
        if best < local:
            best += timedelta(days=1)
        if quiet is not None and quiet.covers(_clock(best)):
            reasons.append(f"best send hour {best_hour:02d}:00 is in quiet hours: not used")
        else:
            when = max(best.astimezone(UTC), when)
            reasons.append(f"best send hour {best_hour:02d}:00 {name}")
    if quiet is not None and quiet.covers(_clock(when.astimezone(zone))):
        when = leave_quiet_hours(when, zone, quiet)
        reasons.append(f"quiet hours {quiet.describe()} {name}: moved to "
                       f"{when.astimezone(zone):%H:%M}")
    return when, reasons


def leave_quiet_hours(when: datetime, zone: ZoneInfo, quiet: QuietHours) -> datetime:
    """The first moment from ``when`` on that quiet hours do not cover (UTC)."""
    local = when.astimezone(zone)
    day = local.date()
    if quiet.start > quiet.end and _clock(local) >= quiet.start:
        day += timedelta(days=1)  # the night has just begun: it ends tomorrow
    end = datetime.combine(day, quiet.end, tzinfo=zone).astimezone(UTC)
    end = max(end, when)
    for _ in range(48):  # a quiet end inside a DST gap lands an hour off; step out
        if not quiet.covers(_clock(end.astimezone(zone))):
            return end
        end += timedelta(hours=1)
    return end


def _clock(moment: datetime) -> time:
    """The time of day of ``moment`` (its wall clock, as given)."""
    return time(moment.hour, moment.minute, moment.second, moment.microsecond)


def _zone(name: str | None) -> ZoneInfo:
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo("UTC")


def _further(a: Refusal, b: Refusal) -> Refusal:
    """The refusal from the later check."""
    return b if REFUSALS.index(b.reason) >= REFUSALS.index(a.reason) else a
