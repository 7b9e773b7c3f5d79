"""The Relevanz platform, the composition root and the surfaces.

The platform talks to the outside world: settings (:mod:`streams.settings`),
structured logging (:mod:`streams.logs`), errors (:mod:`streams.errors`), the
embedded broker launcher (:mod:`streams.broker`), the launchers of Apache
Kafka and Apache Cassandra from Maven Central (:mod:`streams.servers`), topic
declarations (:mod:`streams.topics`), the store (:mod:`streams.store`), the
producer used by ``relevanz produce`` (:mod:`streams.publish`), the catalogue
and controls readers, privacy.  :mod:`streams.app` wires the worker (the
composition root).  The surfaces sit on top: the operator API
(:mod:`streams.api`), the CLI (:mod:`streams.cli`), the bench
(:mod:`streams.bench`) and synthetic traffic with its evaluators
(:mod:`streams.sim`).  Only this package builds clients; nothing connects at
import time.
"""
