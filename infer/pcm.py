"""PCM sample streams over pipes and files: WAV headers and raw PCM, read and written
incrementally (no seeking), for ``cleancodec denoise --stream``.

A WAV written to a pipe cannot know its length when its header is written: writers then put
a placeholder in the RIFF and data sizes (0 or ``0xFFFFFFFF``; sox writes ``0x7FFFF000``).
:func:`read_wav_header` treats 0 and ``0xFFFFFFFF`` as "until the end of the stream", and
:class:`PcmReader` stops at the end of the stream before any size is reached, so sox's
placeholder works too. :class:`PcmWriter`
writes such a header itself when its output cannot seek (stdout) and patches the sizes when it
can (a file). Raw PCM has no header: its encoding, rate and channel count are given.

Samples are float32 ``[C x n]`` arrays in [-1, 1) on the Python side. Integer encodings are
scaled by ``2^(bits-1)``; writing clips to the encoding's range.
"""
from __future__ import annotations

import select
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

RIFF_IDS = (b"RIFF", b"RF64")
WAVE_ID = b"WAVE"
FMT_ID, DATA_ID = b"fmt ", b"data"
WAV_PCM, WAV_FLOAT, WAV_EXTENSIBLE = 1, 3, 0xFFFE
UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # what streaming writers put where the length would go
MAX_CHUNK_SIZE = 0xFFFFFFFF
FMT_MIN_BYTES = 16
EXTENSIBLE_SUBFORMAT_OFFSET = 24  # bytes into an extensible fmt chunk: the sub-format code
READ_BYTES = 1 << 15  # bytes asked for per read (less is used when less is available)
STOP_POLL_SECONDS = 0.1  # how often a reader waiting for data checks for a stop request

# encoding name → (bytes per sample, "int" | "uint" | "float")
ENCODINGS: dict[str, tuple[int, str]] = {
    "u8": (1, "uint"), "s16": (2, "int"), "s24": (3, "int"), "s32": (4, "int"),
    "f32": (4, "float"), "f64": (8, "float"),
}
WRITABLE = ("s16", "s32", "f32")  # encodings PcmWriter writes
# raw formats of the command line (little-endian, interleaved) → encoding
RAW_FORMATS = {"s16le": "s16", "s32le": "s32", "f32le": "f32"}


class PcmError(ValueError):
    """A stream is not WAV / PCM this module reads (the message says why)."""


@dataclass(frozen=True)
class PcmFormat:
    """Interleaved little-endian samples: ``encoding`` (a key of :data:`ENCODINGS`), rate,
    channels."""

    encoding: str
    sample_rate: int
    channels: int

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise PcmError(f"unknown sample encoding {self.encoding!r}")
        if self.sample_rate <= 0 or self.channels <= 0:
            raise PcmError(f"bad PCM format: {self.sample_rate} Hz, {self.channels} channel(s)")

    @property
    def width(self) -> int:
        """Bytes per sample."""
        return ENCODINGS[self.encoding][0]

    @property
    def frame_bytes(self) -> int:
        """Bytes per frame (one sample of every channel)."""
        return self.width * self.channels

    def decode(self, data: bytes) -> np.ndarray:
        """Whole frames of ``data`` → float32 ``[C x n]``."""
        width, kind = ENCODINGS[self.encoding]
        if kind == "float":
            x = np.frombuffer(data, f"<f{width}").astype(np.float32)
        elif self.encoding == "s24":
            b = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)
            v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            x = (np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)).astype(np.float32)
        elif kind == "uint":
            x = ((np.frombuffer(data, np.uint8).astype(np.float32) - 128.0) / 128.0)
        else:
            x = np.frombuffer(data, f"<i{width}").astype(np.float32) / float(1 << 8 * width - 1)
        return np.ascontiguousarray(x.reshape(-1, self.channels).T)

    def encode(self, y: np.ndarray) -> bytes:
        """float32 ``[C x n]`` → interleaved bytes (integer encodings clipped to range)."""
        if self.encoding not in WRITABLE:
            raise PcmError(f"cannot write {self.encoding} samples (writable: {WRITABLE})")
        frames = np.ascontiguousarray(np.asarray(y, np.float32).T)
        width, kind = ENCODINGS[self.encoding]
        if kind == "float":
            return frames.astype(f"<f{width}").tobytes()
        full = float(1 << 8 * width - 1)
        ints = np.clip(np.round(frames.astype(np.float64) * full), -full, full - 1)
        return ints.astype(f"<i{width}").tobytes()


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        piece = stream.read(n - len(data))
        if not piece:
            break
        data += piece
    return data


