"""The real servers, Apache Kafka and Apache Cassandra, started from Maven Central.

Each server is resolved by ``mvn`` from a small pom of its own next to this
file (``kafka.pom.xml``, ``cassandra.pom.xml``: one classpath per server,
cached in ``~/.m2``) and run by Java 17 on free loopback ports, its data and
log in a working folder.  They serve the tests, the real-stack demo and the
bench; production runs the official images (``docker-compose.yml``,
``deploy/k8s/``).

- :mod:`streams.servers.jvm`: prerequisites, classpaths, the process with a
  readiness deadline, the log tail on failure, a clean stop.
- :mod:`streams.servers.kafka`: one KRaft node (broker and controller).
- :mod:`streams.servers.cassandra`: one Cassandra 5.0 node.
"""
