"""The campaign file: the shipped example is the built-in book, and every error is one line."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from agents.core.campaigns import (
    DEFAULT_BOOK,
    AudienceRule,
    CampaignFileError,
    Cap,
    QuietHours,
    parse_campaigns,
)
from streams.campaign_file import load_campaigns

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "campaigns.toml"
MINIMAL = '''
[[campaigns]]
id = "spring"
trigger = "tag_assigned"
channels = ["email"]
'''


def test_the_shipped_example_file_is_the_built_in_book() -> None:
    assert load_campaigns(EXAMPLE) == DEFAULT_BOOK


def test_the_readme_shows_the_example_file_verbatim() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert EXAMPLE.read_text(encoding="utf-8") in readme


def test_the_built_in_book_is_what_the_issue_asks_for() -> None:
    book = DEFAULT_BOOK
    follow_up = book.campaign("interest-follow-up")
    assert follow_up.trigger == "tag_assigned"
    assert follow_up.holdout_share == 0.1
    assert follow_up.priority == max(c.priority for c in book.campaigns)
    assert {c.trigger for c in book.campaigns} == {
        "tag_assigned", "browse_abandonment", "cross_sell", "win_back"}
    assert set(book.caps) == {Cap("email", 2, timedelta(days=7)),
                              Cap("push", 3, timedelta(days=7)),
                              Cap("sms", 1, timedelta(days=7))}
    assert book.quiet_hours == QuietHours(time(21), time(8))
    assert book.arbitration_window == timedelta(hours=24)


def test_a_minimal_file_takes_the_defaults() -> None:
    book = parse_campaigns(MINIMAL)
    (spring,) = book.campaigns
    assert spring.channels == ("email",)
    assert spring.goal == "clicks"
    assert spring.audience == AudienceRule()
    assert book.caps == ()
    assert book.quiet_hours == QuietHours(time(21), time(8))  # nights stay quiet unless said
    assert parse_campaigns('quiet_hours = ""').quiet_hours is None


def test_every_key_is_read() -> None:
    book = parse_campaigns('''
quiet_hours = "22:30-07:15"
arbitration_window = "1d12h"
proposal_ttl = "6h"
attribution_window = "3d"
caps = [{ channel = "push", max = 4, per = "2d" }]
[triggers.browse_abandonment]
min_clicks = 4
window = "3d"
wait = "30m"
[triggers.win_back]
churn_risk = 0.5
[triggers.cross_sell]
min_support = 7
delay = "0s"
[[campaigns]]
id = "spring"
description = "Spring fashion"
trigger = "tag_assigned"
goal = "revenue"
channels = ["push", "email"]
content = ["n-1", "n-2"]
topics = ["fashion"]
priority = -5
holdout_share = 0.25
approval = true
delay = "2h"
starts = 2026-03-01T00:00:00+01:00
ends = 2026-04-01T00:00:00+02:00
caps = [{ max = 1, per = "7d" }, { channel = "push", max = 2, per = "1d" }]
[campaigns.audience]
tags_any = ["fashion-trends"]
tags_all = ["newsletter"]
countries = ["DE", "AT"]
languages = ["de"]
min_orders = 1
max_orders = 10
attributes = { loyalty_tier = "gold" }
''', "spring.toml")
    (spring,) = book.campaigns
    assert book.quiet_hours == QuietHours(time(22, 30), time(7, 15))
    assert book.arbitration_window == timedelta(days=1, hours=12)
    assert (book.proposal_ttl, book.attribution_window) == (timedelta(hours=6), timedelta(days=3))
    assert book.caps == (Cap("push", 4, timedelta(days=2)),)
    t = book.triggers
    assert (t.browse_clicks, t.browse_window, t.browse_wait) == (
        4, timedelta(days=3), timedelta(minutes=30))
    assert (t.win_back_churn, t.cross_sell_support, t.cross_sell_delay) == (0.5, 7, timedelta(0))
    assert spring.channels == ("push", "email")
    assert spring.content == ("n-1", "n-2")
    assert spring.topics == ("fashion",)
    assert (spring.priority, spring.holdout_share, spring.approval) == (-5, 0.25, True)
    assert spring.delay == timedelta(hours=2)
    assert spring.starts == datetime(2026, 2, 28, 23, tzinfo=UTC)
    assert spring.caps == (Cap(None, 1, timedelta(days=7)), Cap("push", 2, timedelta(days=1)))
    assert spring.audience == AudienceRule(
        tags_any=frozenset({"fashion-trends"}), tags_all=frozenset({"newsletter"}),
        countries=frozenset({"DE", "AT"}), languages=frozenset({"de"}), min_orders=1,
        max_orders=10, attributes={"loyalty_tier": "gold"})
    assert book.retention == timedelta(days=7)


CAMPAIGN = 'id = "spring"\ntrigger = "tag_assigned"\nchannels = ["email"]\n'
BAD = [
    ("[[campaigns]]\n" + CAMPAIGN + 'caps = [{ max = 1, per = "7x" }]',
     "c.toml: campaign 'spring': caps[0]: \"per\" must be a duration like \"7d\" or \"12h\", "
     "got '7x'"),
    ("[[campaigns]]\n" + CAMPAIGN + "prio = 3",
     "c.toml: campaign 'spring': unknown key 'prio' (known: id, description, goal, trigger, "
     "channels, content, topics, priority, audience, caps, holdout_share, approval, delay, "
     "starts, ends)"),
    ("[[campaigns]]\n" + CAMPAIGN + "holdout_share = 0.9",
     "c.toml: campaign 'spring': holdout_share must be a number from 0 to 0.5, got 0.9"),
    ("[[campaigns]]\n" + CAMPAIGN + "[campaigns.audience]\ntag_any = []",
     "c.toml: campaign 'spring': audience: unknown key 'tag_any' (known: tags_any, tags_all, "
     "countries, languages, min_orders, max_orders, attributes)"),
    ("[[campaigns]]\n" + CAMPAIGN.replace("tag_assigned", "birthday"),
     "c.toml: campaign 'spring': trigger must be one of tag_assigned, browse_abandonment, "
     "cross_sell, win_back, got 'birthday'"),
    ("[[campaigns]]\n" + CAMPAIGN.replace('["email"]', '["fax"]'),
     "c.toml: campaign 'spring': channels: 'fax' is not one of email, push, sms, web, app"),
    ("[[campaigns]]\n" + CAMPAIGN + "starts = 2026-03-01T00:00:00",
     "c.toml: campaign 'spring': starts must be a date and time with an offset, like "
     "2026-03-01T00:00:00+01:00, got datetime.datetime(2026, 3, 1, 0, 0)"),
    ("[[campaigns]]\n" + CAMPAIGN + "[[campaigns]]\n" + CAMPAIGN,
     "c.toml: campaign 'spring': id is defined twice"),
    ('[[campaigns]]\nid = "Spring"\n',
     "c.toml: campaigns[0]: id must be 1 to 100 lower-case letters, digits, '-' or '_', "
     "got 'Spring'"),
    ('quiet_hours = "9pm-8am"',
     "c.toml: quiet_hours must be local times like \"21:00-08:00\" (or \"\" for none), "
     "got '9pm-8am'"),
    ('caps = [{ max = 2, per = "7d" }]',
     "c.toml: caps[0]: \"channel\" is missing; a contact cap across campaigns is per channel"),
    ('caps = [{ channel = "email", max = 0, per = "7d" }]',
     "c.toml: caps[0]: \"max\" must be a whole number from 1 to 10000, got 0"),
    ('arbitration_window = 24',
     "c.toml: arbitration_window must be a duration like \"7d\" or \"12h\", got 24"),
    ("[triggers.win_back]\nchurn_risk = 2",
     "c.toml: triggers.win_back: churn_risk must be a number above 0 and at most 1, got 2"),
    ("[triggers.browse_abandonment]\nclicks = 3",
     "c.toml: triggers.browse_abandonment: unknown key 'clicks' (known: min_clicks, window, "
     "wait)"),
    ("campaign = []",
     "c.toml: unknown key 'campaign' (known: quiet_hours, arbitration_window, proposal_ttl, "
     "attribution_window, caps, triggers, campaigns)"),
    ("[[campaigns]\n", "c.toml: not valid TOML (Expected ']]' at the end of an array "
                       "declaration (at line 1, column 12))"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m.split(": ", 1)[1][:40] for _, m in BAD])
def test_every_error_is_one_line_naming_the_file_campaign_and_key(text: str, message: str
                                                                    ) -> None:
    with pytest.raises(CampaignFileError) as raised:
        parse_campaigns(text, "c.toml")
    assert str(raised.value) == message
    assert "\n" not in str(raised.value)


def test_an_unreadable_file_is_one_line_too(tmp_path: Path) -> None:
    with pytest.raises(CampaignFileError, match=r"^.*missing.toml: cannot read the campaign "):
        load_campaigns(tmp_path / "missing.toml")
