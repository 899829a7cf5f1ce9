"""Simulated Twilio Programmable Voice: the Calls resource subset the dialer uses, and Twilio's
status callbacks (see :mod:`gateway.simulator.carrier_api.base`).

Paths as the ``twilio`` SDK calls them (API 2010-04-01, form-encoded, HTTP Basic
``AccountSid:AuthToken``):

* ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` — ``To``, ``From``, ``Twiml`` (or
  ``Url``), ``StatusCallback``, ``StatusCallbackMethod``, ``StatusCallbackEvent`` (repeated),
  ``Timeout``, ``TimeLimit``; 201 with the call resource (``sid`` ``CA…``, ``status: queued``).
* ``GET  …/Calls/{CallSid}.json`` — the call resource.
* ``POST …/Calls/{CallSid}.json`` with ``Status=completed|canceled`` — hang-up; with ``Twiml``
  holding ``<Dial><Number>`` — a transfer of the answered call (its stream ends).

Errors in Twilio's format ``{"code", "message", "more_info", "status"}``: 20003 (bad
credentials, 401), 21211 (invalid ``To``), 21212 (invalid ``From``), 21205 (no ``Url`` /
``Twiml``), 20404 (no such call, 404), 21220 (call not in progress, 400).
Source: https://www.twilio.com/docs/voice/api/call-resource, https://www.twilio.com/docs/api/errors

Callbacks: form POSTs to ``StatusCallback`` signed in ``X-Twilio-Signature`` (the SDK's
:meth:`RequestValidator.compute_signature`, HMAC-SHA1 with the auth token); non-final events
only when subscribed in ``StatusCallbackEvent``, final statuses always. A declined call is
``busy`` with ``SipResponseCode=603``. The media stream's WebSocket upgrade is signed the same
way (the ``wss://`` URL, no parameters).
"""

from __future__ import annotations

import base64
import email.utils
import re
import urllib.parse
import xml.etree.ElementTree as ET

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from gateway.simulator.carrier_api.base import Callback, CarrierSimulator, Form, SimCall, new_id
from gateway.simulator.carrier_api.scripts import ApiFault
from gateway.simulator.dialects import CallerDialect, TwilioCaller

__all__ = ["TwilioApi", "create"]

_E164 = re.compile(r"\+[1-9][0-9]{6,14}\Z")
_BASE = "/2010-04-01/Accounts/{account_sid}"
#: neutral event → (Twilio CallStatus, the StatusCallbackEvent that subscribes to it or None = always)
_STATUS = {
    "initiated": ("initiated", "initiated"),
    "ringing": ("ringing", "ringing"),
    "answered": ("in-progress", "answered"),
    "completed": ("completed", None),
    "busy": ("busy", None),
    "no_answer": ("no-answer", None),
    "failed": ("failed", None),
    "declined": ("busy", None),
    "canceled": ("canceled", None),
}


