"""Simulated Telnyx Call Control: the ``/v2/calls`` subset the dialer uses, and Telnyx's signed
webhooks (see :mod:`gateway.simulator.carrier_api.base`).

Paths as the ``telnyx`` SDK calls them (JSON, ``Authorization: Bearer <API key>``):

* ``POST /v2/calls`` (dial) — ``connection_id``, ``to``, ``from``, ``stream_url``,
  ``stream_track``, ``stream_bidirectional_mode`` / ``_codec`` / ``_sampling_rate``,
  ``webhook_url``, ``timeout_secs``, ``time_limit_secs``, ``client_state``; 200 with
  ``{"data": {"call_control_id": "v3:…", "call_leg_id", "call_session_id", "is_alive": false,
  "record_type": "call"}}``.
* ``POST /v2/calls/{call_control_id}/actions/hangup`` and ``…/actions/send_dtmf`` (``digits``) —
  ``{"data": {"result": "ok"}}``; on a call that has ended, 422 with code ``90018``.

Errors as Telnyx sends them: ``{"errors": [{"code", "title", "detail"}]}`` — 10009 (bad API
key, 401), 10015 (invalid parameter, 422), 10005 (no such call, 404), 90018 (call ended, 422).
Source: https://developers.telnyx.com/api/call-control/dial-call,
https://developers.telnyx.com/development/api-fundamentals/api-errors

Webhooks: POST ``webhook_url`` with ``{"data": {"record_type": "event", "event_type", "id",
"occurred_at", "payload": {…}}, "meta": {"attempt", "delivered_to"}}``, signed as Telnyx signs:
``telnyx-signature-ed25519`` = base64 Ed25519 over ``"<telnyx-timestamp>|<body>"`` with the
account's private key (``accounts["telnyx"]["private_key"]``: base64 of the 32-byte seed; see
:func:`new_account`). Neutral events: ``initiated`` → ``call.initiated``; ``answered`` →
``call.answered``; the endings → ``call.hangup`` with ``hangup_cause`` ``normal_clearing``,
``user_busy``, ``timeout``, ``unspecified`` (failed), ``call_rejected`` or
``originator_cancel``. Call Control has no ringing event: ``ringing`` re-delivers the
``call.initiated`` webhook (same event id and time, ``meta.attempt`` 2), which is what a Telnyx
retry looks like (so the simulator's duplicate and late ``ringing`` are retries of it).
"""

from __future__ import annotations

import base64
import re
import time
import uuid
from datetime import datetime, timezone

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.simulator.carrier_api.base import Callback, CarrierSimulator, SimCall, json_object
from gateway.simulator.carrier_api.scripts import ApiFault
from gateway.simulator.dialects import CallerDialect, TelnyxCaller

__all__ = ["TelnyxApi", "create", "new_account", "sign", "telnyx_error"]

_E164 = re.compile(r"\+[1-9][0-9]{6,14}\Z")
#: neutral event → (event_type, hangup_cause, sip_hangup_cause)
_EVENTS = {
    "initiated": ("call.initiated", None, None),
    "answered": ("call.answered", None, None),
    "completed": ("call.hangup", "normal_clearing", "200"),
    "busy": ("call.hangup", "user_busy", "486"),
    "no_answer": ("call.hangup", "timeout", "487"),
    "failed": ("call.hangup", "unspecified", "503"),
    "declined": ("call.hangup", "call_rejected", "603"),
    "canceled": ("call.hangup", "originator_cancel", "487"),
}
_ENCODINGS = {"PCMU": "pcmu", "PCMA": "pcma", "L16": "l16"}


def new_account() -> dict[str, str]:
    """A fresh simulated Telnyx account: the dialer's credentials (``api_key``,
    ``connection_id``, ``public_key``) plus the signing ``private_key`` (base64 seed)."""
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes_raw()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {
        "api_key": "KEY" + uuid.uuid4().hex.upper(),
        "connection_id": str(10**18 + uuid.uuid4().int % 10**18),
        "public_key": base64.b64encode(public).decode(),
        "private_key": base64.b64encode(seed).decode(),
    }


def sign(private_key_b64: str, timestamp: str, body: bytes) -> str:
    """``telnyx-signature-ed25519``: base64 Ed25519 signature of ``timestamp|body``."""
    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(private_key_b64))
    return base64.b64encode(key.sign(timestamp.encode() + b"|" + body)).decode()


