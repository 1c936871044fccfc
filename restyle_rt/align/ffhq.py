"""FFHQ face alignment (the official ``scripts/align_faces_parallel.py`` recipe, itself the FFHQ dataset's).

From 68 landmarks (dlib / iBUG order): eye centres (mean of points 36-41 and 42-47) and mouth corners (48, 54)
give an oriented square ``quad`` (side ``qsize``) around ``c = eye_avg + 0.1 * eye_to_mouth``. The image is then
shrunk (integer factor, Lanczos) when the face is much larger than the output, cropped to the quad plus a border,
reflect-padded with a blurred, median-faded border when the quad leaves the image, and resampled from the quad
to ``transform_size`` (bilinear); a final Lanczos resize gives ``output_size`` when smaller.

Needs Pillow and SciPy (the ``[align]`` extra); no torch.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def quad_from_landmarks(lm: np.ndarray) -> tuple[np.ndarray, float]:
    """The oriented crop square of the FFHQ recipe: (quad [4, 2] corners, qsize its side length)."""
    lm = np.asarray(lm, np.float64)
    if lm.shape != (68, 2):
        raise InputError(f"expected 68 (x, y) landmarks, got {list(lm.shape)}")
    eye_left, eye_right = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]  # the face's horizontal axis, tilted by the mouth
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])  # [4, 2]
    return quad, float(np.hypot(*x) * 2)


def align(image: np.ndarray, landmarks: np.ndarray, output_size: int = 256, transform_size: int = 256) -> np.ndarray:
    """Align one face: [h, w, 3] uint8 RGB + its 68 landmarks -> [output_size, output_size, 3] uint8.

    Raises:
        InputError: wrong image or landmark shapes, or sizes < 1.
    """
    from PIL import Image

    if output_size < 1 or transform_size < 1:
        raise InputError(f"alignment sizes must be >= 1, got {output_size}, {transform_size}")
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise InputError(f"expected an [h, w, 3] uint8 RGB image, got {a.dtype} {list(a.shape)}")
    quad, qsize = quad_from_landmarks(landmarks)
    img = Image.fromarray(a, "RGB")
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        size = (int(np.rint(float(img.size[0]) / shrink)), int(np.rint(float(img.size[1]) / shrink)))
        img = img.resize(size, Image.LANCZOS)
        quad, qsize = quad / shrink, qsize / shrink
    border = max(int(np.rint(qsize * 0.1)), 3)
    img, quad = _crop(img, quad, border)
    img, quad = _pad(img, quad, qsize, border)
    img = img.transform((transform_size, transform_size), Image.QUAD, tuple((quad + 0.5).flatten()), Image.BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), Image.LANCZOS)
    return np.asarray(img)


def _bounds(quad: np.ndarray) -> tuple[int, int, int, int]:
    return (
        int(np.floor(min(quad[:, 0]))),
        int(np.floor(min(quad[:, 1]))),
        int(np.ceil(max(quad[:, 0]))),
        int(np.ceil(max(quad[:, 1]))),
    )


def _crop(img, quad: np.ndarray, border: int):
    """Crop to the quad's bounding box plus ``border`` (when that is smaller than the image)."""
    x0, y0, x1, y1 = _bounds(quad)
    crop = (max(x0 - border, 0), max(y0 - border, 0), min(x1 + border, img.size[0]), min(y1 + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad = quad - crop[0:2]
    return img, quad


def _pad(img, quad: np.ndarray, qsize: float, border: int):
    """Reflect-pad where the quad leaves the image; blur and fade the padding toward the median colour."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    x0, y0, x1, y1 = _bounds(quad)
    pad = (
        max(-x0 + border, 0),
        max(-y0 + border, 0),
        max(x1 - img.size[0] + border, 0),
        max(y1 - img.size[1] + border, 0),
    )
    if max(pad) <= border - 4:
        return img, quad
    pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
    a = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")  # [H, W, 3]
    h, w, _ = a.shape
    yy, xx, _ = np.ogrid[:h, :w, :1]
    mask = np.maximum(
        1.0 - np.minimum(np.float32(xx) / pad[0], np.float32(w - 1 - xx) / pad[2]),
        1.0 - np.minimum(np.float32(yy) / pad[1], np.float32(h - 1 - yy) / pad[3]),
    )
    blur = qsize * 0.02
    a += (gaussian_filter(a, [blur, blur, 0]) - a) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    a += (np.median(a, axis=(0, 1)) - a) * np.clip(mask, 0.0, 1.0)
    return Image.fromarray(np.uint8(np.clip(np.rint(a), 0, 255)), "RGB"), quad + pad[:2]
