"""Runtime image I/O: list, decode, resize and normalise like the official transforms; convert outputs back.

Decoding uses OpenCV (``IMREAD_COLOR | IMREAD_ANYDEPTH``: EXIF orientation applied, grayscale and palette
expanded to three channels, alpha **dropped**, the same as the official ``PIL.Image.open(p).convert('RGB')``),
and falls back to Pillow for what OpenCV cannot read (when Pillow is installed). 16-bit images keep their high
byte (``v >> 8``), which is how Pillow reads 48-bit RGB PNGs; note the official loader would *saturate* a
16-bit grayscale PNG at 255 instead.

Resizing re-implements Pillow's ``Image.resize(size, BILINEAR)`` (triangle filter, antialiased on downscale,
22-bit fixed-point coefficients, horizontal pass then vertical pass, each rounded to uint8) in NumPy, so that
the encoder sees the bytes the official ``transforms.Resize`` produces; ``tests/unit/test_io.py`` bounds the
difference.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple

import numpy as np

from .. import fsio
from ..errors import InputError

# Decoded size limit, checked from the file's header before decoding (a 1.1 MB PNG can decode to 2.85 GB). Pillow's
# own default (MAX_IMAGE_PIXELS, ~89.5 Mpx = 268 MB as RGB); override with $RESTYLE_RT_MAX_PIXELS.
MAX_PIXELS = int(os.environ.get("RESTYLE_RT_MAX_PIXELS", "89478485"))
# OpenCV applies its own header check (default 2**30 px) with this limit when it is set before cv2 is imported.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tiff", ".tif", ".webp")
_PRECISION_BITS = 32 - 8 - 2  # Pillow's Resample.c fixed-point precision for 8-bit images


# --- listing ------------------------------------------------------------------------------------------------


def list_images(inputs: Iterable[os.PathLike]) -> List[Path]:
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
    out: List[Path] = []
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
            "no images found in "
            + ", ".join(map(str, inputs))
            + f" (extensions: {' '.join(IMAGE_EXTENSIONS)})"
        )
    return out


def output_names(paths: Sequence[Path], roots: Sequence[os.PathLike]) -> List[str]:
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
        InputError: the file is missing, empty, not a regular file, or cannot be decoded (names the file).
    """
    if isinstance(path, bytes):
        raise InputError(f"{path[:40]!r}: bytes are not a path; pass a str or Path (os.fsdecode(p)), or decode the "
                         "image data yourself and pass an [H, W, 3] uint8 array")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: not a regular file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"{p}: cannot be read ({e.strerror or e})") from None
    if not data:
        raise InputError(f"{p}: empty file (0 bytes)")
    check_pixels(p)
    try:
        img = _decode_cv2(data)
    except ValueError as e:  # decoded, but not usable pixels (NaN in a float TIFF, an odd pixel type)
        raise InputError(f"{p}: {e}") from None
    if img is None:
        img = _decode_pil(p)
    if img is None:
        raise InputError(f"{p}: not a readable image (corrupt, truncated or an unsupported format)")
    return img


