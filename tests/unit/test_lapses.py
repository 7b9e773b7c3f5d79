"""The win-back checks of quiet customers: due on the watermark, once, bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agents.core.triggers import QUIET_CHECK_UNTIL, WentQuiet
from agents.pipeline.lapses import QuietWatch

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def test_a_check_is_due_once_the_watermark_is_a_grace_past_it() -> None:
    watch = QuietWatch(grace=DAY)
    watch.seen("a", T0)
    assert watch.due(T0 + 7 * DAY) == []  # within the grace: a late event may still come
    (check,) = watch.due(T0 + 8 * DAY)
    assert check == WentQuiet("a", T0 + 7 * DAY, T0)
    assert check.event_id == f"a:quiet:{T0.isoformat()}:{(T0 + 7 * DAY).isoformat()}"
    assert watch.due(T0 + 30 * DAY) == []  # nothing until the next one is scheduled
    watch.again(check)
    assert [q.occurred_at for q in watch.due(T0 + 30 * DAY)] == [T0 + 14 * DAY]


def test_an_event_since_makes_the_check_stale_and_an_older_one_changes_nothing() -> None:
    watch = QuietWatch(grace=DAY)
    watch.seen("a", T0)
    watch.seen("a", T0 + 3 * DAY)
    watch.seen("a", T0 + DAY)  # read late: the checks still count from day 3
    assert [(q.occurred_at, q.last_event_at) for q in watch.due(T0 + 40 * DAY)] == [
        (T0 + 10 * DAY, T0 + 3 * DAY)]


def test_a_failed_batch_puts_its_checks_back_and_a_retry_takes_each_once() -> None:
    watch = QuietWatch(grace=DAY)
    watch.seen("a", T0)
    watch.seen("b", T0 + DAY)
    taken = watch.due(T0 + 9 * DAY)
    assert [q.customer_id for q in taken] == ["a", "b"]
    for q in taken:
        watch.again(q)
    watch.rollback()
    retried = watch.due(T0 + 9 * DAY)
    assert retried == taken
    for q in retried:
        watch.again(q)  # pushed already in the failed attempt: not twice
    watch.commit()
    assert [q.customer_id for q in watch.due(T0 + 16 * DAY)] == ["a", "b"]
    assert watch.due(T0 + 16 * DAY) == []


def test_checks_end_13_weeks_after_the_last_event() -> None:
    watch = QuietWatch(grace=DAY)
    watch.seen("a", T0)
    fired = []
    while checks := watch.due(T0 + 2 * QUIET_CHECK_UNTIL):
        for q in checks:
            fired.append(q.occurred_at)
            watch.again(q)
    assert len(fired) == 13
    assert fired[-1] == T0 + QUIET_CHECK_UNTIL


def test_the_watch_is_bounded_and_drops_the_least_recently_active() -> None:
    watch = QuietWatch(grace=DAY, max_watched=2)
    for n, cid in enumerate(("a", "b", "c")):
        watch.seen(cid, T0 + n * timedelta(hours=1))
    assert len(watch) == 2
    assert watch.dropped == 1
    assert [q.customer_id for q in watch.due(T0 + 9 * DAY)] == ["b", "c"]
    watch.forget("b")
    watch.seen("d", T0)
    assert [q.customer_id for q in watch.due(T0 + 9 * DAY)] == ["d"]


def test_a_customer_back_after_the_last_check_is_checked_again() -> None:
    watch = QuietWatch(grace=DAY)
    watch.seen("a", T0)
    while checks := watch.due(T0 + 2 * QUIET_CHECK_UNTIL):
        for q in checks:
            watch.again(q)
    assert len(watch) == 0
    back = T0 + 2 * QUIET_CHECK_UNTIL
    watch.seen("a", back)
    assert [q.occurred_at for q in watch.due(back + 8 * DAY)] == [back + 7 * DAY]