def telnyx_error(status: int, code: str, title: str, detail: str = "") -> JSONResponse:
    """A Telnyx API error response."""
    error = {"code": str(code), "title": title, "detail": detail or title}
    return JSONResponse({"errors": [error]}, status_code=status)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class TelnyxApi:
    """The simulated Telnyx account ``sim.accounts["telnyx"]`` (:func:`new_account`'s keys)."""

    kind = "telnyx"

    def __init__(self, sim: CarrierSimulator) -> None:
        self.sim = sim
        account = sim.accounts["telnyx"]
        self.api_key, self.connection_id = account["api_key"], account["connection_id"]
        self.private_key = account["private_key"]
        #: carrier call id → its call.initiated webhook data (re-delivered for ``ringing``)
        self._initiated: dict[str, dict] = {}

    def routes(self) -> list[Route]:
        return [
            Route("/v2/calls", self._dial, methods=["POST"]),
            Route("/v2/calls/{call_control_id}/actions/hangup", self._hangup, methods=["POST"]),
            Route("/v2/calls/{call_control_id}/actions/send_dtmf", self._send_dtmf, methods=["POST"]),
            Route("/v2/calls/{call_control_id}/actions/transfer", self._transfer, methods=["POST"]),
        ]

    def _authorised(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    async def _dial(self, request: Request) -> JSONResponse:
        if not self._authorised(request):
            return telnyx_error(401, "10009", "Authentication failed", "The API key is invalid.")
        body = await json_object(request)
        if body is None:
            return telnyx_error(400, "10015", "Bad Request", "The request body is not a JSON object.")
        problem = self._dial_problem(body)
        if problem:
            return telnyx_error(422, "10015", "Invalid parameter", problem)
        entry = self.sim.script_for(body["to"])
        if isinstance(entry, ApiFault):
            return telnyx_error(entry.status, entry.code, entry.message)
        fields = {k: body.get(k) for k in (
            "connection_id", "stream_url", "stream_track", "stream_bidirectional_mode",
            "stream_bidirectional_codec", "stream_bidirectional_sampling_rate", "stream_codec", "webhook_url",
            "webhook_url_method", "time_limit_secs", "client_state")}
        fields["ring_timeout_s"] = int(body.get("timeout_secs") or 30)
        fields["call_leg_id"], fields["call_session_id"] = str(uuid.uuid4()), str(uuid.uuid4())
        fields["dtmf"] = []
        call = SimCall("telnyx", "v3:" + base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="),
                       body["to"], body["from"], entry, request=fields)
        self.sim.place(call)
        data = {"call_control_id": call.carrier_call_id, "call_leg_id": fields["call_leg_id"],
                "call_session_id": fields["call_session_id"], "is_alive": False, "record_type": "call"}
        return JSONResponse({"data": data})

    def _dial_problem(self, body: dict) -> str:
        """What makes a dial request invalid ("" if nothing)."""
        if body.get("connection_id") != self.connection_id:
            return "connection_id is not a Call Control application of this account."
        for key in ("to", "from"):
            if type(body.get(key)) is not str or not _E164.match(body[key]):
                return f"The '{key}' parameter must be an E.164 number."
        timeout = body.get("timeout_secs", 30)
        if type(timeout) is not int or not 5 <= timeout <= 600:
            return "timeout_secs must be 5-600."
        url = body.get("stream_url")
        if url is not None and (type(url) is not str or not url.startswith(("ws://", "wss://"))):
            return "stream_url must be a WebSocket URL."
        state = body.get("client_state")
        if state is not None:
            try:
                base64.b64decode(state, validate=True)
            except ValueError:
                return "client_state must be Base-64 encoded."
        return ""

    def _live_call(self, request: Request) -> SimCall | JSONResponse:
        if not self._authorised(request):
            return telnyx_error(401, "10009", "Authentication failed", "The API key is invalid.")
        call = self.sim.calls.get(request.path_params["call_control_id"])
        if call is None or call.carrier != "telnyx":
            return telnyx_error(404, "10005", "Resource not found", "The call_control_id is unknown.")
        if not call.live:
            return telnyx_error(422, "90018", "Call has already ended",
                                "This call is no longer active and can't receive commands.")
        return call

    async def _hangup(self, request: Request) -> JSONResponse:
        call = self._live_call(request)
        if isinstance(call, JSONResponse):
            return call
        self.sim.hang_up(call.carrier_call_id)
        return JSONResponse({"data": {"result": "ok"}})

    async def _send_dtmf(self, request: Request) -> JSONResponse:
        call = self._live_call(request)
        if isinstance(call, JSONResponse):
            return call
        body = await json_object(request) or {}
        digits = body.get("digits")
        if type(digits) is not str or not re.fullmatch(r"[0-9A-D*#wW]{1,64}", digits):
            return telnyx_error(422, "10015", "Invalid parameter", "digits must be 0-9, A-D, *, #, w or W.")
        call.request["dtmf"].append(digits)
        return JSONResponse({"data": {"result": "ok"}})

    async def _transfer(self, request: Request) -> JSONResponse:
        call = self._live_call(request)
        if isinstance(call, JSONResponse):
            return call
        body = await json_object(request) or {}
        to, from_ = body.get("to"), body.get("from")
        if type(to) is not str or not _E164.match(to) or (from_ is not None and not _E164.match(str(from_))):
            return telnyx_error(422, "10015", "Invalid parameter", "to (and from) must be E.164 numbers.")
        if not self.sim.transfer(call.carrier_call_id, to):
            return telnyx_error(422, "90018", "Call has already ended", "Only an answered call can be transferred.")
        call.request["transfer_from"] = from_
        return JSONResponse({"data": {"result": "ok"}})

    # ------------------------------------------------------------------ the callee side
    async def stream_target(self, call: SimCall) -> tuple[str, dict[str, str]]:
        """The dial's ``stream_url``, and its ``client_state`` decoded (the dialect encodes the
        parameters back into ``start.client_state``, as Telnyx passes the dial's state on)."""
        url = call.request.get("stream_url")
        if not url:
            raise ValueError("the dial request has no stream_url")
        state = call.request.get("client_state")
        params: dict[str, str] = {}
        try:
            decoded = orjson.loads(base64.b64decode(state)) if state else None
        except orjson.JSONDecodeError:
            decoded = None  # a state that is not JSON: the stream's start carries none
        if type(decoded) is dict:
            params = {str(k): str(v) for k, v in decoded.items()}
        return url, params

    def dialect(self, call: SimCall) -> CallerDialect:
        codec = str(call.request.get("stream_bidirectional_codec") or "PCMU")
        encoding = _ENCODINGS.get(codec, "pcmu")
        rate = int(call.request.get("stream_bidirectional_sampling_rate") or 16000) if encoding == "l16" else 8000
        dialect = TelnyxCaller(encoding=encoding, sample_rate=rate)
        dialect.call_control_id = call.carrier_call_id
        dialect.call_session_id = call.request["call_session_id"]
        return dialect

    def signed_callback(self, call: SimCall, event: str) -> Callback | None:
        url = call.request.get("webhook_url")
        if not url:
            return None
        if event == "ringing":  # no such webhook: a re-delivery of call.initiated (a Telnyx retry)
            data, attempt = self._initiated.get(call.carrier_call_id), 2
            if data is None:
                return None
        else:
            data, attempt = self._webhook_data(call, event), 1
            if event == "initiated":
                self._initiated[call.carrier_call_id] = data
        body = orjson.dumps({"data": data, "meta": {"attempt": attempt, "delivered_to": url}})
        stamp = str(int(time.time()))
        headers = {"content-type": "application/json", "user-agent": "telnyx-webhooks",
                   "telnyx-timestamp": stamp, "telnyx-signature-ed25519": sign(self.private_key, stamp, body)}
        return Callback("POST", url, headers, body)

    def _webhook_data(self, call: SimCall, event: str) -> dict:
        event_type, cause, sip = _EVENTS[event]
        now = time.time()
        payload: dict[str, object] = {
            "call_control_id": call.carrier_call_id, "connection_id": self.connection_id,
            "call_leg_id": call.request["call_leg_id"], "call_session_id": call.request["call_session_id"],
            "client_state": call.request.get("client_state"), "from": call.from_, "to": call.to,
            "direction": "outgoing",
        }
        if event == "initiated":
            payload["state"] = "bridging"
        elif event == "answered":
            payload["start_time"] = _iso(now)
        else:
            source = "caller" if call.hung_up_by_api else "callee"
            payload.update({"state": "hangup", "hangup_cause": cause, "hangup_source": source,
                            "sip_hangup_cause": sip})
        return {"record_type": "event", "event_type": event_type, "id": str(uuid.uuid4()),
                "occurred_at": _iso(now), "payload": payload}


def create(sim: CarrierSimulator) -> TelnyxApi:
    """The simulated Telnyx API (see :mod:`gateway.simulator.carrier_api.base`)."""
    return TelnyxApi(sim)