def check_pixels(path, limit: int = 0, name: str = "") -> None:
    """Refuse an image whose header declares more than ``limit`` (default :data:`MAX_PIXELS`) pixels.

    ``path`` is a file path or a binary file object (encoded bytes); ``name`` names it in the message.

    Reads the header only (Pillow's lazy ``Image.open``); without Pillow, OpenCV's own header check applies
    (``OPENCV_IO_MAX_IMAGE_PIXELS``, set from :data:`MAX_PIXELS` when this module is imported first).

    Raises:
        InputError: naming the declared size and the limit.
    """
    limit = limit or MAX_PIXELS
    try:
        from PIL import Image
    except ImportError:
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we decide, with our own message
            with Image.open(path) as im:
                w, h = im.size
    except Image.DecompressionBombError as e:  # Pillow's own check (2x its limit) fired while reading the header
        w, h = _declared(str(e)), 1
    except Exception:  # noqa: BLE001 - not a format Pillow knows: the decoders report it
        return
    if w * h > limit:
        raise InputError(f"{name or path}: declares {w * h / 1e6:.0f} Mpx, above the {limit / 1e6:.0f} Mpx limit "
                         "(set RESTYLE_RT_MAX_PIXELS to allow more); not decoded")


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
        InputError: empty or undecodable bytes (names ``name``).
    """
    import io as _io

    if not data:
        raise InputError(f"{name}: empty image (0 bytes)")
    check_pixels(_io.BytesIO(bytes(data)), name=name)
    try:
        img = _decode_cv2(bytes(data))
    except ValueError as e:  # decoded, but not usable pixels (NaN in a float TIFF, an odd pixel type)
        raise InputError(f"{name}: {e}") from None
    if img is None:
        img = _decode_pil(_io.BytesIO(bytes(data)))
    if img is None:
        raise InputError(f"{name}: not a readable image ({len(data)} bytes; corrupt, truncated or an unsupported "
                         "format)")
    return img


def _decode_cv2(data: bytes):
    import cv2

    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)  # BGR, orientation applied
    except cv2.error:
        return None
    if img is None or img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        return None
    img = _to_uint8(img)
    return np.ascontiguousarray(img[:, :, ::-1])  # [H, W, 3] RGB


def _decode_pil(path):  # a Path or a binary file object
    try:
        from PIL import Image, ImageOps
    except ImportError:
        return None
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.uint32)
                return np.repeat(_to_uint8(a)[:, :, None], 3, axis=2)
            return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
    except Exception:  # Pillow raises many types for bad data; the caller reports the file
        return None


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype in (np.uint16, np.uint32):
        return (np.minimum(a, 65535) >> 8).astype(np.uint8)  # keep the high byte
    if a.dtype.kind == "f":  # float TIFF/EXR-like data in [0, 1]
        if not np.isfinite(a).all():
            raise ValueError("NaN/Inf pixel values")
        return (np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"unsupported pixel type {a.dtype}")


# --- resize and normalise -----------------------------------------------------------------------------------


def _coeffs(in_size: int, out_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for the bilinear filter.

    Returns:
        (index [out, k] int64 clamped into range, weight [out, k] int64 fixed-point, zero past each tap span).
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    centers = (np.arange(out_size) + 0.5) * scale  # [out]
    xmin = np.maximum((centers - support + 0.5).astype(np.int64), 0)  # C truncation of positive values
    xmax = np.minimum((centers + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)  # [k]
    x = (taps[None, :] + xmin[:, None] - centers[:, None] + 0.5) * (1.0 / filterscale)  # [out, k]
    w = np.clip(1.0 - np.abs(x), 0.0, None)
    w[taps[None, :] >= xmax[:, None]] = 0.0
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=w, where=total != 0)
    fixed = np.where(w < 0, -0.5, 0.5) + w * (1 << _PRECISION_BITS)
    idx = np.minimum(xmin[:, None] + taps[None, :], in_size - 1)
    return idx, np.trunc(fixed).astype(np.int64)


def _resample_axis(a: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    idx, k = _coeffs(a.shape[axis], out_size)  # [out, K]
    shape = [1] * a.ndim
    shape[axis] = out_size
    acc = np.full(a.shape[:axis] + (out_size,) + a.shape[axis + 1 :], 1 << (_PRECISION_BITS - 1), np.int64)
    for j in range(idx.shape[1]):
        acc += np.take(a, idx[:, j], axis=axis).astype(np.int64) * k[:, j].reshape(shape)
    return np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)


def resize_bilinear(img: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """Pillow-exact ``Image.resize((W, H), BILINEAR)`` of an [h, w, C] uint8 image (aspect ratio not kept)."""
    h, w = int(hw[0]), int(hw[1])
    out = np.ascontiguousarray(img)
    dh, dw = out.shape[0] - h, out.shape[1] - w
    # Recent Pillow (13.0 checked) runs the vertical pass first when the height shrinks more than twice the
    # width; older Pillow (the official 2021 environment) always went horizontal first. The two orders differ
    # by at most 1 level.
    vertical_first = dh > 0 and dh > 2 * dw
    for axis, size in ((0, h), (1, w)) if vertical_first else ((1, w), (0, h)):
        if out.shape[axis] != size:
            out = _resample_axis(out, size, axis=axis)  # [H, W, C] after both passes
    return out


def preprocess(img: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """Official ``Resize(hw)`` + ``ToTensor`` + ``Normalize(0.5, 0.5)``.

    Args:
        img: [h, w, 3] uint8 RGB.
        hw: encoder input (H, W), ``spec.input_hw``.

    Returns:
        [3, H, W] float32 in [-1, 1].
    """
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"expected an [H, W, 3] uint8 RGB image, got {img.dtype} {list(img.shape)}")
    x = resize_bilinear(img, hw).astype(np.float32) / np.float32(255.0)  # [H, W, 3]
    x = (x - np.float32(0.5)) / np.float32(0.5)
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # [3, H, W]


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Official ``tensor2im``: [3, h, w] float in about [-1, 1] -> [h, w, 3] uint8 (clip, x255, truncate)."""
    v = (np.asarray(img, dtype=np.float32).transpose(1, 2, 0) + np.float32(1.0)) / np.float32(
        2.0
    )  # [h, w, 3]
    return (np.clip(v, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)


def resize_for_display(img: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """Bicubic resize of an [h, w, 3] uint8 image for strips (the official coupled output uses bicubic)."""
    import cv2

    if img.shape[:2] == tuple(hw):
        return img
    return cv2.resize(img, (int(hw[1]), int(hw[0])), interpolation=cv2.INTER_CUBIC)


def write_png(path: os.PathLike, img: np.ndarray) -> None:
    """Write an [h, w, 3] uint8 RGB image as PNG, creating parent directories."""
    import cv2

    p = Path(path)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[:, :, ::-1]))
    if not ok:
        raise InputError(f"{p}: PNG encoding failed for an image of shape {list(img.shape)}")
    fsio.write_bytes(p, buf)  # temporary name + rename: never a truncated PNG
