"""Campaign sends: caps, quiet hours, arbitration, pauses and proposals, under random load.

The property test draws a random campaign book (several campaigns on every
trigger, random caps, quiet hours, windows, holdouts, approval modes), a few
customers in random time zones, and a random stream of clicks, orders,
profile and consent events with random pauses and predictions, runs it
through :func:`agents.core.engine.handle`, lets an operator approve some
proposals, and checks what went out against the law alone.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.core.arbitration import in_holdout
from agents.core.campaigns import (
    DEFAULT_BOOK,
    AudienceRule,
    Campaign,
    CampaignBook,
    Cap,
    QuietHours,
    TriggerParameters,
)
from agents.core.cobuy import CoPurchases
from agents.core.consent import ConsentPolicy
from agents.core.customer import CustomerState
from agents.core.engine import Chosen, EngineRules, FollowUpRules, handle, went_quiet
from agents.core.interests import InterestRules, TagRule
from agents.core.profile import CustomerRules, ProfileRules
from agents.core.proposals import Proposal, approve
from agents.core.triggers import WentQuiet, quiet_checks
from schemas.records import (
    Clicked,
    ConsentChanged,
    ContentPublished,
    ContentVariant,
    ProfileUpdated,
    Purchased,
    PurchasedItem,
    Record,
    SendTriggered,
)
from tests.events import clicked

T0 = datetime(2026, 3, 2, tzinfo=UTC)
TOPICS = ("golf", "wine")
CHANNELS = ("email", "push", "sms", "web")
ZONES = ("Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Sydney", "UTC")
CUSTOMER = CustomerRules(
    InterestRules(tuple(TagRule(f"{t}-fans", t, min_clicks=2, window=timedelta(days=14),
                                floor=0.5) for t in TOPICS),
                  half_life=timedelta(days=7), max_recent=10),
    ProfileRules(history_max=100, history_retention=timedelta(days=365)))
CATALOGUE = {
    f"{t}-{n}": ContentPublished(
        event_id=f"p-{t}-{n}", content_id=f"{t}-{n}", occurred_at=T0 - timedelta(days=30 - n),
        schema_version=1, topics=[t], channels=list(CHANNELS), slots=["follow-up"],
        variants=[ContentVariant(language="en", title=t, url=f"https://shop.example/{t}")],
        default_language="en")
    for t in TOPICS for n in range(2)
}
ALL = ("profiling", "personalisation", "email", "push", "sms", "web")


@dataclass(frozen=True)
class Outlook:
    churn: float
    best_hour: int | None


def _cobuy() -> CoPurchases:
    model = CoPurchases()
    for n in range(4):
        model.learn(_order(f"seed-{n}", "x", T0, ("club", "golf"), ("red", "wine")))
    return model


def _order(eid: str, cid: str, at: datetime, *items: tuple[str, str]) -> Purchased:
    return Purchased(event_id=eid, customer_id=cid, occurred_at=at, schema_version=1,
                     order_id=eid, total=20.0 * len(items), currency="EUR",
                     items=[PurchasedItem(product_id=p, quantity=1, unit_price=20.0, topics=[t])
                            for p, t in items])


# --- strategies ----------------------------------------------------------------------

hours = st.integers(1, 96).map(lambda h: timedelta(hours=h))


@st.composite
def caps(draw: st.DrawFn, channel: str | None) -> Cap:
    return Cap(channel, draw(st.integers(1, 3)), draw(hours))


@st.composite
def campaigns(draw: st.DrawFn, n: int) -> Campaign:
    trigger = draw(st.sampled_from(("tag_assigned", "browse_abandonment", "cross_sell",
                                    "win_back")))
    channels = draw(st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=3, unique=True))
    return Campaign(
        f"c{n}", trigger, tuple(channels), priority=draw(st.integers(0, 3)),
        caps=tuple(draw(st.lists(caps(draw(st.sampled_from((None, *channels)))),
                                 max_size=2))),
        holdout_share=draw(st.sampled_from((0.0, 0.0, 0.3, 0.5))),
        approval=draw(st.booleans()),
        delay=draw(st.sampled_from((None, timedelta(0), timedelta(hours=3)))),
        audience=draw(st.sampled_from((AudienceRule(), AudienceRule(min_orders=1)))))


@st.composite
def books(draw: st.DrawFn) -> CampaignBook:
    n = draw(st.integers(1, 4))
    quiet = draw(st.none() | st.tuples(st.integers(0, 23), st.integers(0, 23)).filter(
        lambda se: se[0] != se[1]).map(lambda se: QuietHours(time(se[0]), time(se[1]))))
    return CampaignBook(
        campaigns=tuple(draw(campaigns(i)) for i in range(n)),
        caps=tuple(draw(caps(c)) for c in CHANNELS if draw(st.booleans())),
        quiet_hours=quiet,
        arbitration_window=draw(st.sampled_from((timedelta(0), timedelta(0), timedelta(hours=2),
                                                 timedelta(hours=24)))),
        proposal_ttl=timedelta(hours=6),
        triggers=TriggerParameters(browse_clicks=2, browse_window=timedelta(days=2),
                                   browse_wait=timedelta(hours=draw(st.integers(0, 30))),
                                   win_back_churn=0.6, cross_sell_support=2,
                                   cross_sell_delay=timedelta(hours=5)))


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[Record, bool, frozenset[str], Outlook | None]]:
    """Events with, for each, the kill switch, the campaigns paused and the predictions."""
    out: list[tuple[Record, bool, frozenset[str], Outlook | None]] = []
    customers = [f"k-{i}" for i in range(draw(st.integers(1, 3)))]
    for cid in customers:  # everyone starts consenting, most in a time zone
        out.append((ConsentChanged(event_id=f"{cid}-k0", customer_id=cid, occurred_at=T0,
                                   schema_version=1, action="granted", purposes=list(ALL),
                                   source="test"), False, frozenset(), None))
        zone = draw(st.sampled_from((*ZONES, None)))
        if zone is not None:
            out.append((ProfileUpdated(event_id=f"{cid}-p0", customer_id=cid, occurred_at=T0,
                                       schema_version=1, locale="en-GB", language="en",
                                       time_zone=zone), False, frozenset(), None))
    minutes = 0
    for i in range(draw(st.integers(1, 45))):
        cid = draw(st.sampled_from(customers))
        minutes += draw(st.integers(-120, 600))  # mostly forward, sometimes a late event
        at = T0 + timedelta(minutes=max(minutes, 0))
        kind = draw(st.sampled_from(("click", "click", "click", "click", "order", "profile",
                                     "consent")))
        eid = f"e{i}"
        record: Record
        if kind == "click":
            record = Clicked(event_id=eid, customer_id=cid, occurred_at=at, schema_version=1,
                             topics=[draw(st.sampled_from(TOPICS))])
        elif kind == "order":
            record = _order(eid, cid, at, draw(st.sampled_from((("club", "golf"),
                                                                ("red", "wine")))))
        elif kind == "profile":
            record = ProfileUpdated(event_id=eid, customer_id=cid, occurred_at=at,
                                    schema_version=1, locale="en-GB", language="en",
                                    time_zone=draw(st.sampled_from(ZONES)))
        else:
            record = ConsentChanged(
                event_id=eid, customer_id=cid, occurred_at=at, schema_version=1,
                action=draw(st.sampled_from(("granted", "granted", "revoked"))),
                purposes=draw(st.lists(st.sampled_from(ALL[2:]), min_size=1, unique=True)),
                source="test")
        kill = draw(st.integers(0, 5)) == 0
        paused = frozenset(draw(st.lists(st.sampled_from(("c0", "c1", "c2", "c3")),
                                         max_size=1)))
        outlook = draw(st.none() | st.builds(Outlook, st.floats(0, 1),
                                             st.none() | st.integers(0, 23)))
        out.append((record, kill, paused, outlook))
    return out


# --- the property ----------------------------------------------------------------------


@dataclass
class Sent:
    """What went out to one customer: live sends by trigger id, with their time zone."""

    sends: dict[str, tuple[SendTriggered, str | None]] = field(default_factory=dict)


@settings(max_examples=250, deadline=None)
@given(book=books(), events=streams(), approvals=st.lists(st.booleans(), min_size=40,
                                                          max_size=40))
def test_no_cap_broken_no_send_in_quiet_hours_none_while_paused_one_per_approval(
        book: CampaignBook, events: list[tuple[Record, bool, frozenset[str], Outlook | None]],
        approvals: list[bool]) -> None:
    rules = EngineRules(CUSTOMER, ConsentPolicy(), FollowUpRules(delay=timedelta(hours=1)),
                        book=book)
    cobuy = _cobuy()
    states: dict[str, CustomerState] = {}
    sent: dict[str, Sent] = defaultdict(Sent)
    proposals = 0
    for record, kill, paused, outlook in events:
        cid = record.customer_id  # type: ignore[attr-defined]
        state, effects = handle(states.get(cid, CustomerState(cid)), record, rules, None,
                                CATALOGUE, sends_paused=kill,
                                campaign_paused=paused.__contains__, predictions=outlook,
                                cobuy=cobuy)
        states[cid] = state
        zone = state.master.time_zone if state.master else None
        # While paused, nothing is sent or proposed; decisions are still made.
        for out in (*effects.triggers, *effects.proposals):
            assert not kill, out
            assert out.campaign_id not in paused, out
        for refusal in effects.refused:
            if refusal.reason == "paused":
                assert kill or refusal.campaign_id in paused
        for trigger in effects.triggers:
            assert rules.consent.may_send(state, trigger.channel), trigger  # consent first
            assert not book.campaign(trigger.campaign_id).approval
            assert not in_holdout(trigger.campaign_id, cid,
                                  book.campaign(trigger.campaign_id).holdout_share)
            sent[cid].sends[trigger.trigger_id] = (trigger, zone)
        # An operator approves some proposals before they expire: each yields one trigger.
        for proposed in effects.proposals:
            proposals += 1
            if approvals[proposals % len(approvals)] and proposed.expires_at > proposed.created_at:
                approved, trigger = approve(Proposal.of(proposed), proposed.created_at, True)
                assert isinstance(trigger, SendTriggered)
                assert trigger.trigger_id == proposed.proposal_id
                again = approve(approved, proposed.created_at, True)
                assert again[0] == approved
                assert not isinstance(again[1], SendTriggered)
                sent[cid].sends[trigger.trigger_id] = (trigger, zone)
        for cancelled in effects.cancellations:
            sent[cid].sends.pop(cancelled.trigger_id, None)
    for log in sent.values():
        _check(book, list(log.sends.values()))


def _check(book: CampaignBook, sends: list[tuple[SendTriggered, str | None]]) -> None:
    """The law, for one customer's sends that went out."""
    times = sorted(t.send_at for t, _ in sends)
    # 1. At most one send per arbitration window.
    for a, b in pairwise(times):
        assert b - a >= book.arbitration_window, (a, b)
    # 2. No window of a cap's length holds more sends than the cap allows.
    for cap in book.caps:
        on = sorted(t.send_at for t, _ in sends if t.channel == cap.channel)
        for start in on:
            assert sum(1 for s in on if start <= s < start + cap.per) <= cap.max, (cap, on)
    for campaign in book.campaigns:
        for cap in campaign.caps:
            on = sorted(t.send_at for t, _ in sends if t.campaign_id == campaign.campaign_id
                        and cap.channel in (None, t.channel))
            for start in on:
                assert sum(1 for s in on if start <= s < start + cap.per) <= cap.max, (
                    campaign.campaign_id, cap, on)
    # 3. No send in quiet hours, local to the customer (UTC without a time zone).
    if book.quiet_hours is not None:
        for trigger, zone in sends:
            local = trigger.send_at.astimezone(ZoneInfo(zone or "UTC"))
            assert not book.quiet_hours.covers(local.time()), (trigger.send_at, zone, local)


