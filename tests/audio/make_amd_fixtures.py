"""Builds the answering-machine-detection fixtures in ``tests/audio/fixtures/amd/``.

Usage (needs espeak-ng on PATH and the venv's Piper + joe voice; CI only reads the output)::

    .venv/bin/python tests/audio/make_amd_fixtures.py

Every file is generated here, never taken from ``../shared/audio``: call openings spoken by
espeak-ng (several voices and speeds) and Piper (en_US joe), placed after an answer delay,
followed by silence, a beep (single, double or two-tone; 440–2,000 Hz, 100–600 ms) or
nothing; with level changes and white or pink line noise (−60 … −40 dBFS); resampled to
8 kHz and μ-law round-tripped as the phone path does. Output: 8 kHz mono PCM16 WAVs and
``labels.json``, one entry per file:

``file``, ``label`` (what answered: human / machine / screening / silence), ``expect`` (the
verdict the audio alone should give), ``expect_with_text`` (with the transcript fed at the
greeting's end), ``text``, ``voice``, ``speech_start_s``, ``greeting_end_s``, and for beeps
``beep_start_s`` / ``beep_end_s``. Deterministic (seeded noise; espeak-ng and Piper are
deterministic for a given version).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.audio.tones import tone  # noqa: E402
from gateway.codecs.g711 import ulaw_decode, ulaw_encode  # noqa: E402
from gateway.codecs.resample import resample  # noqa: E402
from gateway.simulator.run import load_wav, save_wav  # noqa: E402

OUT = Path(__file__).resolve().parent / "fixtures" / "amd"
RATE = 8000

CARRIER = "The person you are calling is not available. At the tone, please record your message."
BUSINESS = [
    ("Thank you for calling Acme Dental, this is Maria, how can I help you?", "en-us+f3", 165),
    ("Good afternoon, Johnson and Partners, Rachel speaking. How may I direct your call?", "piper", 0),
    ("Hi, you've reached Tony's Pizza, this is Mike, what can I get for you?", "en-us", 175),
    ("Hello, this is Doctor Patel's office, how can I help?", "en-gb", 160),
]

# name, label, segments [(text, voice, speed, pause_after_s)], extras
CASES: list[dict] = [
    dict(name="human-hello-us", label="human", segs=[("Hello?", "en-us", 160, 0)]),
    dict(name="human-yeah-f3", label="human", segs=[("Yeah?", "en-us+f3", 170, 0)], noise=("white", -50)),
    dict(name="human-dan-gb", label="human", segs=[("Hi, this is Dan.", "en-gb", 160, 0)]),
    dict(name="human-sam-m3", label="human", segs=[("Hello, Sam speaking.", "en-us+m3", 175, 0)], noise=("pink", -45)),
    dict(name="human-hello-piper", label="human", segs=[("Hello?", "piper", 0, 0)], noise=("white", -40)),
    dict(name="human-yes-029", label="human", segs=[("Yes, hello?", "en-029", 150, 0)], lead=1.2),
    dict(name="human-hello-twice", label="human", segs=[("Hello?", "en-us+f4", 165, 2.2), ("Hello?", "en-us+f4", 165, 0)]),
    dict(name="human-sarah-quiet", label="human", segs=[("Hi, this is Sarah.", "piper", 0, 0)], gain=-16, noise=("white", -58)),
    dict(name="human-morning-scot", label="human", segs=[("Good morning.", "en-gb-scotland", 150, 0)], gain=4),
    *[dict(name=f"human-business-{i}", label="human", segs=[(t, v, s, 0)], noise=n)
      for i, ((t, v, s), n) in enumerate(zip(BUSINESS, [None, ("pink", -50), ("white", -45), None]), 1)],
    dict(name="machine-carrier-beep", label="machine", segs=[(CARRIER, "en-us", 150, 0.3)], beep=[(1000, 400)]),
    dict(name="machine-jenny-beep", label="machine", segs=[(
        "Hi, you've reached Jenny. I can't come to the phone right now, please leave a message after the beep"
        " and I'll call you back.", "en-us+f3", 170, 0.5)], beep=[(850, 250)], noise=("pink", -45)),
    dict(name="machine-david-piper", label="machine", segs=[(
        "Hello, you have reached the voicemail of David Miller. I am not available right now. Please leave your"
        " name, number and a short message, and I will return your call as soon as possible.", "piper", 0, 0.6)],
        beep=[(440, 600)]),
    dict(name="machine-chris-short", label="machine", segs=[("Hey, it's Chris, leave a message.", "en-us+m3", 180, 0.4)],
         beep=[(1400, 150)]),
    dict(name="machine-forwarded-double", label="machine", segs=[(
        "Your call has been forwarded to an automatic voice message system. The number you have dialed is not"
        " available. At the tone, record your message.", "en-us", 160, 0.4)], beep=[(700, 100), (1400, 100)]),
    dict(name="machine-sorry-2000", label="machine", segs=[(
        "Sorry I missed your call. Leave your name and number and I'll get back to you.", "en-gb", 165, 0.3)],
        beep=[(2000, 120)], noise=("white", -42)),
    dict(name="machine-two-beeps", label="machine", segs=[(
        "You have reached the office of Green and Sons. Nobody is here to take your call. Please leave a message.",
        "en-us+f4", 170, 0.5)], beep=[(1000, 150), (0, 80), (1000, 150)]),
    dict(name="machine-paused", label="machine", segs=[
        ("You have reached five five five, one two three four.", "en-us", 155, 1.0),
        ("Please leave a message after the tone.", "en-us", 155, 0.3)], beep=[(700, 400)]),
    dict(name="machine-long-piper", label="machine", segs=[(
        "Hi, this is Robert. Thanks for calling. I'm either on the other line or away from my desk. Please leave"
        " your name, your number and the reason for your call, and I'll get back to you before the end of the"
        " day. Thank you.", "piper", 0, 0.5)], beep=[(1000, 300)], noise=("white", -50)),
    dict(name="machine-beep-only", label="machine", segs=[], lead=1.0, beep=[(1000, 500)]),
    dict(name="machine-family-nobeep", label="machine", segs=[(
        "Hi, you have reached the Anderson family. We are not home right now, but your call is important to us."
        " Please leave a message and we will call you back as soon as we can.", "en-us+f4", 160, 0)]),
    dict(name="machine-lisa-short-nobeep", label="machine", segs=[("Hi, it's Lisa, leave a message.", "en-us+f3", 170, 0)]),
    dict(name="screening-google", label="screening", segs=[(
        "Hi, the person you're calling is using a screening service from Google, and will get a copy of this"
        " conversation. Go ahead and say your name and why you're calling.", "piper", 0, 0)]),
    dict(name="screening-short", label="screening", segs=[("Please say your name and why you are calling.", "en-gb", 160, 0)]),
    dict(name="silence-noise", label="silence", segs=[], lead=5.5, noise=("white", -50)),
]


def expected(case: dict, greeting_s: float) -> tuple[str, str]:
    """(verdict from audio alone, verdict with the transcript), by the detector's principles."""
    label = case["label"]
    if label == "silence":
        return "unknown", "unknown"
    if case.get("beep"):
        return "machine_end_beep", "machine_end_beep"
    if label == "human":
        return "human", "human"
    long_greeting = greeting_s >= 5.5
    audio = "machine_end_silence" if long_greeting else "human"
    return audio, ("screening" if label == "screening" else "machine_end_silence")


