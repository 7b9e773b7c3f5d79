"""Which topic carries which record, how it is keyed, and who uses it.

This table is the single declaration that :mod:`streams.topics` turns into
Faust topics and :mod:`schemas.export` into the AsyncAPI document.  Topic
names here are logical; on the broker they get the configured prefix.

Every customer-keyed topic is keyed by ``customer_id`` (UTF-8) and has the
same partition count, so one worker owns a customer across all of them.

>>> TOPICS["clicks"].key
'customer_id'
>>> [t.name for t in INPUT_TOPICS][:5]
['clicks', 'purchases', 'consents', 'profiles', 'content']
>>> [t.name for t in INPUT_TOPICS][5:]
['page_views', 'identity_links', 'visitor_merges']
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import records as r


@dataclass(frozen=True)
class TopicContract:
    """The contract of one topic."""

    name: str
    #: Current record per ``schema_version``; the highest is what we write.
    versions: dict[int, type[r.Record]]
    #: Name of the record field whose value is the message key (None: no key).
    key: str | None
    description: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    compacted: bool = False
    #: True when the topic is keyed by customer and co-partitioned.
    customer_keyed: bool = True
    #: How the topic is partitioned, in words, when it is none of the usual kinds.
    partitioning: str | None = None

    @property
    def record(self) -> type[r.Record]:
        """The newest record type of this topic."""
        return self.versions[max(self.versions)]


_UPSTREAM = ("web shop", "CRM", "newsletter tool", "consent manager", "relevanz produce")

INPUT_TOPICS: tuple[TopicContract, ...] = (
    TopicContract(
        "clicks",
        {1: r.Clicked},
        "customer_id",
        "Clicks on links, banners and content items.",
        ("web shop", "newsletter tool", "app", "relevanz produce"),
        ("relevanz ingest",),
    ),
    TopicContract(
        "purchases",
        {1: r.Purchased},
        "customer_id",
        "Completed orders, live or backfilled.",
        ("web shop", "CRM", "relevanz produce"),
        ("relevanz ingest",),
    ),
    TopicContract(
        "consents",
        {1: r.ConsentChanged},
        "customer_id",
        "Consent grants, revocations and erasure requests.",
        ("consent manager", "relevanz produce"),
        ("relevanz ingest",),
    ),
    TopicContract(
        "profiles",
        {1: r.ProfileUpdated},
        "customer_id",
        "CRM master data: locale, language, time zone, attributes.",
        ("CRM", "relevanz produce"),
        ("relevanz ingest",),
    ),
    TopicContract(
        "content",
        {1: r.ContentPublished},
        "content_id",
        "The content catalogue; the latest record per content_id is the item.",
        ("content management", "relevanz produce"),
        ("relevanz ingest (every worker reads it whole)",),
        compacted=True,
        customer_keyed=False,
    ),
    # Not a clicks v2: page views are keyed by the visitor (most senders are
    # anonymous), arrive many times per session (heartbeats included) and carry
    # no campaign or decision; a clicks version would force a customer_id on
    # every one and change the key of a customer-keyed topic.
    TopicContract(
        "page_views",
        {1: r.PageView},
        "visitor_id",
        "Page views of the site, anonymous or logged in, with engagement time "
        "(heartbeats report on the same page_view_id).",
        ("web site tag", "app", "relevanz produce"),
        ("relevanz ingest",),
        customer_keyed=False,
        partitioning="keyed by visitor_id, with the partition count of the "
        "customer-keyed topics; one worker owns a visitor's sessions",
    ),
    # Keyed by the visitor, like page_views: only the visitor's owner knows the
    # visitor's profile, so it applies the link and hands the profile on to the
    # customer's owner through visitor_merges (customer-keyed).
    TopicContract(
        "identity_links",
        {1: r.IdentityLink},
        "visitor_id",
        "An anonymous visitor id belongs to a customer (login, newsletter click-through, "
        "checkout).",
        ("web shop", "newsletter tool", "relevanz produce"),
        ("relevanz ingest",),
        customer_keyed=False,
        partitioning="keyed by visitor_id, with the partition count of the "
        "customer-keyed topics; the visitor's owner applies the link",
    ),
    TopicContract(
        "visitor_merges",
        {1: r.VisitorMerged},
        "customer_id",
        "A linked visitor's pages for the customer's owner to merge, written by the "
        "visitor's owner at the link and for each later page view of the visitor.",
        ("relevanz ingest (the visitor's owner)",),
        ("relevanz ingest (the customer's owner)",),
    ),
)

OUTPUT_TOPICS: tuple[TopicContract, ...] = (
    TopicContract(
        "decisions",
        {1: r.DecisionMade},
        "customer_id",
        "Personalisation decisions with their reasons.",
        ("relevanz decisions",),
        ("web", "app", "e-mail", "analytics"),
    ),
    TopicContract(
        "send-triggers",
        {1: r.SendTriggered},
        "customer_id",
        "Requests to send content on a channel at a time.",
        ("relevanz triggers",),
        ("e-mail", "push", "sms", "web channels"),
    ),
    TopicContract(
        "send-cancellations",
        {1: r.SendCancelled},
        "customer_id",
        "Send triggers withdrawn because consent was revoked or erasure requested "
        "before their send time.",
        ("relevanz consent",),
        ("e-mail", "push", "sms", "web channels"),
    ),
    TopicContract(
        "send-proposals",
        {1: r.SendProposed},
        "customer_id",
        "Sends of campaigns in approval mode, waiting for an operator to approve them.",
        ("relevanz triggers",),
        ("relevanz operator API", "operators"),
    ),
    TopicContract(
        "proposal-resolutions",
        {1: r.ProposalResolved},
        "customer_id",
        "Send proposals approved, rejected, expired or withdrawn, and by whom.",
        ("relevanz operator API",),
        ("operators", "analytics"),
    ),
    TopicContract(
        "campaign-stats",
        {1: r.CampaignStatsReported},
        "campaign_id",
        "Each campaign's counts for treated and holdout customers and its uplift, "
        "reported every RELEVANZ_CAMPAIGN_STATS_INTERVAL_S; the latest per campaign counts.",
        ("relevanz workers",),
        ("marketing analytics", "dashboards"),
        compacted=True,
        customer_keyed=False,
    ),
    TopicContract(
        "customer-erased",
        {1: r.CustomerErased},
        "customer_id",
        "Customers erased on request (GDPR Art. 17): downstream systems erase them too.",
        ("relevanz consent",),
        ("CRM", "analytics", "every system holding customer data"),
    ),
    TopicContract(
        "interest-tags",
        {1: r.InterestTagChanged},
        "customer_id",
        "Interest tags assigned to or removed from customers.",
        ("relevanz interests",),
        ("CRM", "analytics"),
    ),
    TopicContract(
        "dead-letters",
        {1: r.DeadLetter},
        None,
        "Input messages that were not accepted, with original bytes and reason. "
        "Keyed by the original message's key.",
        ("relevanz ingest",),
        ("operators",),
        customer_keyed=False,
    ),
    TopicContract(
        "model-drift",
        {1: r.ModelDrifted},
        "model_id",
        "Drift found in a learned model's progressive validation (ADWIN): "
        "the content policy and the purchase and churn models.",
        ("relevanz learner",),
        ("operators", "data science"),
        customer_keyed=False,
    ),
    TopicContract(
        "controls",
        {1: r.ControlChanged},
        "control_id",
        "Operator controls: the kill switch (key all) and per-campaign pauses "
        "(key campaign:<id>); the latest record per key is in force.",
        ("relevanz operator API",),
        ("relevanz workers (every worker reads it whole)",),
        compacted=True,
        customer_keyed=False,
    ),
)

TOPICS: dict[str, TopicContract] = {t.name: t for t in INPUT_TOPICS + OUTPUT_TOPICS}
