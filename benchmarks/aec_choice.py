"""Echo canceller choice (issue 10): our numpy MDF against speexdsp and WebRTC's APM.

Generated echo, as ``tests/audio/test_echo.py`` makes it: agent speech (the recordings in
``../shared/audio/speech``, −20 dBFS) through an echo path (a pure delay, or a delay plus a
hybrid-like 20 ms dispersive response) ``ERL`` dB down, line noise, μ-law; from 6 s to 9 s a
second voice talks over the agent (double talk, −25 dBFS). Figures per canceller, averaged over
delays 40/120/200 ms, ERL 12/25/35 dB and both paths:

* ``erle_first_db``: echo removed over the agent's first 3 s (0–3 s), dB;
* ``erle_db``: after convergence (3.5–6 s), ``erle_after_dt_db``: after the double talk
  (9.5–12 s): did the caller make the filter diverge?
* ``dt_sdr_db``: the caller's speech against everything else left in the output during the
  double talk (residual echo, distortion), dB; ``dt_caller_db``: output level during the double
  talk relative to the caller leg without echo (0 = caller intact; negative = suppressed);
* ``us_per_call_frame``: CPU µs per call per 20 ms frame (both legs fed), 1 call and 100 calls
  (ours batched through :func:`gateway.audio.aec.cancel_many`; the others have no batch entry
  point and cost the same per call at any count).

ERLE uses the known echo: ``10 log10(Σ echo² / Σ (out − (leg − echo))²)`` over the span (the
noise and μ-law terms cancel out of the denominator except for μ-law's quantisation).

Run: ``python -m benchmarks.aec_choice [--quick]``; JSON on the last line. speexdsp is used
through ctypes when ``libspeexdsp.so.1`` is installed (Debian ``libspeexdsp1``); WebRTC's APM
through ``livekit`` (``rtc.AudioProcessingModule``, AEC3) and ``aec-audio-processing`` when
importable. Missing ones are reported as skipped.
"""

from __future__ import annotations

import ctypes
import json
import sys
import time
from pathlib import Path

import numpy as np

from gateway.audio.aec import EchoCanceller, cancel_many
from gateway.audio.echo import EchoPathEstimator
from gateway.codecs.g711 import ulaw_decode, ulaw_encode
from gateway.simulator.noise import LineNoise
from gateway.simulator.run import load_wav, to_rate

RATE = 8000
FRAME = 160
SPEECH = Path(__file__).resolve().parents[2] / "shared" / "audio" / "speech"
SECONDS = 12.0
DT = (6.0, 9.0)


def voices() -> list[np.ndarray]:
    out = []
    for p in sorted(SPEECH.glob("*.wav")):
        pcm, r = load_wav(p)
        out.append(to_rate(pcm, r, RATE).astype(np.float64))
    return out


