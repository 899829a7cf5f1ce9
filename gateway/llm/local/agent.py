"""The embedded local agent: offline recognition → responder → offline synthesis.

The gateway's own VAD drives turns (``gateway`` turn mode): :meth:`speech_started` opens an
utterance (with pre-roll, since the VAD confirms speech a little after its onset) whose audio
pocketsphinx decodes in worker threads *while the caller speaks*, and :meth:`end_of_turn`
finishes it, so recognition adds only its final passes (about 0.15 s) to the turn latency. The reply text comes from a
:class:`~gateway.llm.local.responder.Responder` and is spoken by Piper sentence by sentence, so
the first audio leaves after the first sentence is synthesised, not the whole reply.

On barge-in, :meth:`interrupt` stops the reply at once and cuts the conversation history to the
words the caller actually heard (by the share of the item's audio that was played).

Formats: input L16 16 kHz, output L16 at the voice's rate (22,050 Hz).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from collections import deque
from collections.abc import AsyncIterator

import numpy as np

from gateway.formats import L16_16K, AudioFormat, Encoding
from gateway.llm.base import (
    AgentConfig,
    AudioOut,
    BridgeEvent,
    ModelBridge,
    ResponseDone,
    Transcript,
)
from gateway.llm.local.engines import LocalEngines, SpeechRecognizer
from gateway.llm.local.responder import Message, Responder

__all__ = ["LocalAgentBridge", "cut_to_heard", "split_sentences"]

log = logging.getLogger(__name__)

_PREROLL_MS = 600
_FEED_BYTES = 16000 * 2 * 320 // 1000  # hand the decoder 320 ms of audio at a time


class _StreamingTurn:
    """One caller turn decoded as it arrives: a chain of worker-thread steps, in order."""

    def __init__(self, asr: SpeechRecognizer, band: str) -> None:
        self._begin = asyncio.create_task(asyncio.to_thread(asr.begin, band))
        self._last: asyncio.Task = self._begin
        self.result: asyncio.Task[str] | None = None

    def feed(self, chunk: bytes) -> None:
        prev = self._last

        async def step() -> None:
            await prev
            await asyncio.to_thread(self._begin.result().feed, chunk)

        self._last = asyncio.create_task(step())

    def finish(self) -> asyncio.Task[str]:
        """The recognised text (``""`` if decoding failed); the decoder is always released."""
        if self.result is None:
            prev = self._last

            async def step() -> str:
                with contextlib.suppress(Exception):
                    await prev
                try:
                    utterance = await self._begin
                except Exception:  # noqa: BLE001 - no decoder: nothing to recognise
                    log.warning("speech recognition could not start", exc_info=True)
                    return ""
                try:
                    return await asyncio.to_thread(utterance.finish)
                except Exception:  # noqa: BLE001
                    log.warning("speech recognition failed", exc_info=True)
                    return ""

            self.result = asyncio.create_task(step())
        return self.result
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


def split_sentences(text: str) -> list[str]:
    """Split reply text at sentence and clause ends (``.!?;:`` then space).

    Each piece is synthesised and sent on its own, so the first audio leaves after the first
    piece is synthesised rather than the whole reply.
    """
    return [s for s in (p.strip() for p in _SENTENCE_END.split(text)) if s]


def cut_to_heard(spoken: list[tuple[str, int]], heard_ms: int) -> str:
    """The words of a reply the caller heard.

    Args:
        spoken: (sentence, ms of its audio) in the order played.
        heard_ms: whole ms of the reply's audio the caller heard.

    Returns:
        Whole sentences heard, plus the leading share of the sentence in progress (speech rate
        is near constant within a sentence), cut at a word boundary; ``""`` if nothing.
    """
    kept: list[str] = []
    left = heard_ms
    for sentence, ms in spoken:
        if left <= 0 or ms <= 0:
            break
        if left >= ms:
            kept.append(sentence)
        else:
            words = sentence.split()
            part = " ".join(words[: int(len(words) * left / ms)])
            if part:
                kept.append(part)
        left -= ms
    return " ".join(kept)


class LocalAgentBridge(ModelBridge):
    """A :class:`ModelBridge` that runs entirely on this machine.

    Args:
        engines: the process-wide recognizer and synthesizer.
        responder: produces reply text (echo diagnostic or a chat-completions endpoint).
    """

    name = "local"

    def __init__(self, *, engines: LocalEngines, responder: Responder) -> None:
        self._engines = engines
        self._responder = responder
        self.input_format = L16_16K
        self.output_format = AudioFormat(Encoding.L16, engines.tts.sample_rate)
        self._jobs: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        self._preroll: deque[bytes] = deque()
        self._preroll_samples = 0
        self._turn: _StreamingTurn | None = None
        self._pending = bytearray()
        self._turns: set[_StreamingTurn] = set()
        self._band = "wide"
        self._generation = 0
        self._history: list[Message] = []
        self._spoken: dict[str, tuple[int, list[tuple[str, int]]]] = {}  # item -> (idx, played)
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
        if self._turn is None:
            self._turn = _StreamingTurn(self._engines.asr, self._band)
            self._turns.add(self._turn)
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
        idx, played = spoken
        kept = cut_to_heard(played, heard_ms)
        if idx < len(self._history):
            if kept:
                self._history[idx] = {"role": "assistant", "content": kept}
            else:
                del self._history[idx]

    async def events(self) -> AsyncIterator[BridgeEvent]:
        while not self._closed:
            kind, payload = await self._jobs.get()
            if kind == "close":
                return
            if kind == "turn":
                text = await payload.finish()
                self._turns.discard(payload)
                yield Transcript("user", text)
                self._history.append({"role": "user", "content": text})
                generation = self._generation
                reply = await self._responder.reply(list(self._history))
                if generation != self._generation:
                    continue  # the caller spoke again while we were thinking
            else:
                reply = str(payload)
            async for event in self._speak(reply):
                yield event

    async def _speak(self, text: str) -> AsyncIterator[BridgeEvent]:
        item_id = f"local_{next(self._ids)}"
        generation = self._generation
        self._history.append({"role": "assistant", "content": text})
        played: list[tuple[str, int]] = []
        self._spoken[item_id] = (len(self._history) - 1, played)
        yield Transcript("agent", text, item_id)
        rate = self.output_format.sample_rate
        tts = self._engines.tts
        for sentence in split_sentences(text):
            if generation != self._generation:
                break
            chunks = await asyncio.to_thread(lambda s=sentence: list(tts.stream(s)))
            if generation != self._generation:
                break
            if not chunks:
                continue
            pcm = np.concatenate(chunks)
            played.append((sentence, pcm.size * 1000 // rate))
            yield AudioOut(item_id, pcm.astype("<i2", copy=False).tobytes())
        status = "completed" if generation == self._generation else "cancelled"
        yield ResponseDone(item_id, status)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._jobs.put_nowait(("close", None))
            for turn in list(self._turns):  # give every decoder back to the pool
                await turn.finish()
            self._turns.clear()
            await self._responder.aclose()
