"""Start-up recovery: finalise the calls a previous process of this node left ``in_progress``.

A gateway killed mid-call (``kill -9``, an OOM kill, a crash, a power cut) never runs its
sessions' finalisers: their calls would stay ``in_progress`` forever and their recordings,
valid on disk up to the recorder's last flush, would never be linked. Each call records the
node that claimed its stream (``calls.node_id``, from ``GATEWAY_NODE_ID``); when that node
starts again, before it serves any stream, :func:`recover_lost_calls` finalises every such call:

- status ``failed``, end reason and error code ``node_lost``, and a ``node_lost`` event;
- its recording (the path stored when the stream started) is checked and, if the crash left
  the WAV header's sizes stale, repaired (:func:`gateway.store.recording.repair_wav`); a valid
  file is linked (recording ``completed``), a missing or broken one is reported
  (recording ``failed`` with the reason);
- ``duration_ms`` is the recording's length when there is one (a lower bound: audio still in
  the recorder's in-memory window, at most ~3 s, died with the process), else 0 (unknown).

The transcript and events of the lost process were in its memory and are gone.

Calls ``queued`` or ``ringing`` (never connected) are left to the token-expiry sweeper. Node
ids must be unique among nodes sharing a database and stable across restarts of one node
(the host name is the default): a node recovers only the calls recorded under its own id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.store.models import CallStatus
from gateway.store.recording import WavCheck, repair_wav
from gateway.store.records import CallRecord

if TYPE_CHECKING:
    from gateway.store.repo import Store

__all__ = ["NODE_LOST", "RecoveredCall", "recover_lost_calls"]

log = logging.getLogger("gateway.store")

#: End reason and error code of a call whose node died under it.
NODE_LOST = "node_lost"


@dataclass(frozen=True, slots=True)
class RecoveredCall:
    """One call :func:`recover_lost_calls` finalised, and what became of its recording."""

    call_id: str
    recording: WavCheck | None
    recording_error: str | None = None


def recover_lost_calls(store: Store, node_id: str) -> list[RecoveredCall]:
    """Finalise every call ``node_id`` left ``in_progress`` (see the module docstring).

    Synchronous (file and database I/O): run it in a thread, before the node serves streams.

    Args:
        store: the gateway's :class:`~gateway.store.repo.Store`.
        node_id: this node's id (``GATEWAY_NODE_ID``).

    Returns:
        The calls finalised here, oldest first (a call another finaliser got to first is
        left out).

    Raises:
        StoreError / SQLAlchemy errors from the database (file errors are reported on the
        call's recording, never raised).
    """
    done = []
    for call in store.lost_calls(node_id):
        check, error = _check_recording(call)
        linked = check is not None and check.valid
        duration = check.duration_ms if linked and check is not None else 0
        event = {
            "kind": NODE_LOST,
            "at_ms": duration,
            "data": {
                "nodeId": node_id,
                "durationFrom": "recording" if linked else "unknown",
                "recordingRepaired": bool(check and check.repaired),
            },
        }
        finalised = store.finalise_call(
            call.id,
            status=CallStatus.FAILED,
            end_reason=NODE_LOST,
            duration_ms=duration,
            events=[event],
            error_code=NODE_LOST,
            error_message=f"gateway node {node_id!r} stopped during the call; finalised when it restarted",
            recording_path=call.recording_path if linked else None,
            recording_status=("completed" if linked else "failed") if call.recording_path else None,
            recording_error=None if linked else error,
        )
        if finalised:
            log.warning("call %s was left in progress by a previous run of node %s: finalised as %s "
                        "(recording: %s)", call.id, node_id, NODE_LOST, "linked" if linked else error)  # fmt: skip
            done.append(RecoveredCall(call.id, check, None if linked else error))
    return done


def _check_recording(call: CallRecord) -> tuple[WavCheck | None, str | None]:
    """The call's WAV after repair, or why there is none usable."""
    if not call.recording_path:
        return None, None
    try:
        check = repair_wav(Path(call.recording_path))
    except FileNotFoundError:
        return None, "recording file missing after node loss (the stream may never have started)"
    except OSError as exc:
        return None, f"recording unreadable after node loss: {exc}"
    if not check.valid:
        return check, f"recording invalid after node loss: {check.error}"
    return check, None
