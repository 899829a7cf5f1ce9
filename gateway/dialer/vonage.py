"""Vonage Voice API through the official ``vonage`` SDK (4.x): create call, hang up, DTMF, events.

* **Place**: ``Voice.create_call`` (``POST /v1/calls``, authenticated with the application's
  RS256 JWT) with ``to`` / ``from`` phone endpoints (E.164 without ``+``), an inline **NCCO**
  ``[{"action": "connect", "endpoint": [{"type": "websocket", "uri": <stream URL>,
  "content-type": "audio/l16;rate=<8000|16000|24000>", "headers": <stream parameters>}]}]``
  (the headers come back flattened in ``websocket:connected``), ``event_url`` (the gateway's
  callback route, POST), ``ringing_timer`` (≤ 120 s) and ``length_timer`` (≤ 86,400 s). The call's
  id is the answer's ``uuid``. https://developer.vonage.com/en/api/voice#createCall
* **Hang up**: ``Voice.hangup`` (``PUT /v1/calls/{uuid}`` ``{"action": "hangup"}``); 404 (the
  call is not active) is success.
* **DTMF**: ``Voice.play_dtmf_into_call`` (``PUT /v1/calls/{uuid}/dtmf``; digits 0-9 * #; A–D
  have no REST way: :class:`~gateway.dialer.base.NotSupported`, so the session plays them in band).
* **Transfer**: ``Voice.transfer_call_ncco`` (``PUT /v1/calls/{uuid}`` ``{"action": "transfer",
  "destination": {"type": "ncco", "ncco": [{"action": "connect", "from", "endpoint": [{"type":
  "phone", "number"}]}]}}``): the callee's leg leaves the websocket NCCO for a connect to ``to``.
  https://developer.vonage.com/en/api/voice#updateCall
* **Errors**: Vonage answers RFC 7807 problem JSON ``{"type": "https://…/api-errors#<code>",
  "title", "detail", "instance"}``; the ``type``'s fragment (else the whole ``type`` when it is
  a bare word, else the HTTP status) is the code and ``title: detail`` the message.
* **Events** are signed webhooks: ``Authorization: Bearer <JWT>``, HS256 with the account's
  signature secret, checked with the SDK's own ``vonage_jwt.verify_signature`` (what
  ``Voice.verify_signature`` calls); the JWT's ``payload_hash`` claim must be the SHA-256 (hex)
  of the body, or the body could be changed under a valid token. A JWT naming another
  ``application_id`` is refused. https://developer.vonage.com/en/getting-started/concepts/webhooks#decoding-signed-webhooks
* **Statuses** (``status``): started → ``initiated``, ringing → ``ringing``, answered →
  ``in_progress``, completed → ``completed``, busy → ``busy``, timeout / unanswered →
  ``no_answer``, rejected → ``declined``, failed → ``failed``, cancelled → ``canceled``; events
  without a status (input, transfer, …) report no change. The order key is ``timestamp``.
  The NCCO's websocket is a leg of its own with its own ``uuid``: events whose ``uuid`` is not
  the placed call's describe that leg, not the call.
  https://developer.vonage.com/en/voice/voice-api/webhook-reference#event-webhook

The SDK blocks (requests) and runs on the dialer's threads, one client per request (the
application's credentials differ per call). Its client only speaks ``https://<api_host>``: an
``api_base_url`` of ``https://host[:port][/prefix]`` is used as the host, and ``http://`` is
allowed for a **loopback** origin only (the carrier simulator), by a transport adapter that sends
the SDK's requests to that one origin over plain HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
from collections.abc import Mapping
from importlib.metadata import version
from urllib.parse import urlsplit

import jwt
import orjson
import requests
from pydantic import ValidationError
from requests.adapters import HTTPAdapter
from vonage_http_client import Auth, HttpClient, HttpClientOptions
from vonage_http_client.errors import HttpRequestError, JWTGenerationError, NotFoundError
from vonage_jwt import VonageJwtError, verify_signature
from vonage_utils.errors import VonageError
from vonage_voice import Voice
from vonage_voice.models import Connect, CreateCallRequest, Phone, PhoneEndpoint, ToPhone, WebsocketEndpoint

from gateway.dialer.base import (
    DEFAULT_TIMEOUT_S,
    CallbackEvent,
    CallStatus,
    CarrierError,
    Credentials,
    NotSupported,
    OutboundRequest,
    PlacedCall,
    SdkDialer,
    Transfer,
    check_digits,
    iso_timestamp,
    lower_headers,
    require_credentials,
)

__all__ = ["VonageDialer", "create", "STATUSES", "payload_hash"]

#: Vonage ``status`` → lifecycle state (``None``: no change).
STATUSES: dict[str, CallStatus] = {
    "started": "initiated",
    "ringing": "ringing",
    "answered": "in_progress",
    "completed": "completed",
    "busy": "busy",
    "timeout": "no_answer",
    "unanswered": "no_answer",
    "rejected": "declined",
    "failed": "failed",
    "cancelled": "canceled",
}
_RATES = (8000, 16000, 24000)
_DETAIL_KEYS = ("conversation_uuid", "detail", "sip_code", "duration", "start_time", "end_time", "network",
                "direction")
_LOOPBACK_NAMES = ("localhost",)
#: The ``vonage`` package's version, for the SDK's User-Agent (as ``vonage.Vonage`` sends it).
_SDK_VERSION = version("vonage")


def payload_hash(body: bytes) -> str:
    """The ``payload_hash`` claim Vonage puts in a signed webhook's JWT: SHA-256 of the body, hex."""
    return hashlib.sha256(body).hexdigest()


