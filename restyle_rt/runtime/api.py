"""The Python API: load an artifacts directory once, invert images many times.

Example::

    from restyle_rt import Inverter

    with Inverter.load("artifacts/ffhq", backend="auto") as inv:
        res = inv.invert(["a.jpg", "b.png"], n_iters=5)
        res.latents   # [2, S, 512] float32
        res.images    # [2, 3, R, R] float32 in about [-1, 1]
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .. import artifacts as _artifacts
from ..errors import ClosedError, InputError
from ..spec import BatchProfile, ModelSpec
from . import io, pipeline
from .backend import Backend, LoopResult
from .loop import check_iters, concat_results, run_in_chunks, synthesize_all

log = logging.getLogger("restyle_rt")

ImageLike = str | os.PathLike | np.ndarray


class Inverter:
    """ReStyle inversion with one backend over one artifacts directory.

    Use :meth:`load` to make one, and close it (or use it as a context manager) to release the backend.
    :meth:`invert` returns a :class:`~restyle_rt.runtime.backend.LoopResult` (``to_uint8()``, ``save(dir)``).

    Not thread-safe: a backend reuses its state between calls (OpenVINO's infer requests and their output
    tensors; TensorRT's device buffers, stream and CUDA graphs). Use one Inverter per thread, or hold a lock around
    each call. The arrays a call returns are the caller's own and stay valid after later calls.

    Attributes:
        artifacts: the verified :class:`~restyle_rt.artifacts.Artifacts`.
        backend: the running :class:`~restyle_rt.runtime.backend.Backend`.
    """

    def __init__(self, artifacts: _artifacts.Artifacts, backend: Backend):
        self.artifacts = artifacts
        self.backend = backend
        self._closed = False

    @classmethod
    def load(
        cls,
        artifacts_dir: os.PathLike,
        backend: str = "auto",
        verify: bool = True,
        probe_batch: int | None = None,
        **opts,
    ) -> Inverter:
        """Open an artifacts directory and start a backend on it.

        Args:
            artifacts_dir: the directory written by ``restyle-rt export``.
            backend: ``"auto"`` (``trt`` when it starts, else the CPU backend measured fastest on this machine,
                decision cached: :mod:`restyle_rt.runtime.backends.choose`) or a registered backend name
                (``"ort"``, ``"openvino"``, ``"trt"``).
            verify: check every file against the sha256 in the manifest (cached per file; see
                :func:`restyle_rt.artifacts.load`). False skips it.
            probe_batch: with ``"auto"``, the batch you will run, so that the measured choice times it.
            **opts: backend options (``ort``: ``providers`` as names or ``(name, options)`` tuples, ``threads``,
                ``device_id``, ``io_binding``; ``openvino``: ``device``, ``precision``, ``threads``).

        Returns:
            A ready Inverter.

        Raises:
            ArtifactError: the directory is missing, malformed or does not match the runtime.
            BackendUnavailable: the named backend cannot run here.
            InputError: unknown backend name.
        """
        from .backends import get_backend

        if not isinstance(backend, str):
            raise InputError(f"backend must be a name (str), got {type(backend).__name__} {backend!r}")
        art = _artifacts.load(artifacts_dir, check_hashes=verify)
        return cls(art, get_backend(backend, art, probe_batch=probe_batch, **opts))

    @property
    def spec(self) -> ModelSpec:
        """The model spec of the loaded artifacts."""
        return self.artifacts.spec

    @property
    def profile(self) -> BatchProfile:
        """The batch profile; :meth:`invert` splits larger batches into chunks of ``profile.max``."""
        return self.artifacts.profile

    def preprocess(self, images: ImageLike | Sequence[ImageLike]) -> np.ndarray:
        """Turn paths, uint8 RGB arrays or a preprocessed batch into the encoder's input.

        Args:
            images: a path, an [h, w, 3] uint8 RGB array, a list of those, or a float32 [B, 3, H, W] batch
                (already resized and normalised to [-1, 1]; passed through after a shape check).

        Returns:
            [B, 3, H, W] float32, (H, W) = ``spec.input_hw``.

        Raises:
            InputError: an unreadable file (named) or an array of the wrong kind.
        """
        self._check_open()
        hw = self.spec.input_hw
        if isinstance(images, np.ndarray) and images.dtype != np.uint8:
            if images.ndim != 4 or images.shape[1:] != (3, *hw) or images.dtype != np.float32:
                raise InputError(
                    f"a preprocessed batch must be float32 [B, 3, {hw[0]}, {hw[1]}], "
                    f"got {images.dtype} {list(images.shape)} (pass uint8 HWC arrays to preprocess)"
                )
            return check_batch_values(np.ascontiguousarray(images))
        if isinstance(images, (str, os.PathLike, bytes)) or (isinstance(images, np.ndarray) and images.ndim == 3):
            images = [images]
        out = np.empty((len(images), 3, *hw), np.float32)  # [B, 3, H, W]
        for i, item in enumerate(images):
            if isinstance(item, (str, os.PathLike, bytes)):
                out[i] = io.preprocess_file(item, hw)  # decoded and resized in Pillow, no full-size array
            elif isinstance(item, np.ndarray):
                out[i] = io.preprocess(item, hw)
            else:
                raise InputError(f"image {i}: expected a path or an [H, W, 3] uint8 array, got {type(item).__name__}")
        return out

    def invert(
        self,
        images: ImageLike | Sequence[ImageLike],
        n_iters: int = 5,
        return_steps: bool = False,
        early_exit: float | None = None,
    ) -> LoopResult:
        """Invert images with ``n_iters`` ReStyle steps (one call at a time per Inverter: see the class).

        Args:
            images: see :meth:`preprocess`.
            n_iters: steps per image (the official default is 5).
            return_steps: also return each step's latents and images (``step_latents``, ``step_images``).
            early_exit: stop an image once the RMS of its latent update falls below this threshold (not part
                of the official method; see :mod:`restyle_rt.runtime.loop`).

        Returns:
            LoopResult over all images in order; batches above ``profile.max`` run in chunks.

        Raises:
            InputError: bad images or arguments.
        """
        self._check_open()
        check_iters(n_iters, early_exit)
        x = self.preprocess(images)  # [B, 3, H, W]
        if x.shape[0] == 0:
            raise InputError("no images to invert")
        res = concat_results(
            run_in_chunks(
                self.profile, x, lambda chunk: self.backend.run_loop(chunk, n_iters, return_steps, early_exit)
            )
        )
        bad = np.flatnonzero(~np.isfinite(res.latents.reshape(len(res.latents), -1)).all(axis=1))
        if bad.size:
            log.warning(
                "images %s: the inversion is not finite (NaN/Inf latents); check the inputs and artifacts", bad.tolist()
            )
        return res

    def synthesize(self, latents: np.ndarray, progress: Callable[[int], object] | None = None) -> np.ndarray:
        """Images = G(latents) through the backend, in chunks of ``profile.max`` (a short tail padded up to
        ``profile.min``); a copy the backend does not reuse.

        Args:
            latents: [N, S, 512] float32 W+ latents (e.g. ``LoopResult.latents``, or edited ones).
            progress: called with the number of latents done after each chunk (e.g. ``tqdm.update``).

        Returns:
            [N, 3, h, w] float32 images in about [-1, 1] (unclamped, as :attr:`LoopResult.images`).

        Raises:
            InputError: latents not [N, S, 512] with N >= 1.
        """
        self._check_open()
        return synthesize_all(self.backend, self.profile, latents, progress)

    def invert_files(
        self,
        paths: Sequence[str | os.PathLike],
        n_iters: int = 5,
        batch: int | None = None,
        workers: int | None = None,
        return_steps: bool = False,
        early_exit: float | None = None,
        skip_errors: bool = False,
        jpeg_draft: bool = False,
        prefetch: int = pipeline.DEFAULT_DEPTH,
    ) -> Iterator[tuple[list[Path], LoopResult]]:
        """Invert image files batch by batch, reading and preprocessing the next batches on threads meanwhile.

        Yields one ``(paths, result)`` per batch, in input order, as soon as the batch is inverted: the results
        are the same, bit for bit, as :meth:`invert` on the same batches (the backend makes the same calls). Reader
        threads decode and resize (Pillow releases the GIL there) while the loop runs, at most ``prefetch``
        batches ahead (:mod:`restyle_rt.runtime.pipeline`). Stopping early (``break``, an exception) shuts them
        down when the iterator is closed: iterate to the end, or wrap it in ``contextlib.closing``.

        Args:
            paths: image files, in order (for directories, :func:`restyle_rt.runtime.io.list_images` first).
            n_iters, return_steps, early_exit: as :meth:`invert`.
            batch: images per batch (default ``profile.max``; above it, :meth:`invert` runs chunks).
            workers: reader threads (default :func:`~restyle_rt.runtime.pipeline.default_workers`, at most 4);
                0 reads each batch on this thread when it is due, as :meth:`invert` does.
            skip_errors: an unreadable file is logged and left out of its batch (a batch with none left is not
                yielded) instead of raising InputError.
            jpeg_draft: decode JPEGs at reduced scale (faster, not the official bytes; see
                :func:`restyle_rt.runtime.io.preprocess_file`).
            prefetch: batches read ahead of the one being inverted (>= 1).

        Yields:
            (the batch's paths as ``Path``, minus skipped ones; its :class:`LoopResult`).

        Raises:
            InputError: bad arguments, or an unreadable file without ``skip_errors`` (after the batches before
                it were yielded).
        """
        self._check_open()  # arguments are checked here, before the first batch is asked for
        check_iters(n_iters, early_exit)
        if isinstance(paths, (str, os.PathLike, bytes)):
            raise InputError(f"invert_files takes a sequence of files, got one path {paths!r}; pass [path]")
        hw = self.spec.input_hw
        files = [p if isinstance(p, bytes) else Path(p) for p in paths]  # bytes: refused by the reader, by name
        pre = pipeline.Prefetcher(
            files,
            lambda p: io.preprocess_file(p, hw, jpeg_draft),
            self.profile.max if batch is None else batch,
            workers,
            prefetch,
        )
        return self._invert_batches(pre, n_iters, return_steps, early_exit, skip_errors)

    def _invert_batches(
        self, pre: pipeline.Prefetcher, n_iters: int, return_steps: bool, early_exit: float | None, skip_errors: bool
    ) -> Iterator[tuple[list[Path], LoopResult]]:
        with pre:
            for b in pre:
                for _, e in b.errors:
                    if not skip_errors:
                        raise e
                    log.warning("skipped: %s", e)
                if b.items:
                    yield b.items, self.invert(b.x, n_iters, return_steps, early_exit)

    def close(self) -> None:
        """Release the backend. Idempotent; the Inverter cannot be used afterwards."""
        if self.backend is not None and not self._closed:
            self.backend.close()
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(
                "this Inverter was closed (close() or the end of its `with` block); load a new one "
                "with Inverter.load(...)"
            )

    def __enter__(self) -> Inverter:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def __repr__(self) -> str:
        return f"Inverter({str(Path(self.artifacts.root))!r}, backend={self.backend.name!r})"


def check_batch_values(x: np.ndarray) -> np.ndarray:
    """Refuse NaN/Inf (per image) and 0..255 pixel values in a preprocessed [B, 3, H, W] batch; returns it.

    Raises:
        InputError: naming the images (by index) and what is wrong with them.
    """
    flat = x.reshape(x.shape[0], -1)  # [B, 3*H*W]
    nonfinite = np.flatnonzero(~np.isfinite(flat).all(axis=1))
    if nonfinite.size:
        raise InputError(f"preprocessed images {nonfinite.tolist()} contain NaN or Inf; an image must be finite")
    big = np.flatnonzero(np.abs(flat).max(axis=1) > 2.0)
    if big.size:
        raise InputError(
            f"preprocessed images {big.tolist()} have values up to {float(np.abs(flat).max()):.4g}, "
            "expected [-1, 1] (x / 127.5 - 1 of 0..255 pixels); pass uint8 [H, W, 3] arrays to have "
            "them normalised"
        )
    return x
