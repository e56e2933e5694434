"""Drawing the cases of a fuzz suite: `examples` draws a fixed, reproducible list from a
hypothesis strategy (derandomized, no example database), `mixed` so many of each of several,
which a test then sends, concurrently, to a running service; `in_background` draws them in
another process while earlier tests send theirs."""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import ParamSpec, TypeVar

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

__all__ = ["examples", "in_background", "mixed"]

T = TypeVar("T")
P = ParamSpec("P")


def examples(strategy: st.SearchStrategy[T], count: int) -> list[T]:
    """`count` examples of `strategy`, the same list on every run (derandomized, no database:
    CI and a developer's machine send the same cases). Shrinking is left out: the cases are
    sent afterwards, concurrently, and a failing case is reported as it was generated."""
    drawn: list[T] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example: T) -> None:
        drawn.append(example)

    collect()
    return drawn


def mixed(*parts: tuple[st.SearchStrategy[T], int]) -> list[T]:
    """So many examples of each strategy, in this order: the mix of a fuzz suite is what it
    says (hypothesis's own choice among `one_of` branches favours the ones whose space is not
    exhausted yet, and flattens nested ones)."""
    return [example for strategy, count in parts for example in examples(strategy, count)]


@functools.cache
def _generator() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


def in_background(make: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
    """`make(*args)` in a process of its own (one for the session, started afresh: spawn), while
    the tests send their cases: drawing examples is CPU work, and so is the radmesh service
    answering them in this process; the machine has a second core. `make` is a module-level
    function and its arguments plain data (they are pickled)."""
    return _generator().submit(make, *args, **kwargs)
