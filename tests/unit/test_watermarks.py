"""The low watermark over input partitions (agents/core/watermarks.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agents.core.watermarks import LowWatermark

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def day(n: int) -> datetime:
    return T0 + timedelta(days=n)


def test_a_partition_read_ahead_does_not_move_the_watermark_past_a_slower_one() -> None:
    w = LowWatermark()
    for offset in range(5):
        w.read("consents", offset, day(10 + offset))
    w.read("purchases", 0, day(1))
    assert w.settle({"consents": 10, "purchases": 10}).value == day(1)
    assert w.newest == day(14)
    assert w.behind() == 2


def test_a_caught_up_partition_does_not_hold_it_back() -> None:
    w = LowWatermark()
    w.read("consents", 0, day(1))
    w.read("purchases", 0, day(3))
    # consents is read to its end: an idle topic must not stop the clock.
    assert w.settle({"consents": 1, "purchases": 5}).value == day(3)
    w.read("purchases", 4, day(8))
    assert w.settle({"consents": 1, "purchases": 5}).value == day(8)  # all read: newest


def test_a_partition_with_data_not_read_yet_holds_the_watermark() -> None:
    w = LowWatermark()
    w.read("consents", 0, day(9))
    assert w.settle({"consents": 3, "purchases": 4}).value is None
    # Its reading starts where the group committed: nothing left there, no hold.
    assert w.settle({"consents": 3, "purchases": 4}, {"purchases": 4}).value == day(9)


def test_it_never_goes_back_and_counts_late_events_once() -> None:
    w = LowWatermark()
    w.read("p", 0, day(5))
    w.settle({"p": 1})
    w.read("q", 0, day(2))  # a new partition, behind the clock: its event is late
    assert w.late == 1
    assert w.settle({"p": 1, "q": 9}).value == day(5)  # held, not moved back
    assert not w.read("q", 0, day(2))  # redelivered: not late twice
    assert w.late == 1


def test_a_dead_letter_moves_the_offset_so_the_partition_can_be_caught_up() -> None:
    w = LowWatermark()
    w.read("p", 0, day(1))
    w.read("q", 0, day(4))
    w.read("p", 1, None)  # the partition's last message has no event time
    assert w.settle({"p": 2, "q": 3}).value == day(4)


def test_a_partition_that_delivers_nothing_stops_holding_after_idle_batches() -> None:
    w = LowWatermark(idle_batches=3)
    w.read("p", 0, day(1))
    w.read("q", 0, day(6))
    values = []
    for n in range(4):
        w.read("q", n + 1, day(6 + n))
        values.append(w.settle({"p": 50, "q": 99}).value)
    assert values == [day(1), day(1), day(1), day(9)]


def test_forget_tracks_afresh_and_keeps_the_watermark() -> None:
    w = LowWatermark()
    w.read("p", 0, day(3))
    w.settle({"p": 1})
    w.forget()
    assert w.partitions() == []
    assert w.value == day(3)
