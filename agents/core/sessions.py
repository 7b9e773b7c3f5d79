"""Session models: the next page, the chance to convert, the time left, engagement.

Pure: no clock, I/O or randomness; every model learns from the page views it
is given, in the order given, and is evaluated by progressive validation
(each prediction is scored against what happened before the model learns it).

- :class:`NextPageModel`: an online variable-order Markov model over *page
  keys* (:func:`page_key`: the page type and the shop category, such as
  ``product:shoes``) with back-off: the longest context of up to ``order``
  previous pages that has been seen predicts first, and shorter contexts
  fill in the mass it leaves (Witten-Bell interpolation, down to the
  unconditional frequencies).  :meth:`NextPageModel.top` answers the top-k
  next pages with their probabilities.
- The baselines it is measured against: the most popular next page overall
  (:class:`PopularNextPage`), and a random guess, whose hit rate is counted
  exactly as ``k / pages known`` (the expectation of guessing ``k`` distinct
  known pages uniformly), so no randomness is needed.
- :class:`SessionOutcomes`: the chance that a session reaches a
  confirmation page, from the session so far (:func:`session_features`),
  an online River logistic regression; and the expected remaining session
  time, from the time left of sessions seen at the same page type and depth
  (the exponential of the mean log seconds, learnt online), each scored
  when the session ends.
- :func:`engagement_weight`: how much one page view counts towards an
  interest, from the time it was in view (:class:`EngagementRules`).

>>> model = NextPageModel(order=2)
>>> for path in [["home", "category:shoes", "product:shoes", "cart"]] * 3:
...     for i in range(1, len(path)):
...         _ = model.observe(path[:i], path[i])
>>> model.top(["home", "category:shoes"], 1)
[('product:shoes', 0.9...)]
>>> model.hits.rate(1)  # the first path taught it; the next two were foreseen
0.666...
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from river import metrics

from agents.core.predictions import DriftDetected, OutcomeModel

#: Pages that end a session with a conversion, and the ones that show a cart.
CONVERSION_PAGE = "confirmation"
CART_PAGES = frozenset({"cart", "checkout"})
PAGE_TYPES = ("home", "category", "product", "article", "search", "cart", "checkout",
              "confirmation", "other")
DEVICES = ("desktop", "mobile", "tablet", "other")
_MAE: Any = metrics.MAE


def page_key(page_type: str, category: str | None) -> str:
    """What the next-page model predicts: the page type, with the category if any.

    Product and category pages of one shop category are one key: there are
    too many products for a sequence model to learn each, and a category is
    what a touchpoint can offer.

    >>> page_key("product", "shoes"), page_key("cart", None)
    ('product:shoes', 'cart')
    """
    return f"{page_type}:{category}" if category else page_type


# --- engagement -------------------------------------------------------------------------


@dataclass(frozen=True)
class EngagementRules:
    """How much a page view counts towards an interest, by its time in view.

    A view shorter than ``bounce_seconds`` (or with no time reported yet)
    counts ``bounce_weight``; a longer one counts ``seconds / full_seconds``
    (so a view of ``full_seconds`` counts as much as one click), at least
    ``bounce_weight`` and at most ``max_weight``.
    """

    bounce_seconds: float = 5.0
    bounce_weight: float = 0.1
    full_seconds: float = 60.0
    max_weight: float = 3.0


def engagement_weight(seconds: float | None, rules: EngagementRules = EngagementRules()
                      ) -> float:
    """The weight of a page view in view for ``seconds`` (see :class:`EngagementRules`).

    >>> engagement_weight(2), engagement_weight(30), engagement_weight(180)
    (0.1, 0.5, 3.0)
    >>> engagement_weight(None), engagement_weight(7200)
    (0.1, 3.0)
    """
    if seconds is None or seconds < rules.bounce_seconds:
        return rules.bounce_weight
    return min(rules.max_weight, max(rules.bounce_weight, seconds / rules.full_seconds))


# --- next page ----------------------------------------------------------------------------


@dataclass
class HitRate:
    """Running hit@1 and hit@3 of a next-page predictor (progressive validation)."""

    examples: int = 0
    hits1: float = 0.0
    hits3: float = 0.0

    def add(self, hit1: float, hit3: float) -> None:
        """Count one prediction scored against the page that came next."""
        self.examples += 1
        self.hits1 += hit1
        self.hits3 += hit3

    def rate(self, k: int) -> float | None:
        """hit@``k`` so far (1 or 3), None before any example."""
        if not self.examples:
            return None
        return (self.hits1 if k == 1 else self.hits3) / self.examples


class NextPageModel:
    """Online variable-order Markov model of the next page, with back-off.

    ``observe(previous, page)`` first scores the prediction from ``previous``
    against ``page`` (hit@1, hit@3 in :attr:`hits`), and the baselines' in
    :attr:`popular_hits` and :attr:`random_hits`, then learns the transition
    for every context length up to ``order``.  At most ``max_contexts``
    contexts are kept: beyond it, new contexts are not learnt (shorter ones
    still are), so memory is bounded whatever the traffic.
    """

    def __init__(self, order: int = 3, max_contexts: int = 200_000) -> None:
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        self.order = order
        self.max_contexts = max_contexts
        #: context (up to ``order`` previous keys; () for none) -> next key -> count
        self.counts: dict[tuple[str, ...], dict[str, int]] = {}
        self.totals: dict[tuple[str, ...], int] = {}
        self.hits = HitRate()
        self.popular_hits = HitRate()
        self.random_hits = HitRate()

    def distribution(self, previous: Sequence[str]) -> dict[str, float]:
        """P(next page | the last pages of ``previous``), interpolated over orders."""
        context = tuple(previous[-self.order:]) if self.order else ()
        probs: dict[str, float] = {}
        remaining = 1.0
        for length in range(len(context), -1, -1):
            ctx = context[len(context) - length:]
            seen = self.counts.get(ctx)
            if not seen:
                continue
            total = self.totals[ctx]
            # Witten-Bell: the more distinct followers, the more mass left to shorter contexts.
            keep = total / (total + len(seen))
            for key, count in seen.items():
                probs[key] = probs.get(key, 0.0) + remaining * keep * count / total
            remaining *= 1 - keep
        if probs and remaining > 0:
            # The unconditional frequencies take what no context claimed.
            norm = sum(probs.values())
            probs = {k: v / norm for k, v in probs.items()}
        return probs

    def top(self, previous: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` likeliest next pages after ``previous``, with their probabilities."""
        ranked = sorted(self.distribution(previous).items(), key=lambda kv: (-kv[1], kv[0]))
        return ranked[:k]

    def observe(self, previous: Sequence[str], page: str) -> list[tuple[str, float]]:
        """Score the prediction from ``previous`` against ``page``, then learn it.

        Returns the prediction that was scored (top 3).  With no previous page
        (a session's first view) nothing is scored; the page is learnt as a
        session start.
        """
        predicted = self.top(previous, 3)
        if previous:
            keys = [key for key, _ in predicted]
            self.hits.add(float(keys[:1] == [page]), float(page in keys))
            popular = [key for key, _ in self._ranked(())[:3]]
            self.popular_hits.add(float(popular[:1] == [page]), float(page in popular))
            known = len(self.counts.get((), {}))
            seen = page in self.counts.get((), {})
            self.random_hits.add(1 / known if seen else 0.0,
                                 min(3, known) / known if seen else 0.0)
        context = tuple(previous[-self.order:])
        for length in range(len(context) + 1):
            self._count(context[len(context) - length:], page)
        return predicted

    def _ranked(self, ctx: tuple[str, ...]) -> list[tuple[str, int]]:
        return sorted(self.counts.get(ctx, {}).items(), key=lambda kv: (-kv[1], kv[0]))

    def _count(self, ctx: tuple[str, ...], page: str) -> None:
        seen = self.counts.get(ctx)
        if seen is None:
            if len(self.counts) >= self.max_contexts:
                return
            seen = self.counts[ctx] = {}
        seen[page] = seen.get(page, 0) + 1
        self.totals[ctx] = self.totals.get(ctx, 0) + 1

    def quality(self) -> dict[str, Any]:
        """Progressive-validation figures for the status endpoint and the demo."""
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {"model": "next-page", "examples": self.hits.examples, "order": self.order,
                "contexts": len(self.counts),
                "hit1": rounded(self.hits.rate(1)), "hit3": rounded(self.hits.rate(3)),
                "hit3_popular": rounded(self.popular_hits.rate(3)),
                "hit3_random": rounded(self.random_hits.rate(3))}


