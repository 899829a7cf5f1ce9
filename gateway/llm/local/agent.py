"""The embedded local agent: offline recognition → responder → offline synthesis.

The gateway's own VAD drives turns (``gateway`` turn mode): :meth:`speech_started` opens an
utterance (with pre-roll, since the VAD confirms speech a little after its onset) that a
worker process decodes *while the caller speaks*, and :meth:`end_of_turn` finishes it, so
recognition adds only its final passes (about 0.15 s) to the turn latency. The reply text
comes from a :class:`~gateway.llm.local.responder.Responder` and is spoken by Piper sentence
by sentence, so the first audio leaves after the first sentence is synthesised.

Recognition and synthesis run in the engine pool's worker processes
(:class:`~gateway.llm.local.remote.LocalEngines`), never on the event loop: a failed or
crashed engine costs one turn, reported as a non-fatal :class:`BridgeError` (``asr_failed``:
the agent apologises and listens again; ``tts_failed``: one retry, then the reply is dropped).
:meth:`close` never waits on engine work: open utterances are aborted.

On barge-in, :meth:`interrupt` stops the reply at once and cuts the conversation history to the
words the caller actually heard (by the share of the item's audio that was played). Each spoken
item keeps a reference to its own history message, so a cut always reaches that message even
after earlier ones were removed or trimmed.

The history sent to the responder is bounded, so a long call (``maxDuration`` up to 7,200 s)
never overflows the model's context: the system prompt, then the newest messages that fit
``history_limit_chars`` (default :data:`HISTORY_LIMIT_CHARS`, the OpenAI bridge's carry-over
budget, about 25k tokens); older messages are forgotten.

Formats: input L16 16 kHz, output L16 at the voice's rate (22,050 Hz).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections import deque
from collections.abc import AsyncIterator

from gateway.formats import L16_16K, AudioFormat, Encoding
from gateway.llm.base import (
    AgentConfig,
    AudioOut,
    BridgeError,
    BridgeEvent,
    ModelBridge,
    ResponseDone,
    Transcript,
)
from gateway.llm.common import cut_heard
from gateway.llm.local.remote import EngineError, LocalEngines, RemoteUtterance
from gateway.llm.local.responder import Message, Responder
from gateway.llm.openai_history import CARRY_LIMIT_CHARS

__all__ = ["LocalAgentBridge", "split_sentences", "bound_history", "HISTORY_LIMIT_CHARS"]

log = logging.getLogger(__name__)

#: Caller audio kept before the start of a turn (ms): the VAD's confirmation, or a
#: pause-then-commit barge-in's commit (the model hears of that turn once the caller has been
#: voiced ``commit_ms``, 400 ms by default, after the onset).
_PREROLL_MS = 1200
_FEED_BYTES = 16000 * 2 * 320 // 1000  # hand the decoder 320 ms of audio at a time
_TTS_RETRY_S = 0.5  # a failed synthesis is tried once more after this (a worker may be restarting)
#: Said when the caller's turn could not be recognised (its engine failed).
APOLOGY = "Sorry, I did not catch that. Could you say it again?"
#: Most characters of history (system prompt included) sent to the responder each turn.
HISTORY_LIMIT_CHARS = CARRY_LIMIT_CHARS


class _FailedTurn:
    """A turn whose recognition could not even start (no worker): finishing reports why."""

    def __init__(self, error: EngineError) -> None:
        self._error = error

    def feed(self, pcm: bytes) -> None:
        return None

    async def finish(self) -> str:
        raise self._error

    def abort(self) -> None:
        return None


_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


def split_sentences(text: str) -> list[str]:
    """Split reply text at sentence and clause ends (``.!?;:`` then space).

    Each piece is synthesised and sent on its own, so the first audio leaves after the first
    piece is synthesised rather than the whole reply.
    """
    return [s for s in (p.strip() for p in _SENTENCE_END.split(text)) if s]


def bound_history(history: list[Message], limit_chars: int) -> list[Message]:
    """``history``'s first message (the system prompt), then its newest messages whose
    contents fit ``limit_chars`` together with it (the newest one is always kept).

    The same message objects are returned (not copies), in order.
    """
    if len(history) <= 1:
        return list(history)
    head, rest = history[0], history[1:]
    total = len(head.get("content") or "")
    start = len(rest) - 1
    total += len(rest[start].get("content") or "")
    while start > 0:
        size = len(rest[start - 1].get("content") or "")
        if total + size > limit_chars:
            break
        total += size
        start -= 1
    return [head, *rest[start:]]


class LocalAgentBridge(ModelBridge):
    """A :class:`ModelBridge` that runs entirely on this machine.

    Args:
        engines: the process-wide recognizer and synthesizer.
        responder: produces reply text (echo diagnostic or a chat-completions endpoint).
        history_limit_chars: most characters of history kept and sent to the responder
            (see :func:`bound_history`).
    """

    name = "local"

    def __init__(self, *, engines: LocalEngines, responder: Responder,
                 history_limit_chars: int = HISTORY_LIMIT_CHARS) -> None:
        self._engines = engines
        self._history_limit = history_limit_chars
        self._responder = responder
        self.input_format = L16_16K
        self.output_format = AudioFormat(Encoding.L16, engines.sample_rate)
        self._jobs: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        self._preroll: deque[bytes] = deque()
        self._preroll_samples = 0
        self._turn: RemoteUtterance | _FailedTurn | None = None
        self._pending = bytearray()
        self._open: set[RemoteUtterance | _FailedTurn] = set()  # begun, not yet finished
        self._band = "wide"
        self._generation = 0
        self._history: list[Message] = []
        # item -> (its history message, [(sentence, ms of audio)] played so far)
        self._spoken: dict[str, tuple[Message, list[tuple[str, int]]]] = {}
        self._ids = itertools.count(1)
        self._closed = False

    async def start(self, config: AgentConfig, carrier_format: AudioFormat) -> None:
        self._band = "narrow" if carrier_format.sample_rate <= 8000 else "wide"
        self._history = [{"role": "system", "content": config.system_prompt}]
        if config.first_speaker == "agent" and config.greeting.strip():
            self._jobs.put_nowait(("say", config.greeting.strip()))

    async def send_audio(self, audio: bytes) -> None:
        if self._turn is not None:
            self._pending += audio
            if len(self._pending) >= _FEED_BYTES:
                self._turn.feed(bytes(self._pending))
                self._pending.clear()
            return
        self._preroll.append(audio)
        self._preroll_samples += len(audio) // 2
        limit = L16_16K.sample_rate * _PREROLL_MS // 1000
        while self._preroll and self._preroll_samples - len(self._preroll[0]) // 2 >= limit:
            self._preroll_samples -= len(self._preroll.popleft()) // 2

    async def speech_started(self) -> None:
        if self._turn is None and not self._closed:
            try:
                self._turn = self._engines.begin(self._band)
            except EngineError as exc:
                self._turn = _FailedTurn(exc)
            self._open.add(self._turn)
            self._pending = bytearray(b"".join(self._preroll))
            self._preroll.clear()
            self._preroll_samples = 0

    async def end_of_turn(self) -> None:
        turn, self._turn = self._turn, None
        if turn is None:
            return
        if self._pending:
            turn.feed(bytes(self._pending))
            self._pending.clear()
        self._jobs.put_nowait(("turn", turn))

    async def say(self, text: str) -> None:
        self._jobs.put_nowait(("say", text))

    async def interrupt(self, item_id: str | None, heard_ms: int) -> None:
        self._generation += 1
        spoken = self._spoken.get(item_id or "")
        if spoken is None:
            return
        message, played = spoken
        self._set_said(message, cut_heard(played, heard_ms, suffix=""))

    def _set_said(self, message: Message, kept: str) -> None:
        """The assistant ``message`` now says ``kept``; it leaves the history if ``kept`` is empty."""
        message["content"] = kept  # what the caller heard, for a correction of its transcript
        if not kept:
            for i, m in enumerate(self._history):
                if m is message:
                    del self._history[i]
                    break

    def _remember(self, message: Message) -> None:
        """Append ``message`` to the history, then forget what no longer fits its budget."""
        self._history.append(message)
        if len(self._history) > 2:
            self._history = bound_history(self._history, self._history_limit)
            kept = {id(m) for m in self._history}
            for item_id in [k for k, (m, _) in self._spoken.items() if id(m) not in kept]:
                del self._spoken[item_id]

    async def events(self) -> AsyncIterator[BridgeEvent]:
        while not self._closed:
            kind, payload = await self._jobs.get()
            if kind == "close":
                return
            if kind == "turn":
                try:
                    text: str | None = await payload.finish()
                except EngineError as exc:
                    log.warning("speech recognition failed: %s", exc)
                    text = None
                    error = exc
                # Cancelled meanwhile (the call ended): the turn stays open for close() to abort.
                self._open.discard(payload)
                if text is None:
                    yield BridgeError("asr_failed", str(error)[:200], fatal=False)
                    reply = APOLOGY
                else:
                    yield Transcript("user", text)
                    self._remember({"role": "user", "content": text})
                    generation = self._generation
                    reply = await self._responder.reply(list(self._history))
                    if generation != self._generation:
                        continue  # the caller spoke again while we were thinking
            else:
                reply = str(payload)
            async for event in self._speak(reply):
                yield event

    async def _synthesize(self, sentence: str) -> bytes | EngineError:
        """The sentence's audio, retried once; the error if both attempts failed."""
        try:
            return await self._engines.synthesize(sentence)
        except EngineError as exc:
            log.warning("speech synthesis failed, retrying: %s", exc)
        await asyncio.sleep(_TTS_RETRY_S)
        try:
            return await self._engines.synthesize(sentence)
        except EngineError as exc:
            return exc

    async def _speak(self, text: str) -> AsyncIterator[BridgeEvent]:
        item_id = f"local_{next(self._ids)}"
        generation = self._generation
        message: Message = {"role": "assistant", "content": text}
        self._remember(message)
        played: list[tuple[str, int]] = []
        self._spoken[item_id] = (message, played)
        yield Transcript("agent", text, item_id)
        rate = self.output_format.sample_rate
        status = "completed"
        for sentence in split_sentences(text):
            if generation != self._generation:
                break
            pcm = await self._synthesize(sentence)
            if generation != self._generation:
                break
            if isinstance(pcm, EngineError):
                yield BridgeError("tts_failed", str(pcm)[:200], fatal=False)
                self._set_said(message, " ".join(s for s, _ in played))  # remember only what was said
                status = "failed"
                break
            if not pcm:
                continue
            played.append((sentence, len(pcm) // 2 * 1000 // rate))
            yield AudioOut(item_id, pcm)
        if generation != self._generation:
            status = "cancelled"
        if message["content"] != text:  # cut by a barge-in, or a synthesis failure, mid-reply: a
            yield Transcript("agent", message["content"], item_id)  # correction of the transcript
        yield ResponseDone(item_id, status)

    async def close(self) -> None:
        """End the session without waiting on engine work: open utterances are aborted."""
        if not self._closed:
            self._closed = True
            self._jobs.put_nowait(("close", None))
            for turn in list(self._open):  # queued audio is dropped, decoders are released
                turn.abort()
            self._open.clear()
            self._turn = None
            await self._responder.aclose()
