"""Campaign uplift on the simulated audience."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from agents.core.campaigns import DEFAULT_BOOK
from streams.sim.campaign_sim import evaluate_campaigns

SLOW = pytest.mark.skipif(os.environ.get("RELEVANZ_SLOW_TESTS") != "1",
                          reason="runs the full evaluation; set RELEVANZ_SLOW_TESTS=1")


def test_the_evaluation_is_deterministic_and_complete() -> None:
    first = evaluate_campaigns(seed=3, events=6000, warmup=1000, customers=300)
    assert first == evaluate_campaigns(seed=3, events=6000, warmup=1000, customers=300)
    assert {"send_triggers", "capped", "proposals", "holdout_exposures", "campaigns",
            "refused"} <= set(first)
    assert first["send_triggers"] > 50
    assert first["proposals"] == 0  # the built-in book has no campaign in approval mode
    follow_up = first["campaigns"]["interest-follow-up"]
    assert follow_up["treated"]["sends"] > 0
    assert follow_up["holdout"]["sends"] > 0
    assert set(follow_up["uplift"]) == {"clicks", "conversions", "revenue"}
    clicks = follow_up["uplift"]["clicks"]
    assert clicks["low"] <= clicks["difference"] <= clicks["high"]


def test_approval_mode_turns_sends_into_proposals() -> None:
    book = replace(DEFAULT_BOOK, campaigns=tuple(replace(c, approval=True)
                                                 for c in DEFAULT_BOOK.campaigns))
    result = evaluate_campaigns(seed=3, events=3000, warmup=500, customers=150, book=book)
    assert result["send_triggers"] == 0
    assert result["proposals"] > 0


@SLOW
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_interest_follow_ups_raise_the_click_rate_over_the_holdout(seed: int) -> None:
    result = evaluate_campaigns(seed=seed, events=100_000, warmup=10_000, customers=3000)
    clicks = result["campaigns"]["interest-follow-up"]["uplift"]["clicks"]
    assert clicks["low"] > 0, clicks