class _PlainHttpAdapter(HTTPAdapter):
    """Sends the SDK's ``https://`` requests for one loopback origin over plain ``http://``."""

    def send(self, request, *args, **kwargs):  # noqa: ANN001 - requests' signature
        request.url = "http://" + request.url.removeprefix("https://")
        return super().send(request, *args, **kwargs)


class _Client(HttpClient):
    """The SDK's HTTP client with an optional plain-HTTP origin (see :class:`_PlainHttpAdapter`)
    and a ``close`` for its session."""

    def __init__(self, auth: Auth, options: HttpClientOptions, *, plain_http: bool) -> None:
        super().__init__(auth, options, _SDK_VERSION)
        if plain_http:
            self._session.mount(f"https://{options.api_host}", _PlainHttpAdapter(max_retries=0))

    def close(self) -> None:
        self._session.close()


class VonageDialer(SdkDialer):
    """Vonage Voice API dialer (see the module docstring).

    Credentials: ``application_id``, ``private_key`` (the application's PKCS#8 PEM; a file path
    is refused) and ``signature_secret`` (signed webhooks).

    Args:
        api_base_url: origin (and optional path prefix) to use instead of ``https://api.nexmo.com``;
            ``http://`` only for a loopback host.
        timeout_s: limit on each request (s; the SDK takes whole seconds, rounded up).

    Raises:
        ValueError: ``api_base_url`` is not ``https://``, or ``http://`` to a non-loopback host.
    """

    kind = "vonage"

    def __init__(self, *, api_base_url: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(api_base_url=api_base_url, timeout_s=timeout_s)
        self._api_host, self._plain_http = "api.nexmo.com", False
        if self.api_base_url:
            self._api_host, self._plain_http = _api_host(self.api_base_url)

    def _voice(self, creds: Credentials) -> tuple[Voice, _Client]:
        key = creds["private_key"]
        if "-----BEGIN PRIVATE KEY-----" not in key:
            raise CarrierError("credentials", "vonage private_key must be a PKCS#8 PEM (BEGIN PRIVATE KEY)")
        auth = Auth(application_id=creds["application_id"], private_key=key)
        # pool_maxsize=1: the SDK retries a dropped connection pool_maxsize times (a re-sent create).
        options = HttpClientOptions(api_host=self._api_host, timeout=max(1, math.ceil(self.timeout_s)),
                                    max_retries=0, pool_connections=1, pool_maxsize=1)
        client = _Client(auth, options, plain_http=self._plain_http)
        return Voice(client), client

    def _place_sync(self, req: OutboundRequest, creds: Credentials) -> PlacedCall:
        params = _create_request(req)
        voice, client = self._voice(creds)
        try:
            answer = voice.create_call(params)
        finally:
            client.close()
        if not answer.uuid:
            raise CarrierError("bad_response", "Vonage create-call answer has no uuid")
        return PlacedCall(answer.uuid)

    def _hang_up_sync(self, carrier_call_id: str, creds: Credentials) -> None:
        voice, client = self._voice(creds)
        try:
            voice.hangup(carrier_call_id)
        except NotFoundError:
            return  # not active: it has already ended
        finally:
            client.close()

    def _dtmf_sync(self, carrier_call_id: str, digits: str, creds: Credentials) -> None:
        voice, client = self._voice(creds)
        try:
            voice.play_dtmf_into_call(carrier_call_id, digits)
        finally:
            client.close()

    def _transfer_sync(self, carrier_call_id: str, transfer: Transfer, creds: Credentials) -> None:
        caller = {"from_": transfer.caller_id.lstrip("+")} if transfer.caller_id else {}
        ncco = [Connect(endpoint=[PhoneEndpoint(number=transfer.to.lstrip("+"))], **caller)]
        voice, client = self._voice(creds)
        try:
            voice.transfer_call_ncco(carrier_call_id, ncco)
        finally:
            client.close()

    async def send_dtmf(self, carrier_call_id: str, digits: str, creds: Credentials) -> None:
        """Play ``digits`` to the callee. Raises ValueError for non-DTMF digits,
        :class:`NotSupported` for A–D (no REST way), :class:`CarrierError` for a refusal."""
        check_digits(digits)
        if any(d in "ABCD" for d in digits):
            raise NotSupported("Vonage REST DTMF takes 0-9 * # only: play A-D in band")
        require_credentials(self.kind, creds)
        await self._run(self._dtmf_sync, carrier_call_id, digits, creds)

    def _map_error(self, exc: Exception) -> CarrierError:
        if isinstance(exc, CarrierError):
            return exc
        if isinstance(exc, HttpRequestError):
            return _problem_error(exc.response)
        if isinstance(exc, (jwt.PyJWTError, JWTGenerationError, VonageJwtError)):
            return CarrierError("credentials", "vonage private_key cannot sign the application JWT")
        if isinstance(exc, requests.Timeout):
            return CarrierError("timeout", f"Vonage API gave no answer in {self.timeout_s:g} s")
        if isinstance(exc, requests.RequestException):
            return CarrierError("network", f"Vonage API unreachable: {type(exc).__name__}")
        if isinstance(exc, (ValidationError, VonageError)):
            return CarrierError("bad_response", f"Vonage SDK: {type(exc).__name__}: {exc}"[:300])
        return CarrierError("bad_response", f"{type(exc).__name__}: {exc}"[:300])

    def verify_callback(self, method: str, url: str, headers: Mapping[str, str], body: bytes,
                        creds: Credentials) -> bool:
        """Whether the event is signed with the account's signature secret (SDK check of the
        Bearer JWT, then its ``payload_hash`` against ``body``). Never raises."""
        secret = creds.get("signature_secret")
        auth = lower_headers(headers).get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if not secret or scheme.lower() != "bearer" or not token:
            return False
        try:
            if not verify_signature(token, secret):
                return False
            claims = jwt.decode(token, secret, algorithms=["HS256"])
        except (VonageError, jwt.PyJWTError):
            return False
        app = creds.get("application_id")
        if app and claims.get("application_id") not in (None, app):
            return False
        claimed = claims.get("payload_hash")
        if not body and claimed is None:
            return True
        return type(claimed) is str and hmac.compare_digest(claimed.lower(), payload_hash(body))

    def parse_callback(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> CallbackEvent:
        """Read a Vonage event webhook (JSON ``{"uuid", "status", "timestamp", …}``).

        Raises:
            ValueError: not a JSON object, or no ``uuid``.
        """
        try:
            msg = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ValueError("Vonage event body is not JSON") from None
        if type(msg) is not dict:
            raise ValueError("Vonage event is not a JSON object")
        uuid = msg.get("uuid")
        if type(uuid) is not str or not uuid:
            raise ValueError("Vonage event has no uuid")
        raw = msg.get("status")
        raw = raw if type(raw) is str else str(msg.get("type") or "event")
        at = iso_timestamp(msg.get("timestamp"))
        detail = {k: str(msg[k]) for k in _DETAIL_KEYS if msg.get(k) not in (None, "")}
        return CallbackEvent(uuid, STATUSES.get(raw) if "status" in msg else None, raw, at=at, sequence=at,
                             detail=detail)


def _create_request(req: OutboundRequest) -> CreateCallRequest:
    """The SDK's create-call model for ``req`` (CarrierError ``invalid_request`` if it refuses)."""
    rate = req.sample_rate if req.sample_rate in _RATES else 16000
    try:
        endpoint = WebsocketEndpoint(uri=req.stream_url, contentType=f"audio/l16;rate={rate}",
                                     headers=dict(req.parameters) or None)
        return CreateCallRequest(
            to=[ToPhone(number=req.to.removeprefix("+"))],
            from_=Phone(number=req.from_.removeprefix("+")),
            ncco=[Connect(endpoint=[endpoint], from_=req.from_.removeprefix("+"))],
            event_url=[req.status_callback_url],
            event_method="POST",
            ringing_timer=min(req.ring_timeout_s, 120),
            length_timer=req.max_duration_s,
        )
    except (ValidationError, VonageError) as exc:
        raise CarrierError("invalid_request", f"Vonage SDK refused the call: {exc}"[:300]) from None


def _problem_error(response: requests.Response) -> CarrierError:
    """RFC 7807 problem JSON → code (``type``'s fragment) and ``title: detail``."""
    try:
        body = response.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    kind = str(body.get("type") or body.get("code") or "")
    code = kind.rsplit("#", 1)[1] if "#" in kind else kind if kind and "/" not in kind else str(response.status_code)
    title = body.get("title") or body.get("error_title")
    text = ": ".join(dict.fromkeys(str(v) for v in (title, body.get("detail")) if v)) or f"HTTP {response.status_code}"
    return CarrierError(code, text[:300], response.status_code)


def _api_host(base_url: str) -> tuple[str, bool]:
    """``https://h[:p][/prefix]`` → (``h[:p][/prefix]``, False); ``http://`` only to loopback → True."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError("vonage api_base_url must be https://host[:port][/path]")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError("vonage api_base_url may be http:// only for a loopback host")
    return parts.netloc + parts.path.rstrip("/"), parts.scheme == "http"


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create(*, api_base_url: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> VonageDialer:
    """The Vonage dialer (see :func:`gateway.dialer.base.make_dialer`)."""
    return VonageDialer(api_base_url=api_base_url, timeout_s=timeout_s)
