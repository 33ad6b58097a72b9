"""compute/polling.py: poll_until reads first, looks at the deadline once per round after a read that is
not done, pauses what the caller says on the caller's clock, and ends with the caller's timeout."""

from __future__ import annotations

import pytest

from gce_vm_backup.compute.polling import poll_until


class Clock:
    def __init__(self) -> None:
        self.now, self.sleeps, self.calls = 0.0, [], 0

    def __call__(self) -> float:
        self.calls += 1
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Timeout(Exception):
    pass


def _raise(last):
    raise Timeout(f"still {last}")


def test_done_at_the_first_read_looks_at_no_clock():
    clock = Clock()
    assert (
        poll_until(
            lambda: "READY",
            lambda s: s == "READY",
            deadline=-1,  # already past: the first read still happens, and is enough
            pause=lambda r: 5,
            on_timeout=_raise,
            clock=clock,
            sleep=clock.sleep,
        )
        == "READY"
    )
    assert clock.calls == 0
    assert clock.sleeps == []


def test_pauses_are_the_callers_and_the_deadline_bounds_the_wait():
    clock = Clock()
    reads = []
    with pytest.raises(Timeout, match="still CREATING"):
        poll_until(
            lambda: reads.append(clock.now) or "CREATING",
            lambda s: s == "READY",
            deadline=12,
            pause=lambda remaining: min(5, remaining),
            on_timeout=_raise,
            clock=clock,
            sleep=clock.sleep,
        )
    assert reads == [0, 5, 10, 12]  # the last pause is cut at the deadline; one read after it
    assert clock.sleeps == [5, 5, 2]


def test_the_last_read_is_what_a_returning_timeout_gives_back():
    clock = Clock()
    values = iter(["A", "B", "C"])
    result = poll_until(
        lambda: next(values),
        lambda s: False,
        deadline=2,
        pause=lambda r: 1,
        on_timeout=lambda last: f"gave up at {last}",
        clock=clock,
        sleep=clock.sleep,
    )
    assert result == "gave up at C"


def test_no_sleep_when_the_pause_is_none_and_before_pause_runs_only_before_a_pause():
    clock = Clock()
    seen = []
    values = iter(["a", "b", "c", "done"])

    def read():
        clock.now += 1  # a long-poll takes time itself
        return next(values)

    assert (
        poll_until(
            read,
            lambda s: s == "done",
            deadline=100,
            pause=lambda r: None,
            on_timeout=_raise,
            clock=clock,
            sleep=clock.sleep,
            before_pause=seen.append,
        )
        == "done"
    )
    assert clock.sleeps == []
    assert seen == ["a", "b", "c"]


def test_an_exception_of_a_read_ends_the_wait_as_it_is():
    clock = Clock()

    def read():
        raise KeyError("gone")

    with pytest.raises(KeyError, match="gone"):
        poll_until(
            read, bool, deadline=100, pause=lambda r: 1, on_timeout=_raise, clock=clock, sleep=clock.sleep
        )
