"""Records survive the wire, and the wire does not change by accident.

Round trips (record → msgpack → decode → build) for every topic's record,
JSON accepted alongside msgpack at ingest, Faust's registered codec writing
the same bytes as :func:`schemas.codec.encode`, and golden byte fixtures: one
fixed example per topic version whose msgpack bytes are committed under
``tests/fixtures/golden``.  A change to those bytes breaks every consumer
that reads the old ones, so it must be a deliberate new version.  After such
a deliberate change, regenerate the fixtures with::

    RELEVANZ_REGEN_GOLDEN=1 PYTHONPATH=. pytest tests/unit/test_codec.py -k golden
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import records as r
from schemas.codec import decode, encode, pack, register_codec, to_wire
from schemas.errors import InvalidEvent
from schemas.records import Record
from schemas.topics import INPUT_TOPICS, TOPICS
from schemas.validation import build
from tests.strategies import build_record, payloads_for, records_for

GOLDEN_DIR = Path(__file__).parent.parent / "fixtures" / "golden"
REGENERATE = os.environ.get("RELEVANZ_REGEN_GOLDEN") == "1"
INPUTS = [t.name for t in INPUT_TOPICS]
CET = timezone(timedelta(hours=1))
AT = datetime(2026, 3, 1, 9, 30, tzinfo=CET)

#: One fixed record per topic and version; their bytes are the golden fixtures.
EXAMPLES: dict[tuple[str, int], Record] = {
    ("clicks", 1): r.Clicked(
        event_id="evt-click-1", customer_id="cust-42", occurred_at=AT, schema_version=1,
        content_id="news-7", url="https://shop.example/sale", topics=["fashion"],
        campaign_id="spring", decision_id="dec-1", channel="email", device="mobile",
        session_id="s-9",
    ),
    ("purchases", 1): r.Purchased(
        event_id="evt-buy-1", customer_id="cust-42", occurred_at=AT, schema_version=1,
        order_id="ord-1",
        items=[
            r.PurchasedItem(product_id="sku-1", quantity=2, unit_price=19.99,
                            topics=["fashion"]),
            r.PurchasedItem(product_id="sku-2", quantity=1, unit_price=5.0),
        ],
        total=44.98, currency="EUR", campaign_id="spring",
    ),
    ("consents", 1): r.ConsentChanged(
        event_id="evt-consent-1", customer_id="cust-42", occurred_at=AT, schema_version=1,
        action="granted", purposes=["profiling", "email"], source="preference-centre",
    ),
    ("identity_links", 1): r.IdentityLink(
        event_id="evt-link-1", visitor_id="vis-7", customer_id="cust-42", occurred_at=AT,
        schema_version=1, source="login",
    ),
    ("visitor_merges", 1): r.VisitorMerged(
        event_id="vis-7:link:evt-link-1", customer_id="cust-42", visitor_id="vis-7",
        occurred_at=AT, schema_version=1, link_event_id="evt-link-1",
        pages=[r.MergedPage(view_id="pv-1", occurred_at=AT, session_id="s-9",
                            url="https://shop.example/golf", page_type="product",
                            content_id="golf-1", topics=["golf"], engagement_seconds=42.5)],
    ),
    ("profiles", 1): r.ProfileUpdated(
        event_id="evt-profile-1", customer_id="cust-42", occurred_at=AT, schema_version=1,
        locale="de-DE", language="de", time_zone="Europe/Berlin", country="DE",
        birth_year=1985, attributes={"tier": "gold"},
    ),
    ("content", 1): r.ContentPublished(
        event_id="evt-content-1", content_id="news-7", occurred_at=AT, schema_version=1,
        topics=["fashion"], channels=["email", "web"], slots=["newsletter-hero"],
        variants=[
            r.ContentVariant(language="de", title="Frühlingsmode", url="https://shop.example/de"),
            r.ContentVariant(language="en", title="Spring fashion", url="https://shop.example/en"),
        ],
        default_language="en", valid_from=AT, valid_until=AT + timedelta(days=30),
    ),
    ("page_views", 1): r.PageView(
        event_id="evt-pv-1", visitor_id="vis-7", occurred_at=AT, schema_version=1,
        session_id="ses-1", url="https://shop.example/p/sku-1", page_type="product",
        device="mobile", customer_id="cust-42", page_view_id="pv-1", content_id="sku-1",
        category="shoes", referrer="https://search.example/", engagement_seconds=42.5,
        consent=["profiling", "personalisation"],
    ),
    ("decisions", 1): r.DecisionMade(
        decision_id="dec-1", customer_id="cust-42", decided_at=AT, schema_version=1,
        slot="newsletter-hero", channel="email", content_id="news-7", variant_language="de",
        language_fallback=False, policy="exploit",
        reasons=["tag fashion-trends", "score 0.81"], caused_by="evt-click-1",
        campaign_id="spring", score=0.81,
    ),
    ("send-triggers", 1): r.SendTriggered(
        trigger_id="trg-1", idempotency_key="spring:cust-42:2026-03-02",
        customer_id="cust-42", created_at=AT, schema_version=1,
        send_at=AT + timedelta(hours=23), channel="email", campaign_id="spring",
        content_id="news-7", variant_language="de", reasons=["best hour 08"],
        caused_by="dec-1",
    ),
    ("send-cancellations", 1): r.SendCancelled(
        cancellation_id="trg-1:cancelled:evt-consent-2", trigger_id="trg-1",
        idempotency_key="spring:cust-42:2026-03-02", customer_id="cust-42", cancelled_at=AT,
        schema_version=1, channel="email", send_at=AT + timedelta(hours=23),
        reason="consent_revoked", revoked=["email"], caused_by="evt-consent-2",
    ),
    ("send-proposals", 1): r.SendProposed(
        proposal_id="cust-42:spring:tag:fashion-trends:email",
        idempotency_key="spring:cust-42:tag:fashion-trends", customer_id="cust-42",
        created_at=AT, expires_at=AT + timedelta(hours=23), schema_version=1,
        send_at=AT + timedelta(hours=23), channel="email", campaign_id="spring",
        content_id="news-7", variant_language="de", reasons=["tag fashion-trends assigned"],
        caused_by="evt-click-1",
    ),
    ("proposal-resolutions", 1): r.ProposalResolved(
        event_id="cust-42:spring:tag:fashion-trends:email:approved",
        proposal_id="cust-42:spring:tag:fashion-trends:email", customer_id="cust-42",
        resolved_at=AT + timedelta(hours=2), schema_version=1, status="approved",
        campaign_id="spring", resolved_by="operator:1f2e3d4c", note="looks right",
        trigger_id="cust-42:spring:tag:fashion-trends:email",
    ),
    ("customer-erased", 1): r.CustomerErased(
        event_id="cust-42:erased:evt-consent-3", customer_id="cust-42", requested_at=AT,
        erased_at=AT + timedelta(seconds=2), schema_version=1, caused_by="evt-consent-3",
    ),
    ("interest-tags", 1): r.InterestTagChanged(
        event_id="evt-tag-1", customer_id="cust-42", occurred_at=AT, schema_version=1,
        tag="fashion-trends", topic="fashion", change="assigned", score=3.5,
        caused_by="evt-click-1",
    ),
    ("dead-letters", 1): r.DeadLetter(
        dead_letter_id="dl-1", received_at=AT, schema_version=1, source_topic="clicks",
        partition=3, offset=1234, original=b"\x81\xa1a\xc1", reason="not valid msgpack",
        original_key=b"cust-42",
    ),
    ("controls", 1): r.ControlChanged(
        control_id="campaign:spring", changed_at=AT, schema_version=1, paused=True,
        changed_by="operator:1f2e3d4c", campaign_id="spring", reason="wrong price in the mail",
    ),
    ("campaign-stats", 1): r.CampaignStatsReported(
        event_id="interest-follow-up:2026-03-01T12:00:00+01:00", campaign_id="interest-follow-up",
        reported_at=AT, schema_version=1, sends_treated=622, clicks_treated=98,
        conversions_treated=56, revenue_treated=7929.78, sends_holdout=72, clicks_holdout=8,
        conversions_holdout=8, revenue_holdout=3700.83, click_uplift=0.046,
        click_uplift_low=-0.05, click_uplift_high=0.108,
    ),
    ("model-drift", 1): r.ModelDrifted(
        event_id="churn-60d:drift:4200", model_id="churn-60d", detected_at=AT,
        schema_version=1, examples=4200, error=0.0625, roc_auc=0.81, log_loss=0.42,
    ),
}


def _golden_path(topic: str, version: int) -> Path:
    return GOLDEN_DIR / f"{topic}.v{version}.msgpack"


def test_every_topic_version_has_an_example() -> None:
    assert set(EXAMPLES) == {(t.name, v) for t in TOPICS.values() for v in t.versions}


@pytest.mark.parametrize(("topic", "version"), sorted(EXAMPLES))
def test_golden_bytes_are_stable(topic: str, version: int) -> None:
    example = EXAMPLES[(topic, version)]
    path = _golden_path(topic, version)
    if REGENERATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(example))
    assert encode(example) == path.read_bytes(), f"wire format of {topic} v{version} changed"


@pytest.mark.parametrize(("topic", "version"), sorted(EXAMPLES))
def test_golden_bytes_build_the_example(topic: str, version: int) -> None:
    raw = _golden_path(topic, version).read_bytes()
    assert build(TOPICS[topic].versions[version], decode(raw)) == EXAMPLES[(topic, version)]


# --- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("topic", sorted(TOPICS))
@given(data=st.data())
def test_record_survives_msgpack(topic: str, data: st.DataObject) -> None:
    record = data.draw(records_for(topic))
    assert build(type(record), decode(encode(record))) == record


@pytest.mark.parametrize("topic", INPUTS)
@given(data=st.data())
def test_ingest_reads_json_and_msgpack_alike(topic: str, data: st.DataObject) -> None:
    payload = data.draw(payloads_for(topic))
    expected = build_record(topic, payload)
    as_json = json.dumps(payload, ensure_ascii=data.draw(st.booleans())).encode()
    assert build_record(topic, decode(as_json)) == expected
    assert build_record(topic, decode(pack(payload))) == expected


@pytest.mark.parametrize("topic", sorted(TOPICS))
@given(data=st.data())
def test_faust_codec_writes_the_same_bytes(topic: str, data: st.DataObject) -> None:
    register_codec()
    record = data.draw(records_for(topic))
    assert record.dumps(serializer="msgpack") == encode(record)


def test_wire_form_has_no_class_paths_and_keeps_bytes_binary() -> None:
    wire = to_wire(EXAMPLES[("dead-letters", 1)])
    assert "__faust" not in wire
    assert isinstance(wire["original"], bytes)
    unpacked = msgpack.unpackb(encode(EXAMPLES[("dead-letters", 1)]), raw=True)
    assert unpacked[b"original"] == b"\x81\xa1a\xc1"  # bin stays bin, not a str


def test_msgpack_timestamps_are_read_as_aware_times() -> None:
    payload: dict[str, Any] = to_wire(EXAMPLES[("clicks", 1)])
    payload["occurred_at"] = AT
    raw = msgpack.packb(payload, datetime=True)
    assert build(r.Clicked, decode(raw)) == EXAMPLES[("clicks", 1)]


def test_json_may_start_with_whitespace() -> None:
    assert decode(b' \n\t{"a": [1, "b"]}') == {"a": [1, "b"]}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"a": ', "not valid JSON: Expecting value: line 1 column 7 (char 6)"),
        (b"{\xff}", "not valid JSON: 'utf-8' codec can't decode byte 0xff in position 1: "
                    "invalid start byte"),
        (b"\xc1", "not valid msgpack (invalid type byte); send a msgpack map or a JSON object"),
        (b"\x81\xa1a\x01\x02",
         "not valid msgpack (extra bytes after the first value); "
         "send a msgpack map or a JSON object"),
    ],
)
def test_undecodable_bytes_name_the_format(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode(raw)
    assert str(caught.value) == message
    assert caught.value.field is None
