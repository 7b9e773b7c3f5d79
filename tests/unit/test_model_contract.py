"""One contract for every learned model and policy (River's, plus our snapshots).

Each model: ``learn_one`` leaves its input alone, ``predict_proba_one``
gives probabilities that sum to 1, two fresh models fed the same data agree
exactly (no hidden randomness), and a snapshot round trip predicts exactly
as the original.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from agents.core.learning import ContentPolicy, PolicyConfig
from agents.core.predictions import OutcomeModel
from agents.core.snapshots import decode, encode

AT = datetime(2026, 3, 1, tzinfo=UTC)
MODELS: dict[str, Callable[[], Any]] = {
    "content-policy": lambda: ContentPolicy(PolicyConfig()),
    "outcome-model": lambda: OutcomeModel("purchase-30d"),
}


def stream(seed: int, n: int = 300) -> list[tuple[dict[str, float], bool]]:
    rng = random.Random(seed)
    data = []
    for _ in range(n):
        x = {"affinity": rng.random(), "orders": float(rng.randrange(4)),
             f"item:n-{rng.randrange(5)}": 1.0}
        data.append((x, rng.random() < 0.2 + 0.5 * x["affinity"]))
    return data


@pytest.fixture(params=sorted(MODELS))
def make(request: pytest.FixtureRequest) -> Callable[[], Any]:
    return MODELS[request.param]


def test_learning_leaves_the_input_alone(make: Callable[[], Any]) -> None:
    model = make()
    for x, y in stream(1):
        copy = dict(x)
        model.learn_one(x, y)
        assert x == copy


def test_probabilities_sum_to_one(make: Callable[[], Any]) -> None:
    model = make()
    for x, y in stream(2):
        proba = model.predict_proba_one(x)
        assert 0.0 <= proba[True] <= 1.0
        assert proba[True] + proba[False] == pytest.approx(1.0)
        model.learn_one(x, y)


def test_learning_is_deterministic(make: Callable[[], Any]) -> None:
    a, b = make(), make()
    for x, y in stream(3):
        a.learn_one(x, y)
        b.learn_one(x, y)
    for x, _ in stream(4, 50):
        assert a.predict_proba_one(x) == b.predict_proba_one(x)


def test_a_snapshot_predicts_exactly_as_the_original(make: Callable[[], Any]) -> None:
    model = make()
    for x, y in stream(5):
        model.learn_one(x, y)
    blob, checksum = encode("m", 1, "contract", model, AT)
    restored = decode(blob, checksum, "contract").model
    for x, y in stream(6, 100):
        assert restored.predict_proba_one(x) == model.predict_proba_one(x)
        restored.learn_one(x, y)
        model.learn_one(x, y)  # and they keep learning alike