def _encoding_of(tag: int, bits: int) -> str:
    if tag == WAV_FLOAT and bits in (32, 64):
        return f"f{bits}"
    if tag == WAV_PCM and bits in (8, 16, 24, 32):
        return "u8" if bits == 8 else f"s{bits}"
    raise PcmError(f"unsupported WAV sample format (format tag {tag}, {bits} bits); "
                   "supported: 8/16/24/32-bit PCM, 32/64-bit float")


def read_wav_header(stream: BinaryIO, name: str = "stdin") -> tuple[PcmFormat, int | None]:
    """Read a WAV header up to the start of its samples.

    Returns the format and the data size in bytes (``None`` when the header leaves it unknown,
    as a writer streaming into a pipe does). Raises PcmError naming ``name``.
    """
    head = _read_exact(stream, 12)
    if len(head) < 12 or head[:4] not in RIFF_IDS or head[8:12] != WAVE_ID:
        raise PcmError(f"{name}: not a WAV stream (no RIFF/WAVE header); for raw PCM give "
                       f"--format ({', '.join(RAW_FORMATS)}) and --rate")
    fmt: PcmFormat | None = None
    while True:
        chunk = _read_exact(stream, 8)
        if len(chunk) < 8:
            raise PcmError(f"{name}: WAV header ends before its data chunk")
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == DATA_ID:
            if fmt is None:
                raise PcmError(f"{name}: WAV data chunk comes before its fmt chunk")
            return fmt, None if size in UNKNOWN_SIZES else size
        body = _read_exact(stream, size + (size & 1))  # chunks are padded to even sizes
        if len(body) < size:
            raise PcmError(f"{name}: WAV header is truncated")
        if cid == FMT_ID:
            if size < FMT_MIN_BYTES:
                raise PcmError(f"{name}: WAV fmt chunk of {size} bytes is too short")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:FMT_MIN_BYTES])
            if tag == WAV_EXTENSIBLE and size >= EXTENSIBLE_SUBFORMAT_OFFSET + 2:
                offset = EXTENSIBLE_SUBFORMAT_OFFSET
                tag = struct.unpack("<H", body[offset:offset + 2])[0]
            fmt = PcmFormat(_encoding_of(tag, bits), rate, channels)


class PcmReader:
    """Float32 ``[C x n]`` blocks from a byte stream of ``fmt`` samples.

    ``data_bytes`` stops after that many bytes (a WAV data chunk of known size); ``None``
    reads until the end of the stream. Each read returns what the stream has ready (``read1``
    on a pipe), so a live source is processed as it arrives. ``should_stop``: while waiting for
    data on a stream with a file descriptor, it is asked every :data:`STOP_POLL_SECONDS`, and
    reading ends when it says so (a stop signal ends a stalled pipe too).
    """

    def __init__(self, stream: BinaryIO, fmt: PcmFormat, data_bytes: int | None = None,
                 should_stop: Callable[[], bool] | None = None):
        self.stream, self.format = stream, fmt
        self.remaining = data_bytes
        self.frames_read = 0
        self._carry = b""  # bytes of an incomplete frame
        self.should_stop = should_stop
        try:
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
            self._fd = None

    def _wait(self) -> bool:
        """Wait until a read will not block; False when ``should_stop`` said stop first."""
        if self.should_stop is None or self._fd is None:
            return True
        while not select.select([self._fd], [], [], STOP_POLL_SECONDS)[0]:
            if self.should_stop():
                return False
        return True

    @property
    def sample_rate(self) -> int:
        return self.format.sample_rate

    @property
    def channels(self) -> int:
        return self.format.channels

    def _read(self, n: int) -> bytes:
        read1 = getattr(self.stream, "read1", None)
        return read1(n) if read1 is not None else self.stream.read(n)

    def blocks(self, max_bytes: int = READ_BYTES) -> Iterator[np.ndarray]:
        """Yield ``[C x n]`` blocks (n ≥ 1) until the end of the data."""
        frame = self.format.frame_bytes
        while self.remaining is None or self.remaining > 0:
            want = max_bytes if self.remaining is None else min(max_bytes, self.remaining)
            if not self._wait():
                break
            data = self._read(want)
            if not data:
                break
            if self.remaining is not None:
                self.remaining -= len(data)
            data = self._carry + data
            whole = len(data) - len(data) % frame
            self._carry = data[whole:]
            if whole:
                block = self.format.decode(data[:whole])
                if not np.all(np.isfinite(block)):
                    raise PcmError("input holds NaN or inf samples")
                self.frames_read += block.shape[1]
                yield block

    def close(self) -> None:
        """Nothing to release: the stream belongs to the caller."""


