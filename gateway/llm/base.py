"""The contract between a call session and a realtime model bridge.

A bridge connects one call to one speech model (OpenAI Realtime, Gemini Live, an
OpenAI-compatible server, or the embedded local agent). The session is the only owner of
the call: it creates the bridge, awaits :meth:`ModelBridge.start`, then iterates
:meth:`ModelBridge.events` inside its own task group and calls the other methods from its
own tasks. A bridge does its socket reads (or, for the local agent, its CPU work in worker
threads) inside :meth:`events`; message building and parsing should be pure helpers that
tests can drive without a socket.

Audio in and out is raw bytes in the bridge's declared formats; the session transcodes the
carrier's audio to ``input_format`` and the bridge's ``output_format`` back to the carrier's
(passing G.711 straight through when the formats are equal).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from gateway.formats import AudioFormat

__all__ = [
    "AgentConfig",
    "TurnMode",
    "TurnVerdict",
    "holds_server_turns",
    "AudioOut",
    "Transcript",
    "ResponseDone",
    "SpeechStarted",
    "Interrupted",
    "BridgeError",
    "SessionRenewed",
    "BridgeEvent",
    "ModelBridge",
    "BridgeFailed",
]

TurnMode = Literal["gateway", "server_vad", "semantic_vad"]
#: The gateway's judgement of the caller speech a model's own turn detection hears, while the
#: gateway owns barge-in (:meth:`ModelBridge.turn_verdict`).
TurnVerdict = Literal["pending", "backchannel", "turn", "unheard"]


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """What one call asks of its model (from the agent record or the inline call body).

    Attributes:
        system_prompt: instructions for the model.
        voice: voice name (backend-specific; the local agent has one voice).
        language: BCP-47 tag, e.g. ``en-US``.
        greeting: what the agent says first when ``first_speaker`` is ``agent``.
        model: backend selector, e.g. ``local``, ``openai:gpt-realtime``, ``gemini:…``.
        temperature: sampling temperature, 0–1.
        first_speaker: ``agent`` speaks the greeting first; ``user`` waits for the caller.
        interruptible: whether caller speech barges in on agent audio. The gateway's VAD
            decides it (barge-in mode ``immediate`` or ``pause_then_commit``; a call whose mode
            is ``off`` reaches the bridge as not interruptible), so with the model's own turn
            detection the model is told never to interrupt itself (:func:`holds_server_turns`).
        turn_mode: who decides end of turn: ``gateway`` (our VAD), or the model's own VAD.
        tools: function declarations (JSON schema dicts) forwarded to the model.
        secrets: per-call credentials resolved from settings or secret references; never
            logged nor returned by the API.
    """

    system_prompt: str = "You are a helpful phone agent. Keep answers short."
    voice: str = "joe"
    language: str = "en-US"
    greeting: str = "Hello, thanks for calling. How can I help you today?"
    model: str = "local"
    temperature: float = 0.0
    first_speaker: Literal["agent", "user"] = "agent"
    interruptible: bool = False
    turn_mode: TurnMode = "gateway"
    tools: tuple[dict[str, Any], ...] = ()
    secrets: dict[str, str] = field(default_factory=dict, repr=False)


def holds_server_turns(config: AgentConfig) -> bool:
    """Whether the model's own turn detection runs while the gateway owns barge-in.

    Then the model must not cut its reply on what its VAD hears (the raw caller leg, the
    agent's own echo and backchannels included): OpenAI ``turn_detection.interrupt_response:
    false`` (and ``create_response: false``: the bridge answers a committed turn only once the
    gateway judged it, :meth:`ModelBridge.turn_verdict`); Gemini ``realtimeInputConfig.
    activityHandling: NO_INTERRUPTION``. The gateway's commit cancels and truncates through
    :meth:`ModelBridge.interrupt`, as in ``gateway`` turn mode.
    """
    return config.interruptible and config.turn_mode != "gateway"


@dataclass(frozen=True, slots=True)
class AudioOut:
    """A chunk of agent audio (bytes in the bridge's ``output_format``) for item ``item_id``."""

    item_id: str
    audio: bytes


@dataclass(frozen=True, slots=True)
class Transcript:
    """A finished transcript turn: ``role`` ``user`` (what the caller said) or ``agent``."""

    role: Literal["user", "agent"]
    text: str
    item_id: str = ""


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """No more audio will come for ``response_id``: an audio item id (as in :class:`AudioOut`)
    or a whole response's id. Bridges send one per audio item (the session ends that item's
    playout, padding its last frame), and may send one more for the response itself.
    """

    response_id: str = ""
    status: str = "completed"


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The model's own VAD heard the caller start speaking (server-side turn detection)."""


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The model stopped its reply because the caller spoke (e.g. Gemini ``interrupted``)."""


@dataclass(frozen=True, slots=True)
class BridgeError:
    """An error from the model. ``fatal`` errors end the call with this code and message."""

    code: str
    message: str
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class SessionRenewed:
    """The bridge moved the call to a new model session without dropping it (not an error).

    Attributes:
        reason: ``rollover`` (planned, before the server's session limit) or ``reconnect``
            (after an unexpected disconnect).
        attempts: connection attempts it took (1 = first try).
        gap_ms: ms from the decision to switch until the new session took caller audio.
        carried: conversation items (turns, tool calls) carried into the new session.
        replayed_bytes: caller audio (``input_format`` bytes) sent again to the new session:
            the turn the caller was in (or the one whose answer the old session lost).
    """

    reason: Literal["rollover", "reconnect"]
    attempts: int = 1
    gap_ms: int = 0
    carried: int = 0
    replayed_bytes: int = 0


BridgeEvent = Union[
    AudioOut, Transcript, ResponseDone, SpeechStarted, Interrupted, BridgeError, SessionRenewed
]


class BridgeFailed(Exception):
    """The bridge cannot go on (connection refused, key rejected, setup error).

    Attributes:
        code: short stable label stored in the call record (``model_auth``, ``model_connect``…).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ModelBridge(abc.ABC):
    """One call's connection to a realtime speech model.

    Attributes:
        input_format: what :meth:`send_audio` takes (set by :meth:`start` at the latest).
        output_format: what :class:`AudioOut` carries (set by :meth:`start` at the latest).
        name: backend name for logs and records.
        model_interrupts: the model's own VAD cuts its reply when the caller speaks (a server
            turn mode on a server that cannot be told otherwise, e.g. xAI's bare
            ``turn_detection``): the session then treats its :class:`SpeechStarted` over agent
            audio as a barge-in. Set by :meth:`start` at the latest.
    """

    name: str = "model"
    model_interrupts: bool = False
    input_format: AudioFormat
    output_format: AudioFormat

    @abc.abstractmethod
    async def start(self, config: AgentConfig, carrier_format: AudioFormat) -> None:
        """Connect and configure the model; speak the greeting if ``first_speaker`` is agent.

        ``carrier_format`` lets a bridge pass G.711 straight through when the model takes it.

        Raises:
            BridgeFailed: connection refused, key rejected, or setup rejected.
        """

    @abc.abstractmethod
    async def send_audio(self, audio: bytes) -> None:
        """Send caller audio (bytes in ``input_format``, any length)."""

    async def speech_started(self) -> None:
        """The gateway's VAD heard the caller start a turn (``gateway`` turn mode)."""

    async def end_of_turn(self) -> None:
        """The gateway's VAD decided the caller's turn ended (``gateway`` turn mode)."""

    async def turn_verdict(self, verdict: TurnVerdict) -> None:
        """The gateway's judgement of the caller's speech over agent audio (server turn modes).

        Sent by the session on every call; a bridge acts on it only when
        :func:`holds_server_turns` (otherwise it is a no-op, as this default).

        Args:
            verdict: ``pending``: caller speech paused the agent (pause-then-commit), its
                verdict is not in yet: a user turn the model commits meanwhile waits for it;
                ``backchannel``: that pause resumed on short speech: the user turn the model
                heard in it is not answered nor kept; ``turn``: the caller's speech is a turn
                (a committed barge-in, or speech with no agent audio): answer it. A pause
                always ends (``PAUSE_GRACE_MS`` in :mod:`gateway.session.bargein`), so
                ``pending`` is always followed by one of the others; ``unheard``: the model's
                VAD started over agent audio while the gateway's VAD hears no caller (the
                agent's echo, noise): unless the gateway's VAD hears the caller before that user
                turn is committed (a later verdict), it is not answered nor kept.
        """

    async def say(self, text: str) -> None:
        """Speak ``text`` now as the agent (e.g. an inactivity prompt).

        Raises:
            NotImplementedError: the backend cannot be told what to say.
        """
        raise NotImplementedError(f"{self.name} cannot speak an arbitrary line")

    @abc.abstractmethod
    async def interrupt(self, item_id: str | None, heard_ms: int) -> None:
        """Barge-in: cancel the reply in progress and cut the model's memory of it.

        Args:
            item_id: the latest agent audio item the caller was hearing, or ``None``.
            heard_ms: whole ms of that item the caller actually heard (from mark acks),
                never more than the bridge sent; 0 means nothing was heard.
        """

    @abc.abstractmethod
    def events(self) -> AsyncIterator[BridgeEvent]:
        """Yield model events until the bridge is closed. Run inside the session's tasks."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the model connection; idempotent."""
