"""Versioned, checksummed model snapshots as bytes (for ``Store.put_snapshot``).

Format (version 1), all integers big-endian::

    b"RLZSNAP"              7 bytes  magic
    format version          1 byte   (1)
    header length           4 bytes
    header                  UTF-8 JSON: model_id, version, kind, created_at (ISO 8601),
                                        river (version that wrote it), payload_sha256
    payload                 the model, pickled (protocol 5)

The store keeps ``checksum`` = SHA-256 (hex) of the whole blob next to it
(:func:`encode` returns both); :func:`decode` checks the magic, the format,
the blob's checksum, the header's payload checksum and the River version
before it unpickles anything, and raises :class:`SnapshotInvalid` naming the
problem.

Why pickle inside the envelope: River estimators have no other faithful
serialisation (River's own checks round-trip every estimator through
pickle), and a restored model must predict exactly as the saved one.  The
envelope adds what a raw pickle lacks: a format version, what it is and
which River wrote it (an unpickled model from another River release could
silently behave differently, so :func:`decode` refuses it and the worker
starts cold or a migration re-trains), and checksums against torn or mixed
writes.  The checksum detects corruption, not tampering: snapshots are read
only from the project's own store, whose writers are trusted.

>>> from datetime import UTC, datetime
>>> blob, checksum = encode("demo", 3, "dict", {"w": 1.5}, datetime(2026, 3, 1, tzinfo=UTC))
>>> snap = decode(blob, checksum)
>>> snap.model_id, snap.version, snap.model
('demo', 3, {'w': 1.5})
>>> decode(blob[:-1] + b"x", checksum)
Traceback (most recent call last):
...
agents.core.snapshots.SnapshotInvalid: snapshot checksum mismatch: the stored bytes are damaged
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import river

MAGIC = b"RLZSNAP"
FORMAT = 1
_PROTOCOL = 5
RIVER_VERSION: str = river.__version__  # type: ignore[attr-defined] # set, not re-exported


class SnapshotInvalid(ValueError):
    """A stored snapshot cannot be used: damaged, of an unknown format or another River."""


@dataclass(frozen=True)
class Decoded:
    """A decoded snapshot: what it is and the model itself."""

    model_id: str
    version: int
    kind: str
    created_at: datetime
    river: str
    model: Any


def checksum_of(blob: bytes) -> str:
    """SHA-256 of ``blob`` in hex (the store's ``checksum`` column).

    >>> checksum_of(b"")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(blob).hexdigest()


def encode(model_id: str, version: int, kind: str, model: object, created_at: datetime
           ) -> tuple[bytes, str]:
    """The snapshot blob of ``model`` and its checksum."""
    if version < 1:
        raise ValueError(f"version: got {version}, expected 1 or more")
    if created_at.tzinfo is None:
        raise ValueError(f"created_at: {created_at.isoformat()} has no time zone")
    payload = pickle.dumps(model, protocol=_PROTOCOL)
    header = json.dumps({
        "model_id": model_id, "version": version, "kind": kind,
        "created_at": created_at.isoformat(), "river": RIVER_VERSION,
        "payload_sha256": checksum_of(payload),
    }, sort_keys=True).encode()
    blob = MAGIC + bytes([FORMAT]) + len(header).to_bytes(4, "big") + header + payload
    return blob, checksum_of(blob)


def decode(blob: bytes, checksum: str, expect_kind: str | None = None) -> Decoded:
    """The snapshot in ``blob``, verified against ``checksum`` (see the module doc)."""
    if checksum_of(blob) != checksum:
        raise SnapshotInvalid("snapshot checksum mismatch: the stored bytes are damaged")
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 5:
        raise SnapshotInvalid("not a Relevanz model snapshot (magic bytes missing)")
    fmt = blob[len(MAGIC)]
    if fmt != FORMAT:
        raise SnapshotInvalid(f"snapshot format {fmt} is unknown (this version reads {FORMAT})")
    start = len(MAGIC) + 5
    length = int.from_bytes(blob[len(MAGIC) + 1: start], "big")
    try:
        header = json.loads(blob[start: start + length])
    except ValueError as exc:
        raise SnapshotInvalid(f"snapshot header is not JSON ({exc})") from exc
    payload = blob[start + length:]
    if checksum_of(payload) != header.get("payload_sha256"):
        raise SnapshotInvalid("snapshot payload does not match its header checksum")
    if header.get("river") != RIVER_VERSION:
        raise SnapshotInvalid(f"snapshot was written by River {header.get('river')}, this is "
                              f"River {RIVER_VERSION}; start cold or re-train")
    if expect_kind is not None and header.get("kind") != expect_kind:
        raise SnapshotInvalid(f"snapshot holds a {header.get('kind')}, expected {expect_kind}")
    # Safe to unpickle: the bytes are exactly those our own encode() wrote to our store.
    model = pickle.loads(payload)  # noqa: S301 - verified envelope from the trusted store
    return Decoded(header["model_id"], int(header["version"]), header["kind"],
                   datetime.fromisoformat(header["created_at"]), header["river"], model)
