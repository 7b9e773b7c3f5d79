"""Any valid page views: the session rules never fail, stay bounded and store exactly."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.core.session_state import (
    MAX_EVENTS,
    MAX_PENDING,
    MAX_TOPICS,
    PageSeen,
    SessionModels,
    VisitorSession,
    view_page,
)
from agents.pipeline.sessions import from_blob, to_blob
from schemas.records import PURPOSES, PageView
from tests.strategies import records_for

views = records_for(
    "page_views", visitor_id=st.just("v1"),
    session_id=st.sampled_from(["s1", "s2"]),
    page_view_id=st.one_of(st.none(), st.sampled_from(["p1", "p2", "p3"])),
    category=st.one_of(st.none(), st.sampled_from(["shoes", "books", "tech"])),
    consent=st.lists(st.sampled_from(PURPOSES), unique=True))


def seen(view: PageView) -> PageSeen:
    return PageSeen(view.event_id, view.occurred_at, view.session_id, view.page_type,
                    view.category, view.page_view_id, view.device, view.referrer,
                    view.engagement_seconds, tuple(view.consent),
                    (view.category,) if view.category else (), view.customer_id)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(views, max_size=30))
def test_any_page_views_apply_stay_bounded_and_round_trip_through_the_store_form(
        batch: list[PageView]) -> None:
    models = SessionModels()
    state = VisitorSession("v1")
    for record in batch:
        state, _ = view_page(state, seen(record), models)
        assert len(state.pending) <= MAX_PENDING
        assert len(state.interests) <= MAX_TOPICS
        assert len(state.events) <= MAX_EVENTS
        assert from_blob("v1", to_blob(state)) == state
