"""Campaign statistics: the uplift interval, bought-together counts and the proposal law."""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.core.cobuy import CoPurchases
from agents.core.proposals import Proposal, Refused, approve, expired, reject, resolution, sent
from agents.core.uplift import CampaignCounts, CampaignStats, uplift
from schemas.records import ProposalResolved, Purchased, PurchasedItem, SendProposed, SendTriggered

AT = datetime(2026, 3, 2, 9, tzinfo=UTC)


# --- uplift --------------------------------------------------------------------------------


@pytest.mark.parametrize(("p_treated", "p_holdout", "n"), [(0.12, 0.08, 400), (0.3, 0.3, 150),
                                                           (0.02, 0.05, 1000)])
def test_the_interval_covers_the_true_difference_about_as_often_as_it_says(
        p_treated: float, p_holdout: float, n: int) -> None:
    rng = random.Random(7)
    covered, runs = 0, 600
    for _ in range(runs):
        clicks = [sum(rng.random() < p for _ in range(n)) for p in (p_treated, p_holdout)]
        u = uplift(CampaignCounts(sends=n, clicks=clicks[0]),
                   CampaignCounts(sends=n, clicks=clicks[1]), "clicks")
        assert u.low is not None
        assert u.high is not None
        covered += u.low <= p_treated - p_holdout <= u.high
    # Newcombe's interval is close to nominal; 600 runs put 95 % within about ±2 points.
    assert 0.92 <= covered / runs <= 0.985


def test_revenue_uses_the_spread_per_exposure() -> None:
    rng = random.Random(3)
    totals = []
    for mean in (12.0, 10.0):
        counters = CampaignCounts()
        for _ in range(2000):
            r = rng.expovariate(1 / mean) if rng.random() < 0.5 else 0.0
            counters = counters.plus(CampaignCounts(sends=1, revenue=r, revenue_sq=r * r))
        totals.append(counters)
    u = uplift(totals[0], totals[1], "revenue")
    assert u.low is not None
    assert u.high is not None
    assert u.low < 1.0 < u.high  # the truth: 6 - 5
    assert u.high - u.low < 3.0


def test_without_a_holdout_there_is_no_interval() -> None:
    u = uplift(CampaignCounts(sends=10, clicks=2), CampaignCounts(), "clicks")
    assert (u.rate_treated, u.difference, u.low, u.high, u.significant) == (
        0.2, None, None, None, False)
    with pytest.raises(ValueError, match="metric: 'opens'"):
        uplift(CampaignCounts(), CampaignCounts(), "opens")


def test_stats_add_up_per_campaign_variant_and_group() -> None:
    stats = CampaignStats()
    stats.add([CampaignCounts("c", "n-1", "treated", exposure="t1", at=AT, sends=1),
               CampaignCounts("c", "n-2", "treated", exposure="t2", at=AT, sends=1),
               CampaignCounts("c", "n-1", "treated", exposure="t1", at=AT, clicks=1),
               CampaignCounts("c", "n-1", "holdout", exposure="h1", at=AT, sends=1),
               CampaignCounts("c", "n-2", "treated", exposure="t2", at=AT, sends=-1)])
    report = stats.report()["c"]
    assert report["treated"] == {"sends": 1, "clicks": 1, "conversions": 0, "revenue": 0.0}
    assert report["variants"]["n-1"]["holdout"]["sends"] == 1
    assert report["uplift"]["clicks"]["difference"] == 1.0


# --- bought together ---------------------------------------------------------------------


def _order(n: int, *skus: str) -> Purchased:
    return Purchased(event_id=f"o{n}", customer_id="c-1", occurred_at=AT, schema_version=1,
                     order_id=f"o{n}", total=1.0, currency="EUR",
                     items=[PurchasedItem(product_id=s, quantity=1, unit_price=1.0,
                                          topics=["t"]) for s in skus])


orders = st.lists(st.lists(st.sampled_from([f"p{i}" for i in range(30)]), min_size=1,
                           max_size=4), max_size=60)


@settings(max_examples=100, deadline=None)
@given(orders=orders)
def test_bought_together_counts_are_exact_while_memory_holds_them(orders: list[list[str]]
                                                                  ) -> None:
    model = CoPurchases(max_products=1000, top_k=100)
    for n, skus in enumerate(orders):
        model.learn(_order(n, *skus))
    for product in {s for skus in orders for s in skus}:
        truth = {}
        for skus in orders:
            if product in skus:
                for other in set(skus) - {product}:
                    truth[other] = truth.get(other, 0) + 1
        assert dict(model.also_bought(product, 1000)) == truth
        assert model.orders_with(product) == sum(product in skus for skus in orders)


