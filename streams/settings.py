"""One typed settings object, read from ``RELEVANZ_*`` environment variables.

Nothing else in Relevanz reads the environment.  Every variable has a
validated default and no default secret; a bad value raises
:class:`ConfigError` naming the variable, the value and what it accepts.

>>> s = Settings.from_env({"RELEVANZ_PARTITIONS": "8"})
>>> s.partitions, s.topic("clicks")
(8, 'relevanz.clicks')
>>> Settings.from_env({"RELEVANZ_PARTITIONS": "many"})
Traceback (most recent call last):
...
streams.errors.ConfigError: RELEVANZ_PARTITIONS: expected a whole number from 1 to 1024, got 'many'
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from streams.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Setting:
    """Documentation of one environment variable (rendered into the README)."""

    name: str
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("RELEVANZ_BROKER_URL", "kafka://127.0.0.1:9092",
            "Kafka bootstrap servers, `kafka://host:port[,host:port]`. "
            "`relevanz demo` ignores it and starts the embedded broker."),
    Setting("RELEVANZ_STORE_URL", "embedded:relevanz-store.db",
            "Where customer state lives: `embedded:PATH` (a file, relative to the "
            "working directory) or `cassandra://host[,host][:port]/keyspace`."),
    Setting("RELEVANZ_CASSANDRA_CONSISTENCY", "local_quorum",
            "Consistency level of Cassandra reads and writes (one, local_one, "
            "local_quorum, quorum, each_quorum, all)."),
    Setting("RELEVANZ_CASSANDRA_LOCAL_DC", "datacenter1",
            "Local data centre for token-aware, DC-aware routing."),
    Setting("RELEVANZ_CASSANDRA_REPLICATION", "SimpleStrategy:1",
            "Keyspace replication used by `relevanz store migrate`: `SimpleStrategy:N` "
            "or `NetworkTopologyStrategy:dc1=3[,dc2=3]`."),
    Setting("RELEVANZ_STORE_TIMEOUT_S", "5", "Timeout of one store request."),
    Setting("RELEVANZ_HISTORY_RETENTION_S", "31536000",
            "How long interactions stay in a customer's history (365 days)."),
    Setting("RELEVANZ_HISTORY_MAX", "200", "Most interactions kept per customer."),
    Setting("RELEVANZ_VISITOR_EXPIRY_S", "2592000",
            "How long an anonymous visitor who never links is kept after their latest "
            "page view, in event time (30 days)."),
    Setting("RELEVANZ_SESSION_IDLE_GRACE_S", "21600",
            "How long past its 30-minute timeout a site session stays open, by the newest "
            "page view time seen, before it is ended and scored (6 hours): partitions are "
            "read at different paces; raise it for backfills of page views."),
    Setting("RELEVANZ_TAG_RULES", "",
            "TOML file with interest tag rules; empty means the shipped defaults "
            "(`streams/defaults/tag-rules.toml`)."),
    Setting("RELEVANZ_CAMPAIGNS", "",
            "TOML file with the campaign book (campaigns, contact caps, quiet hours, "
            "holdouts, approval); empty means the built-in book, which "
            "`deploy/campaigns.toml` writes out."),
    Setting("RELEVANZ_CONSENT_DEFAULT", "",
            "Purposes treated as granted for a customer with no recorded decision on "
            "them, comma-separated (profiling, personalisation, email, push, sms, web). "
            "Empty, the shipped default, is strict: no profiling and no sends without "
            "an explicit grant, as opt-in law requires for e-mail in Germany."),
    Setting("RELEVANZ_FOLLOW_UP_DELAY_S", "3600",
            "Time from a newly assigned interest tag to the follow-up send it triggers."),
    Setting("RELEVANZ_EXPLORE", "0.05",
            "Share of decisions (0 to 0.5) that explore a random candidate instead of the "
            "best predicted one."),
    Setting("RELEVANZ_HOLDOUT_SHARE", "0.05",
            "Share of customers (0 to below 1) who always get a random, non-personalised "
            "choice, so uplift can be measured."),
    Setting("RELEVANZ_ATTRIBUTION_WINDOW_S", "86400",
            "How long after a decision a click or purchase on its content counts as its "
            "reward; after that it counts as not clicked."),
    Setting("RELEVANZ_SNAPSHOT_INTERVAL_S", "60",
            "How often a worker saves its content policy to the store (also on stop)."),
    Setting("RELEVANZ_CAMPAIGN_STATS_INTERVAL_S", "60",
            "How often a worker publishes every campaign's statistics and uplift on "
            "`campaign-stats` and records proposals past their time as expired."),
    Setting("RELEVANZ_FETCH_WAIT_MS", "20",
            "Longest a worker's Kafka fetch waits for data before returning (Faust "
            "itself fixes 1500): lower means lower latency when traffic is light (20 "
            "against 100: about half, see Performance) and more CPU when idle (an idle "
            "worker: about 8% of a core at 20, 4% at 100)."),
    Setting("RELEVANZ_BATCH_WAIT_MS", "10",
            "Longest the ingest agent collects one batch (up to 500 events). A batch goes "
            "as soon as it holds every event delivered so far, so this bounds the wait "
            "only while events keep arriving; under heavy load batches fill anyway."),
    Setting("RELEVANZ_CACHE_CUSTOMERS", "100000",
            "Most customers whose state a worker keeps cached in memory."),
    Setting("RELEVANZ_TOPIC_PREFIX", "relevanz.",
            "Prefix of every topic name, e.g. `relevanz.clicks`."),
    Setting("RELEVANZ_PARTITIONS", "4",
            "Partitions of every customer-keyed topic (they must all match)."),
    Setting("RELEVANZ_REPLICATION", "1", "Replication factor for topics the worker creates."),
    Setting("RELEVANZ_CONSUMER_GROUP", "relevanz", "Kafka consumer group (Faust app id)."),
    Setting("RELEVANZ_WEB_HOST", "127.0.0.1", "Address the operator API listens on."),
    Setting("RELEVANZ_WEB_PORT", "8080", "Port of the operator API (0 picks a free one)."),
    Setting("RELEVANZ_OPERATOR_TOKENS", "",
            "Bearer tokens of operators (read everything, pause and resume), "
            "comma-separated, each at least 16 characters. No default: without tokens "
            "every route but `/health` and `/ready` refuses all requests."),
    Setting("RELEVANZ_VIEWER_TOKENS", "",
            "Bearer tokens of viewers (read-only), comma-separated, each at least "
            "16 characters."),
    Setting("RELEVANZ_API_TOKEN", "",
            "The token `relevanz status` sends to the operator API."),
    Setting("RELEVANZ_LOG_LEVEL", "info", "debug, info, warning or error."),
    Setting("RELEVANZ_LOG_FORMAT", "json", "`json` (one object per line) or `console`."),
    Setting("RELEVANZ_MAX_EVENT_BYTES", "65536",
            "Largest accepted input message; larger ones are dead-lettered."),
    Setting("RELEVANZ_MAX_FUTURE_S", "86400",
            "How far in the future an event time may lie before it is invalid."),
    Setting("RELEVANZ_DEDUP_HORIZON_S", "2592000",
            "How long an event_id is remembered to recognise redeliveries (30 days)."),
    Setting("RELEVANZ_SESSION_TIMEOUT_S", "30",
            "Consumer session timeout: how soon a dead worker's partitions move."),
    Setting("RELEVANZ_HEARTBEAT_S", "3", "Consumer heartbeat interval."),
    Setting("RELEVANZ_COMMIT_INTERVAL_S", "1.0", "How often consumed offsets are committed."),
    Setting("RELEVANZ_IDEMPOTENT_PRODUCERS", "true",
            "`true`: every producer (the worker's outputs, controls, `relevanz produce`) "
            "is Kafka's idempotent producer, so a retried send is written once and in "
            "order. `false` only for a broker without it: the embedded broker answers "
            "aiokafka's InitProducerId request with an error, so `relevanz demo`, the "
            "bench and the tests turn it off there."),
    Setting("RELEVANZ_SHUTDOWN_TIMEOUT_S", "20",
            "Longest a worker takes to stop on SIGTERM: it finishes the batch in flight, "
            "commits offsets and closes the store, then exits regardless. Keep it below "
            "the orchestrator's grace period (Kubernetes: 30 s by default)."),
    Setting("RELEVANZ_OTLP_ENDPOINT", "",
            "OpenTelemetry collector (OTLP over HTTP, protobuf) the worker exports its "
            "spans to, e.g. `http://otel-collector:4318` (spans go to `/v1/traces` under "
            "it). Empty: the standard `OTEL_EXPORTER_OTLP_ENDPOINT`, and with neither no "
            "span is recorded. Trace context is carried from inputs to outputs either way."),
    Setting("RELEVANZ_TRACE_SAMPLE_RATIO", "1",
            "Share (0 to 1) of traces the worker starts whose spans it exports; a trace "
            "begun upstream follows the sampled flag of its `traceparent`."),
)

ENV_VARS: tuple[str, ...] = tuple(s.name for s in SETTINGS)
_DEFAULTS = {s.name: s.default for s in SETTINGS}


def _int(lo: int, hi: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            value = lo - 1
        if not lo <= value <= hi:
            raise ConfigError(f"{name}: expected a whole number from {lo} to {hi}, got {raw!r}")
        return value

    return parse


def _float(lo: float, hi: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = lo - 1
        if not lo <= value <= hi:
            raise ConfigError(f"{name}: expected a number from {lo:g} to {hi:g}, got {raw!r}")
        return value

    return parse


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _purposes(name: str, raw: str) -> frozenset[str]:
    from schemas.records import PURPOSES

    chosen = [p.strip().lower() for p in raw.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PURPOSES]
    if unknown:
        raise ConfigError(f"{name}: unknown purpose {unknown[0]!r}; expected a comma-separated "
                          f"list of {', '.join(PURPOSES)} (or nothing)")
    return frozenset(chosen)


def _tokens(name: str, raw: str) -> tuple[str, ...]:
    tokens = tuple(t.strip() for t in raw.split(",") if t.strip())
    for position, token in enumerate(tokens, 1):
        # RFC 6750's token characters; the length keeps guessing out of reach.
        if len(token) < 16 or set(token) - _TOKEN_CHARS:
            raise ConfigError(f"{name}: token {position} must be at least 16 characters of "
                              "letters, digits and -._~+/= (the value is not shown)")
    return tokens


_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~+/=")


def _broker(name: str, raw: str) -> str:
    servers = raw.removeprefix("kafka://").strip()
    hosts = [h for h in servers.split(",") if h]
    if not hosts or any(":" not in h or not h.rsplit(":", 1)[1].isdigit() for h in hosts):
        raise ConfigError(f"{name}: expected kafka://host:port[,host:port], got {raw!r}")
    return ",".join(hosts)


def _store(name: str, raw: str) -> str:
    if raw.startswith("embedded:") and len(raw) > len("embedded:"):
        return raw
    if raw.startswith("cassandra://"):
        hosts, _, keyspace = raw.removeprefix("cassandra://").partition("/")
        if hosts and keyspace.isidentifier():
            return raw
    raise ConfigError(
        f"{name}: expected embedded:PATH or cassandra://host[,host][:port]/keyspace, got {raw!r}"
    )


def _optional_path(name: str, raw: str) -> str:
    if raw and not Path(raw).is_file():
        raise ConfigError(f"{name}: {raw!r} is not a readable file")
    return raw


def _replication(name: str, raw: str) -> str:
    strategy, _, spec = raw.partition(":")
    ok = (strategy == "SimpleStrategy" and spec.isdigit() and int(spec) > 0) or (
        strategy == "NetworkTopologyStrategy" and spec and all(
            dc and n.isdigit() and int(n) > 0
            for dc, _, n in (part.partition("=") for part in spec.split(","))))
    if not ok:
        raise ConfigError(
            f"{name}: expected SimpleStrategy:N or NetworkTopologyStrategy:dc1=N[,dc2=N], "
            f"got {raw!r}")
    return raw


def _prefix(name: str, raw: str) -> str:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    if set(raw) - allowed:
        raise ConfigError(f"{name}: only letters, digits, '.', '_' and '-' allowed, got {raw!r}")
    return raw


def _http_url(name: str, raw: str) -> str:
    """An http(s) URL with a host, or empty.

    >>> _http_url("X", " http://collector:4318/ "), _http_url("X", "")
    ('http://collector:4318', '')
    """
    url = raw.strip().rstrip("/")
    if not url:
        return ""
    scheme, _, rest = url.partition("://")
    if scheme not in ("http", "https") or not rest or len(url) > 2048 or any(
            c.isspace() for c in url):
        raise ConfigError(f"{name}: expected an http:// or https:// URL such as "
                          f"http://otel-collector:4318, got {raw[:200]!r}")
    return url


def _text(name: str, raw: str) -> str:
    if not raw.strip():
        raise ConfigError(f"{name}: must not be empty")
    return raw.strip()


@dataclass(frozen=True)
class Settings:
    """Every setting of a Relevanz process, validated."""

    broker_servers: str = "127.0.0.1:9092"
    store_url: str = "embedded:relevanz-store.db"
    topic_prefix: str = "relevanz."
    partitions: int = 4
    replication: int = 1
    consumer_group: str = "relevanz"
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    operator_tokens: tuple[str, ...] = field(default=(), repr=False)
    viewer_tokens: tuple[str, ...] = field(default=(), repr=False)
    api_token: str = field(default="", repr=False)
    log_level: str = "info"
    log_format: str = "json"
    max_event_bytes: int = 65536
    max_future_s: float = 86400.0
    dedup_horizon_s: float = 2592000.0
    session_timeout_s: float = 30.0
    heartbeat_s: float = 3.0
    commit_interval_s: float = 1.0
    shutdown_timeout_s: float = 20.0
    cassandra_consistency: str = "local_quorum"
    cassandra_local_dc: str = "datacenter1"
    cassandra_replication: str = "SimpleStrategy:1"
    store_timeout_s: float = 5.0
    history_retention_s: float = 31536000.0
    history_max: int = 200
    visitor_expiry_s: float = 2592000.0
    session_idle_grace_s: float = 21600.0
    tag_rules_path: str = ""
    campaigns_path: str = ""
    consent_default: frozenset[str] = frozenset()
    explore: float = 0.05
    holdout_share: float = 0.05
    attribution_window_s: float = 86400.0
    snapshot_interval_s: float = 60.0
    campaign_stats_interval_s: float = 60.0
    fetch_wait_ms: int = 20
    batch_wait_ms: int = 10
    follow_up_delay_s: float = 3600.0
    cache_customers: int = 100000
    idempotent_producers: bool = True
    otlp_endpoint: str = ""
    trace_sample_ratio: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every ``RELEVANZ_*`` variable (defaults for the rest)."""
        env = dict(os.environ if environ is None else environ)

        def get(name: str, parse: Callable[[str, str], T]) -> T:
            return parse(name, env.get(name, _DEFAULTS[name]))

        settings = cls(
            broker_servers=get("RELEVANZ_BROKER_URL", _broker),
            store_url=get("RELEVANZ_STORE_URL", _store),
            topic_prefix=get("RELEVANZ_TOPIC_PREFIX", _prefix),
            partitions=get("RELEVANZ_PARTITIONS", _int(1, 1024)),
            replication=get("RELEVANZ_REPLICATION", _int(1, 16)),
            consumer_group=get("RELEVANZ_CONSUMER_GROUP", _text),
            web_host=get("RELEVANZ_WEB_HOST", _text),
            web_port=get("RELEVANZ_WEB_PORT", _int(0, 65535)),
            operator_tokens=get("RELEVANZ_OPERATOR_TOKENS", _tokens),
            viewer_tokens=get("RELEVANZ_VIEWER_TOKENS", _tokens),
            api_token=get("RELEVANZ_API_TOKEN", lambda _, raw: raw.strip()),
            log_level=get("RELEVANZ_LOG_LEVEL", _choice("debug", "info", "warning", "error")),
            log_format=get("RELEVANZ_LOG_FORMAT", _choice("json", "console")),
            max_event_bytes=get("RELEVANZ_MAX_EVENT_BYTES", _int(256, 16 * 1024 * 1024)),
            max_future_s=get("RELEVANZ_MAX_FUTURE_S", _float(0, 10 * 365 * 86400)),
            dedup_horizon_s=get("RELEVANZ_DEDUP_HORIZON_S", _float(60, 10 * 365 * 86400)),
            session_timeout_s=get("RELEVANZ_SESSION_TIMEOUT_S", _float(1, 600)),
            heartbeat_s=get("RELEVANZ_HEARTBEAT_S", _float(0.1, 60)),
            commit_interval_s=get("RELEVANZ_COMMIT_INTERVAL_S", _float(0.05, 60)),
            shutdown_timeout_s=get("RELEVANZ_SHUTDOWN_TIMEOUT_S", _float(1, 600)),
            cassandra_consistency=get(
                "RELEVANZ_CASSANDRA_CONSISTENCY",
                _choice("one", "local_one", "local_quorum", "quorum", "each_quorum", "all")),
            cassandra_local_dc=get("RELEVANZ_CASSANDRA_LOCAL_DC", _text),
            cassandra_replication=get("RELEVANZ_CASSANDRA_REPLICATION", _replication),
            store_timeout_s=get("RELEVANZ_STORE_TIMEOUT_S", _float(0.1, 120)),
            history_retention_s=get("RELEVANZ_HISTORY_RETENTION_S",
                                    _float(3600, 20 * 365 * 86400)),
            history_max=get("RELEVANZ_HISTORY_MAX", _int(1, 10000)),
            visitor_expiry_s=get("RELEVANZ_VISITOR_EXPIRY_S", _float(3600, 2 * 365 * 86400)),
            session_idle_grace_s=get("RELEVANZ_SESSION_IDLE_GRACE_S",
                                     _float(0, 365 * 86400)),
            tag_rules_path=get("RELEVANZ_TAG_RULES", _optional_path),
            campaigns_path=get("RELEVANZ_CAMPAIGNS", _optional_path),
            consent_default=get("RELEVANZ_CONSENT_DEFAULT", _purposes),
            explore=get("RELEVANZ_EXPLORE", _float(0, 0.5)),
            holdout_share=get("RELEVANZ_HOLDOUT_SHARE", _float(0, 0.99)),
            attribution_window_s=get("RELEVANZ_ATTRIBUTION_WINDOW_S", _float(60, 90 * 86400)),
            snapshot_interval_s=get("RELEVANZ_SNAPSHOT_INTERVAL_S", _float(1, 86400)),
            campaign_stats_interval_s=get("RELEVANZ_CAMPAIGN_STATS_INTERVAL_S",
                                          _float(0.1, 86400)),
            fetch_wait_ms=get("RELEVANZ_FETCH_WAIT_MS", _int(1, 10_000)),
            batch_wait_ms=get("RELEVANZ_BATCH_WAIT_MS", _int(1, 10_000)),
            follow_up_delay_s=get("RELEVANZ_FOLLOW_UP_DELAY_S", _float(0, 30 * 86400)),
            cache_customers=get("RELEVANZ_CACHE_CUSTOMERS", _int(100, 100_000_000)),
            idempotent_producers=get("RELEVANZ_IDEMPOTENT_PRODUCERS",
                                     _choice("true", "false")) == "true",
            otlp_endpoint=(get("RELEVANZ_OTLP_ENDPOINT", _http_url) or _http_url(
                "OTEL_EXPORTER_OTLP_ENDPOINT", env.get("OTEL_EXPORTER_OTLP_ENDPOINT", ""))),
            trace_sample_ratio=get("RELEVANZ_TRACE_SAMPLE_RATIO", _float(0, 1)),
        )
        if set(settings.operator_tokens) & set(settings.viewer_tokens):
            raise ConfigError("RELEVANZ_VIEWER_TOKENS: a token is also in "
                              "RELEVANZ_OPERATOR_TOKENS; give each token one role")
        if settings.heartbeat_s * 3 > settings.session_timeout_s:
            raise ConfigError(
                "RELEVANZ_HEARTBEAT_S: must be at most a third of RELEVANZ_SESSION_TIMEOUT_S "
                f"({settings.heartbeat_s:g} > {settings.session_timeout_s:g} / 3)"
            )
        return settings

    def with_(self, **changes: Any) -> Settings:
        """A copy with some values replaced (used by the demo and tests)."""
        return replace(self, **changes)

    def topic(self, logical: str) -> str:
        """The broker-side name of a logical topic."""
        return f"{self.topic_prefix}{logical}"

    @property
    def store_kind(self) -> str:
        """``embedded`` or ``cassandra``."""
        return "cassandra" if self.store_url.startswith("cassandra://") else "embedded"

    @property
    def store_path(self) -> Path:
        """File of the embedded store."""
        return Path(self.store_url.removeprefix("embedded:"))