def talk(vs: list[np.ndarray], first: int, seconds: float, dbfs: float) -> np.ndarray:
    parts, n, i = [], 0, first
    while n < seconds * RATE:
        parts += [vs[i % len(vs)], np.zeros(RATE * 3 // 10)]
        n += parts[-2].size + parts[-1].size
        i += 1
    x = np.concatenate(parts)[: int(seconds * RATE)]
    return x * (32768 * 10 ** (dbfs / 20) / np.sqrt(np.mean(x[np.abs(x) > 0] ** 2)))


def echo_path(delay_ms: float, erl_db: float, dispersive: bool, seed: int) -> np.ndarray:
    """Impulse response with total energy gain ``-erl_db``."""
    d = int(round(delay_ms * RATE / 1000))
    if not dispersive:
        h = np.zeros(d + 1)
        h[d] = 1.0
    else:
        tail = RATE // 50
        h = np.zeros(d + tail)
        h[d:] = np.random.default_rng(seed).standard_normal(tail) * np.exp(-np.arange(tail) / (tail / 4))
        h[d] += 2.0
        h[d + 1] -= 1.0
    return h / np.sqrt(np.sum(h ** 2)) * 10 ** (-erl_db / 20)


def scenario(vs, delay_ms, erl_db, dispersive, seed):
    ref = talk(vs, seed, SECONDS, -20.0)
    caller = talk(vs, seed + 5, SECONDS, -25.0)
    caller[: int(DT[0] * RATE)] = 0.0
    caller[int(DT[1] * RATE):] = 0.0
    noise = LineNoise(RATE, level_dbfs=-55.0 + 5 * (seed % 3), seed=seed).next(ref.size).astype(np.float64)
    echo = np.convolve(ref, echo_path(delay_ms, erl_db, dispersive, seed))[: ref.size]
    leg = ulaw_decode(ulaw_encode(np.clip(np.round(echo + noise + caller), -32768, 32767).astype(np.int16)))
    return np.clip(np.round(ref), -32768, 32767).astype(np.int16), leg, echo, caller, noise


# ----------------------------------------------------------------------------- cancellers


class Ours:
    name = "numpy_mdf"

    def __init__(self, calls: int = 1, delay_ms: float | None = None) -> None:
        """With ``delay_ms`` None the echo path estimator runs beside (its delay narrows the
        filter once known); with a delay (cost runs) the filter is narrowed from the start and
        the estimator, a stage of its own, is left out."""
        self.a = [EchoCanceller(RATE) for _ in range(calls)]
        self.e = [EchoPathEstimator(RATE) for _ in range(calls)] if delay_ms is None else []
        if delay_ms is not None and delay_ms > 0:
            for a in self.a:
                a.set_delay(delay_ms)

    def frames(self, refs, legs, o):
        for a, r in zip(self.a, refs):
            a.reference(r, o)
        for a, e, r, c in zip(self.a, self.e, refs, legs):
            e.reference(r, o)
            e.caller(c, o)
            if e.estimate is not None:
                a.set_delay(e.estimate.delay_ms)
        return [x.residual for x in cancel_many(self.a, legs, [o] * len(legs))]


class Speex:
    name = "speexdsp"

    def __init__(self, calls: int = 1, tail: int = 2048) -> None:
        lib = ctypes.CDLL("libspeexdsp.so.1")
        lib.speex_echo_state_init.restype = ctypes.c_void_p
        lib.speex_echo_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.speex_echo_cancellation.argtypes = [ctypes.c_void_p] * 4
        lib.speex_echo_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        self.lib, self.st = lib, []
        for _ in range(calls):
            st = lib.speex_echo_state_init(FRAME, tail)
            rate = ctypes.c_int(RATE)
            lib.speex_echo_ctl(st, 24, ctypes.byref(rate))  # SPEEX_ECHO_SET_SAMPLING_RATE
            self.st.append(st)

    def frames(self, refs, legs, o):
        out = []
        for st, r, c in zip(self.st, refs, legs):
            y = np.zeros(FRAME, np.int16)
            r, c = np.ascontiguousarray(r), np.ascontiguousarray(c)
            self.lib.speex_echo_cancellation(st, c.ctypes.data, r.ctypes.data, y.ctypes.data)
            out.append(y)
        return out


class LiveKit:
    name = "webrtc_aec3_livekit"

    def __init__(self, calls: int = 1) -> None:
        from livekit import rtc
        self.rtc = rtc
        self.apm = [rtc.AudioProcessingModule(echo_cancellation=True) for _ in range(calls)]

    def frames(self, refs, legs, o):
        out = []
        for apm, r, c in zip(self.apm, refs, legs):
            y = []
            for h in (0, FRAME // 2):
                rf = self.rtc.AudioFrame(r[h:h + FRAME // 2].tobytes(), RATE, 1, FRAME // 2)
                apm.process_reverse_stream(rf)
                cf = self.rtc.AudioFrame(c[h:h + FRAME // 2].tobytes(), RATE, 1, FRAME // 2)
                apm.set_stream_delay_ms(0)
                apm.process_stream(cf)
                y.append(np.frombuffer(bytes(cf.data), np.int16))
            out.append(np.concatenate(y))
        return out


class AecAudioProcessing:
    name = "webrtc_aec_audio_processing"

    def __init__(self, calls: int = 1) -> None:
        from aec_audio_processing import AudioProcessor
        self.ap = []
        for _ in range(calls):
            ap = AudioProcessor(enable_aec=True, enable_ns=False, enable_agc=False, enable_vad=False)
            ap.set_stream_format(RATE, 1)
            ap.set_reverse_stream_format(RATE, 1)
            ap.set_stream_delay(0)
            self.ap.append(ap)

    def frames(self, refs, legs, o):
        out = []
        for ap, r, c in zip(self.ap, refs, legs):
            y = []
            for h in (0, FRAME // 2):
                ap.process_reverse_stream(r[h:h + FRAME // 2].tobytes())
                y.append(np.frombuffer(ap.process_stream(c[h:h + FRAME // 2].tobytes()), np.int16))
            out.append(np.concatenate(y))
        return out


# ----------------------------------------------------------------------------- measures


def _db(num: float, den: float) -> float:
    return float(10 * np.log10((num + 1e-9) / (den + 1e-9)))


def quality(make, cases, erls: list[float] | None = None) -> dict:
    rows = []
    for ref, leg, echo, caller, noise in cases:
        c = make(1)
        out = np.concatenate([c.frames([ref[o:o + FRAME]], [leg[o:o + FRAME]], o)[0]
                              for o in range(0, ref.size, FRAME)]).astype(np.float64)
        left = out - (leg - echo)
        s = lambda a, b: slice(int(a * RATE), int(b * RATE))  # noqa: E731
        dt = s(*DT)
        rows.append({
            "erle_first_db": _db(np.sum(echo[s(0, 3)] ** 2), np.sum(left[s(0, 3)] ** 2)),
            "erle_db": _db(np.sum(echo[s(3.5, 6)] ** 2), np.sum(left[s(3.5, 6)] ** 2)),
            "erle_after_dt_db": _db(np.sum(echo[s(9.5, 12)] ** 2), np.sum(left[s(9.5, 12)] ** 2)),
            "dt_sdr_db": _db(np.sum(caller[dt] ** 2), np.sum((out[dt] - caller[dt] - noise[dt]) ** 2)),
            "dt_caller_db": _db(np.sum(out[dt] ** 2), np.sum((caller[dt] + noise[dt]) ** 2)),
        })
    out = {k: round(float(np.mean([r[k] for r in rows])), 1) for k in rows[0]}
    for e in sorted(set(erls or [])):  # converged ERLE and the first 3 s per echo band
        sel = [r for r, x in zip(rows, erls) if x == e]
        out[f"erl{e:g}"] = {"erle_first_db": round(float(np.mean([r["erle_first_db"] for r in sel])), 1),
                            "erle_db": round(float(np.mean([r["erle_db"] for r in sel])), 1)}
    return out


def cost(make, ref, leg, calls: int, seconds: float = 3.0) -> float:
    c = make(calls)
    n = int(seconds * RATE)
    t = time.process_time()
    for o in range(0, n, FRAME):
        c.frames([ref[o:o + FRAME]] * calls, [leg[o:o + FRAME]] * calls, o)
    return round((time.process_time() - t) / calls / (n / FRAME) * 1e6, 1)


def main(argv: list[str]) -> dict:
    quick = "--quick" in argv
    vs = voices()
    grid = [(d, e, disp) for d in (40, 120, 200) for e in (12, 25, 35) for disp in (False, True)]
    if quick:
        grid = grid[::3]
    cases = [scenario(vs, d, e, disp, i) for i, (d, e, disp) in enumerate(grid)]
    out = {"cases": len(cases), "rate": RATE, "rows": []}
    for cls in (Ours, Speex, LiveKit, AecAudioProcessing):
        try:
            cls(1)
        except Exception as exc:  # not installed here: reported, not fatal
            out["rows"].append({"name": cls.name, "skipped": f"{type(exc).__name__}: {exc}"})
            continue
        row = {"name": cls.name, **quality(cls, cases, [e for _, e, _ in grid])}
        ref, leg = cases[0][0], cases[0][1]
        secs = 1.0 if quick else 3.0
        if cls is Ours:  # the 260 ms filter before the delay is known, the 60 ms one after
            for tag, delay in (("", 40.0), ("_long", 0.0)):
                make = lambda n, d=delay: Ours(n, d)  # noqa: E731
                row["us_per_call_frame_1" + tag] = cost(make, ref, leg, 1, secs)
                row["us_per_call_frame_100" + tag] = cost(make, ref, leg, 100, secs)
        else:
            row["us_per_call_frame_1"] = cost(cls, ref, leg, 1, secs)
            row["us_per_call_frame_100"] = cost(cls, ref, leg, 100, secs)
        out["rows"].append(row)
        print(row, file=sys.stderr)
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
