"""Audio wire formats shared by carriers, codecs, the session and model bridges.

An :class:`AudioFormat` names an encoding and a sample rate. Every format here is mono:
telephone media streams carry one channel per direction.

Sources: ITU-T G.711 (PCMU / PCMA, 8 bits per sample); RFC 3551 §4.5.11 (L16, here
little-endian as every carrier and model in this project sends it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Encoding", "AudioFormat", "PCMU_8K", "PCMA_8K", "L16_8K", "L16_16K", "L16_24K"]


class Encoding(enum.StrEnum):
    """Sample encodings on the wire."""

    PCMU = "pcmu"  # G.711 μ-law, 1 byte per sample
    PCMA = "pcma"  # G.711 A-law, 1 byte per sample
    L16 = "l16"  # signed 16-bit little-endian PCM, 2 bytes per sample

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self is Encoding.L16 else 1


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """A mono audio format: encoding plus sample rate in Hz."""

    encoding: Encoding
    sample_rate: int

    def bytes_for_ms(self, ms: float) -> int:
        """Bytes that ``ms`` milliseconds of audio take in this format."""
        return int(round(self.sample_rate * ms / 1000)) * self.encoding.bytes_per_sample

    def samples_for_bytes(self, n_bytes: int) -> int:
        """Samples held in ``n_bytes`` bytes of this format."""
        return n_bytes // self.encoding.bytes_per_sample

    def ms_for_bytes(self, n_bytes: int) -> float:
        """Duration in ms of ``n_bytes`` bytes of this format."""
        return 1000.0 * self.samples_for_bytes(n_bytes) / self.sample_rate

    def __str__(self) -> str:
        return f"{self.encoding.value}@{self.sample_rate}"


PCMU_8K = AudioFormat(Encoding.PCMU, 8000)
PCMA_8K = AudioFormat(Encoding.PCMA, 8000)
L16_8K = AudioFormat(Encoding.L16, 8000)
L16_16K = AudioFormat(Encoding.L16, 16000)
L16_24K = AudioFormat(Encoding.L16, 24000)
