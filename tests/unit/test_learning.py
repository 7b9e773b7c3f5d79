"""The content policy: candidates, language fallback, features, holdout, bandit, rewards."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.core.candidates import Candidate, candidates
from agents.core.customer import AssignedTag, CustomerState, MasterData, TopicInterest
from agents.core.learning import (
    MAX_EXPLORE,
    ClickCounts,
    ContentPolicy,
    Context,
    PolicyConfig,
    context_for,
    features,
    in_holdout,
    item_features,
    merged,
)
from agents.core.rewards import (
    EXPIRED,
    OpenDecision,
    Reaction,
    attribute,
    expire,
    next_deadline,
    open_decision,
    reaction_of,
)
from agents.core.snapshots import SnapshotInvalid
from schemas.records import ContentPublished, ContentVariant, Purchased, PurchasedItem

AT = datetime(2026, 3, 2, 18, tzinfo=UTC)
WEEK = timedelta(days=7)
TOPICS = ("golf", "books", "travel", "tech")


def item(content_id: str, topics: tuple[str, ...] = ("golf",), languages: tuple[str, ...] = ("de",),
         default: str = "de", channels: tuple[str, ...] = ("email", "web"),
         slots: tuple[str, ...] = ("newsletter-block",), campaign: str | None = None,
         valid_from: datetime | None = None, valid_until: datetime | None = None
         ) -> ContentPublished:
    return ContentPublished(
        event_id=f"e-{content_id}", content_id=content_id, occurred_at=AT - WEEK,
        schema_version=1, topics=list(topics), channels=list(channels), slots=list(slots),
        variants=[ContentVariant(language=lang, title="t", url="u") for lang in languages],
        default_language=default, campaign_id=campaign, valid_from=valid_from,
        valid_until=valid_until)


def context(customer_id: str = "c-1", shares: dict[str, float] | None = None,
            personalise: bool = True) -> Context:
    return Context(customer_id, "email", "newsletter-block", AT,
                   shares if shares is not None else {"golf": 0.9, "books": 0.1},
                   personalise=personalise)


def no_holdout(**fields: float) -> PolicyConfig:
    return PolicyConfig(holdout_share=0.0, **fields)  # type: ignore[arg-type] # floats only


# --- candidates and language fallback ------------------------------------------------------


def test_candidates_are_valid_now_on_the_channel_and_slot() -> None:
    catalogue = [
        item("ok"),
        item("wrong-channel", channels=("push",)),
        item("wrong-slot", slots=("web-banner",)),
        item("not-yet", valid_from=AT + timedelta(seconds=1)),
        item("over", valid_until=AT),  # valid_until is exclusive
        item("just-started", valid_from=AT, valid_until=AT + timedelta(seconds=1)),
    ]
    found = candidates(catalogue, "email", "newsletter-block", AT, "de")
    assert [c.content_id for c in found] == ["just-started", "ok"]


def test_language_fallback_chain_customer_campaign_catalogue() -> None:
    catalogue = [item("own", languages=("de", "fr"), default="de"),
                 item("campaign", languages=("de", "en"), default="de", campaign="spring"),
                 item("default", languages=("de", "en"), default="de"),
                 item("any", languages=("it", "nl"), default="es")]
    found = {c.content_id: (c.language, c.fallback)
             for c in candidates(catalogue, "email", "newsletter-block", AT, "fr",
                                 {"spring": "en"})}
    assert found == {"own": ("fr", None), "campaign": ("en", "campaign"),
                     "default": ("de", "catalogue"), "any": ("it", "any")}


# --- context and features ----------------------------------------------------------------


def test_context_shares_sum_to_one_and_leave_the_state_alone() -> None:
    state = CustomerState(
        "c-1", master=MasterData("de-DE", "de", "Europe/Berlin", AT),
        interests={"golf": TopicInterest(2.0, AT - WEEK), "books": TopicInterest(1.0, AT)},
        tags={"golf-fans": AssignedTag("golf", AT, "e1")}, last_event_at=AT)
    before = repr(state)
    ctx = context_for(state, "email", "newsletter-block", AT, WEEK, device="mobile")
    assert repr(state) == before
    assert math.isclose(sum(ctx.shares.values()), 1.0)
    assert ctx.shares["golf"] == pytest.approx(0.5)  # 2.0 halved by a week equals books' 1.0
    assert ctx.tag_topics == {"golf"}
    assert {"language:de", "daypart:evening", "device:mobile"} <= set(ctx.extra)


def test_a_customer_without_interests_has_no_shares() -> None:
    ctx = context_for(CustomerState("c-1"), "web", "web-banner", AT, WEEK)
    assert ctx.shares == {}
    assert "daypart:evening" in ctx.extra  # UTC without a time zone


@given(shares=st.dictionaries(st.sampled_from(TOPICS), st.floats(0, 1), max_size=4),
       topics=st.lists(st.sampled_from(TOPICS), min_size=1, max_size=3, unique=True),
       popularity=st.floats(0, 1), personalise=st.booleans())
def test_features_are_finite_and_ranking_features_are_a_subset(
        shares: dict[str, float], topics: list[str], popularity: float,
        personalise: bool) -> None:
    ctx = context(shares=shares, personalise=personalise)
    candidate = Candidate("n-1", tuple(topics), "de", "catalogue", None, popularity)
    x = features(ctx, candidate)
    assert all(math.isfinite(v) for v in x.values())
    assert 0.0 <= x.get("affinity", 0.0) <= 1.0
    assert item_features(ctx, candidate).items() <= x.items()
    assert personalise or not {"affinity", "tag_match"} & set(x)


# --- holdout --------------------------------------------------------------------------------


@given(share=st.floats(0.01, 0.5), salt=st.text(min_size=1, max_size=20))
def test_holdout_share_is_respected(share: float, salt: str) -> None:
    n = 4000
    members = sum(in_holdout(f"cust-{i}", share, salt) for i in range(n))
    tolerance = 4 * math.sqrt(share * (1 - share) / n)  # four standard errors
    assert abs(members / n - share) <= tolerance


def test_holdout_is_stable_per_customer_and_changes_with_the_salt() -> None:
    ids = [f"cust-{i}" for i in range(500)]
    first = [in_holdout(c, 0.2, "a") for c in ids]
    assert first == [in_holdout(c, 0.2, "a") for c in ids]
    assert first != [in_holdout(c, 0.2, "b") for c in ids]


# --- the policy ------------------------------------------------------------------------------


def trained(config: PolicyConfig | None = None) -> tuple[ContentPolicy, list[Candidate]]:
    """A policy that learnt golf readers click golf items and ignore books items."""
    policy = ContentPolicy(config or no_holdout(explore=0.0))
    golf, books = Candidate("n-golf", ("golf",), "de"), Candidate("n-books", ("books",), "de")
    for _ in range(300):
        policy.learn(features(context(), golf), True)
        policy.learn(features(context(), books), False)
    return policy, [books, golf]


def test_exploit_picks_what_the_customer_clicks_and_explains_it() -> None:
    policy, options = trained()
    choice = policy.choose(context(), options, random.Random(1))
    assert choice is not None
    assert (choice.content_id, choice.policy) == ("n-golf", "exploit")
    assert choice.score > 0.5
    assert choice.model_version == "content-policy@0+600"
    assert choice.top_features
    assert all(w != 0 for _, w in choice.top_features)
    assert choice.features == features(context(), options[1])


def test_no_candidates_no_choice() -> None:
    assert ContentPolicy().choose(context(), [], random.Random(1)) is None


def test_without_consent_to_personalise_the_choice_is_neutral_and_uses_no_profile() -> None:
    policy, options = trained()
    policy.observe_click("n-books", AT)  # books is what everyone clicks now
    choice = policy.choose(context(personalise=False), options, random.Random(1))
    assert choice is not None
    assert (choice.content_id, choice.policy) == ("n-books", "neutral")
    assert not {"affinity", "tag_match", "bias"} & set(choice.features)


def test_holdout_customers_get_a_random_choice() -> None:
    policy, options = trained(PolicyConfig(holdout_share=0.999, explore=0.0))
    picks = {policy.choose(context(f"c-{i}"), options, random.Random(i)).content_id  # type: ignore[union-attr] # options are never empty
             for i in range(40)}
    assert picks == {"n-golf", "n-books"}


@pytest.mark.parametrize("explore", [0.0, 0.1, 0.3])
def test_exploration_share_is_bounded_by_the_config(explore: float) -> None:
    policy, options = trained(no_holdout(explore=explore))
    rng = random.Random(7)
    policies = [policy.choose(context(), options, rng).policy  # type: ignore[union-attr] # never empty
                for _ in range(3000)]
    assert abs(policies.count("explore") / 3000 - explore) < 0.025


@pytest.mark.parametrize(("field", "value"), [("explore", MAX_EXPLORE + 0.01),
                                              ("explore", -0.1), ("holdout_share", 1.0),
                                              ("learning_rate", 0.0), ("prior_ctr", 1.0)])
def test_unusable_policy_settings_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        PolicyConfig(**{field: value})  # type: ignore[arg-type] # one float field at a time


def test_same_seed_same_choices() -> None:
    policy, options = trained(PolicyConfig(explore=0.3, holdout_share=0.3))

    def run(seed: int) -> list[tuple[str, str]]:
        rng = random.Random(seed)
        return [(c.content_id, c.policy) for i in range(200)
                if (c := policy.choose(context(f"c-{i}"), options, rng)) is not None]

    assert run(3) == run(3)


def test_learning_does_not_change_its_input() -> None:
    policy, x = ContentPolicy(), {"affinity": 0.5, "item:n-1": 1.0}
    policy.learn_one(x, True)
    assert x == {"affinity": 0.5, "item:n-1": 1.0}


def test_popularity_counts_are_order_independent() -> None:
    times = [AT + timedelta(hours=h) for h in (0, 30, 5, 70, 1)]
    forward, backward = ClickCounts(timedelta(days=1)), ClickCounts(timedelta(days=1))
    for t in times:
        forward.learn_one("n-1", t)
    for t in reversed(times):
        backward.learn_one("n-1", t)
    end = AT + timedelta(days=5)
    assert forward.count("n-1", end) == pytest.approx(backward.count("n-1", end))
    assert forward.count("n-2", end) == 0.0


# --- snapshots -------------------------------------------------------------------------------


@given(xs=st.lists(st.dictionaries(
    st.sampled_from(["affinity", "tag_match", "item:n-1", "item:n-2", "popularity"]),
    st.floats(-3, 3), min_size=1), min_size=1, max_size=20))
def test_a_restored_policy_predicts_exactly_as_the_original(xs: list[dict[str, float]]) -> None:
    policy, options = trained(PolicyConfig(explore=0.2, holdout_share=0.2))
    policy.observe_click("n-golf", AT)
    blob, checksum = policy.to_snapshot(4, AT)
    restored = ContentPolicy.from_snapshot(blob, checksum)
    assert restored.model_version == policy.model_version == "content-policy@4+600"
    for x in xs:
        assert restored.predict_proba_one(x) == policy.predict_proba_one(x)
    for i in range(30):
        a = policy.choose(context(f"c-{i}"), options, random.Random(i))
        b = restored.choose(context(f"c-{i}"), options, random.Random(i))
        assert a == b


def test_a_damaged_policy_snapshot_is_refused() -> None:
    blob, checksum = ContentPolicy().to_snapshot(1, AT)
    with pytest.raises(SnapshotInvalid, match="checksum"):
        ContentPolicy.from_snapshot(blob[:-3], checksum)


# --- rewards -----------------------------------------------------------------------------------

WINDOW = timedelta(minutes=30)


def shown(decision_id: str, content_id: str = "n-1", at: datetime = AT,
          topics: tuple[str, ...] = ("golf",)) -> OpenDecision:
    return OpenDecision(decision_id, content_id, topics, at, at + WINDOW, {"affinity": 1.0})


def test_a_reaction_carrying_the_decision_id_rewards_that_decision_even_on_other_content(
        ) -> None:
    opened = (shown("d-1"), shown("d-2", "n-2"))
    rest, labels = attribute(opened, Reaction("e-1", AT + WINDOW * 2, "d-2", "n-9"))
    assert [(r.decision.decision_id, r.clicked, r.caused_by) for r in labels] == [
        ("d-2", True, "e-1")]
    assert rest == (opened[0],)


def test_a_click_without_id_rewards_the_latest_matching_decision_inside_the_window() -> None:
    early, late = shown("d-1"), shown("d-2", at=AT + timedelta(minutes=10))
    _, labels = attribute((early, late), Reaction("e-1", AT + timedelta(minutes=20),
                                                  content_id="n-1"))
    assert [r.decision.decision_id for r in labels] == ["d-2"]
    _, outside = attribute((early,), Reaction("e-2", AT + WINDOW, content_id="n-1"))
    _, other = attribute((early,), Reaction("e-3", AT, content_id="n-2"))
    assert outside == other == []


def test_a_purchase_on_a_decided_topic_rewards_it() -> None:
    _, labels = attribute((shown("d-1", topics=("golf", "travel")),),
                          Reaction("o-1", AT + timedelta(minutes=5), topics=("travel",),
                                   kind="purchase"))
    assert [r.clicked for r in labels] == [True]


def test_a_decision_is_rewarded_once() -> None:
    opened = (shown("d-1"),)
    rest, first = attribute(opened, Reaction("e-1", AT, "d-1"))
    again, second = attribute(rest, Reaction("e-1", AT, "d-1"))
    assert len(first) == 1
    assert second == []
    assert again == ()


def test_silence_until_the_deadline_is_a_non_click() -> None:
    opened = (shown("d-1"), shown("d-2", at=AT + timedelta(minutes=10)))
    assert next_deadline(opened) == AT + WINDOW
    rest, labels = expire(opened, AT + WINDOW)
    assert [(r.decision.decision_id, r.clicked, r.caused_by, r.at) for r in labels] == [
        ("d-1", False, EXPIRED, AT + WINDOW)]
    assert rest == (opened[1],)
    assert next_deadline(()) is None


def test_open_decisions_are_bounded_and_not_duplicated() -> None:
    opened: tuple[OpenDecision, ...] = ()
    dropped = []
    for i in range(5):
        opened, labels = open_decision(opened, shown(f"d-{i}", at=AT + timedelta(minutes=i)),
                                       limit=3)
        dropped += labels
    assert [d.decision_id for d in opened] == ["d-2", "d-3", "d-4"]
    assert [(r.decision.decision_id, r.clicked) for r in dropped] == [("d-0", False),
                                                                      ("d-1", False)]
    assert open_decision(opened, shown("d-3"), limit=3) == (opened, [])


def test_replicas_merge_by_adding_what_each_learnt() -> None:
    base, _ = trained()
    base.observe_click("n-golf", AT)
    blob, checksum = base.to_snapshot(1, AT)
    a, b = ContentPolicy.from_snapshot(blob, checksum), ContentPolicy.from_snapshot(blob, checksum)
    a.learn_one({"affinity": 1.0, "item:n-golf": 1.0}, True)
    a.observe_click("n-golf", AT)
    b.learn_one({"affinity": 0.2, "tag_match": 1.0}, False)
    b.observe_click("n-books", AT)
    before = (repr(a.model.weights), repr(b.model.weights), repr(base.model.weights))
    both = merged(a, base, b, AT)
    assert before == (repr(a.model.weights), repr(b.model.weights), repr(base.model.weights))
    for name in set(a.model.weights) | set(b.model.weights):
        expected = (a.model.weights.get(name, 0.0) + b.model.weights.get(name, 0.0)
                    - base.model.weights.get(name, 0.0))
        assert both.model.weights[name] == pytest.approx(expected)
    assert both.model.intercept == pytest.approx(
        a.model.intercept + b.model.intercept - base.model.intercept)
    assert both.updates == base.updates + 2
    assert both.popularity.count("n-golf", AT) == pytest.approx(2.0)
    assert both.popularity.count("n-books", AT) == pytest.approx(1.0)


def test_a_purchase_record_reacts_with_its_items_topics() -> None:
    order = Purchased(
        event_id="o-1", customer_id="c-1", schema_version=1, occurred_at=AT, order_id="o-1",
        items=[PurchasedItem(product_id="p-1", quantity=1, unit_price=9.0,
                             topics=["golf", "travel"]),
               PurchasedItem(product_id="p-2", quantity=1, unit_price=9.0, topics=["golf"])],
        total=18.0, currency="EUR", decision_id=None)
    reaction = reaction_of(order)
    assert (reaction.kind, reaction.topics, reaction.content_id) == (
        "purchase", ("golf", "travel"), None)
    _, labels = attribute((shown("d-1", topics=("travel",)),), reaction)
    assert [r.decision.decision_id for r in labels] == ["d-1"]
