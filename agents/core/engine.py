"""One customer event through the consent gate: state change and the messages it causes.

:func:`handle` is the single path by which the engine turns a customer event
into output.  It applies the event with :func:`agents.core.profile.apply_event`
only where consent allows, carries out what a revocation undoes
(:mod:`agents.core.consent`), and lets the campaigns of the
:class:`~agents.core.campaigns.CampaignBook` in :attr:`EngineRules.book`
contact the customer: the trigger rules (:mod:`agents.core.triggers`) find
send candidates, arbitration (:mod:`agents.core.arbitration`) picks at most
one, on a channel the customer allows, outside quiet hours and within every
contact cap; it becomes a decision (content and language variant for the
customer) and a send trigger, or a proposal in approval mode.  Every
decision and trigger is built here, after the gate, so none can leave without
consent (profiling, personalisation and the channel).

Time passing is an input too: :func:`went_quiet` is what a customer's
silence up to a check time causes (a win-back, decided as of that time).

Consent is decided as of each event's own time
(:meth:`~agents.core.consent.ConsentPolicy.allows_since`); a click or
purchase it does not allow is parked, and a consent change returns the parked
events it now allows in :attr:`Effects.released` for the caller to apply.

The content is chosen by a :data:`ChooseContent` function the caller passes
in (the worker passes the learned policy, :mod:`agents.core.learning`);
without one it is the newest valid item on the topic that the channel may
show (read from the index when ``catalogue`` is a
:class:`~agents.core.catalogue.CatalogueIndex`, as the worker's is, by a
scan otherwise: the same items either way).  While a campaign is paused
(the kill switch or its own pause) its decisions are still made and
published as shadow decisions, but nothing is sent or proposed.

Campaign statistics (:mod:`agents.core.uplift`) come back as
:attr:`Effects.stats`: a send or holdout exposure counts when it is decided,
a click or order within the attribution window counts for it, and a send
withdrawn before its time (consent revoked, erasure, an order before a
browse-abandonment reminder) is taken back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from agents.core.arbitration import (
    PENDING_MAX,
    Plan,
    Refusal,
    idempotency_key,
    in_holdout,
    plan,
    rank,
    trigger_id,
)
from agents.core.campaigns import DEFAULT_BOOK, CampaignBook
from agents.core.catalogue import on_topic
from agents.core.cobuy import CoPurchases
from agents.core.consent import (
    PARK_FOR,
    ConsentPolicy,
    cancel_pending,
    forget_behaviour,
    park,
    release,
    revocation,
)
from agents.core.customer import CustomerState, Interaction, PendingSend
from agents.core.interests import TagChange, click_topics
from agents.core.profile import CustomerRules, apply_event, record_interaction, requests_erasure
from agents.core.triggers import Outlook, SendCandidate, WentQuiet, send_candidates
from agents.core.uplift import CampaignCounts, attribute, exposure
from schemas.records import (
    Clicked,
    ConsentChanged,
    ContentPublished,
    DecisionMade,
    Purchased,
    Record,
    SendCancelled,
    SendProposed,
    SendTriggered,
)

FOLLOW_UP_CAMPAIGN = "interest-follow-up"
__all__ = ["FOLLOW_UP_CAMPAIGN", "PENDING_MAX", "ChooseContent", "Chosen", "Effects",
           "EngineRules", "FollowUpRules", "handle", "newest_item", "went_quiet"]


@dataclass(frozen=True)
class FollowUpRules:
    """Engine-wide settings of campaign sends."""

    #: From a newly assigned tag to its follow-up, for campaigns without their own delay.
    delay: timedelta = timedelta(hours=1)
    #: False: no campaign contacts anyone (the engine only profiles).
    enabled: bool = True


@dataclass(frozen=True)
class EngineRules:
    """Everything :func:`handle` follows."""

    customer: CustomerRules
    consent: ConsentPolicy
    follow_up: FollowUpRules = FollowUpRules()
    #: The campaigns, caps, quiet hours and windows (default: the built-in book).
    book: CampaignBook = DEFAULT_BOOK


@dataclass(frozen=True)
class Chosen:
    """The content picked for a decision and why."""

    content_id: str
    language: str
    fell_back: bool
    #: exploit, explore, holdout or neutral.
    policy: str
    score: float
    reasons: tuple[str, ...]
    #: What a learning policy learns the reward on (empty for the rule).
    features: Mapping[str, float] = field(default_factory=dict)


#: Picks one of ``items`` (all valid, on the topic, allowed on the channel) for a
#: customer on a channel at a time; None when it will not pick any.
ChooseContent = Callable[[CustomerState, str, datetime, Sequence[ContentPublished]],
                         Chosen | None]


@dataclass
class Effects:
    """What one event caused, besides the new state."""

    tag_changes: list[TagChange] = field(default_factory=list)
    decisions: list[DecisionMade] = field(default_factory=list)
    triggers: list[SendTriggered] = field(default_factory=list)
    cancellations: list[SendCancelled] = field(default_factory=list)
    #: Each decision made, with the choice behind it (for learning from its reward).
    chosen: list[tuple[DecisionMade, Chosen]] = field(default_factory=list)
    #: Sends of campaigns in approval mode, for an operator to approve.
    proposals: list[SendProposed] = field(default_factory=list)
    #: Send candidates not sent, each with its reason (``capped``, ``holdout``, ...).
    refused: list[Refusal] = field(default_factory=list)
    #: Changes to the campaign statistics.
    stats: list[CampaignCounts] = field(default_factory=list)
    #: The event was valid but consent did not allow using it (at its event time).
    skipped: bool = False
    #: Parked events a consent change allows now: the caller applies them next, in order.
    released: list[Clicked | Purchased] = field(default_factory=list)
    #: The event asks for the customer to be erased (the caller does it).
    erase: bool = False


def handle(state: CustomerState, record: Record, rules: EngineRules,
           content_topics: list[str] | None, catalogue: Mapping[str, ContentPublished],
           *, sends_paused: bool = False, choose: ChooseContent | None = None,
           campaign_paused: Callable[[str], bool] | None = None,
           predictions: Outlook | None = None, cobuy: CoPurchases | None = None,
           watermark: datetime | None = None) -> tuple[CustomerState, Effects]:
    """The state after ``record`` and what it causes, consent checked first.

    ``watermark`` (the worker's low watermark) bounds how long an event that
    waits for its consent is kept (:func:`agents.core.consent.park`).

    ``content_topics`` are the catalogue topics of a click's content (None
    when unknown); ``catalogue`` is every known item, for sends.
    ``sends_paused`` pauses every campaign (the kill switch);
    ``campaign_paused(campaign_id)`` is True while that campaign may not
    send (its pause or the kill switch).  ``choose`` picks a send's content
    (default: the newest item).  ``predictions`` (the customer's churn risk
    and best send hour, e.g. ``state.predictions``) schedule sends and start
    win-backs; without them there is neither.  ``cobuy`` proposes
    cross-sells and learns every consented order after the engine has used it.
    """
    effects = Effects()
    policy = rules.consent
    if requests_erasure(record):
        # Everything pending is withdrawn; the caller erases the rest.
        assert isinstance(record, ConsentChanged)
        at = record.occurred_at
        before = state
        state, cancelled = cancel_pending(state, at, None)
        effects.cancellations = [_cancellation(state.customer_id, p, record.event_id, at,
                                               "erasure_requested", []) for p in cancelled]
        effects.stats = _taken_back(before, cancelled, at, lambda channel: True)[1]
        effects.erase = True
        return state, effects
    if isinstance(record, Clicked | Purchased) and not policy.may_profile(
            state, record.occurred_at):
        # Consent as of the event's own time; kept in case an earlier-dated grant
        # is read later (topics interleave in any order).
        effects.skipped = True
        keep_for = min(PARK_FOR, rules.customer.profile.history_retention)
        return park(state, record, keep_for, watermark), effects
    before = state
    state, effects.tag_changes = apply_event(state, record, rules.customer, content_topics)
    if isinstance(record, ConsentChanged):
        revoked = revocation(policy, before, state, record.occurred_at)
        if revoked.purposes:
            at = record.occurred_at
            if revoked.profiling:
                state, removed = forget_behaviour(state, at, record.event_id)
                effects.tag_changes.extend(removed)
            state, cancelled = cancel_pending(state, at, revoked)
            effects.cancellations = [
                _cancellation(state.customer_id, p, record.event_id, at, "consent_revoked",
                              sorted(revoked.purposes)) for p in cancelled]
            gone, effects.stats = _taken_back(
                before, cancelled, at, lambda channel: revoked.cancels(
                    PendingSend("", "", channel, at, "", "")))
            state = _without(state, gone)
        state, effects.released = release(policy, state)
        return state, effects
    book = rules.book
    if isinstance(record, Clicked | Purchased) and _may_follow_exposure(before, record, book):
        effects.stats += attribute(before.history, record, book.attribution_window)
    if isinstance(record, Purchased):
        state = _purchase_withdraws_reminders(state, record, book, effects)
    if rules.follow_up.enabled and book.campaigns:
        def paused(campaign_id: str) -> bool:
            return sends_paused or (campaign_paused is not None and campaign_paused(campaign_id))
        topics = (click_topics(record.topics, content_topics) if isinstance(record, Clicked)
                  else [])
        state = _contact(state, record, topics, rules, catalogue, effects,
                         choose or newest_item, paused, predictions, cobuy)
    if isinstance(record, Purchased) and cobuy is not None:
        cobuy.learn(record)
    return state, effects


def went_quiet(state: CustomerState, quiet: WentQuiet, rules: EngineRules,
               catalogue: Mapping[str, ContentPublished], *, predictions: Outlook | None,
               sends_paused: bool = False, choose: ChooseContent | None = None,
               campaign_paused: Callable[[str], bool] | None = None
               ) -> tuple[CustomerState, Effects]:
    """What the customer's silence until ``quiet.occurred_at`` causes: at most a win-back.

    Nothing when the customer had an event since ``quiet.last_event_at`` (the
    check is stale).  Consent, the contact log and ``predictions`` (the churn
    risk as of the check's time) are read as of ``quiet.occurred_at``; the
    send is planned like an event's (:func:`handle`).
    """
    effects = Effects()
    if state.last_event_at != quiet.last_event_at or not (
            rules.follow_up.enabled and rules.book.with_trigger("win_back")):
        return state, effects

    def paused(campaign_id: str) -> bool:
        return sends_paused or (campaign_paused is not None and campaign_paused(campaign_id))
    state = _contact(state, quiet, [], rules, catalogue, effects, choose or newest_item,
                     paused, predictions, None)
    return state, effects


def _contact(state: CustomerState, record: Record | WentQuiet, topics: list[str],
             rules: EngineRules, catalogue: Mapping[str, ContentPublished], effects: Effects,
             choose: ChooseContent, paused: Callable[[str], bool],
             predictions: Outlook | None, cobuy: CoPurchases | None) -> CustomerState:
    """At most one campaign send (or proposal), shadow decisions and holdout exposures."""
    policy, book = rules.consent, rules.book
    at = record.occurred_at
    if not (policy.may_profile(state, at) and policy.may_personalise(state, at)):
        return state
    found = send_candidates(state, record, topics, effects.tag_changes, book,
                            follow_up_delay=rules.follow_up.delay, predictions=predictions,
                            cobuy=cobuy)
    if not found:
        return state
    latest = state.last_event_at or found[0].at
    best_hour = predictions.best_hour if predictions is not None else None

    def find(candidate: SendCandidate, channel: str) -> list[ContentPublished]:
        return _pool(catalogue, candidate, channel)

    plans: list[Plan] = []
    for candidate in found:
        result = plan(candidate, state, book, policy, find, latest=latest, best_hour=best_hour)
        if isinstance(result, Plan):
            plans.append(result)
        else:
            effects.refused.append(result)
    winner: Plan | None = None
    for chosen_plan in rank(plans):
        campaign, key = chosen_plan.campaign, chosen_plan.candidate.key
        if winner is not None:
            effects.refused.append(Refusal(
                campaign.campaign_id, key, "arbitration",
                f"lost to {winner.campaign.campaign_id} {winner.candidate.key} (priority "
                f"{winner.campaign.priority}, strength {winner.candidate.strength:.3f})"))
            continue
        # The policy is asked only now, for a plan that goes out in some form.
        chosen = choose(state, chosen_plan.channel, chosen_plan.candidate.at, chosen_plan.items)
        if chosen is None:
            effects.refused.append(Refusal(campaign.campaign_id, key, "content",
                                           f"no item chosen for {chosen_plan.channel}"))
        elif paused(campaign.campaign_id):
            _decide(state, chosen_plan, chosen, policy, effects, "shadow decision: "
                    f"{campaign.campaign_id} is paused by an operator, no trigger")
            effects.refused.append(Refusal(campaign.campaign_id, key, "paused",
                                           "paused by an operator"))
        elif chosen_plan.holdout:
            state = _exposed(state, chosen_plan, chosen, "holdout", rules, effects)
            effects.refused.append(Refusal(
                campaign.campaign_id, key, "holdout",
                f"in the holdout group ({campaign.holdout_share:.0%}) of "
                f"{campaign.campaign_id}: recorded, not sent"))
        else:
            state = _send(state, chosen_plan, chosen, rules, effects)
            winner = chosen_plan
    return state


def _decide(state: CustomerState, chosen_plan: Plan, chosen: Chosen, policy: ConsentPolicy,
            effects: Effects, *extra: str) -> DecisionMade:
    """The decision behind a send (or a shadow decision), published with its reasons."""
    candidate, campaign = chosen_plan.candidate, chosen_plan.campaign
    cid = state.customer_id
    topic = f"on topic {candidate.topic}" if candidate.topic else "on any topic"
    reasons = [*candidate.reasons,
               f"campaign {campaign.campaign_id} ({campaign.trigger}), priority "
               f"{campaign.priority}, expected value {chosen.score * candidate.strength:.3f}",
               f"send {topic} by {chosen_plan.channel} at {chosen_plan.send_at.isoformat()}",
               *chosen.reasons, *chosen_plan.reasons,
               "consent: " + ", ".join(policy.granted(state)), *extra]
    decision = DecisionMade(
        decision_id=trigger_id(cid, campaign.campaign_id, candidate.key, chosen_plan.channel),
        customer_id=cid, decided_at=candidate.at, schema_version=1, slot="follow-up",
        channel=chosen_plan.channel, content_id=chosen.content_id,
        variant_language=chosen.language, language_fallback=chosen.fell_back,
        policy=chosen.policy, reasons=reasons, caused_by=candidate.caused_by,
        campaign_id=campaign.campaign_id, score=chosen.score)
    effects.decisions.append(decision)
    effects.chosen.append((decision, chosen))
    return decision


def _send(state: CustomerState, chosen_plan: Plan, chosen: Chosen, rules: EngineRules,
          effects: Effects) -> CustomerState:
    """The send trigger, or the proposal in approval mode; both enter the contact log."""
    campaign, candidate = chosen_plan.campaign, chosen_plan.candidate
    cid, send_at = state.customer_id, chosen_plan.send_at
    approval = campaign.approval
    decision = _decide(state, chosen_plan, chosen, rules.consent, effects,
                       *(["approval mode: proposed to an operator"] if approval else []))
    key = idempotency_key(cid, campaign.campaign_id, candidate.key)
    if approval:
        effects.proposals.append(SendProposed(
            proposal_id=decision.decision_id, idempotency_key=key, customer_id=cid,
            created_at=candidate.at,
            expires_at=min(candidate.at + rules.book.proposal_ttl, send_at),
            schema_version=1, send_at=send_at, channel=chosen_plan.channel,
            campaign_id=campaign.campaign_id, content_id=decision.content_id,
            variant_language=decision.variant_language, reasons=decision.reasons,
            caused_by=decision.decision_id))
    else:
        effects.triggers.append(SendTriggered(
            trigger_id=decision.decision_id, idempotency_key=key, customer_id=cid,
            created_at=candidate.at, schema_version=1, send_at=send_at,
            channel=chosen_plan.channel, campaign_id=campaign.campaign_id,
            content_id=decision.content_id, variant_language=decision.variant_language,
            reasons=decision.reasons, caused_by=decision.decision_id))
    # Past sends stay as long as a cap or the arbitration window can count them.
    latest = state.last_event_at or candidate.at
    log = [p for p in state.pending if p.send_at > latest - rules.book.retention]
    log.append(PendingSend(decision.decision_id, key, chosen_plan.channel, send_at,
                           campaign.campaign_id, decision.content_id))
    log.sort(key=lambda p: (p.send_at, p.trigger_id))
    new = CustomerState.__new__(CustomerState)
    new.__dict__.update(state.__dict__)
    new.pending = log
    return _exposed(new, chosen_plan, chosen, "proposal" if approval else "trigger", rules, effects)


def _exposed(state: CustomerState, chosen_plan: Plan, chosen: Chosen, kind: str,
             rules: EngineRules, effects: Effects) -> CustomerState:
    """``state`` with the send (``trigger``, ``proposal``) or ``holdout`` exposure recorded."""
    campaign, candidate = chosen_plan.campaign, chosen_plan.candidate
    entry = Interaction(chosen_plan.send_at,
                        trigger_id(state.customer_id, campaign.campaign_id, candidate.key,
                                   chosen_plan.channel),
                        kind, content_id=chosen.content_id,
                        campaign_id=campaign.campaign_id)
    if kind != "proposal":  # a proposal counts as a send once it is approved
        effects.stats.append(exposure(entry))
    return record_interaction(state, entry, rules.customer.profile)


def _may_follow_exposure(state: CustomerState, record: Clicked | Purchased,
                         book: CampaignBook) -> bool:
    """False when no send or holdout exposure can precede ``record`` in the window.

    A cheap test that spares most events a pass over the history: sends stay
    in the contact log at least as long as the attribution window, and
    holdout exposures exist only for customers in some campaign's holdout.
    """
    at, cid = record.occurred_at, state.customer_id
    since = at - book.attribution_window
    return any(since < p.send_at <= at for p in state.pending) or any(
        in_holdout(c.campaign_id, cid, c.holdout_share) for c in book.campaigns)


def _purchase_withdraws_reminders(state: CustomerState, order: Purchased, book: CampaignBook,
                                  effects: Effects) -> CustomerState:
    """An order cancels the browse-abandonment reminders not yet due (and their holdout twins)."""
    reminders = {c.campaign_id for c in book.with_trigger("browse_abandonment")}
    at = order.occurred_at
    cancelled = [p for p in state.pending if p.send_at > at and p.campaign_id in reminders]
    held = [e for e in state.history if e.kind == "holdout" and e.occurred_at > at
            and e.campaign_id in reminders]
    if not cancelled and not held:
        return state
    effects.cancellations += [_cancellation(state.customer_id, p, order.event_id, at,
                                            "purchased", []) for p in cancelled]
    ids = {p.trigger_id for p in cancelled}
    gone = [e for e in state.history if e.event_id in ids and e.kind in ("trigger", "proposal")]
    gone += held
    effects.stats += [exposure(e, -1) for e in gone if e.kind != "proposal"]
    new = CustomerState.__new__(CustomerState)
    new.__dict__.update(state.__dict__)
    new.pending = [p for p in state.pending if p.trigger_id not in ids]
    return _without(new, gone)


def _taken_back(before: CustomerState, cancelled: Sequence[PendingSend], at: datetime,
                cancels: Callable[[str], bool]) -> tuple[list[Interaction], list[CampaignCounts]]:
    """History entries of withdrawn sends and of the holdout exposures withdrawn alike.

    Returns the entries and the statistics that take their counts back.
    """
    ids = {p.trigger_id for p in cancelled}
    gone = []
    for entry in before.history:
        sent = entry.event_id in ids and entry.kind in ("trigger", "proposal")
        if sent or (entry.kind == "holdout" and entry.occurred_at > at
                    and cancels(entry.event_id.rpartition(":")[2])):
            gone.append(entry)
    return gone, [exposure(e, -1) for e in gone if e.kind != "proposal"]


def _without(state: CustomerState, entries: Sequence[Interaction]) -> CustomerState:
    if not entries or not state.history:
        return state
    drop = {id(e) for e in entries}
    new = CustomerState.__new__(CustomerState)
    new.__dict__.update(state.__dict__)
    new.history = [e for e in state.history if id(e) not in drop]
    return new


def _pool(catalogue: Mapping[str, ContentPublished], candidate: SendCandidate, channel: str
          ) -> list[ContentPublished]:
    """The items a candidate may send on ``channel``: the campaign's list, else its topic's."""
    content, at = candidate.campaign.content, candidate.at
    if content:
        listed = [catalogue[c] for c in content if c in catalogue]
        return [i for i in listed if channel in i.channels and _valid(i, at)]
    # From the catalogue's index when it has one (the worker's): only the topic's items.
    return [item for item in on_topic(catalogue, channel, candidate.topic) if _valid(item, at)]


def newest_item(state: CustomerState, channel: str, at: datetime,
                items: Sequence[ContentPublished]) -> Chosen | None:
    """The rule without learning: the newest of ``items`` (ties by ``content_id``)."""
    if not items:
        return None
    item = max(items, key=lambda i: (i.occurred_at, i.content_id))
    language, fell_back = choose_variant(item, state)
    reasons = ["exploit: the newest item on the topic"]
    if fell_back:
        reasons.append(f"no {_language(state)} variant: fell back to {language}")
    return Chosen(item.content_id, language, fell_back, "exploit", 1.0, tuple(reasons))


def _valid(item: ContentPublished, at: datetime) -> bool:
    return ((item.valid_from is None or item.valid_from <= at)
            and (item.valid_until is None or at < item.valid_until))


def choose_variant(item: ContentPublished, state: CustomerState) -> tuple[str, bool]:
    """The variant language for the customer, and whether it fell back to the item's default."""
    wanted = _language(state)
    languages = {v.language for v in item.variants}
    if wanted in languages:
        return wanted, False
    if item.default_language in languages:
        return item.default_language, True
    return sorted(languages)[0], True


def _language(state: CustomerState) -> str | None:
    return state.master.language if state.master is not None else None


def _cancellation(customer_id: str, pending: PendingSend, caused_by: str, at: datetime,
                  reason: str, revoked: list[str]) -> SendCancelled:
    return SendCancelled(
        cancellation_id=f"{pending.trigger_id}:cancelled:{caused_by}",
        trigger_id=pending.trigger_id, idempotency_key=pending.idempotency_key,
        customer_id=customer_id, cancelled_at=at, schema_version=1,
        channel=pending.channel, send_at=pending.send_at, reason=reason, revoked=revoked,
        caused_by=caused_by)
