"""The wire contract of the ``restyle`` model, shared by ``restyle-rt serve`` and the Triton model repository.

Pure NumPy plus the runtime: no Triton import, so it is unit-testable anywhere and runs unchanged inside a Triton
Python-backend stub. One *request* carries ``b >= 1`` images (the leading batch axis of every tensor); Triton's
dynamic batcher gathers several requests into one execution, and :func:`run_requests` runs them through the
residual loop together, grouped by loop arguments.

Inputs (shapes exclude the batch axis):

========================  =======  ============  ==============================================================
name                      dtype    shape         meaning
========================  =======  ============  ==============================================================
``image_bytes``           BYTES    [1]           an encoded image (JPEG/PNG/...), decoded and preprocessed like
                                                 ``restyle-rt invert`` does
``images``                FP32     [3, H, W]     an already preprocessed image in [-1, 1] (H x W = encoder input)
``iters``                 INT32    [1]           loop steps, 1..``max_iters`` (default 5, the official default)
``early_exit``            FP32     [1]           optional: stop an image once its latent update RMS < this
``return_steps``          BOOL     [1]           optional: also return every step's latents and images
``image_format``          BYTES    [1]           optional: ``raw`` (default: the server's ``--image-format``),
                                                 ``png`` or ``jpeg``: how the images are returned
========================  =======  ============  ==============================================================

Exactly one of ``image_bytes`` / ``images`` per request; ``iters``, ``early_exit``, ``return_steps`` and
``image_format`` must hold one value for all rows of a request. Outputs: ``latents`` FP32 [S, 512], ``steps_used``
INT32 [1], and with ``return_steps`` ``step_latents`` FP32 [T, S, 512]. Images (the official ``tensor2im`` of each
image): ``raw``: ``image`` UINT8 [h, w, 3] (and ``step_images`` UINT8 [T, h, w, 3]); ``png`` / ``jpeg``:
``image_encoded`` BYTES [1] (and ``step_images_encoded`` BYTES [T]), the encoded file's bytes, in place of the raw
tensors (a 1024-px image is 3 MB raw; PNG is lossless, JPEG quality 95). The encoded outputs are not named
``image_bytes``, the name of the encoded *input*.

A request that cannot be served (undecodable bytes, both or neither image input, iters out of range, ...) gets a
:class:`RequestError` in its slot of the result list; the other requests of the execution are served normally.
"""

from __future__ import annotations

import io as _stdio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..runtime import io
from ..runtime.loop import check_iters

log = logging.getLogger("restyle_rt")

MODEL_NAME = "restyle"
IN_BYTES, IN_IMAGES, IN_ITERS, IN_EARLY_EXIT, IN_RETURN_STEPS, IN_IMAGE_FORMAT = (
    "image_bytes",
    "images",
    "iters",
    "early_exit",
    "return_steps",
    "image_format",
)
OUT_LATENTS, OUT_IMAGE, OUT_STEPS_USED, OUT_STEP_LATENTS, OUT_STEP_IMAGES = (
    "latents",
    "image",
    "steps_used",
    "step_latents",
    "step_images",
)
OUT_IMAGE_ENCODED, OUT_STEP_IMAGES_ENCODED = "image_encoded", "step_images_encoded"
DEFAULT_ITERS = 5
DEFAULT_MAX_ITERS = 20
IMAGE_FORMATS = ("raw", "png", "jpeg")
JPEG_QUALITY = 95
PNG_COMPRESSION = 1  # zlib level: ~3x faster than Pillow's default 6, a little larger


def io_table(spec) -> tuple[list[tuple], list[tuple]]:
    """(inputs, outputs) as ``(name, numpy dtype, dims without batch, optional)`` rows for a model spec.

    Args:
        spec: the artifacts' :class:`~restyle_rt.spec.ModelSpec`.
    """
    h, w = spec.input_hw
    ih, iw = spec.image_hw
    s = spec.n_styles
    inputs = [
        (IN_BYTES, np.bytes_, (1,), True),
        (IN_IMAGES, np.float32, (3, h, w), True),
        (IN_ITERS, np.int32, (1,), True),
        (IN_EARLY_EXIT, np.float32, (1,), True),
        (IN_RETURN_STEPS, np.bool_, (1,), True),
        (IN_IMAGE_FORMAT, np.bytes_, (1,), True),
    ]
    outputs = [
        (OUT_LATENTS, np.float32, (s, 512), False),
        (OUT_IMAGE, np.uint8, (ih, iw, 3), False),
        (OUT_STEPS_USED, np.int32, (1,), False),
        (OUT_STEP_LATENTS, np.float32, (-1, s, 512), False),
        (OUT_STEP_IMAGES, np.uint8, (-1, ih, iw, 3), False),
        (OUT_IMAGE_ENCODED, np.bytes_, (1,), False),
        (OUT_STEP_IMAGES_ENCODED, np.bytes_, (-1,), False),
    ]
    return inputs, outputs


