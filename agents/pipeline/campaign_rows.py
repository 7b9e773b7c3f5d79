"""Campaign records as the store keeps them: proposals and decisions.

The customer stage (:mod:`agents.pipeline.customer_stage`) and the campaign
desk (:mod:`agents.pipeline.campaign_desk`) both write these rows.
"""

from __future__ import annotations

from schemas.codec import encode
from schemas.records import DecisionMade, SendProposed
from streams.store import StoredDecision, StoredProposal


def stored(record: SendProposed) -> StoredProposal:
    """A new proposal as the store keeps it."""
    return StoredProposal(record.proposal_id, record.customer_id, record.campaign_id,
                          record.created_at, record.expires_at, "proposed", encode(record))


def stored_decision(record: DecisionMade) -> StoredDecision:
    """A decision as the store keeps it for the customer view."""
    return StoredDecision(record.customer_id, record.decided_at, record.decision_id,
                          encode(record))

