"""Runtime image I/O: list, decode, resize and normalise like the official transforms; convert outputs back.

Everything goes through Pillow, as the official loader does (``PIL.Image.open(p).convert('RGB')`` then
``transforms.Resize``, which is Pillow's ``Image.resize(size, BILINEAR)``), so the encoder sees the same bytes.
Decoding: grayscale, palette, CMYK and LA/RGBA converted by Pillow's ``convert('RGB')`` (alpha **dropped**); EXIF
orientation applied (``ImageOps.exif_transpose``; the official loader does not, so a rotated phone photo is
inverted upright here). 16-bit images keep their high byte (``v >> 8``), which is how Pillow reads 48-bit RGB PNGs;
note the official loader would *saturate* a 16-bit grayscale PNG at 255 instead. Single-channel float TIFFs are read
as [0, 1] and refused when they hold NaN/Inf.

Strips and animations resize with Pillow's bicubic, as the official script's coupled output does.
"""

from __future__ import annotations

import contextlib
import io as _io
import os
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import fsio
from ..errors import InputError

if TYPE_CHECKING:
    from PIL import Image

# Decoded size limit, checked from the file's header before decoding (a 1.1 MB PNG can decode to 2.85 GB). Pillow's
# own default (MAX_IMAGE_PIXELS, ~89.5 Mpx = 268 MB as RGB); override with $RESTYLE_RT_MAX_PIXELS.
MAX_PIXELS = int(os.environ.get("RESTYLE_RT_MAX_PIXELS", "89478485"))

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tiff", ".tif", ".webp")
# zlib level 1 with the Z_RLE strategy (3): OpenCV's PNG defaults, which this module used before. Measured on a
# 1024 px output: 51 ms (OpenCV: 48 ms); Pillow's default (level 6) took 5-9x as long on the loaded dev VM.
PNG_OPTIONS = {"compress_level": 1, "compress_type": 3}
# Held while an image's header is parsed: warnings.catch_warnings() and Pillow's MAX_IMAGE_PIXELS (lifted for an
# image our limit allows) are process-wide, and reader threads (runtime/pipeline.py) open images concurrently. The
# header only: decoding and resizing run outside it.
_OPENING = threading.Lock()


# --- listing ------------------------------------------------------------------------------------------------


def list_images(inputs: Iterable[os.PathLike]) -> list[Path]:
    """Expand files and directories into the list of images to invert.

    Directories are walked recursively and filtered by :data:`IMAGE_EXTENSIONS` (case-insensitive), sorted by
    path like the official ``InferenceDataset``; files named explicitly are kept whatever their extension.

    Args:
        inputs: file or directory paths, in the order given.

    Returns:
        Image paths; each directory's files sorted, duplicates removed.

    Raises:
        InputError: a path does not exist, or nothing was found.
    """
    out: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            found = [f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()]
            out.extend(sorted(found))
        elif p.exists():
            out.append(p)
        else:
            raise InputError(f"{p}: no such file or directory")
    out = list(dict.fromkeys(out))
    if not out:
        raise InputError(
            "no images found in " + ", ".join(map(str, inputs)) + f" (extensions: {' '.join(IMAGE_EXTENSIONS)})"
        )
    return out


def output_names(paths: Sequence[Path], roots: Sequence[os.PathLike]) -> list[str]:
    """Unique, extension-less relative names for the outputs of ``paths`` (posix separators).

    A file under one of the ``roots`` directories keeps its sub-path (``a/b/img``); other files use their
    stem. Clashes get ``_1``, ``_2`` … appended.
    """
    dirs = [Path(r).resolve() for r in roots if Path(r).is_dir()]
    names, seen = [], set()
    for p in paths:
        rp, name = Path(p).resolve(), Path(p).stem
        for d in dirs:
            if d in rp.parents:
                name = rp.relative_to(d).with_suffix("").as_posix()
                break
        base, k = name, 0
        while name in seen:
            k += 1
            name = f"{base}_{k}"
        seen.add(name)
        names.append(name)
    return names


# --- decoding -----------------------------------------------------------------------------------------------


def read_image(path: os.PathLike) -> np.ndarray:
    """Decode one image file to RGB.

    Args:
        path: the file.

    Returns:
        [H, W, 3] uint8 RGB, EXIF orientation applied, alpha dropped.

    Raises:
        InputError: the file is missing, empty, not a regular file, larger than :data:`MAX_PIXELS`, or cannot be
            decoded (names the file).
    """
    return np.array(_load(path), dtype=np.uint8)  # a writable copy


