"""Simulated Vonage Voice API: the ``/v1/calls`` subset the dialer uses, and Vonage's signed event
webhooks (see :mod:`gateway.simulator.carrier_api.base`).

Paths as the ``vonage`` SDK calls them (JSON, ``Authorization: Bearer <application JWT>``, RS256
with the application's private key, checked here with its public key and ``application_id``):

* ``POST /v1/calls`` — ``to: [{"type": "phone", "number"}]``, ``from: {"type": "phone",
  "number"}`` (E.164 without ``+``), ``ncco`` (a ``connect`` action to a ``websocket`` endpoint
  with ``uri``, ``content-type`` ``audio/l16;rate=…`` and ``headers``) or ``answer_url``,
  ``event_url: [url]``, ``event_method``, ``ringing_timer``, ``length_timer``; 201 with
  ``{"uuid", "status": "started", "direction": "outbound", "conversation_uuid"}``.
* ``PUT /v1/calls/{uuid}`` ``{"action": "hangup"}`` — 204; 404 when the call is not active.
* ``PUT /v1/calls/{uuid}/dtmf`` ``{"digits"}`` — 200 ``{"message": "DTMF sent", "uuid"}``.

Errors are RFC 7807 problem JSON: ``{"type": "https://developer.nexmo.com/api-errors#<code>",
"title", "detail", "instance"}`` (``unauthorized`` 401, ``validation`` 400, ``not-found`` 404;
an :class:`ApiFault`'s ``code`` becomes the fragment).
Source: https://developer.vonage.com/en/api/voice, https://developer.vonage.com/en/api-errors

Event webhooks: POST ``event_url[0]`` with JSON ``{"uuid", "conversation_uuid", "status",
"direction": "outbound", "from", "to", "timestamp", …}``, signed as Vonage signs them:
``Authorization: Bearer <JWT>``, HS256 with the account's ``signature_secret``, claims ``iat``,
``jti``, ``iss: "Vonage"``, ``application_id`` and ``payload_hash`` (SHA-256 hex of the body).
Neutral events: initiated → ``started``, ringing → ``ringing``, answered → ``answered``,
completed → ``completed`` (with ``duration``, ``start_time``, ``end_time``), busy → ``busy``,
no_answer → ``timeout``, failed → ``failed``, declined → ``rejected``, canceled →
``cancelled``.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from datetime import datetime, timezone

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.simulator.carrier_api.base import Callback, CarrierSimulator, SimCall, json_object
from gateway.simulator.carrier_api.scripts import ApiFault
from gateway.simulator.dialects import CallerDialect, VonageCaller

__all__ = ["VonageApi", "create", "new_account", "signed_token", "vonage_error"]

_NUMBER = re.compile(r"[1-9][0-9]{6,14}\Z")
_CONTENT_TYPE = re.compile(r"audio/l16;rate=(8000|16000|24000)\Z")
_STATUS = {
    "initiated": "started", "ringing": "ringing", "answered": "answered", "completed": "completed",
    "busy": "busy", "no_answer": "timeout", "failed": "failed", "declined": "rejected", "canceled": "cancelled",
}


def new_account() -> dict[str, str]:
    """A fresh simulated Vonage application: the dialer's credentials (``application_id``,
    ``private_key`` PKCS#8 PEM, ``signature_secret``) plus its ``public_key`` (PEM, to check
    the SDK's JWTs) and ``api_key``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "application_id": str(uuid.uuid4()),
        "private_key": key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode(),
        "public_key": key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode(),
        "signature_secret": uuid.uuid4().hex + uuid.uuid4().hex,
        "api_key": uuid.uuid4().hex[:8],
    }


def signed_token(secret: str, body: bytes, *, application_id: str, api_key: str, iat: int | None = None) -> str:
    """The Bearer JWT of a signed Vonage webhook: HS256 with ``secret``, ``payload_hash`` of ``body``."""
    claims = {"iat": int(time.time()) if iat is None else iat, "jti": str(uuid.uuid4()), "iss": "Vonage",
              "payload_hash": hashlib.sha256(body).hexdigest(), "api_key": api_key, "application_id": application_id}
    return jwt.encode(claims, secret, algorithm="HS256")


