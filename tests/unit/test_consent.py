"""The consent gate: nothing is profiled, decided or sent without the matching consent.

The property test runs random interleavings of consent, click, purchase and
erasure events for a few customers (event times deliberately out of order)
through :func:`agents.core.engine.handle`, and checks every output against
an oracle that only knows the law: the latest decision per purpose by event
time, strict default, and an erasure wiping the slate.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.core.campaigns import DEFAULT_BOOK
from agents.core.consent import CHANNEL_PURPOSE, ConsentPolicy, forget_behaviour, revocation
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

    decided: dict[str, tuple[datetime, bool]] = field(default_factory=dict)
    erased_at: datetime | None = None
    latest: datetime | None = None  # newest event time consumed
    #: Triggers emitted and not cancelled: trigger_id -> (channel, send_at).
    outstanding: dict[str, tuple[str, datetime]] = field(default_factory=dict)

    def allows(self, purpose: str) -> bool:
        known = self.decided.get(purpose)
        return known is not None and known[1]


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
    for record in records:
        cid = record.customer_id
        oracle = oracles.setdefault(cid, Oracle())
        state = states.get(cid, CustomerState(cid))
        at = record.occurred_at
        # As the stage does: an erased customer's events up to the erasure are left out.
        if oracle.erased_at is not None and at <= oracle.erased_at:
            continue
        before_allows = {p: oracle.allows(p) for p in PURPOSES}
        now_before = oracle.latest
        oracle.latest = at if now_before is None else max(now_before, at)

        state, effects = handle(state, record, RULES, None, CATALOGUE)

        # The oracle's view of the consent change.
        erased = isinstance(record, ConsentChanged) and record.action == "erasure_requested"
        if erased:
            oracle.erased_at = at
            oracle.decided.clear()
        elif isinstance(record, ConsentChanged):
            for purpose in record.purposes:
                known = oracle.decided.get(purpose)
                if known is None or known[0] <= at:
                    oracle.decided[purpose] = (at, record.action == "granted")
        revoked = {p for p in PURPOSES if before_allows[p] and not oracle.allows(p)}

        # 1. Clicks and purchases are used only with consent to profiling.
        if isinstance(record, Clicked | Purchased):
            assert effects.skipped == (not before_allows["profiling"])
        # 2. No decision without personalisation (and profiling), no send without the channel.
        for decision in effects.decisions:
            assert oracle.allows("personalisation"), decision
            assert oracle.allows("profiling"), decision
        for trigger in effects.triggers:
            assert oracle.allows("personalisation"), trigger
            assert oracle.allows(CHANNEL_PURPOSE[trigger.channel]), trigger
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
    assert state == CustomerState("c-1")


def _granted(*purposes: str, at: datetime = T0) -> ConsentChanged:
    return ConsentChanged(event_id=f"k-{'-'.join(purposes)}-{at:%H%M}", customer_id="c-1",
                          occurred_at=at, schema_version=1, action="granted",
                          purposes=list(purposes), source="banner")


def _clicks(state: CustomerState, topic: str, n: int, start: datetime
            ) -> tuple[CustomerState, list[object]]:
    outputs: list[object] = []
    for i in range(n):
        click = Clicked(event_id=f"{topic}-{start:%d%H%M}-{i}", customer_id="c-1",
                        occurred_at=start + timedelta(minutes=i), schema_version=1,
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
