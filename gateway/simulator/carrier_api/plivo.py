"""Simulated Plivo Voice API: the Call resource subset the dialer uses, the answer-URL fetch and
Plivo's signed callbacks (see :mod:`gateway.simulator.carrier_api.base`).

Paths as the ``plivo`` SDK calls them (JSON bodies, HTTP Basic ``auth_id:auth_token``, a
trailing slash on every path):

* ``POST   /v1/Account/{auth_id}/Call/`` — ``from``, ``to``, ``answer_url``,
  ``answer_method``, ``ring_url``, ``hangup_url``, ``ring_timeout``, ``time_limit``; 201 with
  ``{"api_id", "message": "call fired", "request_uuid"}``.
* ``DELETE /v1/Account/{auth_id}/Call/{uuid}/`` — hang up a live (answered) call; 204, or 404.
* ``DELETE /v1/Account/{auth_id}/Request/{uuid}/`` — cancel a call still ringing; 204, or 404.
* ``POST   /v1/Account/{auth_id}/Call/{uuid}/DTMF/`` — ``digits``, ``leg``; 202, or 404.
* ``POST   /v1/Account/{auth_id}/Call/{uuid}/`` — transfer: ``legs=aleg``, ``aleg_url``
  (``aleg_method``); the ``aleg_url`` is fetched (signed, ``Event=Transfer``) and the
  ``<Dial><Number>`` of its XML followed; 202 ``{"message": "call transferred"}``, or 404.

Errors are ``{"api_id", "error"}`` (no numeric code). The call's UUID is its request UUID
(see :mod:`gateway.dialer.plivo`).
Source: https://www.plivo.com/docs/voice/api/call

The callee: ``ring_url`` gets ``Event=Ring``; on answer the **answer URL** is POSTed
(``Event=StartApp``, ``CallStatus=in-progress``) and the ``<Stream>`` of the XML it returns is
followed (its text is the WebSocket URL; ``contentType`` picks μ-law 8 kHz or L16 8 / 16 kHz;
``extraHeaders`` ``k=v,…`` come back in the stream's ``start``); ``hangup_url`` gets
``Event=Hangup`` with the final ``CallStatus`` and ``HangupCause``. Every request is signed with
signature V3 (the SDK's :func:`~plivo.utils.signature_v3.get_signature_v3` over
:func:`~plivo.utils.signature_v3.construct_post_url`), nonce in ``X-Plivo-Signature-V3-Nonce``.
"""

from __future__ import annotations

import base64
import re
import secrets
import urllib.parse
import uuid
import xml.etree.ElementTree as ET

from plivo.utils.signature_v3 import construct_get_url, construct_post_url, get_signature_v3
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.simulator.carrier_api.base import Callback, CarrierSimulator, SimCall, json_object, new_id
from gateway.simulator.carrier_api.scripts import ApiFault
from gateway.simulator.dialects import CallerDialect, PlivoCaller

__all__ = ["PlivoApi", "create", "plivo_signed"]

_NUMBER = re.compile(r"\+?[1-9][0-9]{6,14}\Z")
_DIGITS = re.compile(r"[0-9*#A-Dw W]{1,32}\Z")
_BASE = "/v1/Account/{auth_id}"
#: neutral event → (CallStatus, HangupCause) of the hangup callback
_HANGUP = {
    "completed": ("completed", "NORMAL_CLEARING"),
    "busy": ("busy", "USER_BUSY"),
    "no_answer": ("no-answer", "NO_ANSWER"),
    "failed": ("failed", "NETWORK_OUT_OF_ORDER"),
    "declined": ("busy", "CALL_REJECTED"),
    "canceled": ("cancel", "ORIGINATOR_CANCEL"),
}
_CONTENT_TYPES = {"audio/x-mulaw;rate=8000": ("pcmu", 8000), "audio/x-l16;rate=8000": ("l16", 8000),
                  "audio/x-l16;rate=16000": ("l16", 16000)}


def plivo_error(status: int, message: str) -> JSONResponse:
    """A Plivo REST error response."""
    return JSONResponse({"api_id": str(new_id()), "error": message}, status_code=status)


