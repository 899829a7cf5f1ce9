"""The dialer contract: placing, hanging up and steering outbound calls through a carrier's REST API.

One module per carrier (``gateway/dialer/<kind>.py``) implements :class:`Dialer` with the
carrier's **official SDK**. The call loop never talks to an SDK directly: it builds an
:class:`OutboundRequest`, awaits :meth:`Dialer.place`, and on its way out awaits
:meth:`Dialer.hang_up`. Carrier callbacks (status callbacks, event webhooks) come back through
the gateway's routes, which check them with :meth:`Dialer.verify_callback` (the SDK's own
validator; ``False`` means 403 and nothing changes) and read them with
:meth:`Dialer.parse_callback`.

Rules every implementation follows (so a carrier fault is a record field, never a crash):

* **Only** :class:`CarrierError` leaves ``place`` / ``hang_up`` / ``send_dtmf`` / ``transfer``: every SDK
  exception, HTTP error, timeout and malformed answer is mapped to one, with the carrier's own
  error ``code`` (Twilio ``21211``, Plivo ``400``, Telnyx ``10015``, …) and message.
  :class:`NotSupported` (a subclass) says the carrier has no REST way to do it (the session then
  plays in-band tones for DTMF).
* "Already ended" on hang-up (Twilio 20404, Plivo 404, Telnyx 90018, Vonage 404) is success.
* Blocking SDKs run on the dialer's **own** small thread pool (:class:`SdkDialer`), never the
  event loop's default executor (which other work can starve), and every call is bounded by
  ``timeout_s`` (the SDK's HTTP timeout *and* an ``asyncio`` deadline around the thread).
* ``api_base_url`` points the SDK at another origin (the carrier simulator,
  :mod:`gateway.simulator.carrier_api`) **without** replacing the SDK's request code: the
  SDK builds, signs and parses the request as it does against the carrier.

Writing a dialer for a new carrier (see :mod:`gateway.dialer.twilio` for a complete one):

1. subclass :class:`SdkDialer`, set ``kind``, implement ``_place_sync``, ``_hang_up_sync``,
   ``_map_error`` (SDK exception → :class:`CarrierError`), ``verify_callback`` and
   ``parse_callback``; override ``send_dtmf`` if the REST API has a way;
2. expose a module-level ``create(*, api_base_url, timeout_s) -> Dialer`` and add the module
   to :data:`_MODULES` here.

Credentials are a plain mapping resolved by the carrier-accounts layer from secret references
(never stored); the keys each carrier needs are :data:`CREDENTIAL_KEYS`.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, TypeVar, get_args, runtime_checkable

__all__ = [
    "OutboundRequest",
    "PlacedCall",
    "CallbackEvent",
    "CallStatus",
    "CALL_STATUSES",
    "TERMINAL_STATUSES",
    "CarrierError",
    "NotSupported",
    "Credentials",
    "CREDENTIAL_KEYS",
    "Dialer",
    "SdkDialer",
    "make_dialer",
    "DIALER_KINDS",
    "require_credentials",
    "check_digits",
    "lower_headers",
    "iso_timestamp",
    "DTMF_DIGITS",
    "DEFAULT_TIMEOUT_S",
    "Transfer",
    "check_e164",
]

T = TypeVar("T")

#: The gateway's lifecycle vocabulary, as a callback reports it (``queued`` is the gateway's
#: own first state and ``voicemail`` is decided from the audio: no carrier callback says them).
CallStatus = Literal[
    "initiated", "ringing", "in_progress", "completed", "no_answer", "busy", "declined", "failed", "canceled"
]
CALL_STATUSES: tuple[str, ...] = get_args(CallStatus)
TERMINAL_STATUSES = frozenset({"completed", "no_answer", "busy", "declined", "failed", "canceled"})

#: DTMF digits every dialer accepts (ITU-T Q.23 keypad plus A–D); carriers may accept pauses too.
DTMF_DIGITS = frozenset("0123456789*#ABCD")

#: Resolved credentials of one carrier account (values are secrets: never log them).
Credentials = Mapping[str, str]

#: The credential keys each carrier's dialer reads (``*`` optional).
CREDENTIAL_KEYS: dict[str, tuple[str, ...]] = {
    "twilio": ("account_sid", "auth_token"),
    "plivo": ("auth_id", "auth_token"),
    "telnyx": ("api_key", "connection_id", "public_key"),
    "vonage": ("application_id", "private_key", "signature_secret"),
}

#: Module of each dialer, imported on first use (so one SDK's import cost is paid only when used).
_MODULES: dict[str, str] = {
    "twilio": "gateway.dialer.twilio",
    "plivo": "gateway.dialer.plivo",
    "telnyx": "gateway.dialer.telnyx",
    "vonage": "gateway.dialer.vonage",
}
DIALER_KINDS: tuple[str, ...] = tuple(_MODULES)

#: Default time limit (s) on each carrier API request.
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Transfer:
    """Where a live call's callee goes when the agent hands the call over.

    Attributes:
        to: the new party, E.164 (``+14155550123``).
        caller_id: the caller ID the new party sees (E.164): the call's own number, else
            ``None`` (the carrier's default for the leg).
        instructions_url: for carriers that fetch the transfer's instructions (Plivo's
            ``aleg_url``): a gateway URL serving the ``<Dial>`` document (signed by the carrier
            when fetched). ``None`` for the others.
    """

    to: str
    caller_id: str | None = None
    instructions_url: str | None = None


_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def check_e164(number: str) -> str:
    """``number`` if it is E.164 (``+`` and 7–15 digits). Raises :class:`CarrierError`
    ``invalid_request`` otherwise."""
    if not _E164.fullmatch(number or ""):
        raise CarrierError("invalid_request", f"not an E.164 number: {str(number)[:32]!r}")
    return number


@dataclass(frozen=True)
class OutboundRequest:
    """What the gateway asks a carrier to do for one outbound call.

    Attributes:
        call_id: the gateway's call id (carried in callback URLs and stream parameters).
        to: callee, E.164 (``+14155550123``).
        from_: caller ID, E.164, one of the account's numbers.
        stream_url: the per-call media WebSocket (``wss://…/stream/<carrier>/<callId>/<token>``;
            the token is in the path because Twilio drops query strings).
        status_callback_url: where the carrier posts call-progress callbacks (absolute URL).
        answer_url: for carriers that fetch their instructions when the callee answers (Plivo
            ``answer_url``; Vonage ``answer_url`` when no inline NCCO is sent): a gateway URL that
            serves :func:`gateway.carriers.instructions.instruction_document`. ``None`` for
            carriers given the instructions inline (Twilio TwiML, Telnyx ``stream_url``).
        ring_timeout_s: how long the carrier lets it ring before ``no_answer`` (s).
        max_duration_s: the carrier's own hard limit on the call (s), when it has one.
        codec: media codec hint (``PCMU`` μ-law 8 kHz; ``L16`` for carriers that stream PCM).
        sample_rate: media sample rate hint (Hz).
        parameters: string key/values handed back in the stream's start message.
    """

    call_id: str
    to: str
    from_: str
    stream_url: str
    status_callback_url: str
    answer_url: str | None = None
    ring_timeout_s: int = 30
    max_duration_s: int = 3600
    codec: str = "PCMU"
    sample_rate: int = 8000
    parameters: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.stream_url.startswith(("wss://", "ws://")):
            raise ValueError("stream_url must be a ws:// or wss:// URL")
        for number in (self.to, self.from_):
            if not (number.startswith("+") and number[1:].isdigit() and 8 <= len(number) <= 16):
                raise ValueError(f"{number[:20]!r} is not an E.164 number")
        if not 1 <= self.ring_timeout_s <= 600 or not 1 <= self.max_duration_s <= 86400:
            raise ValueError("ring_timeout_s must be 1–600 s and max_duration_s 1–86400 s")


@dataclass(frozen=True)
class PlacedCall:
    """The carrier accepted the call: its own id for it (Twilio ``CA…`` SID, Plivo request
    UUID, Telnyx ``call_control_id``, Vonage UUID), used for hang-up, DTMF and callbacks."""

    carrier_call_id: str


@dataclass(frozen=True)
class CallbackEvent:
    """One carrier callback, read into the gateway's vocabulary.

    Attributes:
        carrier_call_id: the carrier's id of the call (matches :attr:`PlacedCall.carrier_call_id`).
        status: the lifecycle state the callback reports (:data:`CallStatus`), or ``None`` for a
            callback that reports no state change (e.g. a Telnyx ``streaming.started``).
        raw_status: the carrier's own status/event name (``no-answer``, ``call.hangup``, …).
        at: when the carrier says it happened (Unix s), or ``None`` if the callback has no time.
        sequence: an ordering key for idempotency (Twilio ``SequenceNumber``, else the
            timestamp): a callback whose ``(status, sequence)`` was seen is a duplicate; an older
            one after a terminal status is late and changes nothing.
        detail: extra carrier fields worth keeping on the record (duration, hang-up cause, SIP
            code), strings only.
    """

    carrier_call_id: str
    status: CallStatus | None
    raw_status: str
    at: float | None = None
    sequence: float | None = None
    detail: Mapping[str, str] = field(default_factory=dict)


class CarrierError(Exception):
    """A carrier refused or failed a request.

    Attributes:
        code: the carrier's error code as a string (Twilio ``"21211"``; HTTP status when the
            carrier gives none; ``"timeout"`` / ``"network"`` / ``"bad_response"`` for faults
            on the way; ``"credentials"`` when the account lacks a credential;
            ``"invalid_request"`` when the request was refused before it was sent;
            ``"not_supported"`` for :class:`NotSupported`).
        message: the carrier's message (no secrets).
        status: the HTTP status, when there was a response.
    """

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = str(code)
        self.message = message
        self.status = status

    def as_dict(self) -> dict[str, object]:
        """``{"code", "message", "status"}`` for the call record."""
        return {"code": self.code, "message": self.message, "status": self.status}


class NotSupported(CarrierError):
    """The carrier's API has no way to do this (the caller falls back, e.g. in-band DTMF)."""

    def __init__(self, message: str) -> None:
        super().__init__("not_supported", message)


