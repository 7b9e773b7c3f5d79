"""Event contracts of Relevanz.

Every Kafka topic carries exactly one versioned record type declared in
:mod:`schemas.records`; :mod:`schemas.topics` says which topic carries which
record, how it is keyed and who produces and consumes it.  :mod:`schemas.codec`
turns records into bytes (msgpack on the wire, JSON accepted at ingest) and
:mod:`schemas.validation` turns untrusted bytes back into records or raises
:class:`schemas.errors.InvalidEvent` with a reason a person can act on.
:mod:`schemas.export` generates the JSON Schema and AsyncAPI documents that
upstream teams build against.

This package imports no I/O: it is pure and tested without a broker.
"""
