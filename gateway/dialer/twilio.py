"""Twilio outbound calls with the official ``twilio`` SDK (Programmable Voice, API 2010-04-01).

* **Place**: ``client.calls.create(to, from_, twiml=<Response><Connect><Stream url>…,
  status_callback, status_callback_event=[initiated ringing answered completed],
  timeout=ring_timeout_s, time_limit=max_duration_s)``. ``<Connect><Stream>`` makes the stream
  bidirectional; the TwiML is built with :mod:`twilio.twiml.voice_response` and the stream URL
  must carry its token in the path (Twilio drops query strings).
  https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource,
  https://www.twilio.com/docs/voice/twiml/stream
* **Hang up**: ``client.calls(sid).update(status="completed")`` ("completed" hangs up a call in
  any state, ringing or in progress; "canceled" would leave an answered call up):
  "already ended" is success:
  ``20404`` (no such call: Twilio forgets nothing, so the SID is gone or was never ours) and
  ``21220`` (the call is not in progress). https://www.twilio.com/docs/api/errors/21220
* **Transfer**: ``client.calls(sid).update(twiml=<Response><Dial callerId><Number>to…)``: the
  new TwiML replaces ``<Connect><Stream>`` (the media stream ends) and Twilio dials ``to``,
  bridging the callee to it. https://www.twilio.com/docs/voice/tutorials/how-to-modify-calls-in-progress,
  https://www.twilio.com/docs/voice/twiml/dial
* **DTMF**: :class:`~gateway.dialer.base.NotSupported`. Twilio's only REST way is replacing the
  call's TwiML with ``<Play digits>``, which ends the ``<Connect><Stream>`` (the media stream
  closes); the session plays in-band tones on the stream instead.
* **Callbacks**: form-encoded POSTs signed in ``X-Twilio-Signature`` (base64 HMAC-SHA1 of the
  URL as Twilio requested it plus the sorted form fields, keyed by the auth token), checked
  with :class:`twilio.request_validator.RequestValidator`. Fields read: ``CallSid``,
  ``CallStatus`` (``queued initiated ringing in-progress completed busy failed no-answer
  canceled``), ``SequenceNumber``, ``Timestamp`` (RFC 2822), ``CallDuration``,
  ``SipResponseCode`` (``603`` with ``busy`` is a decline).
  https://www.twilio.com/docs/usage/webhooks/webhooks-security,
  https://www.twilio.com/docs/voice/api/call-resource#statuscallback

``api_base_url`` is applied by the SDK's own HTTP client (:class:`_RebasedHttpClient`): the
request is built and authenticated by the SDK, then sent to ``api_base_url`` instead of
``https://api.twilio.com``.
"""

from __future__ import annotations

import email.utils
import urllib.parse
from collections.abc import Mapping

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator, get_signature_algorithm
from twilio.rest import Client
from twilio.twiml.voice_response import Connect, Dial, VoiceResponse

from gateway.dialer.base import (
    DEFAULT_TIMEOUT_S,
    CallbackEvent,
    CarrierError,
    Credentials,
    OutboundRequest,
    PlacedCall,
    SdkDialer,
    Transfer,
    lower_headers,
)

__all__ = ["TwilioDialer", "create", "stream_twiml", "dial_twiml", "STATUS_MAP"]

#: Twilio ``CallStatus`` → the gateway's lifecycle vocabulary.
STATUS_MAP = {
    "queued": "initiated",
    "initiated": "initiated",
    "ringing": "ringing",
    "in-progress": "in_progress",
    "answered": "in_progress",
    "completed": "completed",
    "busy": "busy",
    "failed": "failed",
    "no-answer": "no_answer",
    "canceled": "canceled",
}
#: Error codes meaning the call has already ended (hang-up succeeds).
ALREADY_ENDED = frozenset({"20404", "21220"})
_EVENTS = ["initiated", "ringing", "answered", "completed"]


class _RebasedHttpClient(TwilioHttpClient):
    """The SDK's HTTP client, sending to ``base_url`` instead of Twilio's ``https://*.twilio.com``."""

    def __init__(self, base_url: str | None, timeout: float) -> None:
        super().__init__(pool_connections=False, timeout=timeout)  # a session per request: thread-safe
        self.base_url = base_url

    def request(self, method, url, *args, **kwargs):
        if self.base_url is not None:
            parts = urllib.parse.urlsplit(url)
            url = self.base_url + urllib.parse.urlunsplit(("", "", parts.path, parts.query, ""))
        return super().request(method, url, *args, **kwargs)


def stream_twiml(stream_url: str, parameters: Mapping[str, str] | None = None) -> str:
    """``<Response><Connect><Stream url=…><Parameter …/>…`` as a string (XML-escaped by the SDK).

    Raises:
        ValueError: ``stream_url`` has a query string (Twilio drops it: put the token in the path).
    """
    if "?" in stream_url:
        raise ValueError("twilio drops the query string of a stream URL: put the token in the path")
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url)
    for name, value in (parameters or {}).items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response)


