"""The retention purge: a periodic task deleting call data older than ``GATEWAY_RETENTION_DAYS``.

:class:`RetentionPurger` runs in the app's lifespan when ``retention_days`` > 0: at start-up and
every ``retention_every_s`` it deletes, batch by batch (:meth:`gateway.store.Store.purge_calls`),
the ended calls created more than ``retention_days`` days ago whose after-call work is done
(post-call results final, no webhook delivery still scheduled) with their rows, then their
recording files (a file already gone is fine; one that cannot be removed is logged and left).
Database work runs on a thread; a failed round is logged and the next one tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from gateway.config import Settings
from gateway.store import Store
from gateway.store.retention import PURGE_BATCH

__all__ = ["RetentionPurger", "PurgeRound"]

log = logging.getLogger("gateway.retention")

#: Batches per round at most (a round deletes at most this × PURGE_BATCH calls; the rest wait).
MAX_BATCHES = 100


@dataclass(frozen=True, slots=True)
class PurgeRound:
    """One round's work: calls deleted, recording files removed."""

    calls: int
    recordings: int


class RetentionPurger:
    """Deletes call data older than ``retention_days`` (see the module docstring).

    Args:
        store: the gateway's store.
        retention_days: days kept (> 0).
        every_s: seconds between rounds.
    """

    def __init__(self, store: Store, *, retention_days: int, every_s: float = 3600.0) -> None:
        if retention_days <= 0:
            raise ValueError("retention_days must be positive (0 keeps everything: make no purger)")
        self.store = store
        self.keep = timedelta(days=retention_days)
        self.every_s = every_s
        self._task: asyncio.Task | None = None

    @classmethod
    def from_settings(cls, store: Store, settings: Settings) -> RetentionPurger | None:
        """The purger ``settings`` ask for; ``None`` when ``retention_days`` is 0 (keep forever)."""
        if settings.retention_days <= 0:
            return None
        return cls(store, retention_days=settings.retention_days, every_s=settings.retention_every_s)

    def purge_once(self) -> PurgeRound:
        """One round, blocking (run it on a thread): every call old enough, batch by batch."""
        cutoff = self.store.now() - self.keep
        calls = files = 0
        for _ in range(MAX_BATCHES):
            purged = self.store.purge_calls(before=cutoff, limit=PURGE_BATCH)
            calls += len(purged.call_ids)
            files += sum(_remove(p) for p in purged.recording_paths)
            if len(purged.call_ids) < PURGE_BATCH:
                break
        if calls:
            log.info("retention: deleted %d calls created before %s and %d recordings", calls, cutoff.isoformat(), files)
        return PurgeRound(calls, files)

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.purge_once)
            except Exception:  # noqa: BLE001 - a database error: the next round tries again
                log.warning("retention purge failed", exc_info=True)
            await asyncio.sleep(self.every_s)

    def start(self) -> None:
        """Start the periodic task (in the running loop); its first round runs at once."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="retention-purge")

    async def aclose(self) -> None:
        """Stop the task (a round on its thread finishes its batch; nothing is half-deleted)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _remove(path: str) -> int:
    """Remove a recording file; 1 if removed, 0 if it was gone or could not be (logged)."""
    try:
        Path(path).unlink()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.warning("retention: recording %s not removed: %s", path, exc)
        return 0
    return 1
