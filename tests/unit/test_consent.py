"""The consent gate: nothing is profiled, decided or sent without the matching consent.

The property test runs random interleavings of consent, click, purchase and
erasure events for a few customers (event times deliberately out of order)
through :func:`agents.core.engine.handle`, and checks every output against
an oracle that only knows the law: consent as of each event's own time (the
decision in force then, and no revocation after it), strict default, and an
erasure wiping the slate.  Events the gate parks and a later consent change
releases are applied as the stage applies them, and checked the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.core.campaigns import DEFAULT_BOOK
from agents.core.consent import (
    CHANNEL_PURPOSE,
    CONSENT_LOG_MAX,
    PARKED_MAX,
    ConsentPolicy,
    decided,
    forget_behaviour,
    park,
    revocation,
)
from agents.core.customer import ConsentEntry, CustomerState
from agents.core.engine import EngineRules, FollowUpRules, handle
from agents.core.interests import InterestRules, TagRule
from agents.core.profile import CustomerRules, ProfileRules
from schemas.records import (
    PURPOSES,
    Clicked,
    ConsentChanged,
    ContentPublished,
    ContentVariant,
    Purchased,
    PurchasedItem,
    Record,
)
from tests.events import clicked, consent_changed

T0 = datetime(2026, 3, 1, tzinfo=UTC)
TOPICS = ("golf", "wine")
# The consent law is what is tested here, so the campaigns send as often as they can:
# no quiet hours (T0 is midnight, UTC for customers without a time zone, so the
# shipped 21:00-08:00 would move every send to 08:00), no contact caps, no
# arbitration window and no holdout.  Sends, caps and quiet hours have their own
# property test (test_campaigns.py).
CONSENT_BOOK = replace(
    DEFAULT_BOOK, caps=(), quiet_hours=None, arbitration_window=timedelta(0),
    campaigns=tuple(replace(c, caps=(), holdout_share=0.0) for c in DEFAULT_BOOK.campaigns))
RULES = EngineRules(
    customer=CustomerRules(
        InterestRules(tuple(TagRule(f"{t}-fans", t, min_clicks=2, window=timedelta(days=14),
                                    floor=0.5) for t in TOPICS),
                      half_life=timedelta(days=7), max_recent=5),
        ProfileRules(history_max=50, history_retention=timedelta(days=365))),
    consent=ConsentPolicy(),
    follow_up=FollowUpRules(delay=timedelta(hours=2)),
    book=CONSENT_BOOK,
)
CATALOGUE = {
    f"{t}-{c}": ContentPublished(
        event_id=f"p-{t}-{c}", content_id=f"{t}-{c}", occurred_at=T0 - timedelta(days=30),
        schema_version=1, topics=[t], channels=[c], slots=["follow-up"],
        variants=[ContentVariant(language="en", title=t, url=f"https://shop.example/{t}")],
        default_language="en")
    for t in TOPICS for c in ("email", "push", "sms")
}


# --- the law, written independently of the engine ------------------------------


@dataclass
class Oracle:
    """What one customer has allowed, as far as the consumed events say."""

    #: Every decision per purpose: event time -> granted (the one read last wins a tie).
    decided: dict[str, dict[datetime, bool]] = field(default_factory=dict)
    erased_at: datetime | None = None
    latest: datetime | None = None  # newest event time consumed
    #: Triggers emitted and not cancelled: trigger_id -> (channel, send_at).
    outstanding: dict[str, tuple[str, datetime]] = field(default_factory=dict)

    def allows(self, purpose: str) -> bool:
        known = self.decided.get(purpose)
        return bool(known) and known[max(known)]

    def allows_at(self, purpose: str, at: datetime) -> bool:
        known = self.decided.get(purpose, {})
        before = [t for t in known if t <= at]
        return bool(before) and known[max(before)]

    def allows_since(self, purpose: str, at: datetime) -> bool:
        known = self.decided.get(purpose, {})
        return self.allows_at(purpose, at) and all(g for t, g in known.items() if t > at)


def _events(draw: st.DrawFn) -> list[Record]:
    n = draw(st.integers(min_value=1, max_value=60))
    records: list[Record] = []
    for i in range(n):
        cid = f"c-{draw(st.integers(0, 1))}"
        # A few hours, so that revocations often fall before a pending send's time.
        at = T0 + timedelta(minutes=draw(st.integers(0, 360)))
        kind = draw(st.sampled_from(["click", "click", "click", "purchase", "consent",
                                     "consent", "consent", "erase"]))
        eid = f"e{i}"
        if kind == "click":
            records.append(Clicked(event_id=eid, customer_id=cid, occurred_at=at,
                                   schema_version=1, topics=[draw(st.sampled_from(TOPICS))]))
        elif kind == "purchase":
            topic = draw(st.sampled_from(TOPICS))
            records.append(Purchased(
                event_id=eid, customer_id=cid, occurred_at=at, schema_version=1,
                order_id=eid, total=10.0, currency="EUR",
                items=[PurchasedItem(product_id="p", quantity=1, unit_price=10.0,
                                     topics=[topic])]))
        else:
            action = "erasure_requested" if kind == "erase" else draw(
                st.sampled_from(["granted", "granted", "revoked"]))
            purposes = [] if kind == "erase" else draw(
                st.lists(st.sampled_from(PURPOSES), min_size=1, max_size=4, unique=True))
            records.append(ConsentChanged(
                event_id=eid, customer_id=cid, occurred_at=at, schema_version=1,
                action=action, purposes=purposes, source="test"))
    return records


event_streams = st.composite(_events)


@settings(max_examples=300, deadline=None)
@given(records=event_streams())
def test_no_output_without_consent_and_every_revoked_pending_send_is_cancelled(
        records: list[Record]) -> None:
    states: dict[str, CustomerState] = {}
    oracles: dict[str, Oracle] = {}
    queue = list(records)
    while queue:
        record = queue.pop(0)
        cid = record.customer_id
        oracle = oracles.setdefault(cid, Oracle())
        state = states.get(cid, CustomerState(cid))
        at = record.occurred_at
        # As the stage does: an erased customer's events up to the erasure are left out.
        if oracle.erased_at is not None and at <= oracle.erased_at:
            continue
        before_may_profile = oracle.allows_since("profiling", at)
        before_at = {p: oracle.allows_at(p, at) for p in PURPOSES}
        now_before = oracle.latest
        oracle.latest = at if now_before is None else max(now_before, at)

        state, effects = handle(state, record, RULES, None, CATALOGUE)
        # As the stage does: released events are applied next, before anything else.
        queue[:0] = effects.released

        # The oracle's view of the consent change.
        erased = isinstance(record, ConsentChanged) and record.action == "erasure_requested"
        if erased:
            oracle.erased_at = at
            oracle.decided.clear()
        elif isinstance(record, ConsentChanged):
            for purpose in record.purposes:
                oracle.decided.setdefault(purpose, {})[at] = record.action == "granted"
        # Revoked as of the change's own time, even when read after a later grant.
        revoked = {p for p in PURPOSES if before_at[p] and not oracle.allows_at(p, at)}

        # 1. Clicks and purchases are used only with consent to profiling as of their time.
        if isinstance(record, Clicked | Purchased):
            assert effects.skipped == (not before_may_profile)
        # 2. No decision without personalisation (and profiling), no send without the
        # channel, each granted at the event's time and not revoked since.
        for decision in effects.decisions:
            assert oracle.allows_since("personalisation", decision.decided_at), decision
            assert oracle.allows_since("profiling", decision.decided_at), decision
        for trigger in effects.triggers:
            assert oracle.allows_since("personalisation", trigger.created_at), trigger
            assert oracle.allows_since(CHANNEL_PURPOSE[trigger.channel],
                                       trigger.created_at), trigger
            assert trigger.trigger_id not in oracle.outstanding
        # 3. Every pending send a revocation or erasure no longer allows is cancelled.
        cancelled = {c.trigger_id for c in effects.cancellations}
        assert cancelled <= set(oracle.outstanding), "cancelled a trigger never emitted"
        due_by = at if now_before is None else max(at, now_before)
        for trigger_id, (channel, send_at) in oracle.outstanding.items():
            covered = erased or bool({"profiling", "personalisation"} & revoked) or (
                CHANNEL_PURPOSE[channel] in revoked)
            if covered and send_at > due_by:
                assert trigger_id in cancelled, (trigger_id, channel, send_at, revoked)
        for trigger_id in cancelled:
            del oracle.outstanding[trigger_id]
        oracle.outstanding.update({t.trigger_id: (t.channel, t.send_at)
                                   for t in effects.triggers})
        # 4. Without profiling nothing behavioural is kept.
        if erased:
            state = CustomerState(cid)
        elif not oracle.allows("profiling"):
            assert not state.interests
            assert not state.tags
            assert not state.history
        states[cid] = state


def test_the_shipped_default_is_strict_and_a_configured_default_applies_only_without_a_decision(
        ) -> None:
    nobody = CustomerState("c-1")
    strict, lenient = ConsentPolicy(), ConsentPolicy(frozenset({"profiling", "email"}))
    assert not any(strict.allows(nobody, p) for p in PURPOSES)
    assert lenient.may_profile(nobody)
    assert not lenient.may_send(nobody, "email")
    revoked = CustomerState("c-1", consent={
        "profiling": ConsentEntry(False, T0, "banner", "consent")})
    assert not lenient.may_profile(revoked)


def test_a_click_without_profiling_consent_is_skipped_not_used() -> None:
    click = Clicked(event_id="e1", customer_id="c-1", occurred_at=T0, schema_version=1,
                    topics=["golf"])
    state, effects = handle(CustomerState("c-1"), click, RULES, None, CATALOGUE)
    assert effects.skipped
    # Parked, nothing else: it is used only if a consent dated before it arrives.
    assert state == CustomerState("c-1", parked=[click])


def _click(minute: int, topic: str = "golf") -> Clicked:
    return clicked(f"c{minute}", at=T0 + timedelta(minutes=minute), topics=[topic])


def _changed(action: str, minute: int, *purposes: str) -> ConsentChanged:
    return consent_changed(f"k{action}{minute}", at=T0 + timedelta(minutes=minute),
                           action=action, purposes=list(purposes))


def test_a_click_before_the_grant_is_not_profiled_though_the_grant_was_read_first() -> None:
    state, _ = handle(CustomerState("c-1"), _changed("granted", 10, "profiling"), RULES, None,
                      CATALOGUE)
    state, effects = handle(state, _click(5), RULES, None, CATALOGUE)
    assert effects.skipped
    assert not state.interests
    assert not state.history


def test_a_click_read_before_its_earlier_dated_grant_is_released_by_the_grant() -> None:
    state, effects = handle(CustomerState("c-1"), _click(5), RULES, None, CATALOGUE)
    assert effects.skipped
    state, effects = handle(state, _changed("granted", 1, "profiling"), RULES, None, CATALOGUE)
    assert [e.event_id for e in effects.released] == ["c5"]
    assert state.parked == []
    state, effects = handle(state, effects.released[0], RULES, None, CATALOGUE)
    assert not effects.skipped
    assert [h.event_id for h in state.history] == ["c5"]


def test_a_click_before_a_later_revocation_stays_skipped_and_is_not_parked() -> None:
    state = CustomerState("c-1")
    for change in (_changed("granted", 1, "profiling"), _changed("revoked", 9, "profiling")):
        state, _ = handle(state, change, RULES, None, CATALOGUE)
    state, effects = handle(state, _click(5), RULES, None, CATALOGUE)
    # Read in event-time order it would have been forgotten at minute 9.
    assert effects.skipped
    assert state.parked == []


def test_a_revocation_read_after_a_later_grant_still_forgets_the_profile() -> None:
    state = CustomerState("c-1")
    for record in (_changed("granted", 1, "profiling"), _click(2), _click(3),
                   _changed("granted", 20, "profiling")):
        state, _ = handle(state, record, RULES, None, CATALOGUE)
    assert state.history
    state, _ = handle(state, _changed("revoked", 10, "profiling"), RULES, None, CATALOGUE)
    assert not state.history
    assert not state.interests
    assert state.consent["profiling"].granted  # the grant at minute 20 is in force now


def test_no_send_from_an_event_read_after_a_later_revocation_of_its_channel() -> None:
    state = CustomerState("c-1")
    for record in (_changed("granted", 0, "profiling", "personalisation", "email"),
                   _changed("revoked", 100, "email"), _changed("granted", 110, "email")):
        state, _ = handle(state, record, RULES, None, CATALOGUE)
    outputs: list[object] = []
    for minute in (1, 2):
        state, effects = handle(state, _click(minute), RULES, None, CATALOGUE)
        outputs += effects.triggers
    # Email is granted now, but the follow-up of minute 2 (due at minute 122) was
    # caused while a revocation was still to come: read in event-time order it would
    # have been cancelled at minute 100.
    assert outputs == []
    assert state.history  # the clicks themselves are profiled (profiling was never revoked)


def test_parked_events_are_bounded_by_count_and_age() -> None:
    state = CustomerState("c-1")
    for minute in range(PARKED_MAX + 5):
        state = park(state, _click(minute), timedelta(days=365))
    assert len(state.parked) == PARKED_MAX
    assert state.parked[0].event_id == "c5"
    state = park(state, _click(3 * 24 * 60), timedelta(days=1))
    assert [e.event_id for e in state.parked] == [f"c{3 * 24 * 60}"]


def test_a_parked_event_waits_until_the_watermark_has_passed_it_by_the_bound() -> None:
    """While the consents are read behind (the watermark holds at their progress), a
    click waits however far the customer's later clicks run ahead of it."""
    state = park(CustomerState("c-1"), _click(0), timedelta(days=1), watermark=T0)
    state = park(state, _click(3 * 24 * 60), timedelta(days=1), watermark=T0)
    assert [e.event_id for e in state.parked] == ["c0", f"c{3 * 24 * 60}"]
    # Once every topic is read past it by the bound, it goes as before.
    state = park(state, _click(3 * 24 * 60 + 1), timedelta(days=1),
                 watermark=T0 + timedelta(days=2))
    assert [e.event_id for e in state.parked] == [f"c{3 * 24 * 60}", f"c{3 * 24 * 60 + 1}"]