def dial_twiml(transfer: Transfer) -> str:
    """``<Response><Dial callerId=…><Number>to</Number></Dial></Response>`` (the SDK's TwiML)."""
    response = VoiceResponse()
    dial = Dial(caller_id=transfer.caller_id) if transfer.caller_id else Dial()
    dial.number(transfer.to)
    response.append(dial)
    return str(response)


class _Form(dict):
    """Form fields with every value of a repeated field (``getall``, as the validator expects)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__()
        self._all: dict[str, list[str]] = {}
        for k, v in pairs:
            self._all.setdefault(k, []).append(v)
            self.setdefault(k, v)

    def getall(self, name: str) -> list[str]:
        return self._all[name]


def _form(body: bytes) -> _Form:
    return _Form(urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))


class TwilioDialer(SdkDialer):
    """Outbound calls through Twilio (see the module docstring). Credentials: ``account_sid``,
    ``auth_token``."""

    kind = "twilio"

    def __init__(self, *, api_base_url: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(api_base_url=api_base_url, timeout_s=timeout_s)
        self._http = _RebasedHttpClient(self.api_base_url, timeout_s)

    def _client(self, creds: Credentials) -> Client:
        return Client(creds["account_sid"], creds["auth_token"], http_client=self._http)

    def _place_sync(self, req: OutboundRequest, creds: Credentials) -> PlacedCall:
        call = self._client(creds).calls.create(
            to=req.to,
            from_=req.from_,
            twiml=stream_twiml(req.stream_url, req.parameters),
            status_callback=req.status_callback_url,
            status_callback_method="POST",
            status_callback_event=_EVENTS,
            timeout=req.ring_timeout_s,
            time_limit=req.max_duration_s,
        )
        if not call.sid:
            raise CarrierError("bad_response", "twilio returned a call without a sid")
        return PlacedCall(call.sid)

    def _hang_up_sync(self, carrier_call_id: str, creds: Credentials) -> None:
        try:
            self._client(creds).calls(carrier_call_id).update(status="completed")
        except TwilioRestException as exc:
            if str(exc.code) not in ALREADY_ENDED:
                raise

    def _transfer_sync(self, carrier_call_id: str, transfer: Transfer, creds: Credentials) -> None:
        self._client(creds).calls(carrier_call_id).update(twiml=dial_twiml(transfer))

    def _map_error(self, exc: Exception) -> CarrierError:
        if isinstance(exc, TwilioRestException):
            code = str(exc.code) if exc.code is not None else str(exc.status)
            return CarrierError(code, str(exc.msg)[:500], exc.status)
        if isinstance(exc, ValueError):
            return CarrierError("invalid_request", str(exc)[:300])
        if isinstance(exc, requests.Timeout):
            return CarrierError("timeout", f"twilio API gave no answer in {self.timeout_s:g} s")
        if isinstance(exc, requests.RequestException):
            return CarrierError("network", f"twilio API unreachable: {type(exc).__name__}")
        if isinstance(exc, TwilioException):
            return CarrierError("bad_response", str(exc)[:300])
        return CarrierError("bad_response", f"{type(exc).__name__}: {exc}"[:300])

    def verify_callback(self, method: str, url: str, headers: Mapping[str, str], body: bytes,
                        creds: Credentials) -> bool:
        """``X-Twilio-Signature`` checked with :class:`RequestValidator` against ``url`` and the
        form fields (POST) or ``url`` alone (GET, fields in the query string)."""
        h = lower_headers(headers)
        signature = h.get("x-twilio-signature")
        token = creds.get("auth_token")
        if not signature or not token:
            return False
        try:
            params = _form(body) if method.upper() == "POST" else {}
            algorithm = get_signature_algorithm(h.get("x-twilio-webhooks-signature-settings"))
            return bool(RequestValidator(token).validate(url, params, signature, algorithm))
        except (UnicodeDecodeError, ValueError, KeyError):
            return False

    def parse_callback(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> CallbackEvent:
        """Read a status callback (see the module docstring).

        Raises:
            ValueError: no ``CallSid`` or an unknown ``CallStatus``.
        """
        if method.upper() == "POST":
            form = _form(body)
        else:
            form = _Form(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        sid = form.get("CallSid", "")
        raw = form.get("CallStatus", "")
        if not sid or raw not in STATUS_MAP:
            raise ValueError(f"not a Twilio status callback (CallSid {bool(sid)}, CallStatus {raw[:20]!r})")
        status = STATUS_MAP[raw]
        if raw == "busy" and form.get("SipResponseCode") == "603":
            status = "declined"
        at = None
        if form.get("Timestamp"):
            try:
                at = email.utils.parsedate_to_datetime(form["Timestamp"]).timestamp()
            except (TypeError, ValueError):
                at = None
        seq = form.get("SequenceNumber", "")
        sequence = float(seq) if seq.isdigit() else at
        detail = {k: form[k] for k in ("CallDuration", "SipResponseCode", "CallbackSource", "AnsweredBy")
                  if form.get(k)}
        return CallbackEvent(sid, status, raw, at=at, sequence=sequence, detail=detail)


def create(*, api_base_url: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> TwilioDialer:
    """The Twilio dialer (see :func:`gateway.dialer.base.make_dialer`)."""
    return TwilioDialer(api_base_url=api_base_url, timeout_s=timeout_s)
