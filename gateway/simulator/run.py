"""Run one simulated call: load or synthesise the caller's line, play a script, report."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from gateway.codecs.resample import resample
from gateway.simulator.caller import BargeIn, Say, SimulatedCaller, Step, WaitForAgent
from gateway.simulator.dialects import make_dialect
from gateway.simulator.echo import EchoPath

__all__ = ["load_wav", "caller_line", "to_rate", "run_call", "transcribe", "save_wav"]


def load_wav(path: Path | str) -> tuple[np.ndarray, int]:
    """Read a PCM16 WAV (first channel if several): (int16 samples, rate in Hz).

    Raises:
        ValueError: not 16-bit PCM.
    """
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: need 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        channels = w.getnchannels()
        rate = w.getframerate()
    return pcm[::channels].copy(), rate


def save_wav(path: Path | str, pcm: np.ndarray, rate: int) -> None:
    """Write mono int16 ``pcm`` at ``rate`` Hz."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())


def to_rate(pcm: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Resample int16 ``pcm`` from ``rate`` to ``target`` Hz (whole signal, delay trimmed)."""
    if rate == target:
        return pcm
    return resample(pcm, rate, target)[: int(round(pcm.size * target / rate))]


def caller_line(wav: Path | None, say: str) -> tuple[np.ndarray, int]:
    """The caller's line: ``wav`` if given, else ``say`` synthesised with the bundled Piper voice."""
    if wav is not None:
        return load_wav(wav)
    from gateway.llm.local.engines import SpeechSynthesizer

    tts = SpeechSynthesizer()
    pcm = np.concatenate(list(tts.stream(say)))
    silence = np.zeros(tts.sample_rate // 4, np.int16)
    return np.concatenate([silence, pcm, silence]), tts.sample_rate


def transcribe(pcm: np.ndarray, rate: int) -> str:
    """What pocketsphinx recognises in ``pcm`` (any rate): the caller's ear, in words."""
    from gateway.llm.local.engines import SpeechRecognizer

    return SpeechRecognizer(max_decoders=1).transcribe(to_rate(pcm, rate, 16000))


def build_script(line: np.ndarray, *, barge_in: np.ndarray | None = None, wait_greeting: bool = True) -> list[Step]:
    """Greeting → line → (barge-in over the reply) → wait for the agent to finish."""
    script: list[Step] = []
    if wait_greeting:
        script.append(WaitForAgent(timeout_s=30, quiet_ms=1200))
    script.append(Say(line, "line"))
    if barge_in is not None:
        script.append(BargeIn(barge_in, after_ms=800, label="barge-in"))
    script.append(WaitForAgent(timeout_s=30, quiet_ms=1500))
    return script


async def run_call(url: str, carrier: str, line: tuple[np.ndarray, int], *, barge_in: Path | None = None,
                   wait_greeting: bool = True, out: Path | None = None, transcribe_heard: bool = True,
                   echo: EchoPath | None = None) -> dict:
    """Place one simulated call and return its report as a JSON-ready dict; with ``echo`` the
    caller returns what it hears through that echo path (at the dialect's rate)."""
    dialect = make_dialect(carrier)
    rate = dialect.audio_format.sample_rate
    pcm = to_rate(line[0], line[1], rate)
    interrupt = None
    if barge_in is not None:
        b, brate = load_wav(barge_in)
        interrupt = to_rate(b, brate, rate)
    caller = SimulatedCaller(url, dialect, echo=echo)
    report = await caller.run(build_script(pcm, barge_in=interrupt, wait_greeting=wait_greeting))
    result = report.as_dict()
    if out is not None:
        save_wav(out, report.heard, rate)
        result["heardWav"] = str(out)
    if transcribe_heard and report.heard.size:
        result["heardText"] = transcribe(report.heard, rate)
    return result