@settings(max_examples=100, deadline=None)
@given(orders=orders)
def test_memory_stays_bounded_and_the_model_pickles(orders: list[list[str]]) -> None:
    model = CoPurchases(max_products=5, top_k=2)
    for n, skus in enumerate(orders):
        model.learn(_order(n, *skus))
        assert len(model) <= 5
        assert all(len(model.also_bought(p, 100)) <= 4 for p in model._partners)
    copy = pickle.loads(pickle.dumps(model))  # noqa: S301 # our own bytes, just made
    for p in model._partners:
        assert copy.also_bought(p) == model.also_bought(p)


def test_the_least_recently_bought_product_is_forgotten_first() -> None:
    model = CoPurchases(max_products=2)
    model.learn(_order(1, "a", "b"))
    model.learn(_order(2, "a"))
    model.learn(_order(3, "c"))
    assert (model.orders_with("a"), model.orders_with("b"), model.orders_with("c")) == (2, 0, 1)


# --- proposals -------------------------------------------------------------------------------


def _proposed(expires: timedelta = timedelta(hours=6)) -> Proposal:
    return Proposal.of(SendProposed(
        proposal_id="c-1:spring:k:email", idempotency_key="spring:c-1:k", customer_id="c-1",
        created_at=AT, expires_at=AT + expires, schema_version=1,
        send_at=AT + timedelta(hours=8), channel="email", campaign_id="spring",
        content_id="n-1", variant_language="de", reasons=["why"], caused_by="e1"))


@settings(max_examples=200, deadline=None)
@given(actions=st.lists(st.tuples(st.sampled_from(("approve", "reject", "expire")),
                                  st.integers(0, 10), st.booleans()), max_size=8))
def test_a_proposal_yields_at_most_one_trigger_and_an_approved_one_exactly_one(
        actions: list[tuple[str, int, bool]]) -> None:
    proposal, triggers = _proposed(), []
    for action, hour, may_send in actions:
        now = AT + timedelta(hours=hour)
        if action == "approve":
            proposal, outcome = approve(proposal, now, may_send, by="operator:ab12")
            if isinstance(outcome, SendTriggered):
                triggers.append(outcome)
        elif action == "reject":
            proposal, _ = reject(proposal, now, by="operator:ab12")
        else:
            proposal = next(iter(expired([proposal], now)), proposal)
    assert len(triggers) == (1 if proposal.status == "approved" else 0)
    for trigger in triggers:
        assert trigger.trigger_id == proposal.proposal_id
        assert trigger.send_at == proposal.record.send_at
        assert trigger.created_at < proposal.expires_at
    if not proposal.is_open:
        record = resolution(proposal)
        assert isinstance(record, ProposalResolved)
        assert record.status == proposal.status
        assert (record.trigger_id is not None) == (proposal.status == "approved")


def test_late_rejected_and_withdrawn_proposals_are_recorded_with_their_reason() -> None:
    late, outcome = approve(_proposed(), AT + timedelta(hours=6), True)
    assert (late.status, outcome) == ("expired", Refused("c-1:spring:k:email", "expired"))
    assert resolution(late).resolved_at == AT + timedelta(hours=6)
    gone, outcome = approve(_proposed(), AT, False, by="operator:ab12")
    assert gone.status == "withdrawn"
    assert resolution(gone).note == "consent no longer allows the send"
    no, refused = reject(_proposed(), AT, by="operator:ab12", note="wrong price")
    assert (no.status, refused, resolution(no).note) == ("rejected", None, "wrong price")
    assert approve(no, AT, True)[1] == Refused("c-1:spring:k:email", "already rejected")
    with pytest.raises(ValueError, match="still open"):
        resolution(_proposed())


def test_an_approved_send_counts_as_a_treated_send() -> None:
    _, trigger = approve(_proposed(), AT, True)
    assert isinstance(trigger, SendTriggered)
    delta = sent(trigger)
    assert (delta.campaign_id, delta.group, delta.sends, delta.variant) == (
        "spring", "treated", 1, "n-1")
