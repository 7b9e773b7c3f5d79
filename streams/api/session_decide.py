"""``POST /v1/decide`` for a session: the next best action for a visitor or customer.

Reads only: the visitor's profile (:mod:`agents.core.visitors`), or the
customer's state when the visitor is linked or a customer id is given, and
the catalogue, and the visitor's session state (in the worker's memory, else
the store) with the worker's session models for the next pages and the
conversion chance; it writes and publishes nothing.  An id the store does not
hold (made up, expired or erased) gets the non-personalised answer, so a
viewer token can neither create a visitor or customer nor bring an erased
one back.  A customer is personalised only while their consent allows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from agents.core.interests import score_at
from agents.core.next_action import next_best_action, session_summary
from agents.core.session_state import SessionModels, VisitorSession
from agents.core.visitors import ViewedPage, VisitorRules, interests
from agents.pipeline.customer_stage import CustomerStage
from agents.pipeline.sessions import from_blob
from streams.store import Store

#: Fields of a session decide request.
SESSION_FIELDS = frozenset({"visitor_id", "customer_id", "session_id", "touchpoint"})


async def decide_session(store: Store, stage: CustomerStage, rules: VisitorRules,
                         values: Mapping[str, str], now: datetime) -> dict[str, Any]:
    """The answer for validated ``values`` (``session_id``, ``touchpoint`` and one of
    ``visitor_id`` or ``customer_id``) as of ``now``."""
    scores: dict[str, float] = {}
    session: list[ViewedPage] = []
    tracked: VisitorSession | None = None
    subject = {"visitor_id": values.get("visitor_id"), "customer_id": values.get("customer_id")}
    held = "none"
    customer_id = values.get("customer_id")
    visitor_id = values.get("visitor_id")
    if visitor_id is not None:
        state = (await store.load_visitor_profiles([visitor_id], now)).get(visitor_id)
        if state is not None:  # held, so neither made up nor erased
            tracked = await _session_state(store, stage, visitor_id, now)
        if state is not None and state.customer_id is not None:
            customer_id = subject["customer_id"] = state.customer_id
        elif state is not None:
            held = "visitor"
            scores = interests(state, now, rules)
            session = [p for p in state.pages if p.session_id == values["session_id"]]
    if customer_id is not None and held == "none":
        customer = stage.cache.peek(customer_id) or (
            await store.load_customers([customer_id], now)).get(customer_id)
        if customer is not None and stage.rules.consent.may_personalise(customer, now):
            held = "customer"
            half_life: timedelta = stage.rules.customer.interests.half_life
            scores = {t: score_at(i, now, half_life) for t, i in customer.interests.items()}
    models = stage.sessions.models if stage.sessions is not None else SessionModels()
    action = next_best_action(scores, session, stage.catalogue.items, values["touchpoint"],
                              now, models, session_summary(tracked, values["session_id"]))
    return {
        **{k: v for k, v in subject.items() if v is not None},
        "session_id": values["session_id"], "touchpoint": values["touchpoint"],
        "decided_at": now.isoformat(), "profile": held,
        "content_id": action.content_id, "score": round(action.score, 6),
        "personalised": action.personalised,
        "next_pages": [{"page": page, "probability": round(p, 4)}
                       for page, p in action.next_pages],
        "next_pages_model": action.next_pages_model,
        "conversion_probability": action.conversion_probability,
        "conversion_model": action.conversion_model,
        "reasons": list(action.reasons),
    }


async def _session_state(store: Store, stage: CustomerStage, visitor_id: str, now: datetime
                         ) -> VisitorSession | None:
    """The visitor's session state: the worker's in memory, else the stored one."""
    held = stage.sessions.visitor(visitor_id) if stage.sessions is not None else None
    if held is not None:
        return held
    blob = (await store.load_visitors([visitor_id], now)).get(visitor_id)
    return None if blob is None else from_blob(visitor_id, blob)
