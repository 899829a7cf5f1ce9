"""Pipecat 1.14's inbound media path, timed per Twilio media message (the peer of ``gateway bench peers``).

Runs **only** inside its own virtual environment (``benchmarks/peers/.venv-pipecat``, created by
``benchmarks/peers/run.py`` with ``pip install "pipecat-ai[silero]==1.14.0"``, no torch); it
imports nothing from the gateway, and the gateway never imports it.

Input: a JSON-lines file, one Twilio ``media`` message per line as ``{"call": i, "message": text}``
(``text`` is the exact WebSocket text frame), tick-major: the 20 ms messages of every call for
tick 0, then tick 1, … — the frames ``gateway bench media`` feeds its Twilio calls.

Per call, what a Pipecat pipeline with a Twilio ``FastAPIWebsocketTransport`` does on the inbound
path for each message, with the APIs as ``pipecat-ai==1.14.0`` defines them:

* ``await TwilioFrameSerializer.deserialize(text)`` (``pipecat/serializers/twilio.py``):
  ``json.loads``, ``base64.b64decode``, ``audioop.ulaw2lin`` and the SOXR stream resampler from
  8 kHz to the pipeline's input rate (``FrameProcessorSetup.audio_in_sample_rate``, 16 kHz by
  default; none at 8 kHz), giving an ``InputAudioRawFrame``;
* ``await SileroVADAnalyzer.analyze_audio(frame.audio)`` (``pipecat/audio/vad/vad_analyzer.py``,
  ``pipecat/audio/vad/silero.py``) at the pipeline's rate: the analyzer's one-thread executor
  runs ``_run_analyzer``, which scores every complete 512-sample (16 kHz) or 256-sample (8 kHz)
  window with its own ONNX session (1 thread) and updates the VAD state. With ``direct`` the
  executor hop is skipped (``_run_analyzer`` called inline): the work alone, a lower bound.

Each call has its own serializer and analyzer (Pipecat runs one pipeline per call). Only those
two awaits are timed (``time.process_time_ns``: the whole process, every thread, so the
executor's CPU counts); set-up is not. The garbage collector is off while timing, as in
``gateway bench media``.

Usage::

    python pipecat_media.py --messages msgs.jsonl [--rate 16000] [--direct] [--rounds 1]
    python pipecat_media.py --messages msgs.jsonl --serve   # one JSON command per stdin line

One-shot mode prints one JSON document per round, the last line being the summary of all
rounds. ``--serve`` answers each stdin line (``{"rate": 16000, "direct": false}``) with one JSON
line (one round), until end of input; ``gateway bench peers`` uses it to alternate the peer's
rounds with the gateway's in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata as md
import importlib.util
import json
import platform
import statistics
import sys
import time
from types import SimpleNamespace
from typing import Any

FRAME_MS = 20
PIPECAT_VERSION = "1.14.0"


def refuse_torch() -> None:
    """Exit with status 2 if torch is importable here: the peer must run as installed without it."""
    if importlib.util.find_spec("torch") is not None:
        print("pipecat_media: torch is installed in this environment; the peer venv must not have it",
              file=sys.stderr)  # fmt: skip
        sys.exit(2)


def load_messages(path: str) -> list[list[str]]:
    """The messages of every call, ``[call][tick]`` (texts), from the JSON-lines file.

    Raises:
        ValueError: calls with different numbers of messages, or a line without ``call``/``message``.
    """
    by_call: dict[int, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                by_call.setdefault(int(row["call"]), []).append(row["message"])
    calls = [by_call[i] for i in sorted(by_call)]
    if not calls or len({len(c) for c in calls}) != 1:
        raise ValueError(f"{path}: every call needs the same number of messages")
    return calls


def _stream_sid(text: str) -> str:
    return json.loads(text).get("streamSid") or "MZ0"


async def one_round(calls: list[list[str]], rate: int, direct: bool = False) -> dict[str, Any]:
    """Every call's messages through Pipecat's serializer and Silero VAD; CPU µs per message.

    Args:
        calls: ``[call][tick]`` Twilio media message texts.
        rate: the pipeline's input rate (8000 or 16000 Hz): the serializer resamples to it and
            the analyzer runs at it.
        direct: call ``_run_analyzer`` inline instead of ``analyze_audio`` (no executor hop).

    A message whose audio the resampler holds back entirely (its first at 16 kHz) yields no
    frame, as in Pipecat, so no VAD call: its deserialize time counts, and it is counted in
    ``messages_without_frame``.

    Raises:
        RuntimeError: a frame came out at another rate than ``rate``.
    """
    from loguru import logger

    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.audio.vad.vad_analyzer import VADState
    from pipecat.serializers.twilio import TwilioFrameSerializer

    logger.remove()  # its per-analyzer debug lines are not part of the path
    pipes = []
    for msgs in calls:
        # resampler_clear_after_secs=None: live, a call's messages are 20 ms apart, under the 0.2 s
        # after which the resampler drops its state; here a tick of many calls can take longer,
        # which would make it discard audio (and Pipecat score less of it) only in this benchmark.
        params = TwilioFrameSerializer.InputParams(auto_hang_up=False, resampler_clear_after_secs=None)
        ser = TwilioFrameSerializer(stream_sid=_stream_sid(msgs[0]), params=params)
        await ser.setup(SimpleNamespace(audio_in_sample_rate=rate))  # what it reads of FrameProcessorSetup
        vad = SileroVADAnalyzer()
        vad.set_sample_rate(rate)  # as BaseInputTransport does on StartFrame
        pipes.append((ser, vad, vad._run_analyzer if direct else vad.analyze_audio))
    ticks = len(calls[0])
    des_ns = vad_ns = 0
    wall0 = time.perf_counter_ns()
    speaking = empty = analysed = 0
    gc.collect()
    gc.disable()
    try:
        for tick in range(ticks):
            for (ser, _vad, analyze), msgs in zip(pipes, calls):
                c0 = time.process_time_ns()
                frame = await ser.deserialize(msgs[tick])
                c1 = time.process_time_ns()
                des_ns += c1 - c0
                if frame is None:  # the resampler held all of it back (its start-up delay): no frame
                    empty += 1
                    continue
                state = analyze(frame.audio) if direct else await analyze(frame.audio)
                vad_ns += time.process_time_ns() - c1
                speaking += state is VADState.SPEAKING
                analysed += len(frame.audio)
                if frame.sample_rate != rate:
                    raise RuntimeError(f"frame at {frame.sample_rate} Hz, expected {rate}")
    finally:
        gc.enable()
    wall_ns = time.perf_counter_ns() - wall0
    for _ser, vad, _a in pipes:
        await vad.cleanup()
    frames = len(calls) * ticks
    us = (des_ns + vad_ns) / 1000 / frames
    return {
        "peer": "pipecat", "rate": rate, "direct": direct, "calls": len(calls), "frames": frames,
        "us_per_frame": round(us, 2),
        "us_deserialize": round(des_ns / 1000 / frames, 2),
        "us_vad": round(vad_ns / 1000 / frames, 2),
        "cpu_ms_per_call_second": round(us * (1000 // FRAME_MS) / 1000, 3),
        "us_per_frame_wall": round(wall_ns / 1000 / frames, 2),
        "speaking_fraction": round(speaking / frames, 3),
        "messages_without_frame": empty,
        # audio handed to the VAD ÷ audio received (below 1 at 16 kHz by the resampler's delay)
        "audio_share": round(analysed / 2 / rate / (frames * FRAME_MS / 1000), 3),
    }  # fmt: skip


def versions() -> dict[str, str]:
    """The peer environment: Python and the packages that do the work."""
    out = {"python": platform.python_version()}
    for name in ("pipecat-ai", "onnxruntime", "numpy", "soxr", "audioop-lts"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def serve(calls: list[list[str]]) -> None:
    """Answer each stdin line (a JSON command) with one JSON result line, until end of input."""
    print(json.dumps({"ready": True, "calls": len(calls), "ticks": len(calls[0]), "versions": versions()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        try:
            row = asyncio.run(one_round(calls, int(cmd.get("rate", 16000)), bool(cmd.get("direct", False))))
        except Exception as exc:  # reported to the driver, which fails loudly
            row = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(row), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", required=True, help="JSON-lines file of Twilio media messages")
    ap.add_argument("--rate", type=int, default=16000, choices=(8000, 16000), help="pipeline input rate")
    ap.add_argument("--direct", action="store_true", help="call _run_analyzer inline (no executor hop)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--serve", action="store_true", help="one round per JSON command on stdin")
    args = ap.parse_args(argv)
    refuse_torch()
    if md.version("pipecat-ai") != PIPECAT_VERSION:
        print(f"pipecat_media: pipecat-ai {md.version('pipecat-ai')} installed, expected {PIPECAT_VERSION}",
              file=sys.stderr)  # fmt: skip
        return 2
    calls = load_messages(args.messages)
    if args.serve:
        serve(calls)
        return 0
    rows = []
    for _ in range(max(1, args.rounds)):
        rows.append(asyncio.run(one_round(calls, args.rate, args.direct)))
        print(json.dumps(rows[-1]), flush=True)
    us = [r["us_per_frame"] for r in rows]
    print(json.dumps({"peer": "pipecat", "rate": args.rate, "direct": args.direct, "rounds": rows,
                      "us_per_frame_median": statistics.median(us), "us_per_frame_min": min(us),
                      "us_per_frame_max": max(us), "versions": versions()}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
