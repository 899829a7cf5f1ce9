"""Best-effort call recording: a recorder failure stops the recording, never the call.

A full disk, a read-only or missing recordings directory, or any other error of the recorder
(opening the directory or file, writing, closing) used to propagate out of the session and
fail the call. :class:`BestEffortRecording` wraps whatever recorder the app opens
(:class:`gateway.store.CallRecorder`): the first error stops recording for the rest of the
call (the recorder is closed as far as it can be, a partial file is left where it is), is
reported once through ``on_failure`` and in :attr:`result`, and every later write is a no-op.

Synchronous, like the recorder: the session calls it from its own task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["BestEffortRecording", "RecordingResult"]

log = logging.getLogger("gateway.call")

_MAX_ERROR = 300  # characters of the error kept on the record


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """How a call's recording ended.

    Attributes:
        status: ``completed`` (``path`` is the finished WAV) or ``failed`` (``error`` says
            why, as ``stage: text``, e.g. ``write: [Errno 28] No space left on device``).
        path: the WAV, for a completed recording; ``None`` for a failed one.
        error: why it failed.
    """

    status: str
    path: str | None = None
    error: str | None = None


class BestEffortRecording:
    """One call's recording that never raises into the call.

    Args:
        open_recorder: makes the recorder for a sample rate (Hz); it may raise (``OSError``
            for a full disk or a bad directory) or return ``None`` (not recorded). The
            recorder has ``caller(pcm, at_sample)``, ``agent(pcm, at_sample)``, ``close()``
            and ``path``.
        sample_rate: Hz of the call's timeline.
        on_failure: called once, with ``(stage, error)``, when recording stops on an error
            (``stage`` is ``open``, ``write`` or ``close``).
        logger: the call's logger.
    """

    def __init__(
        self,
        open_recorder: Callable[[int], Any],
        sample_rate: int,
        *,
        on_failure: Callable[[str, str], None] | None = None,
        logger: logging.Logger | logging.LoggerAdapter = log,
    ) -> None:
        self._on_failure = on_failure
        self._log = logger
        self._rec: Any = None
        self.error: str | None = None
        self._result: RecordingResult | None = None
        try:
            self._rec = open_recorder(sample_rate)
        except Exception as exc:  # noqa: BLE001 - a recorder never fails the call
            self._fail("open", exc)

    @property
    def active(self) -> bool:
        """Whether audio is still being recorded (opened, not failed, not closed)."""
        return self._rec is not None

    @property
    def result(self) -> RecordingResult | None:
        """How the recording ended: set by a failure or by :meth:`close`; ``None`` before
        (and when the call was not recorded: ``open_recorder`` returned ``None``)."""
        return self._result

    def caller(self, pcm: Any, at_sample: int) -> None:
        """Record caller audio (see :meth:`gateway.store.CallRecorder.caller`); never raises."""
        if self._rec is not None:
            try:
                self._rec.caller(pcm, at_sample)
            except Exception as exc:  # noqa: BLE001
                self._fail("write", exc)

    def agent(self, pcm: Any, at_sample: int) -> None:
        """Record agent audio (see :meth:`gateway.store.CallRecorder.agent`); never raises."""
        if self._rec is not None:
            try:
                self._rec.agent(pcm, at_sample)
            except Exception as exc:  # noqa: BLE001
                self._fail("write", exc)

    def close(self) -> RecordingResult | None:
        """Finish the file. Idempotent; never raises. Returns :attr:`result`."""
        rec, self._rec = self._rec, None
        if rec is not None:
            try:
                rec.close()
            except Exception as exc:  # noqa: BLE001
                self._fail("close", exc)
            else:
                self._result = RecordingResult("completed", str(rec.path))
        return self._result

    def _fail(self, stage: str, exc: BaseException) -> None:
        rec, self._rec = self._rec, None
        text = str(exc) or type(exc).__name__
        self.error = f"{stage}: {text}"[:_MAX_ERROR]
        self._result = RecordingResult("failed", None, self.error)
        if isinstance(exc, OSError):
            self._log.warning("recording stopped (%s); the call goes on", self.error)
        else:  # not an I/O error: a bug, worth its traceback
            self._log.error("recording stopped (%s); the call goes on", self.error, exc_info=exc)
        if rec is not None and stage != "close":
            try:
                rec.close()  # flush what it can; a partial file stays on disk
            except Exception:  # noqa: BLE001 - the disk that failed the write may fail this too
                pass
        if self._on_failure is not None:
            self._on_failure(stage, self.error)