def vonage_error(status: int, code: str, title: str, detail: str = "") -> JSONResponse:
    """A Vonage problem-JSON error response."""
    return JSONResponse({"type": f"https://developer.nexmo.com/api-errors#{code}", "title": title,
                         "detail": detail or title, "instance": str(uuid.uuid4())}, status_code=status)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class VonageApi:
    """The simulated Vonage application ``sim.accounts["vonage"]`` (:func:`new_account`'s keys)."""

    kind = "vonage"

    def __init__(self, sim: CarrierSimulator) -> None:
        self.sim = sim
        account = sim.accounts["vonage"]
        self.application_id, self.public_key = account["application_id"], account["public_key"]
        self.signature_secret = account["signature_secret"]
        self.api_key = account.get("api_key", "simkey")

    def routes(self) -> list[Route]:
        return [
            Route("/v1/calls", self._create, methods=["POST"]),
            Route("/v1/calls/{uuid}", self._modify, methods=["PUT"]),
            Route("/v1/calls/{uuid}/dtmf", self._dtmf, methods=["PUT"]),
        ]

    def _authorised(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or not token:
            return False
        try:
            claims = jwt.decode(token, self.public_key, algorithms=["RS256"])
        except jwt.PyJWTError:
            return False
        return claims.get("application_id") == self.application_id

    async def _create(self, request: Request) -> Response:
        if not self._authorised(request):
            return vonage_error(401, "unauthorized", "Unauthorized", "You did not provide correct credentials.")
        body = await json_object(request)
        fields = self._read_create(body) if body is not None else "The request body is not a JSON object."
        if isinstance(fields, str):
            return vonage_error(400, "validation", "Bad Request", fields)
        to = "+" + fields["to"]
        entry = self.sim.script_for(to)
        if isinstance(entry, ApiFault):
            return vonage_error(entry.status, entry.code, entry.message)
        call = SimCall("vonage", str(uuid.uuid4()), to, "+" + fields["from"], entry, request=fields)
        self.sim.place(call)
        return JSONResponse({"uuid": call.carrier_call_id, "status": "started", "direction": "outbound",
                             "conversation_uuid": fields["conversation_uuid"]}, status_code=201)

    def _read_create(self, body: dict) -> dict | str:
        """The create request's fields, or what makes it invalid."""
        to, from_ = body.get("to"), body.get("from")
        if not (type(to) is list and len(to) == 1 and type(to[0]) is dict and to[0].get("type") == "phone"
                and _NUMBER.match(str(to[0].get("number", "")))):
            return "to must be one phone endpoint with a number in E.164 without '+'."
        if not (type(from_) is dict and _NUMBER.match(str(from_.get("number", "")))):
            return "from must be a phone endpoint with a number in E.164 without '+'."
        ncco, event_url = body.get("ncco"), body.get("event_url")
        if type(ncco) is not list or not ncco:
            return "ncco must be a non-empty list of actions (answer_url is not simulated)."
        if not (type(event_url) is list and event_url and type(event_url[0]) is str):
            return "event_url must be a list of URLs."
        ringing = body.get("ringing_timer", 60)
        if type(ringing) is not int or not 1 <= ringing <= 120:
            return "ringing_timer must be 1-120."
        endpoint = _websocket_endpoint(ncco)
        if isinstance(endpoint, str):
            return endpoint
        return {"to": to[0]["number"], "from": from_["number"], "ncco": ncco, "endpoint": endpoint,
                "event_url": event_url[0], "event_method": str(body.get("event_method", "POST")).upper(),
                "ring_timeout_s": ringing, "length_timer": body.get("length_timer"),
                "conversation_uuid": "CON-" + str(uuid.uuid4()), "dtmf": []}

    def _call(self, request: Request) -> SimCall | Response:
        if not self._authorised(request):
            return vonage_error(401, "unauthorized", "Unauthorized", "You did not provide correct credentials.")
        call = self.sim.calls.get(request.path_params["uuid"])
        if call is None or call.carrier != "vonage" or not call.live:
            return vonage_error(404, "not-found", "Not Found",
                                f"Call {request.path_params['uuid']} doesn't exist or is not active.")
        return call

    async def _modify(self, request: Request) -> Response:
        call = self._call(request)
        if isinstance(call, Response):
            return call
        body = await json_object(request) or {}
        if body.get("action") == "transfer":
            return self._transfer(call, body.get("destination"))
        if body.get("action") != "hangup":
            return vonage_error(400, "validation", "Bad Request", "Only the hangup and transfer actions are simulated.")
        self.sim.hang_up(call.carrier_call_id)
        return Response(status_code=204)

    def _transfer(self, call: SimCall, destination: object) -> Response:
        """A transfer to an inline NCCO: only ``connect`` to one phone endpoint is simulated."""
        ncco = destination.get("ncco") if type(destination) is dict and destination.get("type") == "ncco" else None
        action = ncco[0] if type(ncco) is list and len(ncco) == 1 and type(ncco[0]) is dict else {}
        endpoint = action.get("endpoint") if action.get("action") == "connect" else None
        phone = endpoint[0] if type(endpoint) is list and len(endpoint) == 1 and type(endpoint[0]) is dict else {}
        number = str(phone.get("number", ""))
        if phone.get("type") != "phone" or not _NUMBER.match(number):
            return vonage_error(400, "validation", "Bad Request",
                                "destination must be an ncco with one connect to one phone endpoint.")
        if not self.sim.transfer(call.carrier_call_id, "+" + number):
            return vonage_error(400, "validation", "Bad Request", "Only an answered call can be transferred.")
        call.request["transfer_from"] = action.get("from")
        return Response(status_code=204)

    async def _dtmf(self, request: Request) -> Response:
        call = self._call(request)
        if isinstance(call, Response):
            return call
        digits = (await json_object(request) or {}).get("digits")
        if type(digits) is not str or not re.fullmatch(r"[0-9#*p]{1,64}", digits):
            return vonage_error(400, "validation", "Bad Request", "digits must be 0-9, #, * or p.")
        call.request["dtmf"].append(digits)
        return JSONResponse({"message": "DTMF sent", "uuid": call.carrier_call_id})

    # ------------------------------------------------------------------ the callee side
    async def stream_target(self, call: SimCall) -> tuple[str, dict[str, str]]:
        """The NCCO websocket endpoint's ``uri`` and ``headers``."""
        endpoint = call.request["endpoint"]
        return endpoint["uri"], {str(k): str(v) for k, v in (endpoint.get("headers") or {}).items()}

    def dialect(self, call: SimCall) -> CallerDialect:
        rate = _CONTENT_TYPE.match(call.request["endpoint"]["content-type"]).group(1)
        return VonageCaller(sample_rate=int(rate))

    def signed_callback(self, call: SimCall, event: str) -> Callback | None:
        body = orjson.dumps(self._event(call, event))
        token = signed_token(self.signature_secret, body, application_id=self.application_id, api_key=self.api_key)
        headers = {"content-type": "application/json", "authorization": f"Bearer {token}",
                   "user-agent": "Vonage-Voice-Webhooks"}
        return Callback("POST", call.request["event_url"], headers, body)

    def _event(self, call: SimCall, event: str) -> dict:
        now = time.time()
        msg: dict[str, object] = {
            "from": call.from_.removeprefix("+"), "to": call.to.removeprefix("+"), "uuid": call.carrier_call_id,
            "conversation_uuid": call.request["conversation_uuid"], "status": _STATUS[event],
            "direction": "outbound", "timestamp": _iso(now),
        }
        if event == "completed":
            seconds = round(call.report.frames_sent * 0.02) if call.report is not None else 0
            msg.update({"duration": str(seconds), "start_time": _iso(now - seconds), "end_time": _iso(now),
                        "rate": "0.00", "price": "0.00", "network": "310260"})
        elif event in ("failed", "declined", "busy"):
            msg["sip_code"] = {"failed": 503, "declined": 603, "busy": 486}[event]
        return msg


def _websocket_endpoint(ncco: list) -> dict | str:
    """The ``connect`` action's ``websocket`` endpoint of ``ncco``, or what is wrong with it."""
    for action in ncco:
        if type(action) is dict and action.get("action") == "connect":
            for endpoint in action.get("endpoint") or []:
                if type(endpoint) is dict and endpoint.get("type") == "websocket":
                    uri, ctype = endpoint.get("uri"), endpoint.get("content-type", "")
                    if type(uri) is not str or not uri.startswith(("ws://", "wss://")):
                        return "websocket endpoint uri must be a ws:// or wss:// URL."
                    if type(ctype) is not str or not _CONTENT_TYPE.match(ctype):
                        return "websocket content-type must be audio/l16;rate=8000|16000|24000."
                    headers = endpoint.get("headers") or {}
                    if type(headers) is not dict or len(orjson.dumps(headers)) > 512:
                        return "websocket headers must be an object of at most 512 bytes."
                    return endpoint
    return "ncco has no connect action with a websocket endpoint."


def create(sim: CarrierSimulator) -> VonageApi:
    """The simulated Vonage API (see :mod:`gateway.simulator.carrier_api.base`)."""
    return VonageApi(sim)
