"""Plivo outbound calls with the official ``plivo`` SDK (Voice API, ``/v1/Account/{auth_id}/``).

* **Place**: ``client.calls.create(from_, to_, answer_url, answer_method="POST", ring_url,
  hangup_url, ring_timeout, time_limit)`` → ``request_uuid``. When the callee answers, Plivo
  POSTs the answer URL (``Event=StartApp``) and follows the XML it returns: the gateway serves
  ``<Response><Stream bidirectional="true" keepCallAlive="true"
  contentType="audio/x-mulaw;rate=8000">wss://…</Stream></Response>``
  (:func:`gateway.carriers.instructions.instruction_document`). ``ring_url`` and ``hangup_url``
  are both the request's ``status_callback_url``.
  https://www.plivo.com/docs/voice/api/call/make-a-call, https://www.plivo.com/docs/voice/xml/stream
* **Hang up**: ``DELETE …/Call/{uuid}/`` (a live call), then ``DELETE …/Request/{uuid}/`` (a
  call still queued or ringing); 404 from both means it has already ended: success.
  UNCERTAIN: we use the ``request_uuid`` as the call's UUID, as Plivo returns it for a single
  destination; callbacks carry both ``RequestUUID`` and ``CallUUID`` and we key on the former.
* **DTMF**: ``POST …/Call/{uuid}/DTMF/`` (``calls.send_digits``, ``leg="aleg"``: the callee's
  leg of an API call). The stream protocol also has ``sendDTMF`` (the carrier adapter's way).
* **Transfer**: ``POST …/Call/{uuid}/`` (``calls.transfer``, ``legs="aleg"``, ``aleg_url``):
  Plivo fetches ``aleg_url`` (signed like the answer URL) and follows the XML it returns, the
  gateway's ``<Response><Dial callerId><Number>to…`` (:func:`dial_xml`), which ends the stream.
  https://www.plivo.com/docs/voice/api/call/transfer-a-call, https://www.plivo.com/docs/voice/xml/dial
* **Callbacks** (ring, answer and hangup URLs; form POSTs): signed with signature V3 —
  ``X-Plivo-Signature-V3`` (comma-separated base64 HMAC-SHA256 values) over the URL, the sorted
  POST fields and ``X-Plivo-Signature-V3-Nonce``, keyed by the auth token — checked with
  :func:`plivo.utils.signature_v3.validate_v3_signature`. Fields read: ``RequestUUID``,
  ``CallUUID``, ``Event`` (``Ring`` / ``StartApp`` / ``Hangup``), ``CallStatus``,
  ``HangupCause``, ``Duration``. https://www.plivo.com/docs/voice/concepts/signature-validation

Plivo's REST errors are ``{"api_id", "error"}`` with no numeric code: :class:`CarrierError`'s
``code`` is the HTTP status (``"400"``, ``"401"``, ``"404"``, …).

``api_base_url`` is applied in the SDK client's ``send_request`` (:class:`_RebasedClient`): the
SDK builds and authenticates the request for ``https://api.plivo.com`` and it is sent to
``api_base_url`` instead.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping

import plivo
import requests
from plivo import plivoxml
from plivo import exceptions as plivo_errors
from plivo.utils.signature_v3 import validate_v3_signature

from gateway.dialer.base import (
    DEFAULT_TIMEOUT_S,
    CallbackEvent,
    CarrierError,
    Credentials,
    OutboundRequest,
    PlacedCall,
    SdkDialer,
    Transfer,
    check_digits,
    lower_headers,
)

__all__ = ["PlivoDialer", "create", "dial_xml", "HANGUP_STATUS", "EVENT_ORDER"]

#: ``Event`` → its place in a call's life (the idempotency sequence of a callback).
EVENT_ORDER = {"Ring": 1, "StartApp": 2, "Hangup": 3}
#: Hangup ``CallStatus`` → lifecycle status.
HANGUP_STATUS = {
    "completed": "completed",
    "busy": "busy",
    "failed": "failed",
    "timeout": "no_answer",
    "no-answer": "no_answer",
    "cancel": "canceled",
    "canceled": "canceled",
}
#: ``HangupCause`` values that mean the callee rejected the call.
_REJECTED = frozenset({"CALL_REJECTED", "Rejected"})
_HTTP_STATUS = {
    plivo_errors.ValidationError: 400,
    plivo_errors.AuthenticationError: 401,
    plivo_errors.ForbiddenError: 403,
    plivo_errors.ResourceNotFoundError: 404,
    plivo_errors.PlivoServerError: 500,
}


class _RebasedClient(plivo.RestClient):
    """The SDK's client, sending each prepared request to ``base_url`` (and remembering the
    HTTP status of its last response, which the SDK's exceptions do not carry)."""

    def __init__(self, auth_id: str, auth_token: str, *, base_url: str | None, timeout: float) -> None:
        super().__init__(auth_id, auth_token, timeout=timeout)
        self._base_url = base_url
        self.last_status: int | None = None

    def send_request(self, request, **kwargs):
        if self._base_url is not None:
            parts = urllib.parse.urlsplit(request.url)
            request.url = self._base_url + urllib.parse.urlunsplit(("", "", parts.path, parts.query, ""))
        response = super().send_request(request, **kwargs)
        self.last_status = response.status_code
        return response


