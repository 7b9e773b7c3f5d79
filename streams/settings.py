"""One typed settings object, read from ``RELEVANZ_*`` environment variables.

Nothing else in Relevanz reads the environment.  Every variable has a
validated default and no default secret; a bad value raises
:class:`ConfigError` naming the variable, the value and what it accepts.

Each variable is declared once, as a field of :class:`Settings`: its name,
its default as written, the parser that holds its bound, and its help.  The
field's default, :meth:`Settings.from_env`, ``relevanz worker --help`` and the
README's table (:func:`markdown_table`) all follow from that declaration.

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
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from streams.errors import ConfigError

T = TypeVar("T")
N = TypeVar("N", int, float)


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable: its name, default as written, parser and help.

    The parser holds the bound (a range, the values allowed, a syntax): it
    returns the typed value or raises :class:`ConfigError` with one line that
    names the variable.

    >>> Setting("RELEVANZ_PARTITIONS", "4", _int(1, 1024), "Partitions.").read({})
    4
    """

    name: str
    default: str
    parse: Callable[[str, str], T]
    help: str

    def read(self, env: Mapping[str, str]) -> T:
        """The value in ``env``, or the default, parsed and checked."""
        return self.parse(self.name, env.get(self.name, self.default))

    @property
    def accepts(self) -> str:
        """What the parser accepts, in words (its bound), or "any text".

        >>> Setting("RELEVANZ_PARTITIONS", "4", _int(1, 1024), "Partitions.").accepts
        'a whole number from 1 to 1024'
        """
        text = getattr(self.parse, "accepts", "any text")
        return str(text)


def declare(name: str, default: str, parse: Callable[[str, str], T], help: str, *,
            secret: bool = False) -> T:
    """A dataclass field read from ``name``; its default is ``default`` parsed.

    ``secret`` keeps the value out of ``repr`` (and so out of logs).
    """
    setting = Setting(name, default, parse, help)
    return field(default=setting.parse(name, default), repr=not secret,
                 metadata={"setting": setting})


def declared(cls: Any) -> tuple[Setting[Any], ...]:
    """The settings declared by the fields of dataclass ``cls``, in order."""
    return tuple(f.metadata["setting"] for f in fields(cls) if "setting" in f.metadata)


def read_declared(cls: Any, env: Mapping[str, str]) -> dict[str, Any]:
    """Field name -> value read from ``env`` for every declared field of ``cls``."""
    return {f.name: f.metadata["setting"].read(env)
            for f in fields(cls) if "setting" in f.metadata}


P = TypeVar("P", bound=Callable[[str, str], Any])


def _accepting(text: str) -> Callable[[P], P]:
    """Name what a parser accepts: the words its error message and ``--help`` give."""

    def mark(parse: P) -> P:
        parse.accepts = text  # type: ignore[attr-defined]
        return parse

    return mark


def _int(lo: int, hi: int) -> Callable[[str, str], int]:
    return _between(int, lo, hi, f"a whole number from {lo} to {hi}")


def _float(lo: float, hi: float) -> Callable[[str, str], float]:
    return _between(float, lo, hi, f"a number from {lo:g} to {hi:g}")


def _between(convert: Callable[[str], N], lo: N, hi: N, expected: str
             ) -> Callable[[str, str], N]:
    """A parser of numbers from ``lo`` to ``hi``; anything else is ``expected``'s error.

    >>> _int(1, 1024)("RELEVANZ_PARTITIONS", "8")
    8
    >>> _float(0, 0.5)("RELEVANZ_EXPLORE", "0.7")
    Traceback (most recent call last):
    ...
    streams.errors.ConfigError: RELEVANZ_EXPLORE: expected a number from 0 to 0.5, got '0.7'
    """

    @_accepting(expected)
    def parse(name: str, raw: str) -> N:
        try:
            value = convert(raw)
        except ValueError:
            value = lo - 1
        if not lo <= value <= hi:
            raise ConfigError(f"{name}: expected {expected}, got {raw!r}")
        return value

    return parse


