"""What operators do with campaigns: read their statistics, approve or reject proposals.

The operator API (:mod:`streams.api.web`) calls these; the law of a proposal
(approve once, expire, withdraw without consent) is :mod:`agents.core.proposals`,
this module adds the store and the topics:

- **Statistics.** Every worker adds its customers' counters to the store
  (:meth:`streams.store.Store.add_campaign_stats`); :func:`campaign_report`
  reads them back for all workers and computes each campaign's uplift over
  its holdout group (:mod:`agents.core.uplift`).
- **Approval.** :func:`approve` reads the stored proposal and the customer's
  consent now, applies :func:`agents.core.proposals.approve`, and only when
  the store's conditional update from ``proposed`` succeeds (exactly one of
  concurrent approvals, on any worker) publishes the one ``SendTriggered``,
  the ``ProposalResolved`` record and the send's count.  While the kill
  switch or the campaign's pause is on, nothing is approved.
- **Expiry.** :func:`expire_proposals` resolves every open proposal whose
  time has passed as ``expired`` (the worker runs it periodically; listing
  does it too), so that rejected and expired proposals are on record.
- **Reports.** :func:`report_campaigns` publishes every campaign's counts and
  uplift on ``campaign-stats`` (the worker does it every
  ``RELEVANZ_CAMPAIGN_STATS_INTERVAL_S``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog

from agents.core import proposals as law
from agents.core.accounting import Accounting
from agents.core.campaigns import CampaignBook
from agents.core.customer import CustomerState
from agents.core.uplift import CampaignStats
from agents.ingest import Ingest
from agents.pipeline.customer_stage import CustomerStage
from schemas.codec import decode, encode
from schemas.records import (
    CampaignStatsReported,
    ProposalResolved,
    SendProposed,
    SendTriggered,
)
from schemas.validation import build
from streams.controls import Controls
from streams.store import Store, StoredProposal
from streams.tracing import new_context

log = structlog.get_logger(__name__)


class Desk(Protocol):
    """What the desk works with: the worker offers it (:class:`streams.app.Worker`)."""

    @property
    def campaigns(self) -> CampaignBook: ...
    @property
    def store(self) -> Store: ...
    @property
    def controls(self) -> Controls | None: ...
    @property
    def stage(self) -> CustomerStage | None: ...
    @property
    def ingest(self) -> Ingest | None: ...
    @property
    def accounting(self) -> Accounting: ...


@dataclass(frozen=True)
class Outcome:
    """The answer to an operator's action: HTTP status and body."""

    status: int
    body: dict[str, Any]


def proposal_of(row: StoredProposal) -> law.Proposal:
    """A stored proposal as the core's :class:`~agents.core.proposals.Proposal`."""
    record = build(SendProposed, decode(row.payload))
    assert isinstance(record, SendProposed)
    return law.Proposal(record, row.status, row.resolved_at, row.resolved_by, row.note)


def as_json(proposal: law.Proposal) -> dict[str, Any]:
    """A proposal for the API: the proposed send, its reasons and what became of it."""
    r = proposal.record
    return {"proposal_id": r.proposal_id, "status": proposal.status,
            "customer_id": r.customer_id, "campaign_id": r.campaign_id, "channel": r.channel,
            "content_id": r.content_id, "variant_language": r.variant_language,
            "send_at": r.send_at.isoformat(), "created_at": r.created_at.isoformat(),
            "expires_at": r.expires_at.isoformat(), "reasons": list(r.reasons),
            "resolved_at": proposal.resolved_at.isoformat() if proposal.resolved_at else None,
            "resolved_by": proposal.resolved_by, "note": proposal.note}


async def campaign_report(worker: Desk, campaign_id: str | None = None
                          ) -> list[dict[str, Any]]:
    """Each campaign of the book (or one) with its definition, pause state, counts and uplift."""
    book: CampaignBook = worker.campaigns
    rows = await worker.store.campaign_stats(campaign_id)
    # The store's rows are the counters already added up: load them as they are.
    stats = CampaignStats()
    stats.counters = {(r.campaign_id, r.variant, r.group): r for r in rows}
    report = stats.report()
    controls = worker.controls
    out = []
    for campaign in book.campaigns:
        if campaign_id is not None and campaign.campaign_id != campaign_id:
            continue
        found = report.get(campaign.campaign_id)
        empty = {"sends": 0, "clicks": 0, "conversions": 0, "revenue": 0.0}
        out.append({
            "campaign_id": campaign.campaign_id, "description": campaign.description,
            "trigger": campaign.trigger, "goal": campaign.goal,
            "channels": list(campaign.channels), "priority": campaign.priority,
            "holdout_share": campaign.holdout_share, "approval": campaign.approval,
            "paused": bool(controls is not None
                           and controls.campaign_paused(campaign.campaign_id)),
            "treated": found["treated"] if found else empty,
            "holdout": found["holdout"] if found else empty,
            "uplift": found["uplift"] if found else None,
            "variants": found["variants"] if found else {},
        })
    return out