def synth(text: str, voice: str, speed: int, tmp: Path, piper) -> np.ndarray:
    """``text`` at 8 kHz, trimmed to its speech (int16)."""
    if voice == "piper":
        pcm = np.concatenate(list(piper.stream(text)))
        rate = piper.sample_rate
    else:
        wav = tmp / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text], check=True)
        pcm, rate = load_wav(wav)
    x = resample(pcm, rate, RATE)
    loud = np.flatnonzero(np.abs(x.astype(np.int32)) > 300)
    return x[loud[0]:loud[-1] + 1] if loud.size else x


def noise(kind: str, level_dbfs: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """White or pink (1/f) noise at ``level_dbfs`` RMS re a full-scale sine, float."""
    w = rng.standard_normal(n)
    if kind == "pink":
        spec = np.fft.rfft(w)
        f = np.arange(spec.size)
        spec[1:] /= np.sqrt(f[1:])
        spec[0] = 0
        w = np.fft.irfft(spec, n)
    w /= np.sqrt(np.mean(w**2))
    return w * 32768 / np.sqrt(2) * 10 ** (level_dbfs / 20)


def build(case: dict, tmp: Path, piper, rng: np.random.Generator) -> dict:
    """Write one case's WAV and return its label entry."""
    lead = case.get("lead", 0.4)
    parts = [np.zeros(int(lead * RATE))]
    t = lead
    for text, voice, speed, pause in case["segs"]:
        x = synth(text, voice, speed, tmp, piper).astype(np.float64) * 10 ** (case.get("gain", 0) / 20)
        parts += [x, np.zeros(int(pause * RATE))]
        t += (x.size + int(pause * RATE)) / RATE
    greeting_end = t - (case["segs"][-1][3] if case["segs"] else 0)
    entry = {"file": f"{case['name']}.wav", "label": case["label"]}
    if case.get("beep"):
        entry["beep_start_s"] = round(t, 3)
        for f, ms in case["beep"]:
            seg = tone(f, ms, RATE, level_dbfs=-14).astype(np.float64) if f else np.zeros(int(ms * RATE / 1000))
            parts.append(seg)
            t += seg.size / RATE
        entry["beep_end_s"] = round(t, 3)
        tail = 1.0
    else:
        tail = 2.5 if case["label"] == "human" else 2.2
    parts.append(np.zeros(int(tail * RATE)))
    y = np.concatenate(parts)
    if case.get("noise"):
        y = y + noise(*case["noise"], y.size, rng)
    pcm = ulaw_decode(ulaw_encode(np.clip(np.round(y), -32768, 32767).astype(np.int16)))
    save_wav(OUT / entry["file"], pcm, RATE)
    greeting = greeting_end - lead if case["segs"] else 0.0
    entry["expect"], entry["expect_with_text"] = expected(case, greeting)
    entry.update(text=" ".join(s[0] for s in case["segs"]), voice=",".join(sorted({s[1] for s in case["segs"]})),
                 noise=case.get("noise"), speech_start_s=lead if case["segs"] else None,
                 greeting_end_s=round(greeting_end, 3) if case["segs"] else None)
    return entry


def main() -> None:
    from gateway.llm.local.engines import SpeechSynthesizer

    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(8)
    piper = SpeechSynthesizer()
    labels = []
    with tempfile.TemporaryDirectory() as d:
        for case in CASES:
            labels.append(build(case, Path(d), piper, rng))
            print(labels[-1]["file"], labels[-1]["expect"], flush=True)
    (OUT / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")


if __name__ == "__main__":
    main()
