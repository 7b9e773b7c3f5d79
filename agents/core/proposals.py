"""Approval mode: a send proposal, and the law of approving, rejecting and expiring it.

A campaign with ``approval = true`` does not emit send triggers; the engine
emits a ``SendProposed`` record instead, carrying the trigger it would
become and its reasons (and keeps the send in the contact log, so caps and
quiet hours hold for it like for any send).  A :class:`Proposal` is that
record plus its status.  An operator resolves it:

- :func:`approve` while it is open and before it expires: exactly one
  ``SendTriggered``, the proposal becomes ``approved``; approving again
  yields nothing (the status says why).  When the customer's consent no
  longer allows the send, the proposal is ``withdrawn`` instead;
- :func:`reject`: ``rejected``, nothing is sent;
- :func:`expire` / :func:`expired`: an open proposal past ``expires_at``
  (never later than its send time) is ``expired``.

Every resolution is recorded as a ``ProposalResolved`` (:func:`resolution`).
Where proposals are stored is the caller's business; these functions only
take a proposal and return the next one.

>>> from datetime import UTC, datetime, timedelta
>>> at = datetime(2026, 3, 2, 9, tzinfo=UTC)
>>> proposed = SendProposed(
...     proposal_id="c-1:spring:tag:golf-fans:email", idempotency_key="spring:c-1:tag:golf-fans",
...     customer_id="c-1", created_at=at, expires_at=at + timedelta(hours=8), schema_version=1,
...     send_at=at + timedelta(hours=9), channel="email", campaign_id="spring",
...     content_id="n-1", variant_language="de", reasons=["tag golf-fans assigned"],
...     caused_by="e-7")
>>> proposal = Proposal.of(proposed)
>>> approved, trigger = approve(proposal, at + timedelta(hours=1), may_send=True)
>>> approved.status, trigger.trigger_id == proposal.proposal_id, trigger.send_at == proposed.send_at
('approved', True, True)
>>> approve(approved, at + timedelta(hours=2), may_send=True)[1]
Refused(proposal_id='c-1:spring:tag:golf-fans:email', reason='already approved')
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from agents.core.uplift import CampaignCounts
from schemas.records import ProposalResolved, SendProposed, SendTriggered

#: The statuses of a proposal; every one but ``proposed`` is final.
STATUSES = ("proposed", "approved", "rejected", "expired", "withdrawn")


@dataclass(frozen=True)
class Refused:
    """An approval or rejection that changed nothing, and why."""

    proposal_id: str
    reason: str


@dataclass(frozen=True)
class Proposal:
    """A send proposal and what became of it."""

    record: SendProposed
    status: str = "proposed"
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    note: str | None = None

    @classmethod
    def of(cls, record: SendProposed) -> Proposal:
        """A new, open proposal."""
        return cls(record)

    @property
    def proposal_id(self) -> str:
        """The id of the proposal and of the trigger it becomes."""
        return self.record.proposal_id

    @property
    def expires_at(self) -> datetime:
        """When it expires unapproved."""
        return self.record.expires_at

    @property
    def is_open(self) -> bool:
        """True while it waits for an operator."""
        return self.status == "proposed"

    def trigger(self, approved_at: datetime, by: str) -> SendTriggered:
        """The send trigger it becomes when approved at ``approved_at`` by ``by``."""
        r = self.record
        return SendTriggered(
            trigger_id=r.proposal_id, idempotency_key=r.idempotency_key,
            customer_id=r.customer_id, created_at=approved_at, schema_version=1,
            send_at=r.send_at, channel=r.channel, campaign_id=r.campaign_id,
            content_id=r.content_id, variant_language=r.variant_language,
            reasons=[*r.reasons, f"approved by {by} at {approved_at.isoformat()}"],
            caused_by=r.proposal_id)


def approve(proposal: Proposal, now: datetime, may_send: bool, by: str = "operator"
            ) -> tuple[Proposal, SendTriggered | Refused]:
    """The proposal after an approval at ``now``, and the one trigger it yields (or why not).

    ``may_send`` is whether the customer's consent allows the send now.
    """
    if not proposal.is_open:
        return proposal, Refused(proposal.proposal_id, f"already {proposal.status}")
    if now >= proposal.expires_at:
        return _resolved(proposal, "expired", proposal.expires_at, None, None), Refused(
            proposal.proposal_id, "expired")
    if not may_send:
        note = "consent no longer allows the send"
        return _resolved(proposal, "withdrawn", now, by, note), Refused(
            proposal.proposal_id, note)
    return _resolved(proposal, "approved", now, by, None), proposal.trigger(now, by)


def reject(proposal: Proposal, now: datetime, by: str = "operator", note: str | None = None
           ) -> tuple[Proposal, Refused | None]:
    """The proposal after a rejection at ``now`` (None: it was rejected now)."""
    if not proposal.is_open:
        return proposal, Refused(proposal.proposal_id, f"already {proposal.status}")
    if now >= proposal.expires_at:
        return _resolved(proposal, "expired", proposal.expires_at, None, None), Refused(
            proposal.proposal_id, "expired")
    return _resolved(proposal, "rejected", now, by, note), None


def expire(proposal: Proposal, now: datetime) -> Proposal:
    """The proposal at ``now``: expired when it is open and ``now`` has reached ``expires_at``."""
    if proposal.is_open and now >= proposal.expires_at:
        return _resolved(proposal, "expired", proposal.expires_at, None, None)
    return proposal


def expired(proposals: Iterable[Proposal], now: datetime) -> list[Proposal]:
    """Those of ``proposals`` that expire by ``now``, as expired (the open rest are left out)."""
    return [expire(p, now) for p in proposals if p.is_open and now >= p.expires_at]


def resolution(proposal: Proposal) -> ProposalResolved:
    """The record of a resolved proposal (ValueError while it is open)."""
    if proposal.is_open or proposal.resolved_at is None:
        raise ValueError(f"proposal {proposal.proposal_id} is still open")
    r = proposal.record
    return ProposalResolved(
        event_id=f"{r.proposal_id}:{proposal.status}", proposal_id=r.proposal_id,
        customer_id=r.customer_id, resolved_at=proposal.resolved_at, schema_version=1,
        status=proposal.status, campaign_id=r.campaign_id, resolved_by=proposal.resolved_by,
        note=proposal.note,
        trigger_id=r.proposal_id if proposal.status == "approved" else None)


def sent(trigger: SendTriggered) -> CampaignCounts:
    """The campaign statistics' count of an approved proposal's send."""
    return CampaignCounts(trigger.campaign_id, trigger.content_id, "treated", sends=1,
                          exposure=trigger.trigger_id, at=trigger.send_at)


def _resolved(proposal: Proposal, status: str, at: datetime, by: str | None,
              note: str | None) -> Proposal:
    return replace(proposal, status=status, resolved_at=at, resolved_by=by, note=note)