def stats_record(entry: dict[str, Any], now: datetime) -> CampaignStatsReported:
    """One campaign of :func:`campaign_report` as the periodic ``campaign-stats`` record."""
    uplift = entry["uplift"] or {}

    def of(metric: str, part: str) -> float | None:
        value = (uplift.get(metric) or {}).get(part)
        return None if value is None else float(value)

    treated, holdout = entry["treated"], entry["holdout"]
    return CampaignStatsReported(
        event_id=f"{entry['campaign_id']}:{now.isoformat()}", campaign_id=entry["campaign_id"],
        reported_at=now, schema_version=1,
        sends_treated=max(int(treated["sends"]), 0), clicks_treated=int(treated["clicks"]),
        conversions_treated=int(treated["conversions"]),
        revenue_treated=float(treated["revenue"]),
        sends_holdout=max(int(holdout["sends"]), 0), clicks_holdout=int(holdout["clicks"]),
        conversions_holdout=int(holdout["conversions"]),
        revenue_holdout=float(holdout["revenue"]),
        click_uplift=of("clicks", "difference"), click_uplift_low=of("clicks", "low"),
        click_uplift_high=of("clicks", "high"),
        conversion_uplift=of("conversions", "difference"),
        conversion_uplift_low=of("conversions", "low"),
        conversion_uplift_high=of("conversions", "high"),
        revenue_uplift=of("revenue", "difference"), revenue_uplift_low=of("revenue", "low"),
        revenue_uplift_high=of("revenue", "high"))


async def report_campaigns(worker: Desk, now: datetime) -> int:
    """Publish every campaign's statistics on ``campaign-stats``; returns how many."""
    report = await campaign_report(worker)
    for entry in report:
        record = stats_record(entry, now)
        await _publish(worker, "campaign-stats", record.campaign_id, record)
    return len(report)


async def list_proposals(worker: Desk, status: str | None, limit: int, now: datetime
                         ) -> list[dict[str, Any]]:
    """Proposals (of one status), newest first, after expiring those whose time has passed."""
    await expire_proposals(worker, now)
    rows = await worker.store.proposals(status, limit)
    return [as_json(proposal_of(row)) for row in rows]


async def approve(worker: Desk, proposal_id: str, by: str, now: datetime) -> Outcome:
    """Approve one proposal: exactly one send trigger, or why not."""
    row = await worker.store.proposal(proposal_id)
    if row is None:
        return Outcome(404, {"error": f"no proposal {proposal_id}"})
    proposal = proposal_of(row)
    controls = worker.controls
    if (proposal.is_open and controls is not None
            and controls.campaign_paused(proposal.record.campaign_id)):
        return Outcome(409, {"error": "sends are paused (kill switch or campaign pause): "
                                      "resume before approving", **as_json(proposal)})
    state = await _customer(worker, proposal.record.customer_id, now)
    stage = worker.stage
    may_send = stage is not None and stage.rules.consent.may_send(state, proposal.record.channel)
    resolved, result = law.approve(proposal, now, may_send, by)
    return await _settle(worker, proposal, resolved, result)


async def reject(worker: Desk, proposal_id: str, by: str, note: str | None,
                 now: datetime) -> Outcome:
    """Reject one proposal: nothing is sent."""
    row = await worker.store.proposal(proposal_id)
    if row is None:
        return Outcome(404, {"error": f"no proposal {proposal_id}"})
    proposal = proposal_of(row)
    resolved, refused = law.reject(proposal, now, by, note)
    return await _settle(worker, proposal, resolved, refused)


async def expire_proposals(worker: Desk, now: datetime, limit: int = 1000) -> int:
    """Resolve open proposals past their time as expired; returns how many."""
    rows = await worker.store.proposals("proposed", limit)
    done = 0
    for row in rows:
        proposal = proposal_of(row)
        resolved = law.expire(proposal, now)
        if resolved is not proposal and await _record(worker, resolved):
            done += 1
    return done


async def _settle(worker: Desk, before: law.Proposal, after: law.Proposal,
                  result: SendTriggered | law.Refused | None) -> Outcome:
    if after is before:  # nothing changed: already resolved
        assert isinstance(result, law.Refused)
        return Outcome(409, {"error": f"proposal {before.proposal_id}: {result.reason}",
                             **as_json(before)})
    if not await _record(worker, after):
        current = await worker.store.proposal(before.proposal_id)
        shown = proposal_of(current) if current is not None else before
        return Outcome(409, {"error": f"proposal {before.proposal_id}: already {shown.status}",
                             **as_json(shown)})
    body = as_json(after)
    if isinstance(result, SendTriggered):
        await _publish(worker, "send-triggers", result.customer_id, result)
        await worker.store.add_campaign_stats([law.sent(result)])
        worker.accounting.send_triggers += 1
        body["trigger_id"] = result.trigger_id
        return Outcome(200, body)
    if isinstance(result, law.Refused):
        body["refused"] = result.reason
    return Outcome(200 if after.status == "rejected" else 409, body)


async def _record(worker: Desk, resolved: law.Proposal) -> bool:
    """Store the resolution (only from ``proposed``) and publish it; False when too late."""
    assert resolved.resolved_at is not None
    won = await worker.store.resolve_proposal(resolved.proposal_id, resolved.status,
                                              resolved.resolved_at, resolved.resolved_by,
                                              resolved.note)
    if won:
        record: ProposalResolved = law.resolution(resolved)
        await _publish(worker, "proposal-resolutions", record.customer_id, record)
        log.info("proposal_resolved", proposal=resolved.proposal_id, status=resolved.status,
                 campaign=resolved.record.campaign_id)
    return won


async def _publish(worker: Desk, topic: str, customer_id: str, record: Any) -> None:
    outputs = worker.ingest.outputs if worker.ingest is not None else {}
    target = outputs.get(topic)
    if target is not None:
        # Wait for the broker's acknowledgement: the operator's answer says it went out.
        sent = await target.send(key=customer_id.encode(), value=encode(record),
                                 headers=new_context().headers())
        await sent


async def _customer(worker: Desk, customer_id: str, now: datetime) -> CustomerState:
    stage = worker.stage
    cached = stage.cache.peek(customer_id) if stage is not None else None
    if cached is not None:
        return cached
    loaded = await worker.store.load_customers([customer_id], now)
    return loaded.get(customer_id) or CustomerState(customer_id)