# --- behaviours, one by one --------------------------------------------------------------

def _berlin(cid: str) -> ProfileUpdated:
    return ProfileUpdated(event_id="p0", customer_id=cid, occurred_at=T0, schema_version=1,
                          locale="de-DE", language="de", time_zone="Europe/Berlin")


def _consented(*channels: str, cid: str = "c-1") -> CustomerState:
    state = CustomerState(cid)
    grant = ConsentChanged(event_id="k0", customer_id=cid, occurred_at=T0, schema_version=1,
                           action="granted", purposes=["profiling", "personalisation",
                                                       *channels], source="test")
    state, _ = handle(state, grant, RULES, None, CATALOGUE)
    state, _ = handle(state, _berlin(cid), RULES, None, CATALOGUE)
    return state


NO_HOLDOUT = replace(DEFAULT_BOOK, campaigns=tuple(replace(c, holdout_share=0.0)
                                                   for c in DEFAULT_BOOK.campaigns))
RULES = EngineRules(CUSTOMER, ConsentPolicy(), book=NO_HOLDOUT)


def _click(n: int, at: datetime, topic: str = "golf", cid: str = "c-1", **more: object
           ) -> Clicked:
    return clicked(f"g{n}", cid, at=at, topics=[topic], **more)


def _run(state: CustomerState, records: list[Record], rules: EngineRules = RULES,
         **options: object) -> tuple[CustomerState, list[object]]:
    effects = []
    for record in records:
        state, e = handle(state, record, rules, None, CATALOGUE, **options)  # type: ignore[arg-type]
        effects.append(e)
    return state, effects


