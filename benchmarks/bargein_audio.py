"""Audio for ``gateway bench bargein``: the agent's speech, the caller's lines and backchannels.

* **Agent speech** is synthesised here, not taken from ``../shared``: with Piper through the
  local agent's bundled voice (:class:`gateway.llm.local.engines.SpeechSynthesizer`, en_US joe
  medium, 22,050 Hz) or, with ``engine="espeak"``, espeak-ng when it is installed (a very
  different, formant-synthesised voice). :data:`AGENT_TEXTS` are long sentences (6–10 s) of
  the kind a phone agent says, so the caller has agent audio to stay silent, backchannel or
  barge in over. Clips are cached as WAV under ``cache_dir`` (by engine and text).
* **Caller lines** are the real human recordings of ``../shared/audio/speech`` (LibriVox read
  speech, CMU cards, "go forward"), 16 kHz, resampled to the line's rate. Their own background
  sits 25–45 dB under their peaks, so a plain energy threshold puts their "onset" at the file's
  first sample, up to 500 ms before the voice: :func:`speech_onset` finds the voice against
  each file's own floor, and :func:`from_onset` cuts a line there (5 ms fade-in, after 100 ms of
  digital zero), so the onset the simulated caller reports is the voice's.
* **Backchannels** ("mm-hm"): :func:`backchannel_clips` cuts the loudest ``ms`` (250) of each
  of those recordings, with 15 ms raised-cosine fades: a short voiced burst of a real human
  voice, as long as a backchannel or a cough, shorter than any commit setting.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from gateway.simulator.run import load_wav, save_wav, to_rate

__all__ = ["AGENT_TEXTS", "SHARED_SPEECH", "agent_speech", "caller_lines", "backchannel_clips", "cut_backchannel",
           "speech_onset", "from_onset"]

SHARED_SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "audio" / "speech"

#: What the agent says: one sentence per utterance, 6–10 s spoken.
AGENT_TEXTS = (
    "Thanks for calling the clinic. I can see your appointment is on Thursday at half past two with doctor "
    "Patel, and I can also check the earlier slots if that suits you better.",
    "Your order shipped this morning from our warehouse in Denver, and the tracking number shows it should "
    "arrive on Friday before noon, weather permitting.",
    "Before we continue, I need to confirm a few details on the account, starting with the billing address "
    "and the last four digits of the card you used.",
    "Our opening hours are eight in the morning until six in the evening on weekdays, and from nine until one "
    "on Saturdays; we are closed on Sundays and public holidays.",
    "I have found three flights that match your dates: the first leaves at seven fifteen, the second just "
    "after noon, and the last one departs at nine in the evening.",
    "The new plan includes unlimited calls and texts, twenty gigabytes of data, and free roaming in Europe, "
    "for the same monthly price you are paying today.",
)
#: Caller recordings spoken over the agent (1.5–7 s each).
CALLER_LINES = ("librivox-0870", "librivox-0880", "librivox-0890", "librivox-0920", "librivox-0930", "cards-005",
                "cards-002", "goforward")  # fmt: skip


def _synth_piper(text: str) -> tuple[np.ndarray, int]:
    from gateway.llm.local.engines import SpeechSynthesizer

    tts = SpeechSynthesizer()
    return np.concatenate(list(tts.stream(text))), tts.sample_rate


def _synth_espeak(text: str) -> tuple[np.ndarray, int]:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed: use the Piper voice (engine='piper')")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "a.wav"
        subprocess.run([exe, "-v", "en-us", "-s", "165", "-w", str(out), text], check=True, timeout=60,
                       capture_output=True)  # fmt: skip
        return load_wav(out)


def agent_speech(count: int, *, engine: str = "piper", cache_dir: Path | None = None) -> list[tuple[np.ndarray, int, str]]:
    """The first ``count`` of :data:`AGENT_TEXTS` (cycled) spoken by ``engine``: ``(int16, Hz, text)``.

    Raises:
        ValueError: unknown ``engine``.
        RuntimeError: espeak-ng asked for but not installed.
    """
    synth = {"piper": _synth_piper, "espeak": _synth_espeak}.get(engine)
    if synth is None:
        raise ValueError(f"agent voice must be piper or espeak, not {engine!r}")
    out = []
    for i in range(count):
        text = AGENT_TEXTS[i % len(AGENT_TEXTS)]
        path = None
        if cache_dir is not None:
            key = hashlib.sha256(f"{engine}\n{text}".encode()).hexdigest()[:16]
            path = Path(cache_dir) / f"agent-{engine}-{key}.wav"
        if path is not None and path.exists():
            pcm, rate = load_wav(path)
        else:
            pcm, rate = synth(text)
            if path is not None:
                save_wav(path, pcm, rate)
        out.append((pcm, rate, text))
    return out


def caller_lines(rate: int) -> list[tuple[str, np.ndarray]]:
    """The caller's lines (:data:`CALLER_LINES`) at ``rate`` Hz: ``(name, int16)``.

    Raises:
        FileNotFoundError: ``../shared/audio/speech`` is missing.
    """
    out = []
    for name in CALLER_LINES:
        pcm, src = load_wav(SHARED_SPEECH / f"{name}.wav")
        out.append((name, to_rate(pcm, src, rate)))
    return out


def speech_onset(pcm: np.ndarray, rate: int) -> int:
    """First sample of the first 10 ms of ``pcm`` whose energy is above both the peak − 30 dB and
    the recording's floor (its 10th-percentile 10 ms energy) + 15 dB; 0 if none."""
    win = max(1, rate // 100)
    n = pcm.size // win
    if n == 0:
        return 0
    energy = 10 * np.log10(np.mean(np.square(pcm[: n * win].astype(np.float64)).reshape(n, win), axis=1) + 1e-9)
    threshold = max(energy.max() - 30.0, float(np.percentile(energy, 10)) + 15.0)
    above = np.flatnonzero(energy > threshold)
    return int(above[0] * win) if above.size else 0


def from_onset(pcm: np.ndarray, rate: int, *, seconds: float = 2.0, lead_ms: float = 100.0) -> np.ndarray:
    """``pcm`` from its :func:`speech_onset` for ``seconds``, faded in over 5 ms, after ``lead_ms``
    of digital zero (int16)."""
    start = speech_onset(pcm, rate)
    clip = pcm[start:start + int(seconds * rate)].astype(np.float64)
    f = min(clip.size, max(1, rate // 200))
    clip[:f] *= np.arange(f) / f
    lead = np.zeros(int(rate * lead_ms / 1000))
    return np.rint(np.concatenate([lead, clip])).astype(np.int16)


def cut_backchannel(pcm: np.ndarray, rate: int, *, ms: float = 250.0, fade_ms: float = 15.0) -> np.ndarray:
    """The loudest ``ms`` of ``pcm`` (int16 at ``rate``), faded in and out over ``fade_ms``, int16."""
    n = int(rate * ms / 1000)
    if pcm.size <= n:
        return pcm.copy()
    energy = np.convolve(np.square(pcm.astype(np.float64)), np.ones(n), mode="valid")
    start = int(np.argmax(energy))
    clip = pcm[start:start + n].astype(np.float64)
    f = max(1, int(rate * fade_ms / 1000))
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(f) / f)
    clip[:f] *= ramp
    clip[-f:] *= ramp[::-1]
    return np.rint(clip).astype(np.int16)


def backchannel_clips(rate: int, *, ms: float = 250.0) -> list[tuple[str, np.ndarray]]:
    """A ``ms`` backchannel cut from each caller line (:func:`cut_backchannel`), at ``rate`` Hz."""
    return [(name, cut_backchannel(pcm, rate, ms=ms)) for name, pcm in caller_lines(rate)]
