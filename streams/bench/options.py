"""What one benchmark run generates and measures, and the settings it runs with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from streams.app import utc_now
from streams.errors import ConfigError
from streams.settings import Settings
from streams.sim.traffic import TrafficConfig

STORES = ("embedded",)
#: Where a run happens: the embedded broker and store, or Apache Kafka and Cassandra.
STACKS = ("embedded", "kafka-cassandra")


@dataclass(frozen=True)
class BenchOptions:
    """What one benchmark run generates and measures."""

    events: int = 100_000
    customers: int = 10_000
    catalogue_size: int = 200
    partitions: int | None = None  # None: RELEVANZ_PARTITIONS
    store: str = "embedded"
    seed: int = 7
    latency_s: float = 10.0  # how long the fixed offered load lasts
    load: float = 0.5  # the offered load, as a share of the pipeline's measured maximum
    out_dir: Path = Path("relevanz-bench")
    stall_timeout_s: float = 60.0
    verbose: bool = True  # progress on stderr, also from the pipeline's process
    log_level: str = "warning"
    stack: str = "embedded"

    def __post_init__(self) -> None:
        if self.stack not in STACKS:
            raise ConfigError(f"--stack: one of {', '.join(STACKS)}, got {self.stack!r}")
        if self.store not in STORES:
            raise ConfigError(
                f"--store: only {', '.join(STORES)} can be chosen here; --stack "
                f"kafka-cassandra runs the pipeline on a Cassandra started for the run, "
                f"got {self.store!r}")
        if self.events < 1 or self.customers < 1 or self.catalogue_size < 1:
            raise ConfigError("--events, --customers and --catalogue: need at least 1")


def traffic_config(options: BenchOptions, n: int) -> TrafficConfig:
    """The seeded stream of a run: ``n`` measured events, then fresh ones.

    Three times the events fit before "now", so the latency phases' fresh
    events (the pipeline's and the bare Faust agent's, at most ``n`` each) are
    in the past too.
    """
    return TrafficConfig.ending_at(utc_now(), 3 * n, seed=options.seed,
                                   customers=options.customers,
                                   catalogue_size=options.catalogue_size)


def bench_settings(settings: Settings, servers: str, partitions: int | None,
                   prefix: str = "bench.", group: str = "relevanz-bench",
                   embedded: bool = True) -> Settings:
    """Settings for the bench's broker; short sessions make group joins take ~4 s.

    Idempotent producers are off on the embedded broker (it fails aiokafka's
    InitProducerId); on Apache Kafka they stay as configured, as deployed.
    """
    return settings.with_(broker_servers=servers, topic_prefix=prefix, consumer_group=group,
                          partitions=partitions or settings.partitions,
                          session_timeout_s=min(settings.session_timeout_s, 6.0),
                          heartbeat_s=min(settings.heartbeat_s, 1.0),
                          idempotent_producers=settings.idempotent_producers and not embedded)