def test_a_follow_up_in_quiet_hours_moves_to_their_end_in_the_customers_time_zone() -> None:
    late = T0 + timedelta(hours=20, minutes=30)  # 21:30 in Berlin, +1h delay: 22:30
    _, (_, e) = _run(_consented("email"), [_click(1, late), _click(2, late)])
    (trigger,) = e.triggers  # type: ignore[attr-defined]
    assert trigger.send_at == datetime(2026, 3, 3, 7, tzinfo=UTC)  # 08:00 in Berlin
    assert "quiet hours 21:00-08:00 Europe/Berlin: moved to 08:00" in trigger.reasons
    assert "cap email 0/2 per 7d passed" in trigger.reasons
    assert trigger.idempotency_key == (
        f"interest-follow-up:c-1:tag:golf-fans:{late.isoformat()}")


def test_the_best_send_hour_schedules_the_send() -> None:
    at = T0 + timedelta(hours=9)  # 10:00 in Berlin
    _, (_, e) = _run(_consented("email"), [_click(1, at), _click(2, at)],
                     predictions=Outlook(0.1, 19))
    (trigger,) = e.triggers  # type: ignore[attr-defined]
    assert trigger.send_at == datetime(2026, 3, 2, 18, tzinfo=UTC)
    assert "best send hour 19:00 Europe/Berlin" in trigger.reasons


