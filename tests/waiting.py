"""Waiting for a condition in a test (never a fixed sleep)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

__all__ = ["until"]


async def until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 20.0) -> None:
    """Wait until `check()` holds; fail the test naming `what` when it does not in time."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.2)