def _choice(*choices: str) -> Callable[[str, str], str]:
    @_accepting(f"one of {', '.join(choices)}")
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


@_accepting("purposes, comma-separated, or empty")
def _purposes(name: str, raw: str) -> frozenset[str]:
    chosen = [p.strip().lower() for p in raw.split(",") if p.strip()]
    if not chosen:  # the default: no import of the records (and Faust) to read it
        return frozenset()
    from schemas.records import PURPOSES

    unknown = [p for p in chosen if p not in PURPOSES]
    if unknown:
        raise ConfigError(f"{name}: unknown purpose {unknown[0]!r}; expected a comma-separated "
                          f"list of {', '.join(PURPOSES)} (or nothing)")
    return frozenset(chosen)


@_accepting("tokens of 16 or more characters, comma-separated, or empty")
def _tokens(name: str, raw: str) -> tuple[str, ...]:
    tokens = tuple(t.strip() for t in raw.split(",") if t.strip())
    for position, token in enumerate(tokens, 1):
        # RFC 6750's token characters; the length keeps guessing out of reach.
        if len(token) < 16 or set(token) - _TOKEN_CHARS:
            raise ConfigError(f"{name}: token {position} must be at least 16 characters of "
                              "letters, digits and -._~+/= (the value is not shown)")
    return tokens


_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~+/=")


@_accepting("kafka://host:port[,host:port]")
def _broker(name: str, raw: str) -> str:
    servers = raw.removeprefix("kafka://").strip()
    hosts = [h for h in servers.split(",") if h]
    if not hosts or any(":" not in h or not h.rsplit(":", 1)[1].isdigit() for h in hosts):
        raise ConfigError(f"{name}: expected kafka://host:port[,host:port], got {raw!r}")
    return ",".join(hosts)


@_accepting("embedded:PATH or cassandra://host[,host][:port]/keyspace")
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


@_accepting("a readable file, or empty")
def _optional_path(name: str, raw: str) -> str:
    if raw and not Path(raw).is_file():
        raise ConfigError(f"{name}: {raw!r} is not a readable file")
    return raw


@_accepting("SimpleStrategy:N or NetworkTopologyStrategy:dc1=N[,dc2=N]")
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


@_accepting("letters, digits, '.', '_' and '-'")
def _prefix(name: str, raw: str) -> str:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    if set(raw) - allowed:
        raise ConfigError(f"{name}: only letters, digits, '.', '_' and '-' allowed, got {raw!r}")
    return raw


@_accepting("an http:// or https:// URL, or empty")
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


@_accepting("true or false")
def _flag(name: str, raw: str) -> bool:
    return _choice("true", "false")(name, raw) == "true"


def _stripped(_: str, raw: str) -> str:
    return raw.strip()


def _text(name: str, raw: str) -> str:
    if not raw.strip():
        raise ConfigError(f"{name}: must not be empty")
    return raw.strip()


