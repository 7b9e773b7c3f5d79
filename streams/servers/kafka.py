"""Apache Kafka 4 as one KRaft node (broker and controller in one process).

Started like the distribution's scripts do it: ``kafka.tools.StorageTool
format`` writes the cluster id into the log directory, then ``kafka.Kafka``
runs on the properties below.  Ready once a metadata request names a broker.

Settings for a fast single node (the README's set-up section explains them):
``group.initial.rebalance.delay.ms=0`` (a group's first join is not held back
three seconds for more members), replication factor 1 for the internal topics
(there is one broker), and ``offsets.topic.num.partitions=4`` (creating the
offsets topic on the first group join takes a fraction of 50 partitions' time).
"""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

from streams.broker import free_port
from streams.errors import ServerUnavailable
from streams.processes import serves_kafka_metadata
from streams.servers.jvm import JvmServer, log_tail

LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
"""


class KafkaServer(JvmServer):
    """One Kafka KRaft node on free loopback ports."""

    name = "kafka"
    pom_name = "kafka"

    def __init__(self, work_dir: Path, ready_timeout_s: float = 90.0, heap_mb: int = 512,
                 partitions: int = 4) -> None:
        super().__init__(work_dir, ready_timeout_s, heap_mb)
        self.port = free_port()
        self.controller_port = free_port()
        self.partitions = partitions

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"127.0.0.1:{self.port}"

    def properties(self) -> dict[str, str]:
        """The broker's ``server.properties``."""
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": (f"PLAINTEXT://127.0.0.1:{self.port},"
                          f"CONTROLLER://127.0.0.1:{self.controller_port}"),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.work_dir / "data"),
            "num.partitions": str(self.partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "log.flush.interval.messages": str(2**62),
        }

    def prepare(self, java: str, jars: Sequence[str]) -> list[str]:
        config = self.work_dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()),
                          encoding="utf-8")
        log_config = self.work_dir / "log4j2.properties"
        log_config.write_text(LOG4J2, encoding="utf-8")
        options = [*self.java_options(), "-cp", os.pathsep.join(jars),
                   f"-Dlog4j2.configurationFile={log_config}",
                   f"-Dkafka.logs.dir={self.work_dir}"]
        if not (self.work_dir / "data" / "meta.properties").exists():
            self._format(java, options, config)
        return [*options, "kafka.Kafka", str(config)]

    def _format(self, java: str, options: list[str], config: Path) -> None:
        """Write the cluster id and the KRaft metadata into the log directory."""
        with self.log_path.open("ab") as log_file:
            done = subprocess.run(  # noqa: S603 - the java binary, our own arguments
                [java, *options, "kafka.tools.StorageTool", "format",
                 # One argument: an id may start with "-", which argparse takes for an option.
                 f"--cluster-id={_cluster_id()}", "--config", str(config)],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.work_dir, timeout=120, check=False)
        if done.returncode != 0:
            raise ServerUnavailable(
                f"kafka: formatting the log directory failed (exit {done.returncode}); the "
                f"end of {self.log_path}:\n{log_tail(self.log_path)}")

    def ready(self) -> bool:
        return serves_kafka_metadata(self.port, self.bootstrap_servers)


def _cluster_id() -> str:
    """A new KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
