"""Telnyx Call Control through the official ``telnyx`` SDK (4.x): dial, hang up, DTMF, webhooks.

* **Place**: ``client.calls.dial`` (``POST /v2/calls``) with ``connection_id`` (the account's Call
  Control application), ``to`` / ``from_``, ``stream_url`` and ``stream_track="inbound_track"``
  (the callee's audio), ``stream_bidirectional_mode="rtp"`` (the default ``mp3`` mode would drop
  our audio) with ``stream_bidirectional_codec`` (``PCMU`` / ``PCMA`` / ``L16``; L16 also sets
  ``stream_bidirectional_sampling_rate``), ``webhook_url`` (the gateway's callback route, POST),
  ``timeout_secs`` (ring timeout, 5–600 s), ``time_limit_secs`` (30–14,400 s: a shorter
  ``maxDuration`` is the gateway's own timer) and
  ``client_state`` = base64 of ``{"call_id", **parameters}`` as JSON (Telnyx echoes it in every
  webhook and in the stream's ``start.client_state``). The call's id is the answer's
  ``data.call_control_id``. https://developers.telnyx.com/api/call-control/dial-call
* **Hang up**: ``client.calls.actions.hangup`` (``POST /v2/calls/{id}/actions/hangup``); the error
  code ``90018`` ("Call has already ended", HTTP 422) is success.
* **DTMF**: ``client.calls.actions.send_dtmf`` (``digits`` 0-9 A-D * #).
* **Transfer**: ``client.calls.actions.transfer`` (``POST /v2/calls/{id}/actions/transfer``,
  ``to``, ``from_`` the call's own number): Telnyx dials ``to`` and bridges the callee to it.
  https://developers.telnyx.com/api/call-control/transfer-call
* **Errors**: Telnyx answers ``{"errors": [{"code", "title", "detail"}]}``; the first error's
  ``code`` and ``title: detail`` become the :class:`~gateway.dialer.base.CarrierError`.
  https://developers.telnyx.com/development/api-fundamentals/api-errors
* **Webhooks** are signed with Ed25519: header ``telnyx-signature-ed25519`` (base64, 64 bytes)
  over ``"<telnyx-timestamp>|<raw body>"``, checked with the account's public key (base64, 32
  bytes, from the Mission Control portal), and refused when the timestamp is more than 300 s
  from now. This is the algorithm of the SDK's own ``telnyx.lib.webhook_verification``; that
  module needs PyNaCl (the ``telnyx[webhooks]`` extra), so the check runs on ``cryptography``'s
  Ed25519 with the same message, headers and tolerance.
  https://developers.telnyx.com/docs/messaging/messages/receiving-webhooks
* **Events** (``data.event_type``): ``call.initiated`` → ``initiated``, ``call.answered`` →
  ``in_progress``, ``call.hangup`` → by ``payload.hangup_cause`` (:data:`HANGUP_CAUSES`);
  ``streaming.*``, ``call.machine.*`` and others report no state change. Call Control sends no
  ringing event. The order key is ``data.occurred_at``.

The SDK blocks (httpx) and runs on the dialer's threads; one client per request (the account's
credentials differ per call), with the SDK's own retries off (a retried dial could place a
second call) and its HTTP timeout set to the dialer's ``timeout_s``.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping

import orjson
import telnyx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.dialer.base import (
    DEFAULT_TIMEOUT_S,
    CallbackEvent,
    CallStatus,
    CarrierError,
    Credentials,
    OutboundRequest,
    PlacedCall,
    SdkDialer,
    Transfer,
    check_digits,
    iso_timestamp,
    lower_headers,
    require_credentials,
)

__all__ = ["TelnyxDialer", "create", "HANGUP_CAUSES", "ALREADY_ENDED", "SIGNATURE_TOLERANCE_S"]

#: Telnyx's error code for a command on a call that has ended.
ALREADY_ENDED = "90018"
#: Largest difference (s) between ``telnyx-timestamp`` and now that is accepted (as the SDK).
SIGNATURE_TOLERANCE_S = 300
#: ``call.hangup`` ``hangup_cause`` → lifecycle state (anything else: ``failed``).
HANGUP_CAUSES: dict[str, CallStatus] = {
    "normal_clearing": "completed",
    "time_limit": "completed",
    "user_busy": "busy",
    "timeout": "no_answer",
    "no_answer": "no_answer",
    "call_rejected": "declined",
    "originator_cancel": "canceled",
    "not_found": "failed",
    "unspecified": "failed",
}
_EVENTS: dict[str, CallStatus] = {"call.initiated": "initiated", "call.answered": "in_progress"}
_CODECS = {"PCMU": "PCMU", "PCMA": "PCMA", "L16": "L16"}
_L16_RATES = (8000, 16000, 22050, 24000, 48000)
_DETAIL_KEYS = ("hangup_cause", "hangup_source", "sip_hangup_cause", "call_leg_id", "call_session_id",
                "failure_reason", "stream_id")


class TelnyxDialer(SdkDialer):
    """Telnyx Call Control dialer (see the module docstring).

    Credentials: ``api_key`` (API v2 key), ``connection_id`` (Call Control application id) and
    ``public_key`` (webhook signing key, base64).

    Args:
        api_base_url: origin to use instead of ``https://api.telnyx.com`` (the SDK gets
            ``<origin>/v2``), e.g. the carrier simulator.
        timeout_s: limit on each request (s).
        clock: Unix time (s) for the signature's timestamp check (tests inject one).
    """

    kind = "telnyx"

    def __init__(self, *, api_base_url: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(api_base_url=api_base_url, timeout_s=timeout_s)
        self._base_url = f"{self.api_base_url}/v2" if self.api_base_url else None
        self._clock = clock

    def _client(self, creds: Credentials) -> telnyx.Telnyx:
        return telnyx.Telnyx(api_key=creds["api_key"], base_url=self._base_url, timeout=self.timeout_s,
                             max_retries=0)

    def _place_sync(self, req: OutboundRequest, creds: Credentials) -> PlacedCall:
        codec = _CODECS.get(req.codec.upper(), "PCMU")
        stream: dict[str, object] = {"stream_bidirectional_codec": codec, "stream_codec": codec}
        if codec == "L16":
            stream["stream_bidirectional_sampling_rate"] = req.sample_rate if req.sample_rate in _L16_RATES else 16000
        state = base64.b64encode(orjson.dumps({"call_id": req.call_id, **req.parameters})).decode()
        with self._client(creds) as client:
            answer = client.calls.dial(
                connection_id=creds["connection_id"],
                to=req.to,
                from_=req.from_,
                stream_url=req.stream_url,
                stream_track="inbound_track",
                stream_bidirectional_mode="rtp",
                webhook_url=req.status_callback_url,
                webhook_url_method="POST",
                timeout_secs=min(max(req.ring_timeout_s, 5), 600),
                time_limit_secs=min(max(req.max_duration_s, 30), 14400),
                client_state=state,
                **stream,
            )
        data = answer.data
        if data is None or not data.call_control_id:
            raise CarrierError("bad_response", "Telnyx dial answer has no data.call_control_id")
        return PlacedCall(data.call_control_id)

    def _hang_up_sync(self, carrier_call_id: str, creds: Credentials) -> None:
        try:
            with self._client(creds) as client:
                client.calls.actions.hangup(carrier_call_id)
        except telnyx.APIStatusError as exc:
            error = self._map_error(exc)
            if error.code != ALREADY_ENDED:
                raise error from exc

    def _dtmf_sync(self, carrier_call_id: str, digits: str, creds: Credentials) -> None:
        with self._client(creds) as client:
            client.calls.actions.send_dtmf(carrier_call_id, digits=digits)

    async def send_dtmf(self, carrier_call_id: str, digits: str, creds: Credentials) -> None:
        """Play ``digits`` (0-9 A-D * #) to the callee. Raises ValueError for other digits,
        :class:`CarrierError` for the carrier's refusal."""
        check_digits(digits)
        require_credentials(self.kind, creds)
        await self._run(self._dtmf_sync, carrier_call_id, digits, creds)

    def _transfer_sync(self, carrier_call_id: str, transfer: Transfer, creds: Credentials) -> None:
        extra = {"from_": transfer.caller_id} if transfer.caller_id else {}
        with self._client(creds) as client:
            client.calls.actions.transfer(carrier_call_id, to=transfer.to, **extra)

    def _map_error(self, exc: Exception) -> CarrierError:
        if isinstance(exc, CarrierError):
            return exc
        if isinstance(exc, telnyx.APITimeoutError):
            return CarrierError("timeout", f"Telnyx API gave no answer in {self.timeout_s:g} s")
        if isinstance(exc, telnyx.APIConnectionError):
            return CarrierError("network", f"Telnyx API unreachable: {exc}"[:300])
        if isinstance(exc, telnyx.APIStatusError):
            return _status_error(exc)
        if isinstance(exc, telnyx.APIResponseValidationError):
            return CarrierError("bad_response", "Telnyx answer does not match its schema", exc.status_code)
        return CarrierError("bad_response", f"{type(exc).__name__}: {exc}"[:300])

    def verify_callback(self, method: str, url: str, headers: Mapping[str, str], body: bytes,
                        creds: Credentials) -> bool:
        """Whether ``body`` is signed by the account's Telnyx key (Ed25519 over
        ``timestamp|body``, timestamp within 300 s). Never raises."""
        h = lower_headers(headers)
        signature, stamp, key = h.get("telnyx-signature-ed25519"), h.get("telnyx-timestamp"), creds.get("public_key")
        if not signature or not stamp or not key:
            return False
        try:
            if abs(self._clock() - int(stamp)) > SIGNATURE_TOLERANCE_S:
                return False
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key, validate=True))
            public.verify(base64.b64decode(signature, validate=True), stamp.encode() + b"|" + body)
        except (ValueError, binascii.Error, InvalidSignature):
            return False
        return True

    def parse_callback(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> CallbackEvent:
        """Read a Telnyx webhook (``{"data": {"event_type", "occurred_at", "payload"}}``).

        Raises:
            ValueError: not JSON, or no ``data.event_type`` / ``payload.call_control_id``.
        """
        try:
            msg = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ValueError("Telnyx webhook body is not JSON") from None
        data = msg.get("data") if type(msg) is dict else None
        payload = data.get("payload") if type(data) is dict else None
        event = data.get("event_type") if type(data) is dict else None
        if type(payload) is not dict or type(event) is not str:
            raise ValueError("Telnyx webhook has no data.event_type / data.payload")
        call_id = payload.get("call_control_id")
        if type(call_id) is not str or not call_id:
            raise ValueError("Telnyx webhook has no payload.call_control_id")
        status = _EVENTS.get(event)
        if event == "call.hangup":
            status = HANGUP_CAUSES.get(str(payload.get("hangup_cause")), "failed")
        at = iso_timestamp(data.get("occurred_at"))
        detail = {k: str(payload[k]) for k in _DETAIL_KEYS if payload.get(k) not in (None, "")}
        if type(data.get("id")) is str:
            detail["event_id"] = data["id"]
        gateway_call = _client_state_call_id(payload.get("client_state"))
        if gateway_call:
            detail["gatewayCallId"] = gateway_call
        return CallbackEvent(call_id, status, event, at=at, sequence=at, detail=detail)


def _client_state_call_id(state: object) -> str | None:
    """The gateway's call id in a webhook's ``client_state`` (base64 JSON ``{"call_id", …}``,
    set at dial), or ``None``. Telnyx signs only the body, so this is what ties a webhook to
    the call its URL names."""
    if type(state) is not str or not state:
        return None
    try:
        decoded = orjson.loads(base64.b64decode(state, validate=True))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        return None
    value = decoded.get("call_id") if type(decoded) is dict else None
    return value if type(value) is str else None


def _status_error(exc: telnyx.APIStatusError) -> CarrierError:
    """``{"errors": [{"code", "title", "detail"}]}`` → the first error's code and text."""
    body = exc.body
    errors = body.get("errors") if isinstance(body, dict) else None
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    code = str(first.get("code") or exc.status_code)
    parts = [str(first[k]) for k in ("title", "detail") if first.get(k)]
    text = ": ".join(dict.fromkeys(parts)) or f"HTTP {exc.status_code}"
    return CarrierError(code, text[:300], exc.status_code)


def create(*, api_base_url: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> TelnyxDialer:
    """The Telnyx dialer (see :func:`gateway.dialer.base.make_dialer`)."""
    return TelnyxDialer(api_base_url=api_base_url, timeout_s=timeout_s)
