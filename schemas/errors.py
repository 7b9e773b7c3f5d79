"""Errors raised at the event-contract boundary.

::

    InvalidEvent        an incoming message does not meet its topic's contract
"""

from __future__ import annotations


class InvalidEvent(ValueError):
    """An incoming message does not meet its topic's contract.

    ``field`` names the offending field as a path (``items[1].quantity``) or is
    ``None`` when the problem concerns the message as a whole (undecodable
    bytes, oversize).  ``problem`` says what is wrong in words.  ``str(error)``
    joins the two and is what lands in a dead letter's ``reason``.

    >>> str(InvalidEvent("customer_id", "missing"))
    'customer_id: missing'
    >>> str(InvalidEvent(None, "not valid msgpack"))
    'not valid msgpack'
    """

    def __init__(self, field: str | None, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)
