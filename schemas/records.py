"""The versioned records carried by every topic.

One record class per topic and version.  A record is a Faust record with no
class paths on the wire (``include_metadata=False``); field types and the
rules in :mod:`schemas.constraints` are the whole contract.  A compatible
change (a new optional field) keeps the version; a breaking change adds a new
class (``ClickedV2``) and a new ``schema_version`` while the old one stays
readable.

Times are timezone-aware :class:`datetime.datetime` values, ISO 8601 with an
offset on the wire.  Every input event carries ``event_id``, event time
``occurred_at`` and ``schema_version``; every customer event ``customer_id``.
"""

from __future__ import annotations

from datetime import datetime

import faust

from schemas.constraints import Rule, constrain

PURPOSES = ("profiling", "personalisation", "email", "push", "sms", "web")
CHANNELS = ("email", "push", "sms", "web", "app")
_ID = Rule(min_length=1, max_length=200)
_LANG = Rule(pattern=r"^[a-z]{2,3}$", description="ISO 639 language code, lower case")
_LOCALE = Rule(
    pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$", description="BCP 47 locale such as de-DE"
)
_VERSION_1 = Rule(min_value=1, max_value=1, description="version of this contract")
# Bounds on lists and free text: one sender must not be able to grow a customer's
# state (or a catalogue item) without limit; a breach is a dead letter naming the bound.
#: A topic name (interest topic of a click, an order line or a catalogue item).
_TOPIC = Rule(min_length=1, max_length=100)
#: Topics one click, order line or catalogue item may carry.
MAX_TOPICS = 20
_TOPICS = Rule(max_length=MAX_TOPICS, items=_TOPIC)
#: A URL or other free text of one field.
_TEXT = Rule(max_length=2000)
#: An optional reference (content, campaign, decision, session, device).
_REF = Rule(max_length=200)
#: Lines of one order.
MAX_ORDER_ITEMS = 500
#: Free CRM attributes of one profile update, and the longest value of one.
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_CHARS = 1000


class Record(faust.Record, abstract=True, include_metadata=False):
    """Base of every Relevanz record: no class paths on the wire."""


# --- inputs -----------------------------------------------------------------


@constrain(
    event_id=_ID,
    customer_id=_ID,
    schema_version=_VERSION_1,
    channel=Rule(choices=CHANNELS),
    topics=_TOPICS,
    content_id=_REF,
    url=_TEXT,
    campaign_id=_REF,
    decision_id=_REF,
    device=_REF,
    session_id=_REF,
)
class Clicked(Record):
    """A customer clicked a link, a banner or a content item (topic ``clicks``).

    ``topics`` may carry the link's own topic metadata when the clicked target
    is not in the content catalogue.  ``decision_id`` is set when the click
    came from a personalised slot, so the reward reaches the right decision.
    """

    event_id: str
    customer_id: str
    occurred_at: datetime
    schema_version: int
    content_id: str | None = None
    url: str | None = None
    topics: list[str] = []
    campaign_id: str | None = None
    decision_id: str | None = None
    channel: str | None = None
    device: str | None = None
    session_id: str | None = None


@constrain(
    product_id=_ID,
    quantity=Rule(min_value=1, max_value=100_000),
    unit_price=Rule(min_value=0),
    topics=_TOPICS,
)
class PurchasedItem(Record):
    """One line of a purchase."""

    product_id: str
    quantity: int
    unit_price: float
    topics: list[str] = []


@constrain(
    event_id=_ID,
    customer_id=_ID,
    order_id=_ID,
    schema_version=_VERSION_1,
    total=Rule(min_value=0),
    currency=Rule(pattern=r"^[A-Z]{3}$", description="ISO 4217 currency code"),
    items=Rule(min_length=1, max_length=MAX_ORDER_ITEMS),
    campaign_id=_REF,
    decision_id=_REF,
)
class Purchased(Record):
    """A customer completed an order (topic ``purchases``)."""

    event_id: str
    customer_id: str
    occurred_at: datetime
    schema_version: int
    order_id: str
    items: list[PurchasedItem]
    total: float
    currency: str
    campaign_id: str | None = None
    decision_id: str | None = None