def _message(exc: Exception) -> str:
    arg = exc.args[0] if exc.args else ""
    if isinstance(arg, Mapping):
        arg = arg.get("error", arg)
    return str(getattr(arg, "error", arg))[:500]


class PlivoDialer(SdkDialer):
    """Outbound calls through Plivo (see the module docstring). Credentials: ``auth_id``,
    ``auth_token``."""

    kind = "plivo"

    def _client(self, creds: Credentials) -> _RebasedClient:
        # one client per request: the SDK keeps per-request state (retry count, base URI)
        return _RebasedClient(creds["auth_id"], creds["auth_token"], base_url=self.api_base_url,
                              timeout=self.timeout_s)

    def _place_sync(self, req: OutboundRequest, creds: Credentials) -> PlacedCall:
        if not req.answer_url:
            raise CarrierError("invalid_request", "plivo needs an answer_url that serves the <Stream> XML")
        client = self._client(creds)
        try:
            resp = client.calls.create(
                from_=req.from_, to_=req.to, answer_url=req.answer_url, answer_method="POST",
                ring_url=req.status_callback_url, ring_method="POST",
                hangup_url=req.status_callback_url, hangup_method="POST",
                ring_timeout=req.ring_timeout_s, time_limit=req.max_duration_s,
            )
        except plivo_errors.PlivoRestError as exc:
            raise self._plivo_error(exc, client.last_status) from exc
        uuid = getattr(resp, "request_uuid", None)
        if isinstance(uuid, list):
            uuid = uuid[0] if uuid else None
        if not isinstance(uuid, str) or not uuid:
            raise CarrierError("bad_response", "plivo returned no request_uuid")
        return PlacedCall(uuid)

    def _hang_up_sync(self, carrier_call_id: str, creds: Credentials) -> None:
        client = self._client(creds)
        for end in (client.calls.delete, client.calls.cancel):
            try:
                end(carrier_call_id)
                return
            except plivo_errors.ResourceNotFoundError:
                continue  # not live as a call: try the request; 404 from both: already ended
            except plivo_errors.PlivoRestError as exc:
                raise self._plivo_error(exc, client.last_status) from exc

    def _dtmf_sync(self, carrier_call_id: str, digits: str, creds: Credentials) -> None:
        client = self._client(creds)
        try:
            client.calls.send_digits(carrier_call_id, digits, leg="aleg")
        except plivo_errors.PlivoRestError as exc:
            raise self._plivo_error(exc, client.last_status) from exc

    async def send_dtmf(self, carrier_call_id: str, digits: str, creds: Credentials) -> None:
        """Send ``digits`` (``0-9 * # A-D``, at most 32) on the callee's leg via the REST API.

        Raises:
            CarrierError: ``invalid_request`` for bad digits; the API's refusal (``404``: the
                call is not live).
        """
        try:
            check_digits(digits)
        except ValueError as exc:
            raise CarrierError("invalid_request", str(exc)) from None
        await self._run(self._dtmf_sync, carrier_call_id, digits, creds)

    def _transfer_sync(self, carrier_call_id: str, transfer: Transfer, creds: Credentials) -> None:
        if not transfer.instructions_url:
            raise CarrierError("invalid_request", "plivo needs an aleg_url that serves the <Dial> XML")
        client = self._client(creds)
        try:
            client.calls.transfer(carrier_call_id, legs="aleg", aleg_url=transfer.instructions_url, aleg_method="POST")
        except plivo_errors.PlivoRestError as exc:
            raise self._plivo_error(exc, client.last_status) from exc

    def _plivo_error(self, exc: plivo_errors.PlivoRestError, status: int | None) -> CarrierError:
        if status is None or status < 400:  # refused by the SDK before any request was sent
            status = None
            code = "invalid_request" if isinstance(exc, plivo_errors.ValidationError) else "bad_response"
        else:
            code = str(status)
        return CarrierError(code, _message(exc), status)

    def _map_error(self, exc: Exception) -> CarrierError:
        if isinstance(exc, plivo_errors.PlivoRestError):
            status = next((s for cls, s in _HTTP_STATUS.items() if isinstance(exc, cls)), None)
            return CarrierError(str(status) if status else "bad_response", _message(exc), status)
        if isinstance(exc, requests.Timeout):
            return CarrierError("timeout", f"plivo API gave no answer in {self.timeout_s:g} s")
        if isinstance(exc, requests.RequestException):
            return CarrierError("network", f"plivo API unreachable: {type(exc).__name__}")
        return CarrierError("bad_response", f"{type(exc).__name__}: {exc}"[:300])

    def verify_callback(self, method: str, url: str, headers: Mapping[str, str], body: bytes,
                        creds: Credentials) -> bool:
        """Signature V3 (see the module docstring): ``url`` as Plivo requested it, the form
        fields of a POST (a GET's fields are in ``url``)."""
        h = lower_headers(headers)
        signature, nonce = h.get("x-plivo-signature-v3"), h.get("x-plivo-signature-v3-nonce")
        token = creds.get("auth_token")
        if not signature or not nonce or not token:
            return False
        try:
            params = {}
            if method.upper() == "POST":
                params = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True)
            return bool(validate_v3_signature(method.upper(), url, nonce, token, signature, params))
        except (UnicodeDecodeError, ValueError, TypeError, plivo_errors.PlivoRestError):
            return False

    def parse_callback(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> CallbackEvent:
        """A ring / answer / hangup callback: ``Ring`` → ringing, ``StartApp`` → in_progress,
        ``Hangup`` → the final status (``CallStatus``; ``HangupCause`` ``CALL_REJECTED`` → declined).

        Raises:
            ValueError: no call id, or an event or status we do not know.
        """
        raw_fields = body.decode("utf-8") if method.upper() == "POST" else urllib.parse.urlsplit(url).query
        form = {k: v[0] for k, v in urllib.parse.parse_qs(raw_fields, keep_blank_values=True).items()}
        call_id = form.get("RequestUUID") or form.get("CallUUID") or ""
        event, raw = form.get("Event", ""), form.get("CallStatus", "")
        if not call_id or event not in EVENT_ORDER:
            raise ValueError(f"not a Plivo call callback (Event {event[:20]!r})")
        if event == "Ring":
            status = "ringing"
        elif event == "StartApp":
            status = "in_progress"
        elif raw in HANGUP_STATUS:
            status = "declined" if form.get("HangupCause") in _REJECTED else HANGUP_STATUS[raw]
        else:
            raise ValueError(f"unknown Plivo hangup status {raw[:20]!r}")
        detail = {k: form[k] for k in ("CallUUID", "HangupCause", "Duration", "BillDuration") if form.get(k)}
        return CallbackEvent(call_id, status, raw or event, at=None, sequence=float(EVENT_ORDER[event]),
                             detail=detail)


def create(*, api_base_url: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> PlivoDialer:
    """The Plivo dialer (see :func:`gateway.dialer.base.make_dialer`)."""
    return PlivoDialer(api_base_url=api_base_url, timeout_s=timeout_s)


def dial_xml(to: str, caller_id: str | None = None) -> str:
    """``<Response><Dial callerId=…><Number>to</Number></Dial></Response>`` (the SDK's
    :mod:`plivo.plivoxml`): the document a transfer's ``aleg_url`` answers."""
    dial = plivoxml.DialElement(caller_id=caller_id) if caller_id else plivoxml.DialElement()
    dial.add_number(to)
    return plivoxml.ResponseElement().add(dial).to_string(False)
