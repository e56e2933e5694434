"""services.subscriber.in_flight: a second request for a run in flight learns whether the first
one announced it, and fails when it did not (the broker restarting under the first: answered
"in flight" at once, the second's sender would stop retrying and the run would be lost)."""

from __future__ import annotations

import asyncio

import pytest

from services.subscriber.in_flight import InFlight, RunNotAnnounced
from shared.errors import TransientError

RUN = ("2.25.1", "ich-reference", "1", "Patient/p")


async def test_a_request_waiting_on_a_run_in_flight_fails_when_its_announcement_fails() -> None:
    runs = InFlight(window_seconds=600)
    first = runs.begin(RUN)
    waiting = runs.get(RUN)
    assert waiting is first
    second = asyncio.create_task(InFlight.outcome_of([waiting]))
    await asyncio.sleep(0)  # the second request is waiting, as a hook arriving meanwhile does
    assert not second.done()
    runs.finish(first, announced=False, ok=False)
    with pytest.raises(RunNotAnnounced, match=r"ich-reference 1 .* failed") as raised:
        await second
    assert isinstance(raised.value, TransientError)  # a hook answers 503: its sender retries
    assert runs.get(RUN) is None  # nothing in flight: the retry announces the run itself


async def test_a_request_waiting_on_a_run_in_flight_returns_once_it_is_announced() -> None:
    runs = InFlight(window_seconds=600)
    first = runs.begin(RUN)
    second = asyncio.create_task(InFlight.outcome_of([first]))
    await asyncio.sleep(0)
    runs.finish(first, announced=True, ok=True)
    await second
    assert runs.get(RUN) is first  # kept: a duplicate hook within the window starts nothing


async def test_a_run_found_done_is_released_and_its_waiters_told_all_is_well() -> None:
    runs = InFlight(window_seconds=600)
    first = runs.begin(RUN)
    runs.finish(first, announced=False, ok=True)
    await InFlight.outcome_of([first])
    assert runs.get(RUN) is None


async def test_an_announcement_older_than_the_window_is_forgotten_but_one_going_is_not() -> None:
    runs = InFlight(window_seconds=0)
    going = runs.begin(RUN)
    other = ("2.25.2", "ich-reference", "1", None)
    done = runs.begin(other)
    runs.finish(done, announced=True, ok=True)
    await asyncio.sleep(0.001)
    assert runs.get(other) is None
    assert runs.get(RUN) is going  # however long it takes, a second request waits on it


async def test_a_retracted_study_has_nothing_in_flight() -> None:
    runs = InFlight(window_seconds=600)
    runs.finish(runs.begin(RUN), announced=True, ok=True)
    assert runs.holds_study(RUN[0])
    runs.forget_study(RUN[0])
    assert not runs.holds_study(RUN[0])
    assert runs.get(RUN) is None
