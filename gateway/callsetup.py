"""Building one served call: its session, its hooks into the store, and its policies.

:func:`build_session` makes the :class:`~gateway.session.CallSession` for an admitted media
stream (:mod:`gateway.streams`): the carrier adapter, the model bridge, the VAD, the recorder, the
call's policies (timers; the voicemail policy of an outbound call that asked for detection)
and the hooks that write the record:

* ``on_started``: the carrier's ids and numbers from its ``start`` message (an outbound call
  keeps the carrier id its placement returned: hang-up and callbacks key on it; the stream's
  own id is in the ``started`` event);
* ``on_finished``: for a call placed through a carrier account that the gateway ended (not the
  carrier's ``stop``, not a transfer the API recorded), first the hang-up through the carrier's
  REST API (bounded by :data:`HANG_UP_LIMIT_S`; its result is a ``carrier_hangup`` event), then
  the record, retried, spooled to disk if the database will not take it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.carriers import events as ev
from gateway.carriers.registry import make_adapter
from gateway.config import Settings
from gateway.dialer.service import CARRIER_ENDED_REASONS
from gateway.session import CallHooks, CallOutcome, CallPolicy, CallSession
from gateway.session.common import Transport
from gateway.store import CallConfig, CallRecord, CallRecorder
from gateway.store.spool import finalise_with_retry
from gateway.tenants import SecretGrants
from gateway.vadrun import VadFactory

if TYPE_CHECKING:
    from gateway.app import Services

__all__ = ["build_session", "recording_path", "barge_in_mode_of"]

log = logging.getLogger("gateway.app")



def recording_path(settings: Settings, call_id: str) -> Path:
    """Where a call's two-channel WAV goes: ``<recordings_dir>/<call_id>.wav``, made absolute
    (the start-up recovery of a restarted node finds it whatever its working directory)."""
    return (settings.recordings_dir / f"{call_id}.wav").absolute()


async def _carrier_hang_up(services: Services, call: CallRecord, outcome: CallOutcome,
                           stream_call_id: str | None) -> None:
    """Hang an outbound call up through its carrier when the gateway ended it (bounded by the
    dialer's limit + 1 s); the result goes on the record as a ``carrier_hangup`` event. The
    placement's carrier id is used, else the one the stream's ``start`` gave."""
    if services.outbound is None or outcome.end_reason in CARRIER_ENDED_REASONS:
        return
    fresh = await asyncio.to_thread(services.store.get_call, call.id)  # its carrier id from the placement
    if fresh is not None and fresh.transferred_to:  # the carrier's call went on to another party
        return
    fallback = None if fresh is not None and fresh.carrier_call_id else stream_call_id
    limit_s = services.settings.dialer_timeout_s + 1.0
    try:
        result = await asyncio.wait_for(services.outbound.hang_up(fresh or call, carrier_call_id=fallback), limit_s)
    except TimeoutError:
        result = {"ok": False, "code": "timeout", "message": f"no answer in {limit_s:g} s"}
    outcome.events.append({"kind": "carrier_hangup", "at_ms": outcome.duration_ms, "data": result})


def _hooks(services: Services, call: CallRecord, carrier: str) -> CallHooks:
    settings, store, call_id = services.settings, services.store, call.id
    placed = call.direction == "outbound" and bool(call.carrier_account_id)

    def open_recorder(sample_rate: int) -> CallRecorder:
        """Raises OSError (a full disk, a bad directory): the session records without it."""
        path = recording_path(settings, call_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        return CallRecorder(path, sample_rate=sample_rate)

    stream_call_id: list[str | None] = [None]

    async def on_started(started: ev.Started) -> None:
        stream_call_id[0] = started.call_id
        await asyncio.to_thread(
            store.update_call_details, call_id, carrier_call_id=None if placed else started.call_id,
            stream_id=started.stream_id, from_=started.from_number, to=started.to_number,
        )  # fmt: skip

    async def on_finished(outcome: CallOutcome) -> None:
        services.metrics.call_finished(carrier, outcome)
        if placed:
            try:
                await _carrier_hang_up(services, call, outcome, stream_call_id[0])
            except Exception:  # noqa: BLE001 - the record matters more than the hang-up
                log.warning("call %s: carrier hang-up failed", call_id, exc_info=True)
        fields = dict(
            status=outcome.status, end_reason=outcome.end_reason, duration_ms=outcome.duration_ms,
            transcript=outcome.transcript, events=outcome.events, error_code=outcome.error_code,
            error_message=outcome.error_message, recording_path=outcome.recording_path,
            recording_status=outcome.recording_status, recording_error=outcome.recording_error,
            metrics=outcome.metrics,
        )  # fmt: skip
        if getattr(outcome, "voicemail", None) is not None:
            fields["voicemail"] = outcome.voicemail
        try:  # retried on database errors, else spooled to disk and replayed at the next start
            await asyncio.to_thread(finalise_with_retry, store.finalise_call, settings.spool_path, call_id, fields)
        except Exception:  # noqa: BLE001 - neither the database nor the spool took it
            log.exception("could not finalise call %s", call_id)

    return CallHooks(on_started=on_started, open_recorder=open_recorder, on_finished=on_finished)


def barge_in_mode_of(config: CallConfig, default: str) -> str:
    """The barge-in mode a call runs with: its own (``config.barge_in_mode``), else the
    operator's ``default`` (``GATEWAY_BARGE_IN_MODE``); ``off`` when it is not interruptible."""
    if not config.interruptible:
        return "off"
    return config.barge_in_mode or default


def build_session(services: Services, call: CallRecord, carrier: str, transport: Transport) -> CallSession:
    """The session of an admitted stream for ``call`` (its stored config and tenant), on the
    listener's ``transport`` (:class:`gateway.transport.StarletteTransport`,
    :class:`gateway.picows_listener.PicowsTransport`)."""
    settings = services.settings
    config = call.call_config()
    # secrets resolve per call, only within the call's tenant's grant (gateway.tenants)
    agent = config.agent_config(
        secrets=SecretGrants.from_settings(settings).resolve(call.tenant, config.secret_refs, os.environ)
    )
    barge_in_mode = barge_in_mode_of(config, settings.barge_in_mode)
    if barge_in_mode == "off" and agent.interruptible:  # nor does the model cut itself on caller speech
        agent = dataclasses.replace(agent, interruptible=False)
    extra = {}
    if getattr(config, "voicemail", None):
        from gateway.session.voicemail import VoicemailConfig

        voicemail = VoicemailConfig.from_mapping(config.voicemail)
        if voicemail.detect:
            extra["voicemail"] = voicemail
    return CallSession(
        call_id=call.id,
        adapter=make_adapter(carrier),
        transport=transport,
        bridge_factory=services.bridge_for,
        config=agent,
        policy=CallPolicy(
            max_duration_s=config.max_duration_s,
            inactivity_timeout_s=config.inactivity_timeout_s,
            inactivity_action=config.inactivity_action,
            recording_enabled=config.recording_enabled,
            barge_in_mode=barge_in_mode,
            barge_in_commit_ms=config.barge_in_commit_ms,
            barge_in_resume_gap_ms=settings.barge_in_resume_gap_ms,
            barge_in_cues=settings.barge_in_cues == "on",
        ),
        vad=lambda carrier_rate: services.vad.create(VadFactory.rate_for(carrier_rate)),
        hooks=_hooks(services, call, carrier),
        model_chunk_ms=settings.model_chunk_ms,
        carrier_message_ms=settings.carrier_message_ms,
        engine=services.media_engine,
        echo_cancel=settings.echo_cancel == "on",
        **extra,
    )
