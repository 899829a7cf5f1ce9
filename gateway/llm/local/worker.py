"""The local agent's engine worker: one process running pocketsphinx and Piper.

:func:`serve_fd` is the entry point of each worker process that :class:`~gateway.llm.local.pool.
WorkerPool` starts (a fresh interpreter: ``python -c``, see ``process.WorkerProcess``). Recognition and synthesis hold the
GIL while they compute and live in native code that can crash, so they run here rather than
in the gateway's event-loop process: a slow decode costs this process's time, a segfault costs
this process (the pool fails its requests and starts a replacement).

Protocol (over one duplex ``multiprocessing`` pipe, in order; first the parent sends the
worker's config, a dict, then tuples):

======================================  ===================================================
parent → worker                          worker → parent
======================================  ===================================================
``("begin", uid, band)``                 (none; a failure is reported by ``finish``)
``("feed", uid, pcm)``                   (none) — 16 kHz int16 little-endian mono bytes
``("finish", rid, uid)``                 ``("started", rid)``, then ``("ok", rid, text)`` or
                                         ``("err", rid, message)``
``("abort", uid)``                       (none) — the decoder goes back to the pool
``("tts", rid, text)``                   ``("started", rid)``, then ``("ok", rid, pcm)`` —
                                         int16 bytes at the voice's rate
``("drop", rid)``                        ``("dropped", rid)`` if request ``rid`` was still
                                         queued: it is skipped (a dropped ``finish`` releases
                                         its utterance's decoder); else (none)
======================================  ===================================================

Requests are handled one at a time, in order; ``("started", rid)`` tells the pool when one is
taken up, so its deadline runs from there and not from when it was queued.

On start the worker loads both engines, calibrates recognition unless it was handed the
cepstral-mean priors (``config["cmn_priors"]``), then sends ``("ready", pid, priors)``.
Before each request it drains every message already in the pipe, so the feeds of an
utterance that was aborted meanwhile are dropped unread instead of decoded.

Pure and synchronous: no asyncio.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import deque
from typing import Any

import numpy as np

from gateway.llm.local.engines import (
    CALIBRATION_TEXT,
    RecognizerBusy,
    SpeechRecognizer,
    SpeechSynthesizer,
    Utterance,
)

__all__ = ["main", "serve_fd", "WorkerState"]

_IDLE_EVICT_S = 120.0  # an utterance not fed for this long may lose its decoder to a new one


class _Failed:
    """An utterance whose ``begin`` failed: ``finish`` reports why."""

    def __init__(self, message: str) -> None:
        self.message = message


class WorkerState:
    """What one worker process holds: the engines and the utterances in progress.

    Args:
        max_decoders: decoders this worker may create (one per concurrent utterance).
        cmn_priors: recognition priors per band from an earlier calibration, or ``None`` to
            calibrate now (about 1 s).
    """

    def __init__(self, *, max_decoders: int, cmn_priors: dict[str, str] | None) -> None:
        self.asr = SpeechRecognizer(max_decoders=max_decoders)
        self.tts = SpeechSynthesizer()
        self.asr.warm_up()
        self.tts.warm_up()
        if cmn_priors:
            self.asr.cmn_priors = dict(cmn_priors)
        else:
            speech = np.concatenate(list(self.tts.stream(CALIBRATION_TEXT)))
            self.asr.calibrate(speech, self.tts.sample_rate)
        self._utts: dict[int, Utterance | _Failed] = {}
        self._fed_at: dict[int, float] = {}

    def handle(self, msg: tuple) -> tuple | None:
        """Apply one request; the reply to send, if it has one."""
        kind = msg[0]
        if kind == "feed":
            utt = self._utts.get(msg[1])
            if isinstance(utt, Utterance):
                utt.feed(msg[2])
                self._fed_at[msg[1]] = time.monotonic()
            return None
        if kind == "begin":
            self._begin(msg[1], msg[2])
            return None
        if kind == "finish":
            return self._finish(msg[1], msg[2])
        if kind == "abort":
            self._release(msg[1])
            return None
        if kind == "tts":
            return ("ok", msg[1], self._synthesize(msg[2]))
        raise ValueError(f"unknown request {kind!r}")

    def _begin(self, uid: int, band: str) -> None:
        try:
            self._utts[uid] = self.asr.begin(band, timeout_s=0)
        except RecognizerBusy:
            self._evict_idle()
            try:
                self._utts[uid] = self.asr.begin(band, timeout_s=0)
            except RecognizerBusy as exc:
                self._utts[uid] = _Failed(str(exc))
        self._fed_at[uid] = time.monotonic()

    def _evict_idle(self) -> None:
        now = time.monotonic()
        for uid, at in list(self._fed_at.items()):
            if now - at > _IDLE_EVICT_S:
                self._release(uid)

    def _finish(self, rid: int, uid: int) -> tuple:
        utt = self._utts.pop(uid, None)
        self._fed_at.pop(uid, None)
        if utt is None:
            return ("err", rid, "unknown or aborted utterance")
        if isinstance(utt, _Failed):
            return ("err", rid, utt.message)
        return ("ok", rid, utt.finish())

    def _release(self, uid: int) -> None:
        utt = self._utts.pop(uid, None)
        self._fed_at.pop(uid, None)
        if isinstance(utt, Utterance):
            utt.cancel()

    def _synthesize(self, text: str) -> bytes:
        chunks = list(self.tts.stream(text))
        if not chunks:
            return b""
        return np.concatenate(chunks).astype("<i2", copy=False).tobytes()


def _drain(conn: Any, pending: deque) -> list[int]:
    """Move every message already in the pipe to ``pending``; drop feeds of aborted
    utterances and dropped requests (a dropped ``finish`` becomes an ``abort``).

    Returns:
        the ids of the requests skipped (to confirm to the parent).
    """
    while conn.poll(0):
        pending.append(conn.recv())
    aborted = {m[1] for m in pending if m[0] == "abort"}
    dropped = {m[1] for m in pending if m[0] == "drop"}
    if not aborted and not dropped:
        return []
    kept: list[tuple] = []
    skipped: list[int] = []
    for m in pending:
        if m[0] == "drop" or (m[0] == "feed" and m[1] in aborted):
            continue
        if m[0] in ("finish", "tts") and m[1] in dropped:
            skipped.append(m[1])
            if m[0] == "finish":
                kept.append(("abort", m[2]))
            continue
        kept.append(m)
    pending.clear()
    pending.extend(kept)
    return skipped


def main(conn: Any, config: dict[str, Any]) -> None:
    """Serve requests on ``conn`` until the parent closes it (the worker process's target).

    Args:
        conn: this end of the pool's duplex ``multiprocessing`` pipe.
        config: ``max_decoders`` (int), ``cmn_priors`` (dict or ``None``), ``niceness`` (int
            added to the process's nice value, so the gateway's media loop wins the CPU).
    """
    # The parent owns a worker's lifetime: a Ctrl-C or SIGTERM sent to the whole process group
    # must not kill the engines under live calls. The pool kills workers when it closes, and a
    # worker whose parent died sees EOF on its pipe and exits.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(int(config.get("niceness", 0)))
    state = WorkerState(max_decoders=int(config.get("max_decoders", 4)), cmn_priors=config.get("cmn_priors"))
    conn.send(("ready", os.getpid(), dict(state.asr.cmn_priors)))
    pending: deque = deque()
    while True:
        try:
            if not pending:
                pending.append(conn.recv())
            for rid in _drain(conn, pending):
                conn.send(("dropped", rid))
        except (EOFError, OSError):
            return  # the parent closed the pipe (or is gone): stop
        if not pending:
            continue  # only drops of requests already answered
        msg = pending.popleft()
        if msg[0] in ("finish", "tts"):
            try:
                conn.send(("started", msg[1]))
            except (EOFError, OSError):
                return
        try:
            reply = state.handle(msg)
        except Exception as exc:  # noqa: BLE001 - one failed request, not the worker
            reply = ("err", msg[1], f"{type(exc).__name__}: {exc}") if msg[0] in ("finish", "tts") else None
        if reply is not None:
            try:
                conn.send(reply)
            except (EOFError, OSError):
                return


def serve_fd(fd: int) -> None:
    """Run a worker on the inherited pipe descriptor ``fd``: read its config, then :func:`main`."""
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    try:
        config = conn.recv()
    except (EOFError, OSError):
        return
    main(conn, config)