class PcmWriter:
    """Write float32 ``[C x n]`` blocks as ``fmt`` samples, WAV (header first) or raw.

    On a stream that cannot seek, the WAV header says "length unknown" (``0xFFFFFFFF``);
    :meth:`close` patches the real sizes where the stream can seek.
    """

    def __init__(self, stream: BinaryIO, fmt: PcmFormat, wav: bool = True):
        fmt.encode(np.zeros((fmt.channels, 0), np.float32))  # refuse unwritable encodings now
        self.stream, self.format, self.wav = stream, fmt, wav
        self.frames_written = 0
        if wav:
            self.stream.write(self._header(None))

    def _header(self, data_bytes: int | None) -> bytes:
        f = self.format
        tag = WAV_FLOAT if ENCODINGS[f.encoding][1] == "float" else WAV_PCM
        size = MAX_CHUNK_SIZE if data_bytes is None else data_bytes
        riff = MAX_CHUNK_SIZE if data_bytes is None else min(MAX_CHUNK_SIZE, 36 + data_bytes)
        return (b"RIFF" + struct.pack("<I", riff) + WAVE_ID + FMT_ID
                + struct.pack("<IHHIIHH", FMT_MIN_BYTES, tag, f.channels, f.sample_rate,
                              f.sample_rate * f.frame_bytes, f.frame_bytes, 8 * f.width)
                + DATA_ID + struct.pack("<I", size))

    def write(self, y: np.ndarray, flush: bool = True) -> None:
        """Append ``[C x n]`` samples (``flush``: push them out now, for live pipes)."""
        if y.shape[1]:
            self.stream.write(self.format.encode(y))
            self.frames_written += y.shape[1]
        if flush:
            self.stream.flush()

    def close(self) -> None:
        """Flush, and patch the WAV sizes when the stream can seek (the stream stays open)."""
        self.stream.flush()
        data_bytes = self.frames_written * self.format.frame_bytes
        seekable = getattr(self.stream, "seekable", lambda: False)()
        if self.wav and seekable and 36 + data_bytes <= MAX_CHUNK_SIZE:
            end = self.stream.tell()
            self.stream.seek(0)
            self.stream.write(self._header(data_bytes))
            self.stream.seek(end)
            self.stream.flush()


SUBTYPE_ENCODINGS = {"PCM_16": "s16", "PCM_32": "s32", "FLOAT": "f32"}


def encoding_for_subtype(subtype: str) -> str:
    """The encoding a WAV output gets for an input of soundfile ``subtype``: 16-bit, 32-bit
    and float samples stay as they are, every other format becomes 32-bit float (no precision
    is lost)."""
    return SUBTYPE_ENCODINGS.get(subtype, "f32")


def output_encoding(encoding: str) -> str:
    """The encoding written for input samples of ``encoding`` (itself where writable)."""
    return encoding if encoding in WRITABLE else "f32"


__all__ = ["ENCODINGS", "PcmError", "PcmFormat", "PcmReader", "PcmWriter", "RAW_FORMATS",
           "encoding_for_subtype", "output_encoding", "read_wav_header"]