def preferred_batch_sizes(profile) -> list[int]:
    """The dynamic batcher's preferred sizes: the profile's opt and max, without 1 (a preferred size of 1 would
    let the batcher dispatch single requests while others wait) unless the profile allows nothing else."""
    sizes = sorted({profile.opt, profile.max})
    return [s for s in sizes if s > 1] or [1]


class RequestError(Exception):
    """One request's failure; the server answers that request alone with this message (status: invalid argument)."""


@dataclass
class Parsed:
    """A validated request: its preprocessed images and loop arguments."""

    x: np.ndarray  # [b, 3, H, W] float32
    iters: int
    early_exit: float | None
    return_steps: bool
    image_format: str = "raw"

    @property
    def key(self) -> tuple:
        return (self.iters, self.early_exit, self.return_steps)


def _one_value(req: Mapping[str, np.ndarray], name: str, b: int, default, cast):
    """The single per-request value of an optional [b, 1] input (rows must agree)."""
    if name not in req:
        return default
    a = np.asarray(req[name]).reshape(-1)
    if a.size != b:
        raise RequestError(f"{name}: expected one value per image ({b}), got {a.size}")
    if not np.all(a == a[0]):
        raise RequestError(f"{name}: all images of one request must use the same value, got {a.tolist()}")
    return cast(a[0])


def parse_image_format(value, default: str = "raw") -> str:
    """A request's ``image_format`` value (bytes or str, ``jpg`` meaning ``jpeg``), checked."""
    if value is None:
        return default
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            raise RequestError(
                f"{IN_IMAGE_FORMAT}: expected one of {', '.join(IMAGE_FORMATS)}, got {value!r}"
            ) from None
    fmt = {"jpg": "jpeg"}.get(str(value).strip().lower(), str(value).strip().lower())
    if fmt not in IMAGE_FORMATS:
        raise RequestError(f"{IN_IMAGE_FORMAT}: expected one of {', '.join(IMAGE_FORMATS)}, got {value!r}")
    return fmt


def parse_request(
    req: Mapping[str, np.ndarray], input_hw, max_iters: int = DEFAULT_MAX_ITERS, default_format: str = "raw"
) -> Parsed:
    """Validate one request and preprocess its images.

    Args:
        req: input name -> array, each with the request's batch axis first.
        input_hw: the encoder's (H, W).
        max_iters: the largest ``iters`` accepted.
        default_format: the ``image_format`` of a request that sends none.

    Returns:
        The parsed request.

    Raises:
        RequestError: anything wrong with this request, with what was expected and what came.
    """
    has_bytes, has_images = IN_BYTES in req, IN_IMAGES in req
    if has_bytes == has_images:
        raise RequestError(
            f"send exactly one of '{IN_BYTES}' (encoded images) or '{IN_IMAGES}' "
            f"(float32 [B, 3, {input_hw[0]}, {input_hw[1]}]); got " + ("both" if has_bytes else "neither")
        )
    try:
        if has_bytes:
            blobs = np.asarray(req[IN_BYTES], dtype=object).reshape(-1)
            x = np.stack(
                [
                    io.preprocess(io.decode_image(_as_bytes(v), f"{IN_BYTES}[{i}]"), input_hw)
                    for i, v in enumerate(blobs)
                ]
            )  # [b, 3, H, W]
        else:
            x = np.asarray(req[IN_IMAGES])
            if x.dtype != np.float32 or x.ndim != 4 or x.shape[1:] != (3, *input_hw):
                raise RequestError(
                    f"{IN_IMAGES}: expected float32 [B, 3, {input_hw[0]}, {input_hw[1]}], got {x.dtype} {list(x.shape)}"
                )
            if not np.isfinite(x).all():
                raise RequestError(f"{IN_IMAGES}: holds NaN or Inf values")
        b = x.shape[0]
        iters = _one_value(req, IN_ITERS, b, DEFAULT_ITERS, int)
        tau = _one_value(req, IN_EARLY_EXIT, b, None, float)
        steps = _one_value(req, IN_RETURN_STEPS, b, False, bool)
        fmt = parse_image_format(_one_value(req, IN_IMAGE_FORMAT, b, None, lambda v: v), default_format)
        check_iters(iters, tau)
    except InputError as e:
        raise RequestError(str(e)) from None
    if not 1 <= iters <= max_iters:
        raise RequestError(f"{IN_ITERS}: expected 1..{max_iters}, got {iters} (the server's --max-iters bounds it)")
    return Parsed(np.ascontiguousarray(x, dtype=np.float32), iters, tau, steps, fmt)


