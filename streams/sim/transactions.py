"""The transaction log that ``relevanz evaluate`` reads: a CSV of purchases.

``customer_id,occurred_at,amount,quantity``, ISO 8601 times with an offset;
every problem is :class:`InvalidTransactions` naming the file and the line.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from streams.errors import InvalidTransactions

HEADER = ("customer_id", "occurred_at", "amount", "quantity")


@dataclass(frozen=True)
class Transaction:
    """One purchase of the log."""

    customer_id: str
    occurred_at: datetime
    amount: float
    quantity: int


def read_transactions(path: Path) -> list[Transaction]:
    """The transactions of the CSV at ``path``, in file order.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = p.write_text("customer_id,occurred_at,amount,quantity\\n"
    ...                  "7,1997-01-01T00:00:00+00:00,11.77,1\\n")
    >>> read_transactions(p)[0].amount
    11.77
    """
    try:
        with path.open(encoding="utf-8", newline="") as file:
            rows = csv.reader(file)
            header = next(rows, None)
            if header is None or tuple(h.strip() for h in header) != HEADER:
                raise InvalidTransactions(
                    f"{path}: the first line must be the header {','.join(HEADER)}, "
                    f"got {','.join(header or [])!r}")
            return [_transaction(path, line, row) for line, row in enumerate(rows, start=2)]
    except OSError as exc:
        raise InvalidTransactions(f"{path}: cannot be read ({exc.strerror})") from exc


def _transaction(path: Path, line: int, row: Sequence[str]) -> Transaction:
    if len(row) != len(HEADER):
        raise InvalidTransactions(f"{path} line {line}: expected {len(HEADER)} fields, "
                                  f"got {len(row)}")
    cid, at, amount, quantity = (v.strip() for v in row)
    try:
        occurred_at = datetime.fromisoformat(at)
    except ValueError as exc:
        raise InvalidTransactions(f"{path} line {line}: occurred_at {at!r} is not an ISO 8601 "
                                  "time") from exc
    if occurred_at.tzinfo is None:
        raise InvalidTransactions(f"{path} line {line}: occurred_at {at!r} has no UTC offset")
    try:
        value, count = float(amount), int(quantity)
    except ValueError as exc:
        raise InvalidTransactions(f"{path} line {line}: amount {amount!r} or quantity "
                                  f"{quantity!r} is not a number") from exc
    if not cid or value < 0 or not math.isfinite(value) or count < 0:
        raise InvalidTransactions(f"{path} line {line}: needs a customer id, an amount >= 0 "
                                  "and a quantity >= 0")
    return Transaction(cid, occurred_at, value, count)
