"""The runs this subscriber is announcing, or announced lately: one announcement per run at a
time, and a second request for a run in flight told whether the first one got through.

The FHIR hook and the PACS stable-study event usually both arrive for one new study, within
milliseconds. The first to come claims the run here, before its first await; the second finds
it in flight. While the first has not published yet, the second waits for it: had it answered
"in flight, nothing to do" at once and the first then failed (the broker restarting), the
second's sender would have been told all was well and the first's sender may give up
retrying; nothing would start the run again. So the second learns the first one's outcome and,
when it failed, fails too (a hook answers 503, a search keeps its watermark): both senders
retry.
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
    """Another request claimed the same run and its announcement failed (or, claimed on the
    FHIR server by another replica, is not made yet): this request announced nothing either,
    and its sender should retry."""


@dataclass(eq=False)
class Announcement:
    """One request's announcement of one run: `outcome` is True once the run is announced (or
    found done or claimed elsewhere), False when the request failed."""

    key: RunKey
    at: float = field(default_factory=time.monotonic)
    outcome: asyncio.Future[bool] = field(
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
            if announcement.outcome.done():  # one still going stays, however long it takes
                del self._runs[announcement.key]
        return self._runs.get(key)

    def begin(self, key: RunKey) -> Announcement:
        """Claim the run (synchronously: before the caller's first await)."""
        announcement = Announcement(key)
        self._runs[key] = announcement
        return announcement

    def finish(self, announcement: Announcement, *, announced: bool, ok: bool) -> None:
        """The request is over: the run was published (`announced`: kept, so a duplicate hook
        within the window starts nothing), found done or claimed elsewhere (`ok`), or the
        request failed. Whoever waits on it learns which."""
        if not announced and self._runs.get(announcement.key) is announcement:
            del self._runs[announcement.key]
        if not announcement.outcome.done():
            announcement.outcome.set_result(ok)

    def forget_study(self, study_instance_uid: str) -> None:
        """The study's runs are over (retracted): a study sent again is not in flight."""
        for key in [key for key in self._runs if key[0] == study_instance_uid]:
            del self._runs[key]

    def holds_study(self, study_instance_uid: str) -> bool:
        return any(key[0] == study_instance_uid for key in self._runs)

    @staticmethod
    async def outcome_of(announcements: list[Announcement]) -> None:
        """Wait for other requests' announcements still going; raises RunNotAnnounced when
        one of them failed."""
        for announcement in announcements:
            if not await asyncio.shield(announcement.outcome):
                raise RunNotAnnounced(
                    f"{announcement.key[1]} {announcement.key[2]} was being announced for this "
                    "study by another request, which failed: not announced, retry later"
                )
