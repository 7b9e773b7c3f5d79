"""One customer event through the consent gate: state change and the messages it causes.

:func:`handle` is the single path by which the engine turns a customer event
into output.  It applies the event with :func:`agents.core.profile.apply_event`
only where consent allows, carries out what a revocation undoes
(:mod:`agents.core.consent`), and lets a newly assigned interest tag lead to
a follow-up: a decision (content and language variant for the customer) and
a send trigger on the first channel the customer allows.  Every decision and
trigger is built here, after the gate, so none can leave without consent.

The follow-up's content is chosen by a :data:`ChooseContent` function the
caller passes in (the worker passes the learned policy,
:mod:`agents.core.learning`); without one it is the newest valid item on the
tag's topic that the channel may show.  Either way the gate stays here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from agents.core.consent import ConsentPolicy, cancel_pending, forget_behaviour, revocation
from agents.core.customer import CustomerState, PendingSend
from agents.core.interests import TagChange
from agents.core.profile import CustomerRules, apply_event, requests_erasure
from schemas.records import (
    Clicked,
    ConsentChanged,
    ContentPublished,
    DecisionMade,
    Purchased,
    Record,
    SendCancelled,
    SendTriggered,
)

FOLLOW_UP_CAMPAIGN = "interest-follow-up"
#: Most pending sends per customer.  When full, no new follow-up is sent:
#: a trigger the engine could not cancel any more must not go out.
PENDING_MAX = 50


@dataclass(frozen=True)
class FollowUpRules:
    """When a newly assigned tag leads to a send."""

    #: Time between the tag's assignment and the send.
    delay: timedelta = timedelta(hours=1)
    #: Channels tried in order; the first the customer allows is used.
    channels: tuple[str, ...] = ("email", "push", "sms")
    enabled: bool = True


@dataclass(frozen=True)
class EngineRules:
    """Everything :func:`handle` follows."""

    customer: CustomerRules
    consent: ConsentPolicy
    follow_up: FollowUpRules = FollowUpRules()


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
    #: The event was valid but consent did not allow using it.
    skipped: bool = False
    #: The event asks for the customer to be erased (the caller does it).
    erase: bool = False


def handle(state: CustomerState, record: Record, rules: EngineRules,
           content_topics: list[str] | None, catalogue: Mapping[str, ContentPublished],
           *, sends_paused: bool = False, choose: ChooseContent | None = None
           ) -> tuple[CustomerState, Effects]:
    """The state after ``record`` and what it causes, consent checked first.

    ``content_topics`` are the catalogue topics of a click's content (None
    when unknown); ``catalogue`` is every known item, for follow-ups.  While
    ``sends_paused`` (an operator's kill switch or campaign pause) decisions
    are still made and published as shadow decisions, but no send trigger.
    ``choose`` picks a follow-up's content (default: the newest item).
    """
    effects = Effects()
    policy = rules.consent
    if requests_erasure(record):
        # Everything pending is withdrawn; the caller erases the rest.
        assert isinstance(record, ConsentChanged)
        state, cancelled = cancel_pending(state, record.occurred_at, None)
        effects.cancellations = [_cancellation(state.customer_id, p, record, "erasure_requested",
                                               []) for p in cancelled]
        effects.erase = True
        return state, effects
    if isinstance(record, Clicked | Purchased) and not policy.may_profile(state):
        effects.skipped = True
        return state, effects
    before = state
    state, effects.tag_changes = apply_event(state, record, rules.customer, content_topics)
    if isinstance(record, ConsentChanged):
        revoked = revocation(policy, before, state)
        if revoked.purposes:
            if revoked.profiling:
                state, removed = forget_behaviour(state, record.occurred_at, record.event_id)
                effects.tag_changes.extend(removed)
            state, cancelled = cancel_pending(state, record.occurred_at, revoked)
            effects.cancellations = [
                _cancellation(state.customer_id, p, record, "consent_revoked",
                              sorted(revoked.purposes)) for p in cancelled]
        return state, effects
    if rules.follow_up.enabled:
        for change in effects.tag_changes:
            if change.change == "assigned":
                state = _follow_up(state, change, rules, catalogue, effects, sends_paused,
                                   choose or newest_item)
    return state, effects


def _follow_up(state: CustomerState, change: TagChange, rules: EngineRules,
               catalogue: Mapping[str, ContentPublished], effects: Effects,
               sends_paused: bool, choose: ChooseContent) -> CustomerState:
    """A decision and a send trigger for a newly assigned tag, when consent allows both."""
    policy = rules.consent
    if not policy.may_personalise(state):
        return state
    channel = next((c for c in rules.follow_up.channels if policy.may_send(state, c)), None)
    if channel is None:
        return state
    # Sends due by the customer's latest event went out: they are not pending.
    latest = state.last_event_at or change.at
    pending = [p for p in state.pending if p.send_at > latest]
    if len(pending) >= PENDING_MAX:
        return state
    items = [item for item in catalogue.values()
             if change.topic in item.topics and channel in item.channels
             and _valid(item, change.at)]
    chosen = choose(state, channel, change.at, items) if items else None
    if chosen is None:
        return state
    language = chosen.language
    cid = state.customer_id
    decision_id = f"{cid}:follow-up:{change.tag}:{change.at.isoformat()}"
    send_at = change.at + rules.follow_up.delay
    reasons = [f"tag {change.tag} assigned (score {change.score:.2f}) by {change.caused_by}",
               f"follow-up on topic {change.topic} by {channel}", *chosen.reasons,
               "consent: " + ", ".join(policy.granted(state))]
    if sends_paused:
        reasons.append("shadow decision: sends are paused by an operator, no trigger")
    decision = DecisionMade(
        decision_id=decision_id, customer_id=cid, decided_at=change.at, schema_version=1,
        slot="follow-up", channel=channel, content_id=chosen.content_id,
        variant_language=language, language_fallback=chosen.fell_back, policy=chosen.policy,
        reasons=reasons, caused_by=change.caused_by, campaign_id=FOLLOW_UP_CAMPAIGN,
        score=chosen.score)
    effects.decisions.append(decision)
    effects.chosen.append((decision, chosen))
    if sends_paused:
        return state
    trigger = SendTriggered(
        trigger_id=decision_id, idempotency_key=f"{FOLLOW_UP_CAMPAIGN}:{decision_id}",
        customer_id=cid, created_at=change.at, schema_version=1, send_at=send_at,
        channel=channel, campaign_id=FOLLOW_UP_CAMPAIGN, content_id=chosen.content_id,
        variant_language=language, reasons=reasons, caused_by=decision_id)
    effects.triggers.append(trigger)
    pending.append(PendingSend(trigger.trigger_id, trigger.idempotency_key, channel, send_at,
                               FOLLOW_UP_CAMPAIGN, chosen.content_id))
    pending.sort(key=lambda p: (p.send_at, p.trigger_id))
    new = CustomerState.__new__(CustomerState)
    new.__dict__.update(state.__dict__)
    new.pending = pending
    return new


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


def _cancellation(customer_id: str, pending: PendingSend, record: ConsentChanged, reason: str,
                  revoked: list[str]) -> SendCancelled:
    return SendCancelled(
        cancellation_id=f"{pending.trigger_id}:cancelled:{record.event_id}",
        trigger_id=pending.trigger_id, idempotency_key=pending.idempotency_key,
        customer_id=customer_id, cancelled_at=record.occurred_at, schema_version=1,
        channel=pending.channel, send_at=pending.send_at, reason=reason, revoked=revoked,
        caused_by=record.event_id)