class PopularNextPage:
    """The most-popular-next-page baseline on its own (as :class:`NextPageModel` uses it).

    >>> baseline = PopularNextPage()
    >>> for page in ["cart", "cart", "home"]:
    ...     baseline.learn_one(page)
    >>> baseline.top(2)
    [('cart', 0.666...), ('home', 0.333...)]
    """

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def learn_one(self, page: str) -> None:
        """Count one page reached from another."""
        self.counts[page] = self.counts.get(page, 0) + 1

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` pages most often reached, with their shares."""
        total = sum(self.counts.values())
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return [(page, count / total) for page, count in ranked]


# --- the session ------------------------------------------------------------------------------


@dataclass
class SessionSummary:
    """What a session has shown so far: the features of the session models."""

    pages: int = 0
    seconds: float = 0.0  # from the first page view to the latest
    engagement: float = 0.0  # total time in view reported
    types: dict[str, int] = field(default_factory=dict)
    cart_seen: bool = False
    referred: bool = False
    device: str = "other"
    #: Seconds in view on product and cart pages.
    product_engagement: float = 0.0
    #: The visitor's earlier sessions, and whether one of them converted.
    visits: int = 0
    converted_before: bool = False
    #: The last pages' keys (at most the model order), the next-page context.
    recent: list[str] = field(default_factory=list)


def session_features(summary: SessionSummary) -> dict[str, float]:
    """The session models' features (counts are log-scaled).

    >>> s = SessionSummary(pages=3, types={"product": 2, "cart": 1}, cart_seen=True,
    ...                    device="mobile")
    >>> f = session_features(s)
    >>> f["cart_seen"], f["type_product"], f["device_mobile"], round(f["pages"], 3)
    (1.0, 0.667, 1.0, 1.386)
    """
    pages = max(summary.pages, 1)
    features = {
        "bias": 1.0,
        "pages": math.log1p(summary.pages),
        "minutes": math.log1p(summary.seconds / 60),
        "engagement": math.log1p(summary.engagement / 60),
        "cart_seen": float(summary.cart_seen),
        "referred": float(summary.referred),
        "product_engagement": math.log1p(summary.product_engagement / 60),
        "visits": math.log1p(summary.visits),
        "converted_before": float(summary.converted_before),
        f"device_{summary.device}": 1.0,
    }
    for page_type in PAGE_TYPES:
        if page_type in summary.types:
            features[f"type_{page_type}"] = round(summary.types[page_type] / pages, 3)
    if summary.recent:
        features[f"last_{summary.recent[-1].split(':', 1)[0]}"] = 1.0
    return features


@dataclass(frozen=True)
class Pending:
    """A prediction made during a session, scored when the session ends."""

    features: Mapping[str, float]
    converts: float
    #: Seconds since the session started when the prediction was made.
    at_seconds: float
    remaining: float
    #: Where the session was (see :func:`remaining_key`), for the remaining-time model.
    remaining_key: tuple[str, int] = ("", 0)
    #: What the baseline (the mean time left of all sessions so far) answered then.
    remaining_mean: float = 0.0


_MAX_REMAINING_KEYS = 1000


def remaining_key(summary: SessionSummary) -> tuple[str, int]:
    last = summary.recent[-1].split(":", 1)[0] if summary.recent else ""
    return last, min(summary.pages, 10)


class SessionOutcomes:
    """Conversion in this session and the time left, learnt when sessions end.

    :meth:`predict` answers both from a session summary; :meth:`settle`
    scores the session's pending predictions against how it ended (reached
    confirmation or not; its length) and learns them.  The conversion model
    is an :class:`~agents.core.predictions.OutcomeModel` (progressive AUC,
    log loss and ADWIN drift); the remaining-time model's error is the MAE of
    its seconds, next to the MAE of always answering the mean seen so far.
    (A River linear regression of the log of the seconds left did worse than
    that mean on the synthetic sessions; the conditional mean beats it.)
    """

    def __init__(self, learning_rate: float = 0.01, warmup: int = 1000) -> None:
        self.conversion = OutcomeModel("session-conversion", learning_rate=learning_rate,
                                       warmup=warmup)
        #: (last page type, pages so far up to 10) -> (examples, mean log1p(seconds left))
        self.remaining: dict[tuple[str, int], tuple[int, float]] = {}
        self.remaining_mae = _MAE()
        self.mean_mae = _MAE()
        self._mean = 0.0
        self._n = 0

    def predict(self, summary: SessionSummary) -> tuple[float, float, dict[str, float]]:
        """(P(convert in this session), expected seconds left, the features used)."""
        # The baseline's answer is self.mean_left, read at the same moment.
        x = session_features(summary)
        p = self.conversion.predict_proba_one(x).get(True, 0.0)
        known = self.remaining.get(remaining_key(summary))
        left = math.expm1(known[1]) if known else self._mean
        return p, left, x

    @property
    def mean_left(self) -> float:
        """The baseline: the mean time left of every prediction settled so far."""
        return self._mean

    def settle(self, pending: Sequence[Pending], converted: bool, length_s: float,
               at: Any) -> list[DriftDetected]:
        """Score and learn the predictions of one ended session (in the order made)."""
        drifts = []
        for example in pending:
            found = self.conversion.observe(example.features, converted, example.converts, at)
            if found is not None:
                drifts.append(found)
            left = max(0.0, length_s - example.at_seconds)
            self.remaining_mae.update(left, example.remaining)
            self.mean_mae.update(left, example.remaining_mean)
            self._n += 1
            self._mean += (left - self._mean) / self._n
            key = example.remaining_key
            n, mean = self.remaining.get(key, (0, 0.0))
            if n or len(self.remaining) < _MAX_REMAINING_KEYS:
                # The mean of log seconds: its exponential is near the median, which
                # an absolute error rewards (session times have a long tail).
                self.remaining[key] = (n + 1, mean + (math.log1p(left) - mean) / (n + 1))
        return drifts

    def quality(self) -> list[dict[str, Any]]:
        """Progressive-validation figures of both models."""
        mae = float(self.remaining_mae.get()) if self._n else None
        mean = float(self.mean_mae.get()) if self._n else None
        return [self.conversion.quality(),
                {"model": "session-remaining-time", "examples": self._n,
                 "mae_s": None if mae is None else round(mae, 1),
                 "mae_s_mean_baseline": None if mean is None else round(mean, 1)}]
