"""``poll_until``: the one bounded wait of the worker (tenacity), for every loop that reads until done.

Every wait on a worker slot (a VM's status, an operation, a snapshot's status, a label write, a lease,
a drill VM's boot check) is: read; done -> return what was read; past the deadline -> raise what the
caller names; else pause and read again. The caller passes its own ``clock`` and ``sleep`` (its module's
``time.monotonic`` and ``time.sleep``, looked up at the call), so the benchmarks' simulated clock and the
tests' fakes, which replace a module's ``time``, reach the wait unchanged.

The deadline is looked at once per round, after a read that is not done (never before the first read),
with one ``clock()`` call: ``pause(remaining)`` gets ``deadline - clock()`` and says how long to sleep
(None: no sleep, the next read waits itself, e.g. a long-poll); ``remaining <= 0`` ends the wait with
``on_timeout(last read)``, which raises or returns what the wait returns. An exception of ``read``
ends the wait as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import tenacity

T = TypeVar("T")


def poll_until(
    read: Callable[[], T],
    done: Callable[[T], bool],
    *,
    deadline: float,
    pause: Callable[[float], float | None],
    on_timeout: Callable[[T], T],
    clock: Callable[[], float],
    sleep: Callable[[float], Any],
    before_pause: Callable[[T], Any] | None = None,
) -> T:
    """``read()`` until ``done(result)``: that result. See the module docstring for the order of things.

    ``before_pause(result)`` runs before each pause (e.g. a log line), not when the deadline has passed.
    """
    remaining: float = 0.0
    seconds: float | None = None

    def wait(state: tenacity.RetryCallState) -> float:
        nonlocal remaining, seconds
        remaining = deadline - clock()
        seconds = pause(remaining) if remaining > 0 else None
        return 0.0

    def stop(state: tenacity.RetryCallState) -> bool:
        return remaining <= 0

    def paused(_: float) -> None:
        if seconds is not None:
            sleep(seconds)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda result: not done(result)),
        wait=wait,
        stop=stop,
        sleep=paused,
        before_sleep=(lambda state: before_pause(_last(state))) if before_pause else None,
        retry_error_callback=lambda state: on_timeout(_last(state)),
    )
    return retrying(read)


def _last(state: tenacity.RetryCallState) -> Any:
    """The last read (the wait retries on results only: an exception has ended it already)."""
    assert state.outcome is not None
    return state.outcome.result()
