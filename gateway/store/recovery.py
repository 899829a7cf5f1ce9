"""Finalise the calls whose gateway process is gone: at a node's start-up and on every sweep.

A gateway killed mid-call (``kill -9``, an OOM kill, a crash, a power cut) never runs its
sessions' finalisers: their calls would stay ``in_progress`` forever and their recordings,
valid on disk up to the recorder's last flush, would never be linked. Each call records who
claimed its stream (:mod:`gateway.store.leases`): the node (``calls.node_id``, from
``GATEWAY_NODE_ID``), the process run (``calls.node_run``, a uuid4 made at the app's start)
and a lease that run renews every ``lease / 3`` while the call is live
(``GATEWAY_CALL_LEASE_S``, default 90 s). A call is presumed lost, and finalised here, when:

1. **Its node restarted** (:func:`recover_lost_calls`, at start-up and on every sweep): it is
   this node's, claimed by another run, and that run has been *silent*: no renewal for one
   renewal interval plus a margin, ``quiet = i + max(i / 2, 2 s)`` with ``i`` the claimer's
   own interval (``(lease_until - lease_renewed_at) / 3``). A live process renews every
   ``i``, so a silent call has nobody behind it; a call renewed more recently may belong to
   a live twin (a second process given the same node id) and is left alone: the check runs
   again on each sweep (every ``min(30 s, i)``), so after ``kill -9`` a call is finalised at
   the restart when its last renewal is older than ``quiet``, else within ``quiet`` plus a
   sweep. A call with no lease (claimed by an older gateway) is finalised at once, as before.
2. **Its lease lapsed** (:func:`sweep_lapsed_calls`, on any node's sweep, whatever node the
   call was on: a pod rescheduled under a new name, a host that never comes back). A row
   with no lease lapses at its start + its config's ``max_duration_s`` (else 7,200 s) + the
   sweeping node's lease (:func:`~gateway.store.leases.lease_expiry`).

Either way the call is finalised the same way (:func:`finalise_lost`):

- status ``failed``, end reason and error code ``node_lost``, a ``node_lost`` event
  (``data``: ``nodeId`` the call's node, ``finalisedBy``, ``cause`` ``restart`` or
  ``lease_lapsed``), and an error message saying which;
- its recording (the path stored when the stream started) is checked and, if the crash left
  the WAV header's sizes stale, repaired (:func:`gateway.store.recording.repair_wav`); a valid
  file is linked (recording ``completed``), a missing (e.g. on another host's disk),
  unreadable or broken one is reported (recording ``failed`` with the reason);
- ``duration_ms`` is the recording's length when there is one (a lower bound: audio still in
  the recorder's in-memory window, at most ~3 s, died with the process), else 0 (unknown).

The transcript and events of the lost process were in its memory. ``node_lost`` is a
presumption: if the process was alive after all (a twin, a database outage longer than the
lease), its own finalise replaces the record with the real outcome, turns and events, the
``node_lost`` event kept (:meth:`~gateway.store.calls.CallsMixin.finalise_call`).

Each finalise writes the call's ``in_progress`` → ``failed`` transition row (source
``gateway``, detail ``{"endReason": "node_lost", "errorCode": "node_lost", "cause"}``).

Calls ``queued``, ``initiated`` or ``ringing`` (never connected), and ``in_progress`` calls no
stream claimed (the carrier answered, ``started_at`` unset), are left to the token-expiry
sweeper (``expire_stale_calls``).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.store.leases import NODE_LOST, RENEWALS, lease_expiry
from gateway.store.models import CallStatus
from gateway.store.recording import WavCheck, repair_wav
from gateway.store.records import CallRecord

if TYPE_CHECKING:
    from gateway.store.repo import Store

__all__ = ["NODE_LOST", "RecoveredCall", "recover_lost_calls", "sweep_lapsed_calls", "finalise_lost", "quiet_s"]

log = logging.getLogger("gateway.store")

#: The least margin (s) past a renewal interval before a run counts as silent.
MIN_MARGIN_S = 2.0


@dataclass(frozen=True, slots=True)
class RecoveredCall:
    """One call finalised as ``node_lost``, and what became of its recording."""

    call_id: str
    recording: WavCheck | None
    recording_error: str | None = None


def quiet_s(call: CallRecord) -> float | None:
    """How long (s) the call's run may go without renewing before it counts as silent.

    One renewal interval of the claimer (``(lease_until - lease_renewed_at) / 3``) plus a
    margin of half an interval, at least :data:`MIN_MARGIN_S`. ``None``: the call has no lease.
    """
    if call.lease_until is None or call.lease_renewed_at is None:
        return None
    interval = max(0.0, (call.lease_until - call.lease_renewed_at).total_seconds()) / RENEWALS
    return interval + max(interval / 2, MIN_MARGIN_S)


def recover_lost_calls(store: Store, node_id: str, *, run_id: str | None = None) -> list[RecoveredCall]:
    """Finalise the calls of ``node_id`` whose run is gone (rule 1 of the module docstring).

    Synchronous (file and database I/O): run it in a thread.

    Args:
        store: the gateway's :class:`~gateway.store.repo.Store`.
        node_id: this node's id (``GATEWAY_NODE_ID``).
        run_id: this process's run id: its own calls are never touched. ``None``: every
            call of ``node_id`` is another run's.

    Returns:
        The calls finalised here, oldest first (a call another finaliser got to first, or
        one renewed within its quiet time, is left out).

    Raises:
        StoreError / SQLAlchemy errors from the database (file errors are reported on the
        call's recording, never raised).
    """
    done = []
    now = store.now()
    for call in store.lost_calls(node_id, run_id=run_id):
        quiet = quiet_s(call)
        if quiet is not None and call.lease_renewed_at is not None:
            silent_s = (now - call.lease_renewed_at).total_seconds()
            if silent_s < quiet:
                continue  # renewed recently: maybe a live twin; decided on a later sweep
            why = f"no lease renewal for {silent_s:.0f} s"
        else:
            why = "no lease recorded"
        message = f"gateway node {node_id!r} stopped during the call ({why}); finalised when it restarted"
        recovered = finalise_lost(store, call, by_node=node_id, cause="restart", message=message)
        if recovered is not None:
            done.append(recovered)
    return done


def sweep_lapsed_calls(
    store: Store, node_id: str, *, lease_s: float, live: Collection[str] = ()
) -> list[RecoveredCall]:
    """Finalise the calls of any node whose lease lapsed (rule 2 of the module docstring).

    Synchronous: run it in a thread. ``lease_s`` is this node's lease (the grace given to a
    row with no lease); ``live`` are the calls this process is serving (never touched, even
    if a database outage kept their renewals from landing).

    Returns:
        The calls finalised here, oldest first.

    Raises:
        StoreError / SQLAlchemy errors from the database.
    """
    done = []
    for call in store.lapsed_calls(default_lease_s=lease_s):
        if call.id in live:
            continue
        expiry = lease_expiry(call, lease_s)
        owner = call.node_id or "unknown"
        if call.lease_until is not None:
            why = f"the lease of gateway node {owner!r} on the call lapsed at {_iso(expiry)}"
        else:
            why = (f"no lease recorded (a call from an older gateway on node {owner!r}): it lapsed at "
                   f"{_iso(expiry)}, its start + max duration + {lease_s:g} s")  # fmt: skip
        message = f"{why}; finalised by node {node_id!r}"
        recovered = finalise_lost(store, call, by_node=node_id, cause="lease_lapsed", message=message)
        if recovered is not None:
            done.append(recovered)
    return done


def finalise_lost(store: Store, call: CallRecord, *, by_node: str, cause: str, message: str) -> RecoveredCall | None:
    """Finalise one lost call as ``failed`` / ``node_lost`` with its recording checked and linked.

    Returns:
        What was done, or ``None`` if another finaliser got to the call first.

    Raises:
        StoreError / SQLAlchemy errors from the database.
    """
    check, error = _check_recording(call, by_node)
    linked = check is not None and check.valid
    duration = check.duration_ms if linked and check is not None else 0
    event = {
        "kind": NODE_LOST,
        "at_ms": duration,
        "data": {
            "nodeId": call.node_id or by_node,
            "finalisedBy": by_node,
            "cause": cause,
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
        error_message=message,
        recording_path=call.recording_path if linked else None,
        recording_status=("completed" if linked else "failed") if call.recording_path else None,
        recording_error=None if linked else error,
        detail={"cause": cause},
    )
    if not finalised:
        return None
    log.warning("call %s finalised as %s: %s (recording: %s)", call.id, NODE_LOST, message,
                "linked" if linked else error)  # fmt: skip
    return RecoveredCall(call.id, check, None if linked else error)


def _check_recording(call: CallRecord, by_node: str) -> tuple[WavCheck | None, str | None]:
    """The call's WAV after repair, or why there is none usable."""
    if not call.recording_path:
        return None, None
    try:
        check = repair_wav(Path(call.recording_path))
    except FileNotFoundError:
        if call.node_id and call.node_id != by_node:
            return None, (f"recording file not found on node {by_node!r} after node loss (it may be on "
                          f"node {call.node_id!r}'s disk, or the stream never started)")  # fmt: skip
        return None, "recording file missing after node loss (the stream may never have started)"
    except OSError as exc:
        return None, f"recording unreadable after node loss: {exc}"
    if not check.valid:
        return check, f"recording invalid after node loss: {check.error}"
    return check, None


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")