def test_a_capped_channel_falls_back_to_the_next_and_all_capped_is_refused_as_capped() -> None:
    book = replace(NO_HOLDOUT, arbitration_window=timedelta(0),
                   caps=(Cap("email", 1, timedelta(days=7)), Cap("push", 1, timedelta(days=7))))
    rules = replace(RULES, book=book)
    state = _consented("email", "push")
    day = T0 + timedelta(hours=10)
    state, effects = _run(state, [_click(1, day), _click(2, day, "golf"),
                                  _click(3, day, "wine"), _click(4, day, "wine"),
                                  _click(5, day, "golf"), _click(6, day, "golf")], rules)
    sends = [t for e in effects for t in e.triggers]  # type: ignore[attr-defined]
    assert [t.channel for t in sends] == ["email", "push"]
    refused = [r for e in effects for r in e.refused]  # type: ignore[attr-defined]
    assert any(r.reason == "capped" and "cap push 1 per 7d: 1 already" in r.detail
               for r in refused), refused


def test_arbitration_sends_the_higher_priority_and_refuses_the_other() -> None:
    # The second golf click assigns the tag (follow-up, priority 100) and makes a
    # browse-abandonment streak (priority 80): one send, the follow-up.
    book = replace(NO_HOLDOUT, triggers=replace(NO_HOLDOUT.triggers, browse_clicks=2))
    state = _consented("email")
    at = T0 + timedelta(hours=10)
    state, (_, e) = _run(state, [_click(1, at), _click(2, at)], replace(RULES, book=book))
    (trigger,) = e.triggers  # type: ignore[attr-defined]
    assert trigger.campaign_id == "interest-follow-up"
    (refusal,) = e.refused  # type: ignore[attr-defined]
    assert (refusal.campaign_id, refusal.reason) == ("browse-abandonment", "arbitration")
    assert refusal.detail.startswith("lost to interest-follow-up tag:golf-fans:")
    assert refusal.detail.endswith("(priority 100, strength 1.000)")


