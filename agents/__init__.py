"""The ingest agent (:mod:`agents.ingest`), the stages it calls (:mod:`agents.pipeline`)
and the pure decision logic they use (:mod:`agents.core`).

An agent only decodes, calls the core, writes and emits.  The logic lives in
:mod:`agents.core`, which imports no Faust, Kafka, aiohttp, store, clock, file or
``random``; it takes records, state and ``now`` and returns results, so it is
tested without a broker.
"""