def preprocess_file(path: os.PathLike, hw: tuple[int, int], jpeg_draft: bool = False) -> np.ndarray:
    """``preprocess(read_image(path), hw)``, without turning the full-size image into an array and back.

    Thread-safe (Pillow releases the GIL while it decodes and resizes): :mod:`restyle_rt.runtime.pipeline` calls
    it from reader threads.

    Args:
        path: the file.
        hw: encoder input (H, W).
        jpeg_draft: let libjpeg decode a JPEG at 1/2, 1/4 or 1/8 scale (Pillow's ``Image.draft``; the largest
            scale that keeps both sides >= max(H, W)) before the bilinear resize. Several times faster on large
            photos, but **not** the official transforms' bytes: on synthetic 12 MP JPEGs resized to 256 x 256
            (decoded at 1/8) the encoder input differs by up to 5 of 255 levels (mean 0.7), and the fitted church
            fixture's latents after 5 steps by 3e-3 to 5e-3 rel-L2 (final image 55-57 dB against the exact path):
            inside the reduced-precision bars (35 dB), far outside FP32 parity (1e-4 rel-L2 over the loop); see
            ``benchmarks/input_pipeline.py --draft-accuracy``. Off by default.

    Returns:
        [3, H, W] float32 in [-1, 1].

    Raises:
        InputError: as :func:`read_image`.
    """
    draft = (max(hw),) * 2 if jpeg_draft else None  # square: an EXIF rotation swaps the sides afterwards
    return _normalise(_resize_pil(_load(path, draft), hw))


def _load(path: os.PathLike, draft: tuple[int, int] | None = None) -> Image.Image:
    """:func:`read_image`'s checks and decode, returning the loaded RGB Pillow image (``draft``: see
    :func:`_decode`)."""
    if isinstance(path, bytes):
        raise InputError(
            f"{path[:40]!r}: bytes are not a path; pass a str or Path (os.fsdecode(p)), or decode the "
            "image data yourself and pass an [H, W, 3] uint8 array"
        )
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: not a regular file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"{p}: cannot be read ({e.strerror or e})") from None
    if not data:
        raise InputError(f"{p}: empty file (0 bytes)")
    im = _decode(_io.BytesIO(data), str(p), draft)
    if im is None:
        raise InputError(f"{p}: not a readable image (corrupt, truncated or an unsupported format)")
    return im


@contextlib.contextmanager
def _open(src, name: str, limit: int = 0) -> Iterator[Image.Image]:
    """Pillow's lazy ``Image.open`` with our size limit instead of Pillow's (checked from the header).

    Raises:
        InputError: the header declares more than ``limit`` (default :data:`MAX_PIXELS`) pixels.
    """
    from PIL import Image

    limit = limit or MAX_PIXELS
    with _OPENING, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we decide, with our own message
        try:
            im = Image.open(src)
        except Image.DecompressionBombError as e:  # Pillow's own check (2x its limit) fired on the header
            if _declared(str(e)) > limit:
                _refuse(name, _declared(str(e)), limit)
            # our limit was raised above Pillow's: open again without Pillow's (under _OPENING)
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                if hasattr(src, "seek"):
                    src.seek(0)
                im = Image.open(src)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    with im:
        w, h = im.size
        if w * h > limit:
            _refuse(name, w * h, limit)
        yield im


def _refuse(name: str, pixels: int, limit: int) -> None:
    raise InputError(
        f"{name}: declares {pixels / 1e6:.0f} Mpx, above the {limit / 1e6:.0f} Mpx limit "
        "(set RESTYLE_RT_MAX_PIXELS to allow more); not decoded"
    )


