"""The click model and the CTR evaluation on the simulated audience."""

from __future__ import annotations

import os
import statistics
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.sim import traffic
from streams.sim.prediction_quality import evaluate_predictions
from streams.sim.simulation import ClickModel, evaluate_policies, summarise
from streams.sim.traffic import LOCALES, TOPICS, ContentTruth, CustomerTruth

T = datetime(2026, 1, 1, tzinfo=UTC)
SLOW = pytest.mark.skipif(os.environ.get("RELEVANZ_SLOW_TESTS") != "1",
                          reason="runs the full evaluation; set RELEVANZ_SLOW_TESTS=1")


def person(weights: dict[str, float]) -> CustomerTruth:
    return CustomerTruth("c", weights, LOCALES[0], 19, 0.1, 1, None, None)


def content(*topics: str) -> ContentTruth:
    return ContentTruth("n", topics, ("de",), ("web",), ("web-banner",), None, T, T)


def test_the_click_model_is_the_documented_one() -> None:
    model = ClickModel()
    assert (model.base_rate, model.interest_rate) == (0.01, 0.20)
    assert model.noise == traffic._NOISE  # the traffic's own off-interest share
    assert model.topics == len(TOPICS)
    fan = person({"fashion": 0.7, "sports": 0.3})
    expected = 0.01 + 0.20 * (0.9 * (0.7 + 0.3) + 0.1 * 2 / len(TOPICS))
    assert model.probability(fan, content("fashion", "sports")) == pytest.approx(expected)
    assert model.probability(fan, content("books")) == pytest.approx(
        0.01 + 0.20 * 0.1 / len(TOPICS))


@given(st.lists(st.floats(0, 1), min_size=len(TOPICS), max_size=len(TOPICS)),
       st.lists(st.sampled_from(TOPICS), min_size=1, max_size=2, unique=True))
def test_click_probabilities_are_probabilities(raw: list[float], topics: list[str]) -> None:
    total = sum(raw) or 1.0
    customer = person({t: w / total for t, w in zip(TOPICS, raw, strict=True)})
    p = ClickModel().probability(customer, content(*topics))
    assert 0.01 <= p <= 0.21 + 1e-12


def test_the_evaluation_is_deterministic_and_complete() -> None:
    first = evaluate_policies(seed=4, events=4000, warmup=1000, customers=150)
    assert first == evaluate_policies(seed=4, events=4000, warmup=1000, customers=150)
    assert set(first) == {"ctr_engine", "ctr_random", "ctr_popular", "ctr_warmup",
                          "ctr_opportunities"}
    assert first["ctr_warmup"] == 1000
    assert 1000 < first["ctr_opportunities"] < 3000
    assert all(0 < first[k] < 0.25 for k in ("ctr_engine", "ctr_random", "ctr_popular"))


def test_a_restored_snapshot_keeps_the_learned_ctr() -> None:
    """Restarting from a snapshot changes nothing; restarting cold falls back to guessing."""
    run = {"seed": 2, "events": 15_000, "warmup": 0}
    uninterrupted = evaluate_policies(**run)  # type: ignore[arg-type] # ints only
    restored = evaluate_policies(**run, restart_at=10_000,  # type: ignore[arg-type]
                                 after_restart=2000)
    cold = evaluate_policies(**run, restart_at=10_000, restore=False,  # type: ignore[arg-type]
                             after_restart=2000)
    # The restored policy is the same model: the run goes on exactly as without a restart.
    assert restored["ctr_engine"] == uninterrupted["ctr_engine"]
    assert restored["restart_opportunities"] == cold["restart_opportunities"] == 2000
    assert restored["ctr_after_restart"] > 1.5 * cold["ctr_after_restart"]


@SLOW
def test_the_engine_beats_random_and_popular_over_several_seeds() -> None:
    """The acceptance figures (README "Decision quality"): 30,000 events, five seeds."""
    results = [evaluate_policies(seed=seed) for seed in range(1, 6)]
    vs_random = [r["ctr_engine"] / r["ctr_random"] for r in results]
    vs_popular = [r["ctr_engine"] / r["ctr_popular"] for r in results]
    assert min(vs_random) >= 1.5, vs_random
    assert min(vs_popular) >= 1.1, vs_popular
    assert statistics.mean(vs_popular) >= 1.2, vs_popular


def test_predictions_learn_the_hidden_habits() -> None:
    """Best send hours match the usual hours the audience was drawn with; outcomes beat chance."""
    result = evaluate_predictions(seed=2, events=12_000, customers=200)
    assert result["send_hour_customers"] >= 100
    assert result["send_hour_within_1h"] > 3 * 3 / 24  # three times chance
    assert result["purchase_roc_auc"] > 0.6
    # Churn labels are learnt when the 3-day horizon ends, so every churn example of a
    # 4-day run was predicted before the model had learnt one: nothing to score yet.
    assert result["churn_examples"] > 500
    assert result["purchase_examples"] > 500


def test_the_summary_gives_mean_spread_and_range_over_seeds() -> None:
    summary = summarise([1, 2], events=3000, warmup=1000, customers=100)
    assert summary["runs"] == 2
    assert len(summary["ctr_opportunities"]) == 2
    for key in ("ctr_engine", "ctr_random", "ctr_popular", "engine_vs_random",
                "engine_vs_popular"):
        figures = summary[key]
        assert figures["min"] <= figures["mean"] <= figures["max"]
        assert figures["stdev"] >= 0