def test_the_learned_scores_pick_content_but_not_which_candidate_wins() -> None:
    # Two clicks on golf and wine assign both tags at once: two follow-ups of equal
    # priority and strength.  Whichever topic's items the policy scores higher, the
    # same one is sent (the first key), so a replay, or a worker restarted from an
    # older model after a crash, rebuilds the same contact log.
    at = T0 + timedelta(hours=10)
    clicks: list[Record] = [Clicked(event_id=f"gw{n}", customer_id="c-1",
                                    occurred_at=at + timedelta(minutes=n), schema_version=1,
                                    topics=["golf", "wine"]) for n in range(2)]

    def favouring(topic: str) -> object:
        def choose(state: CustomerState, channel: str, when: datetime,
                   items: list[ContentPublished]) -> Chosen:
            ids = sorted(i.content_id for i in items)
            liked = topic in items[0].topics
            return Chosen(ids[-1] if liked else ids[0], "en", False, "exploit",
                          0.9 if liked else 0.1, ())
        return choose

    sent = []
    for topic in TOPICS:
        _, effects = _run(_consented("email"), clicks, choose=favouring(topic))
        (trigger,) = [t for e in effects for t in e.triggers]  # type: ignore[attr-defined]
        refused = [r for e in effects for r in e.refused]  # type: ignore[attr-defined]
        assert [r.reason for r in refused] == ["arbitration"], refused
        sent.append((trigger.idempotency_key, trigger.channel, trigger.content_id))
    (golf_key, _, golf_item), (wine_key, _, wine_item) = sent
    assert golf_key == wine_key
    assert ":tag:golf-fans:" in golf_key
    # The content is still the policy's pick.
    assert (golf_item, wine_item) == ("golf-1", "golf-0")


def test_an_order_withdraws_a_browse_abandonment_reminder_and_its_count() -> None:
    state = _consented("email")
    at = T0 + timedelta(hours=10)
    wine = [_click(i, at + timedelta(minutes=i), "wine") for i in range(3)]
    state, effects = _run(state, wine)
    # Tag rules need 2 clicks: the tag's follow-up goes first, the third click is a reminder
    # candidate within the arbitration window: refused.
    assert [t.campaign_id for e in effects for t in e.triggers] == ["interest-follow-up"]  # type: ignore[attr-defined]
    # A day later, three more clicks and no order: the reminder.
    later = at + timedelta(days=2)
    state, effects = _run(state, [_click(10 + i, later + timedelta(minutes=i), "wine")
                                  for i in range(3)])
    (reminder,) = [t for e in effects for t in e.triggers]  # type: ignore[attr-defined]
    assert reminder.campaign_id == "browse-abandonment"
    assert reminder.send_at == later + timedelta(hours=24)  # with two clicks of the 1st streak
    state, (e,) = _run(state, [_order("o1", "c-1", later + timedelta(hours=1),
                                      ("red", "wine"))])
    (cancelled,) = e.cancellations  # type: ignore[attr-defined]
    assert (cancelled.trigger_id, cancelled.reason) == (reminder.trigger_id, "purchased")
    assert [(s.campaign_id, s.sends) for s in e.stats if s.sends] == [  # type: ignore[attr-defined]
        ("browse-abandonment", -1)]
    assert reminder.trigger_id not in {p.trigger_id for p in state.pending}


def test_an_order_read_before_earlier_clicks_leaves_no_reminder_either() -> None:
    """Read in either order, the clicks and the order end with no reminder sent."""
    first = T0 + timedelta(hours=10)  # the tag's follow-up, and no reminder within 24h
    state, _ = _run(_consented("email"),
                    [_click(i, first + timedelta(minutes=i), "wine") for i in range(3)])
    at = first + timedelta(days=2)
    clicks = [_click(20 + i, at + timedelta(minutes=i), "wine") for i in range(3)]
    order = _order("o9", "c-1", at + timedelta(hours=1), ("red", "wine"))
    outcomes = []
    for records in ([*clicks, order], [order, *clicks]):
        _, effects = _run(state, records)
        cancelled = {c.trigger_id for e in effects for c in e.cancellations}  # type: ignore[attr-defined]
        outcomes.append(sorted(t.campaign_id for e in effects for t in e.triggers  # type: ignore[attr-defined]
                               if t.trigger_id not in cancelled))
    assert outcomes[0] == outcomes[1] == []