@constrain(
    event_id=_ID,
    customer_id=_ID,
    schema_version=_VERSION_1,
    action=Rule(choices=("granted", "revoked", "erasure_requested")),
    purposes=Rule(
        description="purposes the action applies to", items=Rule(choices=PURPOSES)
    ),
    source=Rule(min_length=1, max_length=200),
    legal_basis=Rule(
        choices=("consent", "contract", "legal_obligation", "legitimate_interest")
    ),
)
class ConsentChanged(Record):
    """A customer granted or revoked purposes, or asked to be erased (``consents``).

    ``purposes`` lists any of ``profiling``, ``personalisation`` and the
    channels ``email``, ``push``, ``sms``, ``web``; it may be empty for an
    erasure request, which applies to everything.
    """

    event_id: str
    customer_id: str
    occurred_at: datetime
    schema_version: int
    action: str
    purposes: list[str]
    source: str
    legal_basis: str = "consent"


@constrain(
    event_id=_ID,
    customer_id=_ID,
    schema_version=_VERSION_1,
    locale=_LOCALE,
    language=_LANG,
    country=Rule(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2"),
    time_zone=Rule(format="iana-time-zone", description="IANA time zone"),
    birth_year=Rule(min_value=1900, max_value=2100),
    gender=Rule(max_length=100),
    attributes=Rule(max_length=MAX_ATTRIBUTES, items=Rule(max_length=MAX_ATTRIBUTE_CHARS),
                    description=f"free CRM attributes (at most {MAX_ATTRIBUTES}, values of "
                                f"at most {MAX_ATTRIBUTE_CHARS} characters)"),
)
class ProfileUpdated(Record):
    """CRM master data for a customer (topic ``profiles``).

    Later updates replace earlier ones field by field; ``attributes`` holds
    free CRM attributes as strings.
    """

    event_id: str
    customer_id: str
    occurred_at: datetime
    schema_version: int
    locale: str
    language: str
    time_zone: str
    country: str | None = None
    birth_year: int | None = None
    gender: str | None = None
    attributes: dict[str, str] = {}


PAGE_TYPES = ("home", "category", "product", "article", "search", "cart", "checkout",
              "confirmation", "other")
DEVICES = ("desktop", "mobile", "tablet", "other")
#: Longest engagement time one page view may report (six hours): a tab left open
#: overnight is not six hours of reading, and a larger value is a sender's bug.
MAX_ENGAGEMENT_S = 6 * 3600


@constrain(
    event_id=_ID,
    visitor_id=_ID,
    customer_id=_REF,
    session_id=_ID,
    page_view_id=_REF,
    schema_version=_VERSION_1,
    url=Rule(min_length=1, max_length=2000),
    content_id=_REF,
    page_type=Rule(choices=PAGE_TYPES),
    category=_REF,
    referrer=_TEXT,
    device=Rule(choices=DEVICES),
    engagement_seconds=Rule(
        min_value=0, max_value=MAX_ENGAGEMENT_S,
        description=f"seconds the page was in view so far, 0 to {MAX_ENGAGEMENT_S}"),
    consent=Rule(max_length=len(PURPOSES), items=Rule(choices=PURPOSES),
                 description="purposes granted in the site's cookie consent"),
)
class PageView(Record):
    """A visitor viewed a page of the site (topic ``page_views``, keyed by ``visitor_id``).

    ``visitor_id`` is the site's cookie id, known from the first page view;
    ``customer_id`` is set when the visitor is logged in.  ``content_id``
    names the catalogue item shown (a product or an article), ``category``
    the shop category the page belongs to.

    Engagement: ``engagement_seconds`` is the time the page has been in view
    so far, sent when the visitor leaves the page or by a heartbeat while
    they stay.  Each report is an event of its own (its own ``event_id``)
    carrying the same ``page_view_id``, the id of the page view it reports
    on (None: the event is a page view of its own); the largest engagement
    reported for a ``page_view_id`` counts, so heartbeats and the final
    report never add up twice, whatever order they arrive in.

    ``consent`` lists the purposes of the site's cookie consent at this
    page view; empty (the default) allows no profiling: the page view is
    counted in the session but builds no interest profile.
    """

    event_id: str
    visitor_id: str
    occurred_at: datetime
    schema_version: int
    session_id: str
    url: str
    page_type: str
    device: str
    customer_id: str | None = None
    page_view_id: str | None = None
    content_id: str | None = None
    category: str | None = None
    referrer: str | None = None
    engagement_seconds: float | None = None
    consent: list[str] = []


@constrain(language=_LANG, title=Rule(min_length=1, max_length=500),
           url=Rule(min_length=1, max_length=2000))
class ContentVariant(Record):
    """One language variant of a content item."""

    language: str
    title: str
    url: str


@constrain(
    event_id=_ID,
    content_id=_ID,
    schema_version=_VERSION_1,
    topics=Rule(min_length=1, max_length=MAX_TOPICS, items=_TOPIC),
    channels=Rule(min_length=1, max_length=len(CHANNELS),
                  description="any of " + ", ".join(CHANNELS)),
    slots=Rule(max_length=50, items=_REF),
    variants=Rule(min_length=1, max_length=100),
    campaign_id=_REF,
    default_language=_LANG,
)
class ContentPublished(Record):
    """A catalogue item was created or changed (compacted topic ``content``).

    Keyed by ``content_id``; the latest record per key is the item.
    ``valid_from``/``valid_until`` bound when it may be chosen.
    """

    event_id: str
    content_id: str
    occurred_at: datetime
    schema_version: int
    topics: list[str]
    channels: list[str]
    slots: list[str]
    variants: list[ContentVariant]
    default_language: str
    campaign_id: str | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None


LINK_SOURCES = ("login", "newsletter_click", "checkout", "other")


@constrain(
    event_id=_ID,
    visitor_id=_ID,
    customer_id=_ID,
    schema_version=_VERSION_1,
    source=Rule(choices=LINK_SOURCES),
)
class IdentityLink(Record):
    """An anonymous visitor id belongs to a customer (topic ``identity_links``).

    Sent on login, a newsletter click-through or a checkout.  Keyed by
    ``visitor_id``, like ``page_views``, so the visitor's owner applies it:
    the visitor's profile then travels to the customer as a
    :class:`VisitorMerged` on the customer-keyed ``visitor_merges`` topic.
    """

    event_id: str
    visitor_id: str
    customer_id: str
    occurred_at: datetime
    schema_version: int
    source: str


@constrain(
    view_id=_ID,
    session_id=_ID,
    url=_TEXT,
    page_type=_REF,
    content_id=_REF,
    topics=_TOPICS,
    engagement_seconds=Rule(min_value=0),
)
class MergedPage(Record):
    """One page of a visitor, as merged into a customer."""

    view_id: str
    occurred_at: datetime
    session_id: str
    url: str
    page_type: str
    content_id: str | None = None
    topics: list[str] = []
    engagement_seconds: float | None = None


@constrain(
    event_id=_ID,
    customer_id=_ID,
    visitor_id=_ID,
    link_event_id=_ID,
    schema_version=_VERSION_1,
    pages=Rule(max_length=1000),
)
class VisitorMerged(Record):
    """A linked visitor's pages, for the customer's owner to apply (``visitor_merges``).

    Written by the visitor's owner: once at the link (the visitor's profile
    up to then, ``occurred_at`` the link's time) and once per later page view
    of the linked visitor.  Keyed by ``customer_id``; ``event_id`` is derived
    from the link or page view, so the customer's owner applies each once.
    """

    event_id: str
    customer_id: str
    visitor_id: str
    occurred_at: datetime
    schema_version: int
    link_event_id: str
    pages: list[MergedPage] = []


# --- outputs ----------------------------------------------------------------


@constrain(
    policy=Rule(choices=("exploit", "explore", "holdout", "neutral")),
    schema_version=_VERSION_1,
)
class DecisionMade(Record):
    """The engine chose a content item for a customer and slot (``decisions``).

    ``reasons`` explains the choice in words (tags, scores, explore or exploit,
    caps applied); ``caused_by`` is the event that led to it.
    """

    decision_id: str
    customer_id: str
    decided_at: datetime
    schema_version: int
    slot: str
    channel: str
    content_id: str
    variant_language: str
    language_fallback: bool
    policy: str
    reasons: list[str]
    caused_by: str
    campaign_id: str | None = None
    score: float | None = None


@constrain(channel=Rule(choices=CHANNELS), schema_version=_VERSION_1)
class SendTriggered(Record):
    """A channel should send content to a customer at ``send_at`` (``send-triggers``).

    ``idempotency_key`` lets a channel drop a trigger it has already sent.
    """

    trigger_id: str
    idempotency_key: str
    customer_id: str
    created_at: datetime
    schema_version: int
    send_at: datetime
    channel: str
    campaign_id: str
    content_id: str
    variant_language: str
    reasons: list[str]
    caused_by: str


@constrain(channel=Rule(choices=CHANNELS), schema_version=_VERSION_1,
           reason=Rule(choices=("consent_revoked", "erasure_requested", "purchased")))
class SendCancelled(Record):
    """A send trigger emitted earlier must not be sent (``send-cancellations``).

    Emitted when a revocation or erasure request reaches the engine before
    the trigger's ``send_at``, or an order before a browse-abandonment
    reminder's (``purchased``); channels match it by ``trigger_id`` or
    ``idempotency_key``.  ``revoked`` names the purposes whose revocation
    caused it (empty otherwise).
    """

    cancellation_id: str
    trigger_id: str
    idempotency_key: str
    customer_id: str
    cancelled_at: datetime
    schema_version: int
    channel: str
    send_at: datetime
    reason: str
    revoked: list[str]
    caused_by: str


@constrain(channel=Rule(choices=CHANNELS), schema_version=_VERSION_1)
class SendProposed(Record):
    """A campaign in approval mode proposes a send; an operator decides (``send-proposals``).

    The fields are those of the :class:`SendTriggered` it becomes when
    approved before ``expires_at`` (its ``trigger_id`` is ``proposal_id``);
    ``reasons`` say why it was proposed.  Unapproved by ``expires_at``, it
    expires.
    """

    proposal_id: str
    idempotency_key: str
    customer_id: str
    created_at: datetime
    expires_at: datetime
    schema_version: int
    send_at: datetime
    channel: str
    campaign_id: str
    content_id: str
    variant_language: str
    reasons: list[str]
    caused_by: str


@constrain(
    event_id=_ID,
    campaign_id=_ID,
    schema_version=_VERSION_1,
    sends_treated=Rule(min_value=0),
    sends_holdout=Rule(min_value=0),
)
class CampaignStatsReported(Record):
    """One campaign's statistics across all workers, reported periodically (``campaign-stats``).

    Counts per group: ``sends`` are exposures (for the holdout group, the
    sends its customers would have got), then clicks, conversions and
    revenue attributed to them.  Each uplift is treated minus holdout per
    exposure (click and conversion rates, revenue) with its 95% interval;
    None until both groups have exposures.  Keyed by ``campaign_id``; the
    latest report per campaign is the current one.
    """

    event_id: str
    campaign_id: str
    reported_at: datetime
    schema_version: int
    sends_treated: int
    clicks_treated: int
    conversions_treated: int
    revenue_treated: float
    sends_holdout: int
    clicks_holdout: int
    conversions_holdout: int
    revenue_holdout: float
    click_uplift: float | None = None
    click_uplift_low: float | None = None
    click_uplift_high: float | None = None
    conversion_uplift: float | None = None
    conversion_uplift_low: float | None = None
    conversion_uplift_high: float | None = None
    revenue_uplift: float | None = None
    revenue_uplift_low: float | None = None
    revenue_uplift_high: float | None = None


@constrain(
    schema_version=_VERSION_1,
    status=Rule(choices=("approved", "rejected", "expired", "withdrawn")),
    resolved_by=Rule(max_length=100),
    note=Rule(max_length=500),
)
class ProposalResolved(Record):
    """What became of a send proposal (``proposal-resolutions``).

    ``approved`` (``trigger_id`` names the send trigger emitted),
    ``rejected`` by an operator, ``expired`` unapproved, or ``withdrawn``
    because consent no longer allowed the send when it was approved.
    ``resolved_by`` names the operator's role and token fingerprint, never
    the token.
    """

    event_id: str
    proposal_id: str
    customer_id: str
    resolved_at: datetime
    schema_version: int
    status: str
    campaign_id: str
    resolved_by: str | None = None
    note: str | None = None
    trigger_id: str | None = None


@constrain(schema_version=_VERSION_1)
class CustomerErased(Record):
    """Relevanz erased a customer; downstream systems should do the same (``customer-erased``).

    ``requested_at`` is the event time of the erasure request
    (``caused_by``).  The store holds no row of the customer any more;
    replay leaves out the customer's events up to ``requested_at``.
    """

    event_id: str
    customer_id: str
    requested_at: datetime
    erased_at: datetime
    schema_version: int
    caused_by: str


@constrain(change=Rule(choices=("assigned", "removed")), schema_version=_VERSION_1)
class InterestTagChanged(Record):
    """A customer's interest tag was assigned or removed (``interest-tags``)."""

    event_id: str
    customer_id: str
    occurred_at: datetime
    schema_version: int
    tag: str
    topic: str
    change: str
    score: float
    caused_by: str


@constrain(schema_version=_VERSION_1)
class DeadLetter(Record):
    """An input message that could not be accepted (``dead-letters``).

    ``original`` is the message's value exactly as it arrived; ``reason``
    names the field and the problem so a person can fix the producer.
    """

    dead_letter_id: str
    received_at: datetime
    schema_version: int
    source_topic: str
    partition: int
    offset: int
    original: bytes
    reason: str
    field: str | None = None
    original_key: bytes | None = None


# --- model monitoring -------------------------------------------------------------


@constrain(
    event_id=_ID,
    model_id=_ID,
    schema_version=_VERSION_1,
    examples=Rule(min_value=0),
    error=Rule(min_value=0),
)
class ModelDrifted(Record):
    """A model's prediction error changed significantly (topic ``model-drift``).

    Found by an ADWIN detector over the squared error of the model's
    progressive validation (each prediction scored against its label before
    the model learns it).  ``roc_auc`` and ``log_loss`` are the model's
    progressive-validation figures so far; ``error`` is ADWIN's estimate of
    the mean squared error after the change.  Keyed by ``model_id``.
    """

    event_id: str
    model_id: str
    detected_at: datetime
    schema_version: int
    examples: int
    error: float
    roc_auc: float | None = None
    log_loss: float | None = None


# --- operator controls --------------------------------------------------------


@constrain(
    control_id=Rule(pattern=r"^(all|campaign:.{1,200})$",
                    description="all (the kill switch) or campaign:<campaign_id>"),
    schema_version=_VERSION_1,
    changed_by=Rule(min_length=1, max_length=100),
    campaign_id=_ID,
    reason=Rule(max_length=500),
)
class ControlChanged(Record):
    """An operator paused or resumed sending (topic ``controls``).

    ``control_id`` is the message key: ``all`` for the kill switch that
    pauses every send trigger, ``campaign:<campaign_id>`` for one campaign.
    The topic is compacted; the latest record per key is the state, and
    every worker reads it whole.  ``changed_by`` names the role and a
    fingerprint of the token used, never the token.
    """

    control_id: str
    changed_at: datetime
    schema_version: int
    paused: bool
    changed_by: str
    campaign_id: str | None = None
    reason: str | None = None
