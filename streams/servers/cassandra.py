"""Apache Cassandra 5.0 as one node, with the JVM flags of its own ``jvm17-server.options``.

Ready once ``SELECT release_version FROM system.local`` answers over the
native protocol (version 5).  Settings for a fast single node (the README's
set-up section explains them):

- ``-Dcassandra.skip_wait_for_gossip_to_settle=0``: a lone node has no peers
  whose gossip could settle; the default waits at least 5 s for them.
- ``-Dcassandra.ring_delay_ms=100``: the default 30 s lets a joining node learn
  the ring from its peers; a lone seed node has none.
- ``-Dcassandra.unsafesystem=true``: writes of the node's own system tables
  are not synced to disk (schema changes in the tests get much faster); a
  crash of the test node may lose its schema, never a production node's.
- ``auto_snapshot: false``: ``TRUNCATE`` and ``DROP`` (replay's reset, the
  tests' keyspace drops) do not first snapshot the data to disk.
- ``num_tokens: 1``: one token range instead of 16; token allocation and
  range queries on one node need no more.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from streams.broker import free_port
from streams.processes import accepts_connections
from streams.servers.jvm import JvmServer

#: ``--add-exports`` / ``--add-opens`` and properties of Cassandra 5.0's
#: conf/jvm17-server.options (JPMS and Netty sections), which it needs on Java 17.
JVM17_OPTIONS = (
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports", "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports", "java.sql/java.sql=ALL-UNNAMED",
    "--add-exports", "java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports", "jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports", "jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports", "jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens", "jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.base/java.io=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens", "jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/java.util=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
)

LOGBACK = """\
<configuration>
  <appender name="OUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="OUT"/></root>
</configuration>
"""


class CassandraServer(JvmServer):
    """One Cassandra node on free loopback ports (CQL and internode)."""

    name = "cassandra"
    pom_name = "cassandra"

    def __init__(self, work_dir: Path, ready_timeout_s: float = 180.0,
                 heap_mb: int = 768) -> None:
        super().__init__(work_dir, ready_timeout_s, heap_mb)
        self.port = free_port()
        self.storage_port = free_port()

    @property
    def hosts(self) -> str:
        """``host:port`` of the CQL endpoint (``RELEVANZ_CASSANDRA_HOSTS`` form)."""
        return f"127.0.0.1:{self.port}"

    def store_url(self, keyspace: str) -> str:
        """``RELEVANZ_STORE_URL`` for ``keyspace`` on this node."""
        return f"cassandra://{self.hosts}/{keyspace}"

    def configuration(self) -> str:
        """The node's ``cassandra.yaml``."""
        data = self.work_dir / "data"
        return "\n".join([
            "cluster_name: relevanz",
            "num_tokens: 1",
            "partitioner: org.apache.cassandra.dht.Murmur3Partitioner",
            "endpoint_snitch: SimpleSnitch",
            "seed_provider:",
            "  - class_name: org.apache.cassandra.locator.SimpleSeedProvider",
            "    parameters:",
            f'      - seeds: "127.0.0.1:{self.storage_port}"',
            "listen_address: 127.0.0.1",
            "rpc_address: 127.0.0.1",
            f"storage_port: {self.storage_port}",
            f"native_transport_port: {self.port}",
            "start_native_transport: true",
            f"data_file_directories: [{data / 'data'}]",
            f"commitlog_directory: {data / 'commitlog'}",
            f"saved_caches_directory: {data / 'saved_caches'}",
            f"hints_directory: {data / 'hints'}",
            f"cdc_raw_directory: {data / 'cdc_raw'}",
            "commitlog_sync: periodic",
            "commitlog_sync_period: 10000ms",
            "auto_snapshot: false",
            "snapshot_before_compaction: false",
            "concurrent_compactors: 1",
            "concurrent_reads: 8",
            "concurrent_writes: 8",
            "concurrent_counter_writes: 8",
            "",
        ])

    def prepare(self, java: str, jars: Sequence[str]) -> list[str]:
        config = self.work_dir / "cassandra.yaml"
        config.write_text(self.configuration(), encoding="utf-8")
        logback = self.work_dir / "logback.xml"
        logback.write_text(LOGBACK, encoding="utf-8")
        jamm = next((j for j in jars if Path(j).name.startswith("jamm-")), None)
        agent = [f"-javaagent:{jamm}"] if jamm else []
        return [
            *self.java_options(), *JVM17_OPTIONS, *agent, "-Xss256k",
            "-cp", os.pathsep.join(jars),
            f"-Dcassandra.config=file://{config}",
            f"-Dcassandra.storagedir={self.work_dir / 'data'}",
            f"-Dcassandra.logdir={self.work_dir}",
            f"-Dlogback.configurationFile={logback}",
            "-Dcassandra-foreground=yes",
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.ring_delay_ms=100",
            "-Dcassandra.unsafesystem=true",
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    def ready(self) -> bool:
        if not accepts_connections(self.port):
            return False
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import RoundRobinPolicy

        profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy())
        cluster = Cluster([("127.0.0.1", self.port)], protocol_version=5,
                          execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                          connect_timeout=5, control_connection_timeout=5)
        with contextlib.suppress(Exception):  # not ready yet: any driver error means retry
            try:
                session = cluster.connect()
                return bool(session.execute(
                    "SELECT release_version FROM system.local", timeout=5).one())
            finally:
                cluster.shutdown()
        return False