@dataclass(frozen=True)
class Settings:
    """Every setting of a Relevanz process, validated; one declared field a variable."""

    broker_servers: str = declare(
        "RELEVANZ_BROKER_URL", "kafka://127.0.0.1:9092", _broker,
        "Kafka bootstrap servers, `kafka://host:port[,host:port]`. `relevanz demo` ignores "
        "it and starts the embedded broker.")
    store_url: str = declare(
        "RELEVANZ_STORE_URL", "embedded:relevanz-store.db", _store,
        "Where customer state lives: `embedded:PATH` (a file, relative to the working "
        "directory) or `cassandra://host[,host][:port]/keyspace`.")
    cassandra_consistency: str = declare(
        "RELEVANZ_CASSANDRA_CONSISTENCY", "local_quorum",
        _choice("one", "local_one", "local_quorum", "quorum", "each_quorum", "all"),
        "Consistency level of Cassandra reads and writes (one, local_one, local_quorum, "
        "quorum, each_quorum, all).")
    cassandra_local_dc: str = declare(
        "RELEVANZ_CASSANDRA_LOCAL_DC", "datacenter1", _text,
        "Local data centre for token-aware, DC-aware routing.")
    cassandra_replication: str = declare(
        "RELEVANZ_CASSANDRA_REPLICATION", "SimpleStrategy:1", _replication,
        "Keyspace replication used by `relevanz store migrate`: `SimpleStrategy:N` or "
        "`NetworkTopologyStrategy:dc1=3[,dc2=3]`.")
    store_timeout_s: float = declare(
        "RELEVANZ_STORE_TIMEOUT_S", "5", _float(0.1, 120),
        "Timeout of one store request.")
    history_retention_s: float = declare(
        "RELEVANZ_HISTORY_RETENTION_S", "31536000", _float(3600, 20 * 365 * 86400),
        "How long interactions stay in a customer's history (365 days).")
    history_max: int = declare(
        "RELEVANZ_HISTORY_MAX", "200", _int(1, 10000),
        "Most interactions kept per customer.")
    visitor_expiry_s: float = declare(
        "RELEVANZ_VISITOR_EXPIRY_S", "2592000", _float(3600, 2 * 365 * 86400),
        "How long an anonymous visitor who never links is kept after their latest page "
        "view, in event time (30 days).")
    session_idle_grace_s: float = declare(
        "RELEVANZ_SESSION_IDLE_GRACE_S", "21600", _float(0, 365 * 86400),
        "How long past its 30-minute timeout a site session stays open, by the newest page "
        "view time seen, before it is ended and scored (6 hours): partitions are read at "
        "different paces; raise it for backfills of page views.")
    tag_rules_path: str = declare(
        "RELEVANZ_TAG_RULES", "", _optional_path,
        "TOML file with interest tag rules; empty means the shipped defaults "
        "(`streams/defaults/tag-rules.toml`).")
    campaigns_path: str = declare(
        "RELEVANZ_CAMPAIGNS", "", _optional_path,
        "TOML file with the campaign book (campaigns, contact caps, quiet hours, holdouts, "
        "approval); empty means the built-in book, which `deploy/campaigns.toml` writes "
        "out.")
    consent_default: frozenset[str] = declare(
        "RELEVANZ_CONSENT_DEFAULT", "", _purposes,
        "Purposes treated as granted for a customer with no recorded decision on them, "
        "comma-separated (profiling, personalisation, email, push, sms, web). Empty, the "
        "shipped default, is strict: no profiling and no sends without an explicit grant, "
        "as opt-in law requires for e-mail in Germany.")
    follow_up_delay_s: float = declare(
        "RELEVANZ_FOLLOW_UP_DELAY_S", "3600", _float(0, 30 * 86400),
        "Time from a newly assigned interest tag to the follow-up send it triggers.")
    explore: float = declare(
        "RELEVANZ_EXPLORE", "0.05", _float(0, 0.5),
        "Share of decisions (0 to 0.5) that explore a random candidate instead of the best "
        "predicted one.")
    holdout_share: float = declare(
        "RELEVANZ_HOLDOUT_SHARE", "0.05", _float(0, 0.99),
        "Share of customers (0 to below 1) who always get a random, non-personalised "
        "choice, so uplift can be measured.")
    attribution_window_s: float = declare(
        "RELEVANZ_ATTRIBUTION_WINDOW_S", "86400", _float(60, 90 * 86400),
        "How long after a decision a click or purchase on its content counts as its reward; "
        "after that it counts as not clicked.")
    snapshot_interval_s: float = declare(
        "RELEVANZ_SNAPSHOT_INTERVAL_S", "60", _float(1, 86400),
        "How often a worker saves its content policy to the store (also on stop).")
    campaign_stats_interval_s: float = declare(
        "RELEVANZ_CAMPAIGN_STATS_INTERVAL_S", "60", _float(0.1, 86400),
        "How often a worker publishes every campaign's statistics and uplift on "
        "`campaign-stats` and records proposals past their time as expired.")
    fetch_wait_ms: int = declare(
        "RELEVANZ_FETCH_WAIT_MS", "20", _int(1, 10_000),
        "Longest a worker's Kafka fetch waits for data before returning (Faust itself fixes "
        "1500): lower means lower latency when traffic is light (20 against 100: about "
        "half, see Performance) and more CPU when idle (an idle worker: about 8% of a core "
        "at 20, 4% at 100).")
    batch_wait_ms: int = declare(
        "RELEVANZ_BATCH_WAIT_MS", "10", _int(1, 10_000),
        "Longest the ingest agent collects one batch (up to 500 events). A batch goes as "
        "soon as it holds every event delivered so far, so this bounds the wait only while "
        "events keep arriving; under heavy load batches fill anyway.")
    cache_customers: int = declare(
        "RELEVANZ_CACHE_CUSTOMERS", "100000", _int(100, 100_000_000),
        "Most customers whose state a worker keeps cached in memory.")
    topic_prefix: str = declare(
        "RELEVANZ_TOPIC_PREFIX", "relevanz.", _prefix,
        "Prefix of every topic name, e.g. `relevanz.clicks`.")
    partitions: int = declare(
        "RELEVANZ_PARTITIONS", "4", _int(1, 1024),
        "Partitions of every customer-keyed topic (they must all match).")
    replication: int = declare(
        "RELEVANZ_REPLICATION", "1", _int(1, 16),
        "Replication factor for topics the worker creates.")
    consumer_group: str = declare(
        "RELEVANZ_CONSUMER_GROUP", "relevanz", _text,
        "Kafka consumer group (Faust app id).")
    web_host: str = declare(
        "RELEVANZ_WEB_HOST", "127.0.0.1", _text,
        "Address the operator API listens on.")
    web_port: int = declare(
        "RELEVANZ_WEB_PORT", "8080", _int(0, 65535),
        "Port of the operator API (0 picks a free one).")
    operator_tokens: tuple[str, ...] = declare(
        "RELEVANZ_OPERATOR_TOKENS", "", _tokens,
        "Bearer tokens of operators (read everything, pause and resume), comma-separated, "
        "each at least 16 characters. No default: without tokens every route but `/health` "
        "and `/ready` refuses all requests.", secret=True)
    viewer_tokens: tuple[str, ...] = declare(
        "RELEVANZ_VIEWER_TOKENS", "", _tokens,
        "Bearer tokens of viewers (read-only), comma-separated, each at least 16 "
        "characters.", secret=True)
    api_token: str = declare(
        "RELEVANZ_API_TOKEN", "", _stripped,
        "The token `relevanz status` sends to the operator API.", secret=True)
    log_level: str = declare(
        "RELEVANZ_LOG_LEVEL", "info", _choice("debug", "info", "warning", "error"),
        "debug, info, warning or error.")
    log_format: str = declare(
        "RELEVANZ_LOG_FORMAT", "json", _choice("json", "console"),
        "`json` (one object per line) or `console`.")
    max_event_bytes: int = declare(
        "RELEVANZ_MAX_EVENT_BYTES", "65536", _int(256, 16 * 1024 * 1024),
        "Largest accepted input message; larger ones are dead-lettered.")
    max_future_s: float = declare(
        "RELEVANZ_MAX_FUTURE_S", "86400", _float(0, 10 * 365 * 86400),
        "How far in the future an event time may lie before it is invalid.")
    dedup_horizon_s: float = declare(
        "RELEVANZ_DEDUP_HORIZON_S", "2592000", _float(60, 10 * 365 * 86400),
        "How long an event_id is remembered to recognise redeliveries (30 days).")
    session_timeout_s: float = declare(
        "RELEVANZ_SESSION_TIMEOUT_S", "30", _float(1, 600),
        "Consumer session timeout: how soon a dead worker's partitions move.")
    heartbeat_s: float = declare(
        "RELEVANZ_HEARTBEAT_S", "3", _float(0.1, 60),
        "Consumer heartbeat interval.")
    commit_interval_s: float = declare(
        "RELEVANZ_COMMIT_INTERVAL_S", "1.0", _float(0.05, 60),
        "How often consumed offsets are committed.")
    idempotent_producers: bool = declare(
        "RELEVANZ_IDEMPOTENT_PRODUCERS", "true", _flag,
        "`true`: every producer (the worker's outputs, controls, `relevanz produce`) is "
        "Kafka's idempotent producer, so a retried send is written once and in order. "
        "`false` only for a broker without it: the embedded broker answers aiokafka's "
        "InitProducerId request with an error, so `relevanz demo`, the bench and the tests "
        "turn it off there.")
    shutdown_timeout_s: float = declare(
        "RELEVANZ_SHUTDOWN_TIMEOUT_S", "20", _float(1, 600),
        "Longest a worker takes to stop on SIGTERM: it finishes the batch in flight, "
        "commits offsets and closes the store, then exits regardless. Keep it below the "
        "orchestrator's grace period (Kubernetes: 30 s by default).")
    otlp_endpoint: str = declare(
        "RELEVANZ_OTLP_ENDPOINT", "", _http_url,
        "OpenTelemetry collector (OTLP over HTTP, protobuf) the worker exports its spans "
        "to, e.g. `http://otel-collector:4318` (spans go to `/v1/traces` under it). Empty: "
        "the standard `OTEL_EXPORTER_OTLP_ENDPOINT`, and with neither no span is recorded. "
        "Trace context is carried from inputs to outputs either way.")
    trace_sample_ratio: float = declare(
        "RELEVANZ_TRACE_SAMPLE_RATIO", "1", _float(0, 1),
        "Share (0 to 1) of traces the worker starts whose spans it exports; a trace begun "
        "upstream follows the sampled flag of its `traceparent`.")
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every ``RELEVANZ_*`` variable (defaults for the rest)."""
        env = dict(os.environ if environ is None else environ)
        values = read_declared(cls, env)
        if not values["otlp_endpoint"]:  # the standard variable, when ours is empty
            values["otlp_endpoint"] = _http_url(
                "OTEL_EXPORTER_OTLP_ENDPOINT", env.get("OTEL_EXPORTER_OTLP_ENDPOINT", ""))
        settings = cls(**values)
        _check_together(settings)
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


def _check_together(settings: Settings) -> None:
    """The bounds that tie two variables together."""
    if set(settings.operator_tokens) & set(settings.viewer_tokens):
        raise ConfigError("RELEVANZ_VIEWER_TOKENS: a token is also in "
                          "RELEVANZ_OPERATOR_TOKENS; give each token one role")
    if settings.heartbeat_s * 3 > settings.session_timeout_s:
        raise ConfigError(
            "RELEVANZ_HEARTBEAT_S: must be at most a third of RELEVANZ_SESSION_TIMEOUT_S "
            f"({settings.heartbeat_s:g} > {settings.session_timeout_s:g} / 3)"
        )


SETTINGS: tuple[Setting[Any], ...] = declared(Settings)
ENV_VARS: tuple[str, ...] = tuple(s.name for s in SETTINGS)


def markdown_table() -> str:
    """The README's table of settings, one row a declaration, in declaration order."""
    rows = [f"| `{s.name}` | `{s.default}` | {s.accepts} | {s.help} |" for s in SETTINGS]
    return "\n".join(["| variable | default | accepts | meaning |", "| --- | --- | --- | --- |",
                      *rows])
