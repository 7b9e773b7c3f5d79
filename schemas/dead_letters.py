"""Dead letters that always fit: the one way to build a :class:`DeadLetter`.

A dead letter republishes the rejected message's bytes, so a message near
the producer's or broker's size limit would make a dead letter above it, and
the producer would refuse it: the message would be lost, the one thing a
dead letter exists to prevent.  :func:`dead_letter` therefore keeps at most
``max_bytes`` minus a reserve of the original value (and at most
:data:`MAX_KEY_BYTES` of its key) and, when it cuts, says so in the reason
with the whole value's length and SHA-256 (in the reason, not in fields of
their own: a new field would make a new version of the ``dead-letters``
contract, whose readers reject fields they do not know).  Reason and field are
bounded too and made encodable (a lone surrogate from a JSON escape is
shown as ``\\ud800``), since they may quote the offending input.

>>> from datetime import datetime, timezone
>>> at = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> letter = dead_letter(source_topic="clicks", partition=0, offset=7, key=b"c1",
...                      value=b"x" * 100, reason="not valid msgpack", field=None,
...                      received_at=at, max_bytes=RESERVE_BYTES + 10)
>>> len(letter.original)
10
>>> print(letter.reason)
not valid msgpack (original is 100 bytes, above the 10 a dead letter carries:
the first 10 bytes are kept; sha256 09ecb6eb...)
>>> dead_letter(source_topic="clicks", partition=0, offset=8, key=None, value=b"{}",
...             reason="\\ud800: unknown field", field="\\ud800", received_at=at,
...             max_bytes=1_000_000).field
'\\\\ud800'
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from schemas.records import DeadLetter

#: Room kept in a dead letter for everything but the original value (reason,
#: field, key, ids, msgpack framing and the producer's record overhead).
RESERVE_BYTES = 16 * 1024
#: Longest original key a dead letter carries.
MAX_KEY_BYTES = 1024
#: Longest reason a dead letter carries (characters, before the note on a cut value).
MAX_REASON_CHARS = 2000
#: Longest field path a dead letter carries (characters).
MAX_FIELD_CHARS = 200


def dead_letter(*, source_topic: str, partition: int, offset: int, key: bytes | None,
                value: bytes | None, reason: str, field: str | None,
                received_at: datetime, max_bytes: int) -> DeadLetter:
    """A :class:`DeadLetter` of at most about ``max_bytes`` encoded bytes."""
    original = value if value is not None else b""
    room = max(0, max_bytes - RESERVE_BYTES)
    reason = _bounded(reason, MAX_REASON_CHARS)
    if len(original) > room:
        size, digest = len(original), hashlib.sha256(original).hexdigest()
        reason += (f" (original is {size} bytes, above the {room} a dead letter carries: "
                   f"the first {room} bytes are kept; sha256 {digest})")
        original = original[:room]
    if key is not None and len(key) > MAX_KEY_BYTES:
        reason += (f" (key is {len(key)} bytes: the first {MAX_KEY_BYTES} are kept; "
                   f"sha256 {hashlib.sha256(key).hexdigest()})")
        key = key[:MAX_KEY_BYTES]
    return DeadLetter(
        dead_letter_id=f"{source_topic}:{partition}:{offset}",
        received_at=received_at,
        schema_version=1,
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        original=original,
        reason=reason,
        field=None if field is None else _bounded(field, MAX_FIELD_CHARS),
        original_key=key,
    )


def _bounded(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters and made UTF-8 encodable."""
    cut = text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
    return cut.encode("utf-8", "backslashreplace").decode("utf-8")
