"""The Relevanz platform: everything that talks to the outside world.

Settings (:mod:`streams.settings`), structured logging (:mod:`streams.logs`),
the embedded broker launcher (:mod:`streams.broker`), the launchers of Apache
Kafka and Apache Cassandra from Maven Central (:mod:`streams.servers`), topic declarations
(:mod:`streams.topics`), the store (:mod:`streams.store`), the Faust app and
its composition root (:mod:`streams.app`), the producer used by ``relevanz
produce`` (:mod:`streams.publish`), the synthetic traffic generator
(:mod:`streams.traffic`), the demo runner (:mod:`streams.demo`) and the CLI
(:mod:`streams.cli`).  Only this package builds clients; nothing connects at
import time.
"""
