"""The runs this subscriber is announcing, or announced lately: one announcement per run at a
time, and a second request for a run in flight answered only once the first one is over.

The FHIR hook and the PACS stable-study event usually both arrive for one new study, within
milliseconds. The first to come claims the run here, before its first await; the second finds
it in flight. Had the second answered "in flight, nothing to do" at once and the first then
failed (the broker restarting), the second's sender would have been told all was well, the
first's sender may give up retrying, and nothing would start the run again. So while the first
is going, the second waits for it (`settle`). A run the first announced stays in flight for
`window_seconds` (the second starts nothing); one it failed to announce is released, and the
second claims it and tries itself: it answers what happened to its own attempt (503 while the
broker is away; a search keeps its watermark), so both senders retry.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from shared.errors import TransientError

__all__ = ["Announcement", "InFlight", "RunKey", "RunNotAnnounced"]

# (Study Instance UID, model id, model version, the study's Patient reference): a hook naming
# another patient for the study is a correction, not a duplicate.
RunKey = tuple[str, str, str, str | None]


class RunNotAnnounced(TransientError):
    """The run was claimed on the FHIR server moments ago by another replica (or a request
    before a restart) and is not announced yet: this request announced nothing, and its sender
    should retry."""


@dataclass(eq=False)
class Announcement:
    """One request's announcement of one run; `over` is done once the request is."""

    key: RunKey
    at: float = field(default_factory=time.monotonic)
    over: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class InFlight:
    """Runs announced by this replica within `window_seconds`, or being announced."""

    def __init__(self, window_seconds: float) -> None:
        self.window_seconds = window_seconds
        self._runs: dict[RunKey, Announcement] = {}

    def get(self, key: RunKey) -> Announcement | None:
        """The run's announcement in flight or made within the window, if any."""
        now = time.monotonic()
        for announcement in [a for a in self._runs.values() if now - a.at > self.window_seconds]:
            if announcement.over.done():  # one still going stays, however long it takes
                del self._runs[announcement.key]
        return self._runs.get(key)

    def begin(self, key: RunKey) -> Announcement:
        """Claim the run (synchronously: before the caller's first await)."""
        announcement = Announcement(key)
        self._runs[key] = announcement
        return announcement

    def finish(self, announcement: Announcement, *, announced: bool) -> None:
        """The request is over: the run was published (`announced`: kept, so a duplicate hook
        within the window starts nothing), or not (found done, claimed elsewhere, failed:
        released). Whoever waits on it looks again."""
        if not announced and self._runs.get(announcement.key) is announcement:
            del self._runs[announcement.key]
        if not announcement.over.done():
            announcement.over.set_result(None)

    async def settle(self, keys: list[RunKey]) -> None:
        """Wait until no other request is announcing any of these runs."""
        while going := [
            a for key in keys if (a := self.get(key)) is not None and not a.over.done()
        ]:
            await asyncio.wait([a.over for a in going])  # waiting cancels none of them

    def forget_study(self, study_instance_uid: str) -> None:
        """The study's runs are over (retracted): a study sent again is not in flight."""
        for key in [key for key in self._runs if key[0] == study_instance_uid]:
            del self._runs[key]

    def holds_study(self, study_instance_uid: str) -> bool:
        return any(key[0] == study_instance_uid for key in self._runs)
