"""The session models: next page with back-off, conversion, engagement, session rules."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from agents.core.session_state import (
    PageSeen,
    SessionModels,
    VisitorSession,
    close_idle,
    interest_scores,
    view_page,
)
from agents.core.sessions import EngagementRules, NextPageModel, engagement_weight
from streams.sim.sessions import SessionConfig, evaluate_sessions

T = datetime(2026, 3, 1, 9, tzinfo=UTC)
CONSENT = ("personalisation", "profiling")


def seen(event_id: str, seconds: float, page_type: str = "product", category: str | None =
         "shoes", *, view_id: str | None = None, engagement: float | None = None,
         session: str = "s1", consent: tuple[str, ...] = CONSENT) -> PageSeen:
    return PageSeen(event_id, T + timedelta(seconds=seconds), session, page_type, category,
                    view_id, "desktop", None, engagement, consent,
                    (category,) if category else ())


def test_the_markov_model_beats_the_popular_baseline_by_half_again_and_auc_is_over_075(
) -> None:
    report = evaluate_sessions(SessionConfig(seed=11, visitors=800))
    assert report["next_page_hit3"] >= 1.5 * report["next_page_hit3_popular"]
    assert report["next_page_hit3_popular"] > report["next_page_hit3_random"]
    assert report["session_conversion_auc"] >= 0.75
    assert report["session_remaining_mae_s"] < report["session_remaining_mae_s_mean_baseline"]


def test_a_context_never_seen_backs_off_to_a_shorter_one() -> None:
    model = NextPageModel(order=3)
    for _ in range(5):
        model.observe(["home", "category:shoes"], "product:shoes")
        model.observe(["home"], "search")
    # "article" then "category:shoes" was never seen; "category:shoes" alone was.
    assert model.top(["article", "category:shoes"], 1)[0][0] == "product:shoes"
    ranked = model.top(["home"], 2)
    assert ranked[0][0] == "search"
    assert abs(sum(p for _, p in model.top(["home"], 10)) - 1.0) < 1e-9


def test_the_longest_known_context_decides_over_the_shorter_ones() -> None:
    model = NextPageModel(order=2)
    for _ in range(10):
        model.observe(["cart", "product:shoes"], "cart")
        model.observe(["category:shoes", "product:shoes"], "product:shoes")
        model.observe(["category:shoes", "product:shoes"], "product:shoes")
    assert model.top(["cart", "product:shoes"], 1)[0][0] == "cart"
    assert model.top(["category:shoes", "product:shoes"], 1)[0][0] == "product:shoes"


def test_a_bounce_counts_little_and_a_long_read_a_lot() -> None:
    rules = EngagementRules()
    assert engagement_weight(2, rules) < 0.2
    assert engagement_weight(180, rules) >= 10 * engagement_weight(2, rules)
    assert engagement_weight(10**6, rules) == rules.max_weight


def test_a_heartbeat_updates_its_page_view_and_is_not_a_page_of_its_own() -> None:
    models = SessionModels()
    s = VisitorSession("v1")
    s, _ = view_page(s, seen("e1", 0, view_id="pv1"), models)
    s, _ = view_page(s, seen("e2", 30, view_id="pv1", engagement=30), models)
    s, _ = view_page(s, seen("e3", 20, view_id="pv1", engagement=20), models)  # late, smaller
    s, _ = view_page(s, seen("e4", 180, view_id="pv1", engagement=180), models)
    assert s.summary.pages == 1
    assert s.summary.engagement == 180
    assert s.views == {"pv1": 180}
    once = VisitorSession("v2")
    once, _ = view_page(once, seen("f1", 0, view_id="pv1", engagement=180), models)
    at = T + timedelta(minutes=5)
    # The same weight (each report adds what it grew, dated when reported: minutes apart).
    assert interest_scores(s, at, models.half_life) == pytest.approx(
        interest_scores(once, at, models.half_life), rel=1e-3)


def test_a_redelivered_page_view_changes_nothing() -> None:
    models = SessionModels()
    s, _ = view_page(VisitorSession("v1"), seen("e1", 0, engagement=60), models)
    again, _ = view_page(s, seen("e1", 0, engagement=60), models)
    assert again == s
    assert models.next_page.totals[()] == 1


def test_without_cookie_consent_nothing_of_the_visitor_is_kept() -> None:
    models = SessionModels()
    s, _ = view_page(VisitorSession("v1"), seen("e1", 0, engagement=60), models)
    s, _ = view_page(s, seen("e2", 60, consent=()), models)
    assert s == VisitorSession("v1")
    assert models.next_page.totals[()] == 1  # the second view taught nothing


def test_interests_need_profiling_and_a_view_without_it_clears_them() -> None:
    models = SessionModels()
    s, _ = view_page(VisitorSession("v1"), seen("e1", 0, engagement=60), models)
    assert "shoes" in s.interests
    s, _ = view_page(s, seen("e2", 60, consent=("personalisation",)), models)
    assert s.interests == {}
    assert s.summary.pages == 2


def test_a_session_is_scored_when_it_converts_when_another_starts_or_when_idle() -> None:
    models = SessionModels()
    s, _ = view_page(VisitorSession("v1"), seen("e1", 0, "home", None), models)
    s, _ = view_page(s, seen("e2", 10, "confirmation", None), models)
    assert models.outcomes.conversion.examples == 1  # the prediction after the home page
    s, ended = view_page(s, seen("e3", 3600, "home", None, session="s2"), models)
    assert ended is not None
    assert ended.converted
    assert ended.session_id == "s1"
    idle = models.session_timeout + models.idle_grace
    s, ended = close_idle(s, models, T + timedelta(hours=1) + idle - timedelta(seconds=1))
    assert ended is None  # not idle for the timeout and its grace yet
    s, ended = close_idle(s, models, T + timedelta(hours=1, seconds=1) + idle)
    assert ended is not None
    assert not ended.converted
    assert models.outcomes.conversion.examples == 2
    assert s.summary.visits == 2
    assert s.summary.converted_before


def test_the_state_given_is_never_changed() -> None:
    models = SessionModels()
    s, _ = view_page(VisitorSession("v1"), seen("e1", 0, view_id="pv1"), models)
    before = replace(s, views=dict(s.views), pending=list(s.pending),
                     interests=dict(s.interests), events=list(s.events))
    view_page(s, seen("e2", 30, view_id="pv1", engagement=30), models)
    view_page(s, seen("e3", 40, "cart", None), models)
    assert s == before