def test_consent_history_is_bounded_and_merges_conservatively() -> None:
    entry = None
    for minute in range(CONSENT_LOG_MAX + 3):
        entry = decided(entry, minute % 2 == 0, T0 + timedelta(minutes=minute), "b", "consent")
    assert entry is not None
    assert len(entry.earlier) + 1 == CONSENT_LOG_MAX
    state = CustomerState("c-1", consent={"email": entry})
    policy = ConsentPolicy()
    # Minute 0 granted, minute 1 revoked...: the merged oldest span grants nothing.
    assert not any(policy.allows_at(state, "email", T0 + timedelta(minutes=m))
                   for m in range(4))
    last = T0 + timedelta(minutes=CONSENT_LOG_MAX + 2)
    assert policy.allows_at(state, "email", last) == ((CONSENT_LOG_MAX + 2) % 2 == 0)


def _granted(*purposes: str, at: datetime = T0) -> ConsentChanged:
    return ConsentChanged(event_id=f"k-{'-'.join(purposes)}-{at:%H%M}", customer_id="c-1",
                          occurred_at=at, schema_version=1, action="granted",
                          purposes=list(purposes), source="banner")


def _clicks(state: CustomerState, topic: str, n: int, start: datetime
            ) -> tuple[CustomerState, list[object]]:
    outputs: list[object] = []
    for i in range(n):
        click = clicked(f"{topic}-{start:%d%H%M}-{i}", at=start + timedelta(minutes=i),
                        topics=[topic])
        state, effects = handle(state, click, RULES, None, CATALOGUE)
        outputs += [*effects.decisions, *effects.triggers]
    return state, outputs


