"""CallSession endings the app asks for (``request_end`` on shutdown) and best-effort recording,
on the virtual clock and in-memory carrier of :mod:`tests.test_session`."""

from __future__ import annotations

import asyncio
import errno

from gateway.session import CallHooks, CallSession
from tests.test_session import QUIET, FakeBridge, make_session, run


async def until(cond, limit: int = 10_000) -> None:
    for _ in range(limit):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def end_when_started(session: CallSession, reason: str = "shutdown") -> None:
    await until(lambda: session.bridge is not None and session.ledger is not None)
    session.request_end(reason)


async def test_request_end_finalises_a_live_call_as_shutdown_and_closes_1001() -> None:
    bridge = FakeBridge()
    session, clock, transport, *_, finished = make_session(bridge, QUIET)
    ender = asyncio.create_task(end_when_started(session))
    outcome = await run(session, clock)
    await ender
    assert (outcome.status, outcome.end_reason, outcome.error_code) == ("completed", "shutdown", None)
    assert transport.closed == (1001, "shutdown")
    assert finished == [outcome] and ("close",) in bridge.calls
    assert outcome.events[-1] == {"kind": "ended", "at_ms": outcome.events[-1]["at_ms"], "data": {"reason": "shutdown"}}


async def test_request_end_before_the_stream_starts_ends_the_call_at_once() -> None:
    bridge = FakeBridge()
    session, clock, transport, *_, finished = make_session(bridge, QUIET)
    while not transport.inbox.empty():  # the carrier connected but sends nothing
        transport.inbox.get_nowait()
    asyncio.get_running_loop().call_soon(session.request_end, "shutdown")
    outcome = await run(session, clock)
    assert (outcome.status, outcome.end_reason, outcome.error_code) == ("failed", "shutdown", "no_start")
    assert clock.t < 1 and transport.closed == (1001, "shutdown") and finished == [outcome]
    assert bridge.calls == []  # never started


async def test_the_first_requested_reason_wins() -> None:
    session, clock, transport, *_ = make_session(FakeBridge(), QUIET)

    async def twice() -> None:
        await end_when_started(session, "shutdown")
        session.request_end("other")

    ender = asyncio.create_task(twice())
    outcome = await run(session, clock)
    await ender
    assert outcome.end_reason == "shutdown"


class FullDiskRecorder:
    """A recorder whose writes fail as on a full disk, after ``ok_writes`` good ones."""

    path = "/nowhere/call.wav"

    def __init__(self, ok_writes: int = 3) -> None:
        self.ok_writes = ok_writes
        self.writes = 0
        self.closed = False

    def caller(self, pcm, at_sample: int) -> None:
        self.writes += 1
        if self.writes > self.ok_writes:
            raise OSError(errno.ENOSPC, "No space left on device")

    agent = caller

    def close(self) -> None:
        self.closed = True


def with_recorder(session: CallSession, open_recorder) -> None:
    hooks = session.hooks
    session.hooks = CallHooks(on_started=hooks.on_started, open_recorder=open_recorder, on_finished=hooks.on_finished)


async def test_a_recorder_failing_mid_call_stops_recording_and_the_call_goes_on() -> None:
    bridge = FakeBridge()
    session, clock, transport, _vad, dialect, finished = make_session(bridge, QUIET)
    recorder = FullDiskRecorder()
    with_recorder(session, lambda rate: recorder)
    for _ in range(10):  # ten caller frames: the fourth write fails
        transport.inbox.put_nowait(dialect.media(b"\xff" * 160))
    transport.inbox.put_nowait(dialect.stop())
    outcome = await run(session, clock)
    assert (outcome.status, outcome.end_reason) == ("completed", "carrier_stop")
    assert outcome.metrics["framesIn"] == 10  # every frame after the failure still went through
    assert sum(1 for c in bridge.calls if c[0] == "audio") >= 1
    assert (outcome.recording_status, outcome.recording_path) == ("failed", None)
    assert outcome.recording_error == "write: [Errno 28] No space left on device"
    assert recorder.writes == 4 and recorder.closed
    failed = [e for e in outcome.events if e["kind"] == "recording_failed"]
    assert [e["data"] for e in failed] == [{"stage": "write", "error": outcome.recording_error}]
    assert finished == [outcome]  # the record was handed to the store


async def test_a_recorder_that_cannot_open_leaves_the_call_unrecorded_not_failed() -> None:
    session, clock, transport, _vad, dialect, _ = make_session(FakeBridge(), QUIET)

    def read_only(rate: int):
        raise PermissionError(errno.EROFS, "Read-only file system", "/recordings/call.wav")

    with_recorder(session, read_only)
    transport.inbox.put_nowait(dialect.media(b"\xff" * 160))
    transport.inbox.put_nowait(dialect.stop())
    outcome = await run(session, clock)
    assert (outcome.status, outcome.end_reason) == ("completed", "carrier_stop")
    assert outcome.recording_status == "failed"
    assert outcome.recording_error == "open: [Errno 30] Read-only file system: '/recordings/call.wav'"