def test_cross_sell_and_win_back_fire_from_their_models() -> None:
    state = _consented("email")
    at = T0 + timedelta(hours=10)
    state, (e,) = _run(state, [_order("o1", "c-1", at, ("club", "golf"))], cobuy=_cobuy())
    (trigger,) = e.triggers  # type: ignore[attr-defined]
    assert trigger.campaign_id == "cross-sell"
    assert trigger.content_id.startswith("wine-")
    assert any("customers" in r or "also had red" in r for r in trigger.reasons)
    # Her own event never starts a win-back (she is back), however high the risk.
    state, (e,) = _run(state, [_click(9, at + timedelta(days=1), "golf")],
                       predictions=Outlook(0.9, None))
    assert not e.triggers  # type: ignore[attr-defined]
    seen = state.last_event_at
    assert seen is not None
    # Event time passes her first quiet check: the win-back, as of the check's time.
    check = quiet_checks(seen)
    assert check == seen + timedelta(days=7)
    state, e = went_quiet(state, WentQuiet("c-1", check, seen), RULES, CATALOGUE,
                          predictions=Outlook(0.9, None))
    (trigger,) = e.triggers
    assert (trigger.campaign_id, trigger.created_at) == ("win-back", check)
    assert "win-back: quiet for 7 days, churn risk 0.90 at or above 0.70" in trigger.reasons
    # The same check again (a replay, a retried batch): refused, not sent twice.
    _, again = went_quiet(state, WentQuiet("c-1", check, seen), RULES, CATALOGUE,
                          predictions=Outlook(0.9, None))
    assert [r.reason for r in again.refused] == ["duplicate"]
    # The next check, a week later: the campaign's 30-day cap holds it back.
    later = quiet_checks(seen, check)
    assert later == check + timedelta(days=7)
    _, e = went_quiet(state, WentQuiet("c-1", later, seen), RULES, CATALOGUE,
                      predictions=Outlook(0.9, None))
    assert [r.reason for r in e.refused] == ["capped"]
    # A check counted from an older event is stale: she was active since.
    _, e = went_quiet(state, WentQuiet("c-1", later, at), RULES, CATALOGUE,
                      predictions=Outlook(0.9, None))
    assert not e.triggers
    assert not e.refused
    # Below the threshold nothing is planned at all.
    _, e = went_quiet(state, WentQuiet("c-1", later, seen), RULES, CATALOGUE,
                      predictions=Outlook(0.5, None))
    assert not e.triggers
    assert not e.refused


def test_a_paused_campaign_makes_a_shadow_decision_and_another_campaign_may_send() -> None:
    book = replace(NO_HOLDOUT, triggers=replace(NO_HOLDOUT.triggers, browse_clicks=2))
    at = T0 + timedelta(hours=10)
    _, (_, e) = _run(_consented("email"), [_click(1, at), _click(2, at)],
                     replace(RULES, book=book),
                     campaign_paused=lambda c: c == "interest-follow-up")
    shadow, _ = e.decisions  # type: ignore[attr-defined]
    assert shadow.campaign_id == "interest-follow-up"
    assert shadow.reasons[-1].startswith("shadow decision")
    assert [t.campaign_id for t in e.triggers] == ["browse-abandonment"]  # type: ignore[attr-defined]
    _, (_, e) = _run(_consented("email"), [_click(1, at), _click(2, at)],
                     replace(RULES, book=book), sends_paused=True)
    assert e.triggers == []  # type: ignore[attr-defined]
    assert len(e.decisions) == 2  # type: ignore[attr-defined]
    assert {r.reason for r in e.refused} == {"paused"}  # type: ignore[attr-defined]


