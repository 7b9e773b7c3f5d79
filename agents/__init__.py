"""Faust agents, one module each, and the pure decision logic they call.

An agent only decodes, calls the core, writes and emits.  The logic lives in
:mod:`agents.core`, which imports no Faust, Kafka, aiohttp, store, clock or
``random``; it takes records, state and ``now`` and returns results, so it is
tested without a broker.
"""