def test_a_new_tag_leads_to_a_decision_and_a_trigger_on_the_first_allowed_channel() -> None:
    state, _ = handle(CustomerState("c-1"), _granted("profiling", "personalisation", "push"),
                      RULES, None, CATALOGUE)
    state, outputs = _clicks(state, "golf", 2, T0 + timedelta(hours=1))
    decision, trigger = outputs
    assert trigger.channel == "push"
    assert trigger.content_id == "golf-push"
    assert trigger.send_at == T0 + timedelta(hours=1, minutes=1) + RULES.follow_up.delay  # type: ignore[attr-defined]
    assert decision.policy == "exploit"
    assert decision.variant_language == "en"
    assert any(reason.startswith("consent: profiling, personalisation")
               for reason in decision.reasons)  # type: ignore[attr-defined]
    assert [p.trigger_id for p in state.pending] == [trigger.trigger_id]  # type: ignore[attr-defined]


def test_revoking_profiling_forgets_the_profile_removes_tags_and_cancels_pending_sends() -> None:
    state, _ = handle(CustomerState("c-1"),
                      _granted("profiling", "personalisation", "email"), RULES, None, CATALOGUE)
    state, _ = _clicks(state, "golf", 2, T0 + timedelta(hours=1))
    assert state.tags
    assert state.pending
    revoke = ConsentChanged(event_id="k-off", customer_id="c-1",
                            occurred_at=T0 + timedelta(hours=2), schema_version=1,
                            action="revoked", purposes=["profiling"], source="preference-centre")
    state, effects = handle(state, revoke, RULES, None, CATALOGUE)
    assert not state.tags
    assert not state.interests
    assert not state.history
    assert not state.pending
    assert [(c.tag, c.change) for c in effects.tag_changes] == [("golf-fans", "removed")]
    (cancelled,) = effects.cancellations
    assert cancelled.reason == "consent_revoked"
    assert cancelled.revoked == ["profiling"]
    assert state.consent["email"].granted  # consent itself is kept


