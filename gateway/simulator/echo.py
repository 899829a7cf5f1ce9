"""The echo a phone line returns: the agent's audio, as the caller's end sends it back.

On a real call the caller's leg carries the agent's own speech back to the gateway: the 2-to-4
wire hybrid of an analogue line reflects part of it, a speakerphone's loudspeaker is picked up
by its microphone, a handset's earpiece couples into its mouthpiece. What comes back is the
audio the caller *played*, delayed, filtered by a short echo path and attenuated by its
*return loss* (ERL, echo return loss: ITU-T G.168 §3 / G.122), then mixed under the caller's
own speech and the line noise and encoded in the carrier's codec like everything else.

:class:`EchoPath` does the DSP, pure numpy and streaming: :meth:`EchoPath.push` the audio that
played (int16 at the line's rate, in order, as it played), :meth:`EchoPath.pull` the echo of the
next stretch of the caller's outgoing stream (float64, to mix). Sample ``s`` of the output is

    echo[s] = g · Σₖ h[k] · played[s − D − k]

with ``D`` the delay (samples; the delay is to the path's first tap), ``g = 10^(−ERL/20)`` and
``h`` the echo path's impulse response normalised to 0 dB gain *on speech*: its power gain
weighted by a long-term speech spectrum (flat 100–500 Hz, −6 dB/octave above, falling off below
100 Hz; the shape of the long-term average speech spectrum, Byrne et al. 1994, and of ITU-T
P.50's artificial voice) is 1, so a speech signal comes back about ``return_loss_db`` down.
Measured on every recording in ``../shared/audio/speech`` and ``caller`` at 8 and 16 kHz, the
loss achieved is within ±2.7 dB of the nominal one for ``hybrid`` and ±1.2 dB for ``room``
(:func:`measured_return_loss_db` computes it; the simulated caller reports it per call).

Echo path responses (defined at 8 kHz; at other rates the response is resampled on its time
axis, so it keeps its length in ms):

* ``hybrid`` (default): 12 taps (1.5 ms), a dispersive 2-to-4 wire hybrid reflection in the
  spirit of the G.168 Annex D echo path models: the line transformer's high-pass (−20 dB at DC,
  −9 dB at 100 Hz, −1.7 dB at 250 Hz), a broad peak near 1 kHz (+5.8 dB), rolling off above
  2 kHz (−11 dB at 2.5 kHz, −23 dB at 3.4 kHz). Taps
  ``[0, .10, .50, .80, .25, −.40, −.55, −.40, −.20, −.05, .04, .03]`` before normalising.
* ``room``: 67 taps (8.3 ms), a small room / speakerphone: the direct coupling and four
  reflections at 1.6, 3.1, 5.4 and 8.3 ms (gains 1, .5, −.35, .2, −.12): a comb-like response
  from −21 dB to +5 dB across the band.
* ``flat``: one tap (a pure delay and gain), for tests of the delay alone.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EchoPath", "RESPONSES", "echo_response", "measured_return_loss_db", "MIN_DELAY_MS", "MAX_DELAY_MS",
           "MAX_RETURN_LOSS_DB"]

_HYBRID_8K = np.array([0.0, 0.10, 0.50, 0.80, 0.25, -0.40, -0.55, -0.40, -0.20, -0.05, 0.04, 0.03])
_ROOM_8K = np.zeros(67)
for _tap, _gain in ((0, 1.0), (13, 0.5), (25, -0.35), (43, 0.2), (66, -0.12)):
    _ROOM_8K[_tap] = _gain
del _tap, _gain

#: Echo path impulse responses at 8 kHz, by name (before normalising to unit energy).
RESPONSES: dict[str, np.ndarray] = {"hybrid": _HYBRID_8K, "room": _ROOM_8K, "flat": np.array([1.0])}
#: The shortest delay a simulated caller can return echo at (ms): it mixes the echo of what
#: played up to the tick before (one 20 ms frame) into the frame it sends.
MIN_DELAY_MS = 20.0
#: The longest delay accepted (ms): longer is a satellite hop, not a phone line's echo.
MAX_DELAY_MS = 1000.0
#: The largest return loss accepted (dB): 90 dB down is below the 16-bit floor anyway.
MAX_RETURN_LOSS_DB = 90.0


def _speech_gain(h: np.ndarray, sample_rate: int) -> float:
    """Power gain of ``h`` weighted by the long-term speech spectrum of the module docstring."""
    f = np.fft.rfftfreq(4096, 1 / sample_rate)
    weight = np.where(f < 500, 1.0, (500 / np.maximum(f, 1.0)) ** 2)
    weight[f < 100] *= (f[f < 100] / 100) ** 2
    return float(np.sum(np.abs(np.fft.rfft(h, 4096)) ** 2 * weight) / np.sum(weight))


def echo_response(name: str, sample_rate: int) -> np.ndarray:
    """The echo path ``name``'s impulse response at ``sample_rate`` Hz, float64, 0 dB on speech.

    Raises:
        ValueError: unknown ``name`` or a non-positive rate.
    """
    if name not in RESPONSES:
        raise ValueError(f"echo path must be one of {', '.join(RESPONSES)}, not {name!r}")
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, not {sample_rate}")
    h = RESPONSES[name]
    if sample_rate != 8000 and h.size > 1:
        n = max(1, int(round((h.size - 1) * sample_rate / 8000)) + 1)
        h = np.interp(np.arange(n) * 8000 / sample_rate, np.arange(h.size), h)
    return h / np.sqrt(_speech_gain(h, sample_rate))


def measured_return_loss_db(played: np.ndarray, echo: np.ndarray) -> float:
    """Echo return loss actually achieved: ``10·log10(Σ played² / Σ echo²)`` (dB); inf if no echo.

    ``played`` and ``echo`` are the same stretch of a call (any dtype, any lengths: energies)."""
    p = float(np.sum(np.square(played.astype(np.float64))))
    e = float(np.sum(np.square(echo.astype(np.float64))))
    if e <= 0.0:
        return float("inf")
    return 10.0 * np.log10(max(p, 1e-12) / e)


class EchoPath:
    """The echo of played audio, streaming: push what played, pull the echo to send.

    Args:
        sample_rate: the line's rate (Hz).
        return_loss_db: echo return loss (dB, 0…90): how far the echo is below what played
            (on speech; see the module docstring).
        delay_ms: delay from playing a sample to its echo's first tap (ms, 20…1000).
        response: the echo path's shape, a key of :data:`RESPONSES`.

    Raises:
        ValueError: an argument out of range (the message names it).
    """

    def __init__(self, sample_rate: int, *, return_loss_db: float, delay_ms: float,
                 response: str = "hybrid") -> None:
        if not 0.0 <= return_loss_db <= MAX_RETURN_LOSS_DB:
            raise ValueError(f"echo return loss must be 0…{MAX_RETURN_LOSS_DB:g} dB, not {return_loss_db}")
        if not MIN_DELAY_MS <= delay_ms <= MAX_DELAY_MS:
            raise ValueError(f"echo delay must be {MIN_DELAY_MS:g}…{MAX_DELAY_MS:g} ms, not {delay_ms}")
        self.sample_rate = sample_rate
        self.return_loss_db = float(return_loss_db)
        self.delay_ms = float(delay_ms)
        self.response = response
        self.taps = echo_response(response, sample_rate) * 10 ** (-return_loss_db / 20)
        self.delay = int(round(delay_ms * sample_rate / 1000))
        self.reset()

    def reset(self) -> None:
        """Forget what played (the start of a call)."""
        self._hist = np.zeros(0)  # played samples [self._pushed - len(hist), self._pushed)
        self._pushed = 0
        self._pulled = 0

    def push(self, played: np.ndarray) -> None:
        """Append the next stretch of what played (int16 or float, in order, silence included)."""
        self._hist = np.concatenate([self._hist, played.astype(np.float64)])
        self._pushed += played.size

    def pull(self, samples: int) -> np.ndarray:
        """The echo of the next ``samples`` of the caller's outgoing stream, float64.

        The outgoing stream and what played share one timeline (sample 0 of both is the
        call's start), so this needs everything played up to ``delay`` before the last sample.

        Raises:
            ValueError: the echo of audio not played yet is asked for (pulled ahead of pushes
                by more than the delay).
        """
        k = self.taps.size
        lo = self._pulled - self.delay - (k - 1)  # first played sample the block needs
        hi = self._pulled + samples - self.delay  # one past the last
        if hi > self._pushed:
            raise ValueError(f"echo of audio not played yet: need played samples up to {hi}, have {self._pushed}")
        start = self._pushed - self._hist.size
        seg = np.zeros(hi - lo)
        a = max(lo, start)
        if hi > a:
            seg[a - lo:] = self._hist[a - start:hi - start]
        out = np.convolve(seg, self.taps, mode="valid") if k > 1 else seg * self.taps[0]
        self._pulled += samples
        keep_from = self._pulled - self.delay - (k - 1)  # the next block's first sample
        if keep_from > start:
            self._hist = self._hist[keep_from - start:]
        return out