@runtime_checkable
class Dialer(Protocol):
    """One carrier's outbound-call API (see the module docstring for the rules)."""

    kind: str

    async def place(self, req: OutboundRequest, creds: Credentials) -> PlacedCall:
        """Create the call. Raises :class:`CarrierError` (and nothing else)."""
        ...

    async def hang_up(self, carrier_call_id: str, creds: Credentials) -> None:
        """End the call; a call that has already ended is success. Raises :class:`CarrierError`."""
        ...

    async def send_dtmf(self, carrier_call_id: str, digits: str, creds: Credentials) -> None:
        """Send ``digits`` to the callee. Raises :class:`NotSupported` or :class:`CarrierError`."""
        ...

    async def transfer(self, carrier_call_id: str, transfer: Transfer, creds: Credentials) -> None:
        """Move the callee's leg off the media stream to ``transfer.to`` (the stream ends).
        Raises :class:`NotSupported` or :class:`CarrierError`."""
        ...

    def verify_callback(self, method: str, url: str, headers: Mapping[str, str], body: bytes,
                        creds: Credentials) -> bool:
        """Whether a callback really comes from the carrier (SDK validator; headers are
        case-insensitive; ``url`` is the full URL as the carrier requested it). Never raises."""
        ...

    def parse_callback(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> CallbackEvent:
        """Read a (verified) callback. Raises ``ValueError`` for one it cannot read."""
        ...

    def close(self) -> None:
        """Release the dialer's threads and connections."""
        ...


def require_credentials(kind: str, creds: Credentials, keys: tuple[str, ...] | None = None) -> None:
    """Raise :class:`CarrierError` (``credentials``) naming the missing keys (never values)."""
    missing = [k for k in (keys if keys is not None else CREDENTIAL_KEYS[kind]) if not creds.get(k)]
    if missing:
        raise CarrierError("credentials", f"{kind} account lacks {', '.join(missing)}")


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names lower-cased (ASGI gives them lower-case; tests may not)."""
    return {str(k).lower(): str(v) for k, v in headers.items()}


def iso_timestamp(value: object) -> float | None:
    """ISO 8601 (``2018-02-02T22:25:27.521992Z``, a ``Z`` or an offset) → Unix s; ``None`` if
    absent or unreadable (Telnyx ``occurred_at``, Vonage ``timestamp``)."""
    if type(value) is not str:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class SdkDialer:
    """Base for dialers whose SDK blocks: runs each SDK call on the dialer's own threads.

    Subclasses implement ``_place_sync(req, creds) -> PlacedCall``,
    ``_hang_up_sync(carrier_call_id, creds) -> None`` (already-ended handled there) and
    ``_map_error(exc) -> CarrierError``; they may set ``_dtmf_sync`` for REST DTMF.

    Args:
        api_base_url: origin the SDK talks to instead of the carrier (``http://127.0.0.1:port``),
            or ``None`` for the carrier itself.
        timeout_s: limit on each request (s): given to the SDK's HTTP client and enforced again
            around the thread, so a stuck SDK call cannot hold the caller.
        max_workers: threads for SDK calls (a few: calls are short and I/O-bound).
    """

    kind = ""

    def __init__(self, *, api_base_url: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_workers: int = 4) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.api_base_url = api_base_url.rstrip("/") if api_base_url else None
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"dialer-{self.kind}")

    async def _run(self, fn: Callable[..., T], *args) -> T:
        """``fn(*args)`` on the dialer's threads within ``timeout_s`` (+1 s for the SDK's own
        timeout to fire first); every exception becomes a :class:`CarrierError`."""
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._pool, functools.partial(fn, *args))
        try:
            return await asyncio.wait_for(fut, self.timeout_s + 1.0)
        except CarrierError:
            raise
        except TimeoutError:
            raise CarrierError("timeout", f"{self.kind} API gave no answer in {self.timeout_s:g} s") from None
        except Exception as exc:  # every SDK / transport fault is the carrier's, mapped
            raise self._map_error(exc) from exc

    def _map_error(self, exc: Exception) -> CarrierError:  # pragma: no cover - overridden
        return CarrierError("network", f"{type(exc).__name__}: {exc}"[:300])

    def _place_sync(self, req: OutboundRequest, creds: Credentials) -> PlacedCall:  # pragma: no cover
        raise NotImplementedError

    def _hang_up_sync(self, carrier_call_id: str, creds: Credentials) -> None:  # pragma: no cover
        raise NotImplementedError

    async def place(self, req: OutboundRequest, creds: Credentials) -> PlacedCall:
        require_credentials(self.kind, creds)
        return await self._run(self._place_sync, req, creds)

    async def hang_up(self, carrier_call_id: str, creds: Credentials) -> None:
        require_credentials(self.kind, creds)
        await self._run(self._hang_up_sync, carrier_call_id, creds)

    async def send_dtmf(self, carrier_call_id: str, digits: str, creds: Credentials) -> None:
        raise NotSupported(f"{self.kind} has no REST API for DTMF: play in-band tones")

    def _transfer_sync(self, carrier_call_id: str, transfer: Transfer, creds: Credentials) -> None:
        raise NotSupported(f"{self.kind} calls cannot be transferred through its API")

    async def transfer(self, carrier_call_id: str, transfer: Transfer, creds: Credentials) -> None:
        """Transfer the callee to ``transfer.to`` through the carrier's REST API (see each
        dialer's module docstring). Raises :class:`NotSupported` or :class:`CarrierError`."""
        check_e164(transfer.to)
        require_credentials(self.kind, creds)
        await self._run(self._transfer_sync, carrier_call_id, transfer, creds)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def check_digits(digits: str) -> str:
    """``digits`` if every one is a DTMF key (:data:`DTMF_DIGITS`); else ``ValueError``."""
    if not digits or any(d not in DTMF_DIGITS for d in digits) or len(digits) > 32:
        raise ValueError("digits must be 1–32 of 0-9 * # A-D")
    return digits


def make_dialer(kind: str, *, api_base_url: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> Dialer:
    """The dialer for carrier ``kind`` (its module's ``create(api_base_url=, timeout_s=)``).

    Raises:
        ValueError: no dialer for ``kind`` (or its module is not there).
    """
    try:
        module = importlib.import_module(_MODULES[kind])
    except KeyError:
        raise ValueError(f"no dialer for {kind!r}; choose one of {', '.join(DIALER_KINDS)}") from None
    except ModuleNotFoundError as exc:
        if exc.name != _MODULES[kind]:
            raise
        raise ValueError(f"the {kind} dialer is not available") from None
    return module.create(api_base_url=api_base_url, timeout_s=timeout_s)