def test_a_send_already_due_is_not_cancelled() -> None:
    state, _ = handle(CustomerState("c-1"),
                      _granted("profiling", "personalisation", "email"), RULES, None, CATALOGUE)
    state, _ = _clicks(state, "golf", 2, T0 + timedelta(hours=1))
    late = ConsentChanged(event_id="k-late", customer_id="c-1",
                          occurred_at=T0 + timedelta(days=1), schema_version=1,
                          action="revoked", purposes=["email"], source="unsubscribe link")
    state, effects = handle(state, late, RULES, None, CATALOGUE)
    assert effects.cancellations == []
    # It went out, so it stays in the contact log, where contact caps count it.
    assert [p.send_at for p in state.pending] == [T0 + timedelta(hours=3, minutes=1)]


@pytest.mark.parametrize("purpose", ["email", "personalisation"])
def test_revocation_names_only_purposes_taken_away(purpose: str) -> None:
    policy = ConsentPolicy()
    granted = CustomerState("c-1", consent={
        p: ConsentEntry(True, T0, "banner", "consent") for p in ("email", "personalisation")})
    revoked = CustomerState("c-1", consent={**granted.consent,
                                            purpose: ConsentEntry(False, T0, "x", "consent")})
    assert revocation(policy, granted, revoked).purposes == {purpose}
    assert revocation(policy, revoked, granted).purposes == frozenset()


def test_forgetting_keeps_master_data_and_consent() -> None:
    state = CustomerState("c-1", consent={"web": ConsentEntry(True, T0, "banner", "consent")})
    forgotten, removed = forget_behaviour(state, T0, "k1")
    assert forgotten.consent == state.consent
    assert removed == []


def test_while_sends_are_paused_a_follow_up_is_a_shadow_decision_without_trigger() -> None:
    state, _ = handle(CustomerState("c-1"), _granted("profiling", "personalisation", "email"),
                      RULES, None, CATALOGUE)
    click = Clicked(event_id="g1", customer_id="c-1", occurred_at=T0 + timedelta(hours=1),
                    schema_version=1, topics=["golf"])
    state, _ = handle(state, click, RULES, None, CATALOGUE, sends_paused=True)
    again = Clicked(event_id="g2", customer_id="c-1",
                    occurred_at=T0 + timedelta(hours=1, minutes=1), schema_version=1,
                    topics=["golf"])
    state, effects = handle(state, again, RULES, None, CATALOGUE, sends_paused=True)
    (decision,) = effects.decisions
    assert effects.triggers == []
    assert state.pending == []
    assert decision.reasons[-1].startswith("shadow decision")
