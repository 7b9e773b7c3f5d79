"""The page_views contract: bounds on engagement, the visitor key, strict consent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.codec import pack
from schemas.errors import InvalidEvent
from schemas.records import MAX_ENGAGEMENT_S, PageView
from schemas.validation import parse_message

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def view(**fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event_id": "e1", "visitor_id": "v1", "schema_version": 1,
        "occurred_at": "2026-03-01T11:00:00+00:00", "session_id": "s1",
        "url": "https://shop.example/", "page_type": "home", "device": "desktop"}
    payload.update(fields)
    return payload


def test_an_anonymous_page_view_is_valid_and_consents_to_nothing() -> None:
    record = parse_message("page_views", b"v1", pack(view()), now=NOW)
    assert isinstance(record, PageView)
    assert record.customer_id is None
    assert record.consent == []
    assert record.engagement_seconds is None


@pytest.mark.parametrize(("seconds", "problem"), [
    (-1, "below the minimum 0"), (MAX_ENGAGEMENT_S + 1, "above the maximum 21600"),
    (float("nan"), "finite"),
])
def test_negative_or_absurd_engagement_is_refused_with_a_reason(
        seconds: float, problem: str) -> None:
    raw = pack(view(engagement_seconds=seconds))
    with pytest.raises(InvalidEvent) as caught:
        parse_message("page_views", b"v1", raw, now=NOW)
    assert caught.value.field == "engagement_seconds"
    assert problem in str(caught.value)


def test_six_hours_of_engagement_is_the_most_accepted() -> None:
    raw = pack(view(engagement_seconds=MAX_ENGAGEMENT_S))
    record = parse_message("page_views", b"v1", raw, now=NOW)
    assert isinstance(record, PageView)
    assert record.engagement_seconds == MAX_ENGAGEMENT_S


@pytest.mark.parametrize(("fields", "field"), [
    ({"page_type": "landing"}, "page_type"),
    ({"device": "fridge"}, "device"),
    ({"consent": ["cookies"]}, "consent[0]"),
    ({"visitor_id": ""}, "visitor_id"),
])
def test_values_outside_the_contract_name_their_field(fields: dict[str, Any], field: str
                                                      ) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_message("page_views", fields.get("visitor_id", "v1").encode(),
                      pack(view(**fields)), now=NOW)
    assert caught.value.field == field


def test_a_page_view_must_be_keyed_by_its_visitor() -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_message("page_views", b"cust-1", pack(view(customer_id="cust-1")), now=NOW)
    assert caught.value.field == "visitor_id"
