"""services.subscriber.in_flight: a second request for a run in flight is answered only once
the first one is over: a run it announced stays in flight, one it failed to announce is
released for the second to try itself (answered "in flight" at once while the broker restarts
under the first, the second's sender would stop retrying and the run would be lost)."""

from __future__ import annotations

import asyncio

from services.subscriber.in_flight import InFlight

RUN = ("2.25.1", "ich-reference", "1", "Patient/p")


async def test_a_run_whose_announcement_fails_is_released_to_the_request_waiting_on_it() -> None:
    runs = InFlight(window_seconds=600)
    first = runs.begin(RUN)
    second = asyncio.create_task(runs.settle([RUN]))
    await asyncio.sleep(0)  # the second request is waiting, as a hook arriving meanwhile does
    assert not second.done()
    runs.finish(first, announced=False)
    await second
    assert runs.get(RUN) is None  # nothing in flight: the second claims the run and tries


async def test_a_run_announced_meanwhile_is_in_flight_for_the_request_waiting_on_it() -> None:
    runs = InFlight(window_seconds=600)
    first = runs.begin(RUN)
    second = asyncio.create_task(runs.settle([RUN]))
    await asyncio.sleep(0)
    runs.finish(first, announced=True)
    await second
    assert runs.get(RUN) is first  # kept: a duplicate hook within the window starts nothing


async def test_a_waiting_request_waits_again_for_one_that_claimed_the_run_before_it() -> None:
    """Three requests: the first fails, the third claims the run before the second looks again;
    the second waits on the third (one announcement of a run at a time)."""
    runs = InFlight(window_seconds=600)
    first = runs.begin(RUN)
    second = asyncio.create_task(runs.settle([RUN]))
    await asyncio.sleep(0)
    runs.finish(first, announced=False)
    third = runs.begin(RUN)  # before the second request's task runs again
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not second.done()
    runs.finish(third, announced=True)
    await second
    assert runs.get(RUN) is third


async def test_an_announcement_older_than_the_window_is_forgotten_but_one_going_is_not() -> None:
    runs = InFlight(window_seconds=0)
    going = runs.begin(RUN)
    other = ("2.25.2", "ich-reference", "1", None)
    runs.finish(runs.begin(other), announced=True)
    await asyncio.sleep(0.001)
    assert runs.get(other) is None
    assert runs.get(RUN) is going  # however long it takes, a second request waits on it


async def test_a_retracted_study_has_nothing_in_flight() -> None:
    runs = InFlight(window_seconds=600)
    runs.finish(runs.begin(RUN), announced=True)
    assert runs.holds_study(RUN[0])
    runs.forget_study(RUN[0])
    assert not runs.holds_study(RUN[0])
    assert runs.get(RUN) is None
