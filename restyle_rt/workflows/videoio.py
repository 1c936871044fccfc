"""Video input for ``restyle-rt video``: frames decoded one at a time with PyAV, and a ``.npy`` written as rows
arrive (the per-frame latents), so that nothing holds the whole clip.

Bad input is an :class:`~restyle_rt.errors.InputError` naming the file and, once decoding has started, the frame:
a file FFmpeg cannot open as a video, a packet it cannot decode, a frame whose size differs from the first one's
(the output video has one size), and a clip that ends before the frame count its container declares (a truncated
MP4/MOV/AVI; containers without a count, such as MPEG-TS, are only caught when a packet is damaged).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InputError
from .animation import VIDEO_EXTRA

log = logging.getLogger("restyle_rt")

DEFAULT_FPS = Fraction(25)  # when the container gives no frame rate


class VideoSource:
    """One video stream of a file, decoded frame by frame (``with VideoSource(p) as src: for f in src: ...``).

    Attributes:
        path: the file.
        fps: the stream's average frame rate (``DEFAULT_FPS`` when the container has none).
        declared: frame count the container declares (0: unknown).
        size: (width, height) of the stream as declared.
        decoded: frames yielded so far.
    """

    def __init__(self, path: os.PathLike):
        self.path = Path(os.fsdecode(path))
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such video file")
        try:
            import av
        except ImportError:
            raise InputError(f"reading video needs PyAV: {VIDEO_EXTRA}") from None
        self._av = av
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, ValueError, OSError) as e:
            raise InputError(f"{self.path}: not a video FFmpeg can read ({_reason(e)})") from None
        if not self._container.streams.video:
            self._container.close()
            raise InputError(f"{self.path}: has no video stream")
        self._stream = self._container.streams.video[0]
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = Fraction(rate) if rate else DEFAULT_FPS
        self.declared = int(self._stream.frames or 0)
        cc = self._stream.codec_context
        self.size: tuple[int, int] = (int(cc.width), int(cc.height))
        self.decoded = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        """[h, w, 3] uint8 RGB frames in display order.

        Raises:
            InputError: a damaged packet, a frame size change, or fewer frames than declared (truncated).
        """
        av, first = self._av, None
        frames = self._container.decode(self._stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except (av.FFmpegError, ValueError) as e:
                raise InputError(
                    f"{self.path}: frame {self.decoded}: cannot decode ({_reason(e)}); the file is truncated or damaged"
                ) from None
            hw = (frame.height, frame.width)
            if first is None:
                first = hw
            elif hw != first:
                raise InputError(
                    f"{self.path}: frame {self.decoded} is {hw[1]}x{hw[0]}, the clip started at "
                    f"{first[1]}x{first[0]}; a size change mid-stream is not supported (split the "
                    "clip, or scale it to one size first, e.g. ffmpeg -vf scale=W:H)"
                )
            if self.decoded == 0 and getattr(frame, "rotation", 0):
                log.warning(
                    "%s: the clip asks to be shown rotated by %s degrees; frames are used as stored (rotate "
                    "it first, e.g. ffmpeg -i IN -c:a copy OUT re-encodes upright)",
                    self.path,
                    frame.rotation,
                )
            img = frame.to_ndarray(format="rgb24")  # [h, w, 3] uint8
            self.decoded += 1
            yield img
        if self.declared and self.decoded < self.declared:
            raise InputError(
                f"{self.path}: decoded {self.decoded} of the {self.declared} frames the container "
                "declares; the file is truncated or damaged"
            )
        if self.decoded == 0:
            raise InputError(f"{self.path}: no frame could be decoded")

    def close(self) -> None:
        """Close the file. Idempotent."""
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e)


class NpyRows:
    """Write a ``.npy`` of float32 rows [N, *row_shape] one row at a time, N unknown until :meth:`finish`.

    The header is written first with room for any count and rewritten with the real one at the end (a valid NPY
    1.0 header: the dict is padded with spaces, as ``numpy.lib.format`` does). Give it the temporary path of
    :func:`restyle_rt.fsio.atomic_path`: a run that fails leaves nothing.
    """

    HEADER_LEN = 128  # magic (6) + version (2) + length (2) + dict, padded; a multiple of 64

    def __init__(self, path: os.PathLike, row_shape: tuple[int, ...]):
        self.row_shape = tuple(int(d) for d in row_shape)
        self.rows = 0
        self._f = open(path, "wb")
        self._f.write(self._header(0))

    def _header(self, n: int) -> bytes:
        shape = (n, *self.row_shape)
        d = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape!r}, }}"
        body = d.ljust(self.HEADER_LEN - 10 - 1) + "\n"
        if len(body) + 10 != self.HEADER_LEN:
            raise InputError(f"npy header too long for shape {shape}")
        return b"\x93NUMPY\x01\x00" + np.uint16(len(body)).astype("<u2").tobytes() + body.encode("latin1")

    def write(self, row: np.ndarray) -> None:
        a = np.ascontiguousarray(row, dtype="<f4")
        if a.shape != self.row_shape:
            raise InputError(f"latents row {list(a.shape)} does not match {list(self.row_shape)}")
        self._f.write(a.tobytes())
        self.rows += 1

    def finish(self) -> int:
        """Rewrite the header with the row count and close; returns the count."""
        self._f.seek(0)
        self._f.write(self._header(self.rows))
        self._f.close()
        return self.rows

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()
