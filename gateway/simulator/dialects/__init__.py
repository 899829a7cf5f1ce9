"""The carrier side of each media-stream protocol, for simulated callers.

A dialect builds the messages a carrier sends (hello, start, media, DTMF, mark echoes, stop)
and reads the messages a gateway sends back (media, mark, clear). It is the mirror image of
the adapters in :mod:`gateway.carriers`, written from the carriers' documentation rather than
from those adapters, so a test that pairs them checks one against the other.

=========  ==================================================  ==============================
dialect    carrier messages (source)                           audio (default)
=========  ==================================================  ==============================
twilio     Twilio Media Streams: twilio.com/docs/voice/        μ-law 8 kHz, base64 in JSON
           media-streams/websocket-messages
telnyx     Telnyx media streaming (``rtp`` bidirectional       PCMU 8 kHz (PCMA, L16
           mode): developers.telnyx.com/docs/voice/            big-endian), base64 in JSON
           programmable-voice/media-streaming
plivo      Plivo audio streams: plivo.com/docs/voice-agents/   μ-law 8 kHz (L16 8 / 16 kHz),
           audio-streaming/concepts/audio-streaming-reference  base64 in JSON
vonage     Vonage Voice WebSocket: developer.vonage.com/en/    L16 16 kHz, binary frames of
           voice/voice-api/concepts/websockets                 exactly 20 ms
exotel     Exotel AgentStream (Voicebot applet):               L16 8 kHz (16 / 24 kHz),
           developer.exotel.com/docs/agentstream/              base64 in JSON
           websocket-protocol
raw        the gateway's own protocol                          L16 16 kHz, binary frames
=========  ==================================================  ==============================

Every dialect takes and returns **little-endian** PCM for L16 (what the simulator's codecs
produce); the Telnyx dialect converts to and from the big-endian RTP byte order on the wire
when it speaks L16.
"""

from __future__ import annotations

from gateway.simulator.dialects._common import CallerDialect, Frame, Inbound
from gateway.simulator.dialects.twilio import TwilioCaller
from gateway.simulator.dialects.telnyx import TelnyxCaller
from gateway.simulator.dialects.plivo import PlivoCaller
from gateway.simulator.dialects.vonage import VonageCaller
from gateway.simulator.dialects.exotel import ExotelCaller
from gateway.simulator.dialects.raw import RawCaller

__all__ = [
    "CallerDialect",
    "Frame",
    "TwilioCaller",
    "TelnyxCaller",
    "PlivoCaller",
    "VonageCaller",
    "ExotelCaller",
    "RawCaller",
    "Inbound",
    "make_dialect",
    "DIALECTS",
]

DIALECTS = {
    "twilio": TwilioCaller,
    "telnyx": TelnyxCaller,
    "plivo": PlivoCaller,
    "vonage": VonageCaller,
    "exotel": ExotelCaller,
    "raw": RawCaller,
}


def make_dialect(name: str, **options) -> CallerDialect:
    """A fresh caller-side dialect by carrier name (``options`` go to its constructor).

    Raises:
        ValueError: no simulated caller speaks that protocol, or bad options.
    """
    try:
        cls = DIALECTS[name]
    except KeyError:
        raise ValueError(f"no simulated caller for {name!r}; choose one of {sorted(DIALECTS)}") from None
    return cls(**options)