def _as_bytes(v) -> bytes:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, np.ndarray):
        return v.tobytes()
    raise RequestError(f"{IN_BYTES}: expected bytes, got {type(v).__name__}")


def encode_image(img: np.ndarray, fmt: str) -> bytes:
    """An [h, w, 3] uint8 RGB image as a PNG (lossless) or JPEG (quality ``JPEG_QUALITY``) file's bytes."""
    from PIL import Image

    buf = _stdio.BytesIO()
    im = Image.fromarray(np.ascontiguousarray(img))
    if fmt == "png":
        im.save(buf, format="PNG", compress_level=PNG_COMPRESSION)
    else:
        im.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _images(frames: np.ndarray, fmt: str) -> np.ndarray:
    """[n, 3, h, w] float images -> [n, h, w, 3] uint8, or [n] object array of encoded bytes."""
    pixels = [io.to_uint8(im) for im in frames]
    if fmt == "raw":
        return np.stack(pixels)
    out = np.empty(len(pixels), dtype=np.object_)
    for i, p in enumerate(pixels):  # one by one: a list would pass through a fixed-width bytes array first
        out[i] = encode_image(p, fmt)
    return out


def format_outputs(res, lo: int, hi: int, return_steps: bool, image_format: str = "raw") -> dict[str, np.ndarray]:
    """The output tensors of rows ``lo:hi`` of a :class:`~restyle_rt.runtime.backend.LoopResult`."""
    out = {
        OUT_LATENTS: np.ascontiguousarray(res.latents[lo:hi], dtype=np.float32),  # [b, S, 512]
        OUT_STEPS_USED: res.steps_used[lo:hi].astype(np.int32).reshape(-1, 1),  # [b, 1]
    }
    final = _images(res.images[lo:hi], image_format)
    if image_format == "raw":
        out[OUT_IMAGE] = final  # [b, h, w, 3]
    else:
        out[OUT_IMAGE_ENCODED] = final.reshape(-1, 1)  # [b, 1] bytes
    if return_steps:
        out[OUT_STEP_LATENTS] = np.stack([s[lo:hi] for s in res.step_latents], axis=1)  # [b, T, S, 512]
        steps = np.stack([_images(s[lo:hi], image_format) for s in res.step_images], axis=1)
        out[OUT_STEP_IMAGES if image_format == "raw" else OUT_STEP_IMAGES_ENCODED] = steps  # [b, T, h, w, 3] | [b, T]
    return out


Result = dict[str, np.ndarray] | RequestError


def run_requests(
    invert,
    requests: Sequence[Mapping[str, np.ndarray]],
    input_hw,
    max_iters: int = DEFAULT_MAX_ITERS,
    default_format: str = "raw",
) -> list[Result]:
    """Serve one execution's requests: parse each, run the loop once per group of equal loop arguments.

    Args:
        invert: ``invert(x, n_iters, return_steps, early_exit) -> LoopResult`` on a float32 [B, 3, H, W] batch
            (e.g. :meth:`restyle_rt.Inverter.invert`, which chunks by the batch profile).
        requests: the execution's requests, each a mapping of input name -> array.
        input_hw: the encoder's (H, W).
        max_iters: the largest ``iters`` accepted.
        default_format: the ``image_format`` of requests that send none (``raw``, ``png`` or ``jpeg``).

    Returns:
        One entry per request, in order: its output tensors, or the :class:`RequestError` that rejected it.
    """
    results: list[Result | None] = [None] * len(requests)
    groups: dict[tuple, list[tuple[int, Parsed]]] = {}
    for i, req in enumerate(requests):
        try:
            p = parse_request(req, input_hw, max_iters, default_format)
        except RequestError as e:
            log.info("request %d of %d rejected: %s", i + 1, len(requests), e)
            results[i] = e
            continue
        groups.setdefault(p.key, []).append((i, p))
    for (iters, tau, steps), members in groups.items():
        x = np.concatenate([p.x for _, p in members])  # [sum b, 3, H, W]
        res = invert(x, iters, steps, tau)
        lo = 0
        for i, p in members:
            hi = lo + p.x.shape[0]
            results[i] = format_outputs(res, lo, hi, steps, p.image_format)
            lo = hi
    return results  # type: ignore[return-value]