def _declared(msg: str) -> int:
    """The pixel count in Pillow's DecompressionBombError message ("Image size (N pixels) exceeds ...")."""
    import re

    m = re.search(r"\((\d+) pixels\)", msg)
    return int(m.group(1)) if m else 1 << 62


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, ...) to RGB, exactly as :func:`read_image` decodes a file.

    Args:
        data: the encoded bytes.
        name: what to call the image in error messages.

    Returns:
        [H, W, 3] uint8 RGB, EXIF orientation applied, alpha dropped.

    Raises:
        InputError: empty, too large or undecodable bytes (names ``name``).
    """
    if not data:
        raise InputError(f"{name}: empty image (0 bytes)")
    im = _decode(_io.BytesIO(bytes(data)), name)
    if im is None:
        raise InputError(
            f"{name}: not a readable image ({len(data)} bytes; corrupt, truncated or an unsupported format)"
        )
    return np.array(im, dtype=np.uint8)  # a writable copy


def _decode(src, name: str, draft: tuple[int, int] | None = None) -> Image.Image | None:
    """Decode with Pillow to a loaded RGB image; None for data Pillow cannot read.

    ``draft`` (w, h): a JPEG is decoded at the smallest 1/2, 1/4, 1/8 scale still at least that size
    (:func:`_draft_scale`); other formats, and None, decode at full size.

    Raises:
        InputError: too many pixels declared, or decoded pixels that are not usable (NaN in a float TIFF).
    """
    from PIL import Image, ImageOps

    try:
        with _open(src, name) as im:
            scale = _draft_scale(im, draft)
            if scale > 1:  # before anything loads the pixels
                im.draft(None, (im.size[0] // scale, im.size[1] // scale))
            try:
                ImageOps.exif_transpose(im, in_place=True)  # (no copy when there is nothing to rotate)
            except Exception:  # noqa: BLE001 - a malformed EXIF block is ignored; pixel errors surface below
                pass
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):  # 16/32-bit gray, float: see _to_uint8
                return Image.fromarray(np.repeat(_to_uint8(np.asarray(im))[:, :, None], 3, axis=2))
            if im.mode != "RGB":
                return im.convert("RGB")
            im.load()
            return im
    except InputError:
        raise
    except _Unusable as e:  # decoded, but not usable pixels
        raise InputError(f"{name}: {e}") from None
    except Exception:  # noqa: BLE001 - Pillow raises many types for bad data; the caller reports the file
        return None


def _draft_scale(im: Image.Image, need: tuple[int, int] | None) -> int:
    """The JPEG DCT scale (8, 4, 2; 1 = none) for Pillow's ``Image.draft``: the largest that leaves both sides at
    least ``need`` and divides both exactly. (A side that does not divide gets a partly padded last row or column
    that the resize would then stretch over: up to 18 levels off on a 1200 x 900 test image at 1/8, against 4 when
    it divides. Cameras' sizes are multiples of 8 or 16.)"""
    if need is None or im.format != "JPEG":
        return 1
    w, h = im.size
    for s in (8, 4, 2):
        if w % s == 0 and h % s == 0 and w // s >= need[0] and h // s >= need[1]:
            return s
    return 1


class _Unusable(ValueError):
    """Decoded pixels that cannot be turned into uint8 RGB."""


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """16-bit (and 32-bit int) gray: the high byte of the 16-bit value; float: [0, 1] scaled to [0, 255]."""
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind in "ui":
        return (np.clip(a, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)  # keep the high byte
    if a.dtype.kind == "f":  # float TIFF data in [0, 1]
        if not np.isfinite(a).all():
            raise _Unusable("NaN/Inf pixel values")
        return (np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise _Unusable(f"unsupported pixel type {a.dtype}")


# --- resize and normalise -----------------------------------------------------------------------------------


def _pil(img: np.ndarray) -> Image.Image:
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(img))


def resize_bilinear(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Pillow's ``Image.resize((W, H), BILINEAR)`` (the official ``transforms.Resize``) of an [h, w, 3] uint8 image.

    The aspect ratio is not kept; the result is [H, W, 3] uint8.
    """
    if img.shape[:2] == (int(hw[0]), int(hw[1])):
        return img
    return _resize_pil(_pil(img), hw)


def _resize_pil(im: Image.Image, hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    h, w = int(hw[0]), int(hw[1])
    return np.asarray(im if im.size == (w, h) else im.resize((w, h), Image.BILINEAR))  # [H, W, 3] uint8


def preprocess(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Official ``Resize(hw)`` + ``ToTensor`` + ``Normalize(0.5, 0.5)``.

    Args:
        img: [h, w, 3] uint8 RGB.
        hw: encoder input (H, W), ``spec.input_hw``.

    Returns:
        [3, H, W] float32 in [-1, 1].
    """
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"expected an [H, W, 3] uint8 RGB image, got {img.dtype} {list(img.shape)}")
    return _normalise(resize_bilinear(img, hw))


def _normalise(img: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 -> [3, H, W] float32: ``ToTensor`` + ``Normalize(0.5, 0.5)``."""
    x = img.astype(np.float32) / np.float32(255.0)  # [H, W, 3]
    x = (x - np.float32(0.5)) / np.float32(0.5)
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # [3, H, W]


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Official ``tensor2im``: [3, h, w] float in about [-1, 1] -> [h, w, 3] uint8 (clip, x255, truncate)."""
    v = (np.asarray(img, dtype=np.float32).transpose(1, 2, 0) + np.float32(1.0)) / np.float32(2.0)  # [h, w, 3]
    return (np.clip(v, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)


def resize_for_display(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Pillow's bicubic resize of an [h, w, 3] uint8 image for strips (the official coupled output's
    ``Image.resize(..., Image.BICUBIC)``)."""
    from PIL import Image

    if img.shape[:2] == tuple(hw):
        return img
    return np.asarray(_pil(img).resize((int(hw[1]), int(hw[0])), Image.BICUBIC))


def write_png(path: os.PathLike, img: np.ndarray) -> None:
    """Write an [h, w, 3] uint8 RGB image as PNG, creating parent directories."""
    p = Path(path)
    buf = _io.BytesIO()
    try:
        _pil(img).save(buf, format="PNG", **PNG_OPTIONS)
    except (TypeError, ValueError, OSError) as e:
        raise InputError(f"{p}: PNG encoding failed for an image of shape {list(np.shape(img))} ({e})") from None
    fsio.write_bytes(p, buf.getbuffer())  # temporary name + rename: never a truncated PNG