def twilio_error(status: int, code: int | str, message: str) -> JSONResponse:
    """A Twilio REST error response."""
    return JSONResponse({"code": int(code), "message": message,
                         "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status},
                        status_code=status)


class TwilioApi:
    """The simulated Twilio account ``sim.accounts["twilio"]`` (``account_sid``, ``auth_token``)."""

    kind = "twilio"

    def __init__(self, sim: CarrierSimulator) -> None:
        self.sim = sim
        self.account_sid = sim.accounts["twilio"]["account_sid"]
        self.auth_token = sim.accounts["twilio"]["auth_token"]

    def routes(self) -> list[Route]:
        return [
            Route(_BASE + "/Calls.json", self._create, methods=["POST"]),
            Route(_BASE + "/Calls/{call_sid}.json", self._fetch, methods=["GET"]),
            Route(_BASE + "/Calls/{call_sid}.json", self._update, methods=["POST"]),
        ]

    def _authorised(self, request: Request) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return (request.headers.get("authorization") == expected
                and request.path_params["account_sid"] == self.account_sid)

    def _resource(self, call: SimCall) -> dict:
        status = {"queued": "queued", "answered": "in-progress", "no_answer": "no-answer",
                  "declined": "busy"}.get(call.status, call.status)
        now = email.utils.formatdate(usegmt=True)
        return {
            "sid": call.carrier_call_id, "account_sid": self.account_sid, "to": call.to,
            "from": call.from_, "status": status, "direction": "outbound-api",
            "api_version": "2010-04-01", "date_created": now, "date_updated": now,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{call.carrier_call_id}.json",
        }

    async def _create(self, request: Request) -> JSONResponse:
        if not self._authorised(request):
            return twilio_error(401, 20003, "Authenticate")
        form = await Form.read(request)
        to, from_ = form.get("To", ""), form.get("From", "")
        if not _E164.match(to):
            return twilio_error(400, 21211, f"Invalid 'To' Phone Number: {to[:32]}")
        if not _E164.match(from_):
            return twilio_error(400, 21212, f"Invalid 'From' Phone Number: {from_[:32]}")
        if not form.get("Twiml") and not form.get("Url"):
            return twilio_error(400, 21205, "Url parameter is required.")
        try:
            ring_timeout, time_limit = int(form.get("Timeout", "60")), int(form.get("TimeLimit", "14400"))
        except ValueError:
            return twilio_error(400, 21216, "Timeout and TimeLimit must be integers")
        entry = self.sim.script_for(to)
        if isinstance(entry, ApiFault):
            return twilio_error(entry.status, entry.code, entry.message)
        fields = {
            "twiml": form.get("Twiml", ""), "status_callback": form.get("StatusCallback", ""),
            "status_callback_method": form.get("StatusCallbackMethod", "POST"),
            "events": form.getlist("StatusCallbackEvent"),
            "ring_timeout_s": ring_timeout, "time_limit_s": time_limit,
        }
        call = SimCall("twilio", new_id("CA"), to, from_, entry, request=fields)
        self.sim.place(call)
        return JSONResponse(self._resource(call), status_code=201)

    async def _fetch(self, request: Request) -> JSONResponse:
        if not self._authorised(request):
            return twilio_error(401, 20003, "Authenticate")
        call = self.sim.calls.get(request.path_params["call_sid"])
        if call is None:
            return twilio_error(404, 20404, f"The requested resource {request.url.path} was not found")
        return JSONResponse(self._resource(call))

    async def _update(self, request: Request) -> JSONResponse:
        if not self._authorised(request):
            return twilio_error(401, 20003, "Authenticate")
        form = await Form.read(request)
        call = self.sim.calls.get(request.path_params["call_sid"])
        if call is None:
            return twilio_error(404, 20404, f"The requested resource {request.url.path} was not found")
        if form.get("Twiml"):
            return self._redirect(call, form.get("Twiml"))
        if form.get("Status") not in ("completed", "canceled"):
            return twilio_error(400, 21218, "Invalid Status; only completed and canceled are supported here")
        if not self.sim.hang_up(call.carrier_call_id):
            return twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
        return JSONResponse(self._resource(call))

    def _redirect(self, call: SimCall, twiml: str) -> JSONResponse:
        """New TwiML for a live call: only ``<Dial><Number>`` (a transfer) is simulated."""
        try:
            number = ET.fromstring(twiml).find("./Dial/Number")
        except ET.ParseError:
            number = None
        to = (number.text or "").strip() if number is not None else ""
        if not _E164.match(to):
            return twilio_error(400, 21218, "Invalid Twiml; only <Dial><Number>E.164</Number></Dial> is simulated")
        if not self.sim.transfer(call.carrier_call_id, to):
            return twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
        return JSONResponse(self._resource(call))

    # ------------------------------------------------------------------ the callee side
    async def stream_target(self, call: SimCall) -> tuple[str, dict[str, str]]:
        """The ``<Connect><Stream url>`` of the TwiML given at create, with its ``<Parameter>``s."""
        root = ET.fromstring(call.request["twiml"])
        stream = root.find("./Connect/Stream")
        if stream is None or not stream.get("url"):
            raise ValueError("the call's TwiML has no <Connect><Stream url>")
        params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        return stream.get("url"), params

    def stream_headers(self, call: SimCall, url: str) -> dict[str, str]:
        """Twilio signs the media WebSocket's upgrade: ``X-Twilio-Signature`` over the stream URL
        with no parameters (https://www.twilio.com/docs/usage/security#validating-requests)."""
        return {"X-Twilio-Signature": RequestValidator(self.auth_token).compute_signature(url, {})}

    def dialect(self, call: SimCall) -> CallerDialect:
        dialect = TwilioCaller()
        dialect.call_sid = call.carrier_call_id
        return dialect

    def signed_callback(self, call: SimCall, event: str) -> Callback | None:
        url = call.request.get("status_callback")
        status, subscription = _STATUS[event]
        if not url or (subscription is not None and subscription not in call.request["events"]):
            return None
        params = {
            "AccountSid": self.account_sid, "ApiVersion": "2010-04-01", "CallSid": call.carrier_call_id,
            "CallStatus": status, "Called": call.to, "Caller": call.from_, "Direction": "outbound-api",
            "From": call.from_, "To": call.to, "CallbackSource": "call-progress-events",
            "SequenceNumber": str(call.next_sequence()), "Timestamp": email.utils.formatdate(usegmt=True),
        }
        if event == "declined":
            params["SipResponseCode"] = "603"
        if event == "completed" and call.report is not None:
            params["CallDuration"] = str(round(call.report.frames_sent * 0.02))
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature,
                   "User-Agent": "TwilioProxy/1.1"}
        return Callback("POST", url, headers, urllib.parse.urlencode(params).encode())


def create(sim: CarrierSimulator) -> TwilioApi:
    """The simulated Twilio API (see :mod:`gateway.simulator.carrier_api.base`)."""
    return TwilioApi(sim)