def test_a_customer_in_the_holdout_gets_nothing_and_counts_as_an_exposure() -> None:
    share = 0.5
    book = replace(NO_HOLDOUT, campaigns=(replace(NO_HOLDOUT.campaigns[0],
                                                  holdout_share=share),))
    held = next(f"h-{i}" for i in range(100) if in_holdout("interest-follow-up", f"h-{i}",
                                                           share))
    at = T0 + timedelta(hours=10)
    state, (_, e) = _run(_consented("email", cid=held),
                         [_click(1, at, cid=held), _click(2, at, cid=held)],
                         replace(RULES, book=book))
    assert e.triggers == []  # type: ignore[attr-defined]
    assert e.decisions == []  # type: ignore[attr-defined]
    (exposed,) = e.stats  # type: ignore[attr-defined]
    assert (exposed.group, exposed.sends) == ("holdout", 1)
    (entry,) = [h for h in state.history if h.kind == "holdout"]
    # An organic click on that item within the attribution window counts for the holdout.
    _, (e,) = _run(state, [_click(3, entry.occurred_at + timedelta(hours=2), cid=held,
                                  content_id=entry.content_id)], replace(RULES, book=book))
    assert [(s.group, s.clicks) for s in e.stats] == [("holdout", 1)]  # type: ignore[attr-defined]


def test_a_click_on_a_trigger_counts_once_and_an_order_converts() -> None:
    state = _consented("email")
    at = T0 + timedelta(hours=10)
    state, (_, e) = _run(state, [_click(1, at), _click(2, at)])
    (trigger,) = e.triggers  # type: ignore[attr-defined]
    clicked = trigger.send_at + timedelta(minutes=5)
    state, effects = _run(state, [
        _click(3, clicked, decision_id=trigger.trigger_id, content_id=trigger.content_id),
        _click(4, clicked + timedelta(minutes=1), content_id=trigger.content_id),
        _order("o9", "c-1", clicked + timedelta(minutes=9), ("club", "golf")),
        _order("o10", "c-1", clicked + timedelta(minutes=19), ("club", "golf"))])
    # (The clicks also start a browse-abandonment reminder, which the first order withdraws.)
    stats = [s for e in effects for s in e.stats  # type: ignore[attr-defined]
             if s.campaign_id == "interest-follow-up"]
    assert [(s.clicks, s.conversions, s.revenue) for s in stats] == [
        (1, 0, 0.0), (0, 1, 20.0), (0, 0, 20.0)]
    assert stats[-1].revenue_sq == 40.0 ** 2 - 20.0 ** 2
    assert {s.exposure for s in stats} == {trigger.trigger_id}


def test_approval_mode_proposes_and_keeps_the_slot() -> None:
    book = replace(NO_HOLDOUT, campaigns=(replace(NO_HOLDOUT.campaigns[0], approval=True),))
    at = T0 + timedelta(hours=10)
    state, (_, e) = _run(_consented("email"), [_click(1, at), _click(2, at)],
                         replace(RULES, book=book))
    assert e.triggers == []  # type: ignore[attr-defined]
    assert e.stats == []  # type: ignore[attr-defined]
    (proposed,) = e.proposals  # type: ignore[attr-defined]
    assert proposed.expires_at == proposed.send_at  # the follow-up's hour is shorter than ttl
    assert [p.trigger_id for p in state.pending] == [proposed.proposal_id]
    assert e.decisions[0].reasons[-1] == "approval mode: proposed to an operator"  # type: ignore[attr-defined]


def test_the_same_events_give_the_same_ids_on_replay() -> None:
    at = T0 + timedelta(hours=10)
    events: list[Record] = [_click(1, at), _click(2, at), _click(3, at + timedelta(days=3))]
    runs = [_run(_consented("email", "push"), events)[1] for _ in range(2)]
    keys = [[(t.trigger_id, t.idempotency_key) for e in run for t in e.triggers]  # type: ignore[attr-defined]
            for run in runs]
    assert keys[0]
    assert keys[0] == keys[1]


def test_past_sends_stay_in_the_contact_log_while_a_cap_counts_them() -> None:
    state = _consented("email")
    at = T0 + timedelta(hours=10)
    state, _ = _run(state, [_click(1, at), _click(2, at)])
    (sent,) = state.pending
    state, _ = _run(state, [_click(3, at + timedelta(days=20), "wine"),
                            _click(4, at + timedelta(days=20), "wine")])
    assert sent in state.pending  # 20 days: the 30-day win-back cap still counts sends
    state, _ = _run(state, [_click(5, at + timedelta(days=45), "golf"),
                            _click(6, at + timedelta(days=45, minutes=1), "golf")])
    assert sent not in state.pending