def plivo_signed(auth_token: str, url: str, params: dict[str, str], method: str = "POST") -> Callback:
    """``params`` sent to ``url`` (a form POST, or with ``method="GET"`` in the query string),
    signed with signature V3 as Plivo signs it."""
    nonce = str(secrets.randbelow(10**20))
    headers = {"X-Plivo-Signature-V3-Nonce": nonce, "User-Agent": "PlivoHTTP"}
    if method.upper() == "GET":
        sep = "&" if urllib.parse.urlsplit(url).query else "?"
        url = url + sep + urllib.parse.urlencode(params)
        base, body = construct_get_url(url, {}).decode("utf-8"), b""
    else:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        base, body = construct_post_url(url, dict(params)).decode("utf-8"), urllib.parse.urlencode(params).encode()
    headers["X-Plivo-Signature-V3"] = get_signature_v3(auth_token.encode(), base, nonce.encode()).decode()
    return Callback(method.upper(), url, headers, body)


class PlivoApi:
    """The simulated Plivo account ``sim.accounts["plivo"]`` (``auth_id``, ``auth_token``)."""

    kind = "plivo"

    def __init__(self, sim: CarrierSimulator) -> None:
        self.sim = sim
        self.auth_id = sim.accounts["plivo"]["auth_id"]
        self.auth_token = sim.accounts["plivo"]["auth_token"]

    def routes(self) -> list[Route]:
        return [
            Route(_BASE + "/Call/", self._create, methods=["POST"]),
            Route(_BASE + "/Call/{uuid}/", self._hang_up, methods=["DELETE"]),
            Route(_BASE + "/Call/{uuid}/", self._transfer, methods=["POST"]),
            Route(_BASE + "/Request/{uuid}/", self._cancel, methods=["DELETE"]),
            Route(_BASE + "/Call/{uuid}/DTMF/", self._dtmf, methods=["POST"]),
        ]

    def _authorised(self, request: Request) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.auth_id}:{self.auth_token}".encode()).decode()
        return request.headers.get("authorization") == expected and request.path_params["auth_id"] == self.auth_id

    async def _create(self, request: Request) -> Response:
        if not self._authorised(request):
            return plivo_error(401, "Authentication failed")
        body = await json_object(request)
        if body is None:
            return plivo_error(400, "invalid JSON body")
        to, from_ = str(body.get("to", "")), str(body.get("from", ""))
        if not _NUMBER.match(to):
            return plivo_error(400, f"invalid destination number: {to[:32]}")
        if not _NUMBER.match(from_):
            return plivo_error(400, f"invalid source number: {from_[:32]}")
        if not str(body.get("answer_url", "")).startswith(("http://", "https://")):
            return plivo_error(400, "answer_url is required and must be an http(s) URL")
        entry = self.sim.script_for(to)
        if isinstance(entry, ApiFault):
            return plivo_error(entry.status, entry.message)
        try:
            ring_timeout = int(body.get("ring_timeout", 120))
            time_limit = int(body.get("time_limit") or 14400)
        except (TypeError, ValueError):
            return plivo_error(400, "ring_timeout and time_limit must be integers")
        fields = {k: str(body.get(k) or "") for k in ("answer_url", "answer_method", "ring_url", "hangup_url")}
        fields["ring_timeout_s"], fields["time_limit_s"] = ring_timeout, time_limit
        call = SimCall("plivo", str(uuid.uuid4()), to, from_, entry, request=fields)
        self.sim.place(call)
        return JSONResponse({"api_id": new_id(), "message": "call fired", "request_uuid": call.carrier_call_id},
                            status_code=201)

    def _live(self, request: Request, *, answered: bool) -> SimCall | None:
        call = self.sim.calls.get(request.path_params["uuid"])
        if call is None or not call.live or (call.status == "answered") != answered:
            return None
        return call

    async def _hang_up(self, request: Request) -> Response:
        if not self._authorised(request):
            return plivo_error(401, "Authentication failed")
        call = self._live(request, answered=True)
        if call is None or not self.sim.hang_up(call.carrier_call_id):
            return plivo_error(404, "not found")
        return Response(status_code=204)

    async def _cancel(self, request: Request) -> Response:
        if not self._authorised(request):
            return plivo_error(401, "Authentication failed")
        call = self._live(request, answered=False)
        if call is None or not self.sim.hang_up(call.carrier_call_id):
            return plivo_error(404, "not found")
        return Response(status_code=204)

    async def _dtmf(self, request: Request) -> Response:
        if not self._authorised(request):
            return plivo_error(401, "Authentication failed")
        body = await json_object(request) or {}
        call = self._live(request, answered=True)
        if call is None:
            return plivo_error(404, "not found")
        digits = str(body.get("digits", ""))
        if not _DIGITS.match(digits) or body.get("leg", "aleg") not in ("aleg", "bleg"):
            return plivo_error(400, "digits must be 1-32 of 0-9 * # A-D w W; leg aleg or bleg")
        call.dtmf.append(digits)
        return JSONResponse({"api_id": new_id(), "message": "digits sent"}, status_code=202)

    async def _transfer(self, request: Request) -> Response:
        if not self._authorised(request):
            return plivo_error(401, "Authentication failed")
        body = await json_object(request) or {}
        call = self._live(request, answered=True)
        if call is None:
            return plivo_error(404, "not found")
        url = str(body.get("aleg_url") or "")
        if body.get("legs") != "aleg" or not url.startswith(("http://", "https://")):
            return plivo_error(400, "only legs=aleg with an aleg_url is simulated")
        method = "GET" if str(body.get("aleg_method", "POST")).upper() == "GET" else "POST"
        cb = plivo_signed(self.auth_token, url, self._params(call, "Transfer", "in-progress"), method)
        r = await self.sim.http.request(cb.method, cb.url, headers=dict(cb.headers), content=cb.body)
        call.callbacks.append(("aleg_url", r.status_code))
        try:
            number = ET.fromstring(r.content).find("./Dial/Number") if r.status_code == 200 else None
        except ET.ParseError:
            number = None
        to = (number.text or "").strip() if number is not None else ""
        if not to or not self.sim.transfer(call.carrier_call_id, to):
            return plivo_error(400, f"the aleg_url answered {r.status_code} without a <Dial><Number>")
        call.request["transfer_caller_id"] = ET.fromstring(r.content).find("./Dial").get("callerId")
        return JSONResponse({"api_id": new_id(), "message": "call transferred"}, status_code=202)

    # ------------------------------------------------------------------ the callee side
    def _params(self, call: SimCall, event: str, status: str) -> dict[str, str]:
        return {"CallUUID": call.carrier_call_id, "RequestUUID": call.carrier_call_id, "From": call.from_,
                "To": call.to, "Direction": "outbound", "Event": event, "CallStatus": status}

    async def stream_target(self, call: SimCall) -> tuple[str, dict[str, str]]:
        """Request the answer URL (signed; ``answer_method`` GET or POST) and follow its ``<Stream>``.

        Raises:
            ValueError: the answer URL did not answer 200 with XML holding a ``<Stream>``.
        """
        method = "GET" if call.request.get("answer_method", "").upper() == "GET" else "POST"
        cb = plivo_signed(self.auth_token, call.request["answer_url"], self._params(call, "StartApp", "in-progress"),
                          method)
        r = await self.sim.http.request(cb.method, cb.url, headers=dict(cb.headers), content=cb.body)
        call.callbacks.append(("answer_url", r.status_code))
        if r.status_code != 200:
            raise ValueError(f"answer URL answered {r.status_code}")
        stream = ET.fromstring(r.content).find("Stream")
        if stream is None or not (stream.text or "").strip().startswith(("ws://", "wss://")):
            raise ValueError("the answer XML has no <Stream> with a WebSocket URL")
        call.request["content_type"] = stream.get("contentType", "audio/x-l16;rate=8000")
        params = {}
        for pair in filter(None, stream.get("extraHeaders", "").split(",")):
            key, _, value = pair.partition("=")
            params[key] = value
        return stream.text.strip(), params

    def dialect(self, call: SimCall) -> CallerDialect:
        ctype = call.request.get("content_type", "audio/x-l16;rate=8000").replace(" ", "")
        if ctype not in _CONTENT_TYPES:
            raise ValueError(f"Plivo streams no {ctype!r}")
        encoding, rate = _CONTENT_TYPES[ctype]
        dialect = PlivoCaller(encoding=encoding, sample_rate=rate)
        dialect.call_id = call.carrier_call_id
        return dialect

    def signed_callback(self, call: SimCall, event: str) -> Callback | None:
        if event == "ringing" and call.request.get("ring_url"):
            return plivo_signed(self.auth_token, call.request["ring_url"], self._params(call, "Ring", "ringing"))
        if event in _HANGUP and call.request.get("hangup_url"):
            status, cause = _HANGUP[event]
            params = self._params(call, "Hangup", status)
            params["HangupCause"] = cause
            seconds = round(call.report.frames_sent * 0.02) if call.report is not None else 0
            params["Duration"] = params["BillDuration"] = str(seconds)
            return plivo_signed(self.auth_token, call.request["hangup_url"], params)
        return None  # Plivo has no "initiated" callback; "answered" is the answer-URL fetch


def create(sim: CarrierSimulator) -> PlivoApi:
    """The simulated Plivo API (see :mod:`gateway.simulator.carrier_api.base`)."""
    return PlivoApi(sim)
