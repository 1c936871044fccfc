"""FFHQ alignment: the recipe's geometry on images with known landmarks, invariances, dlib path, CLI.

The recipe itself was compared with the official ``align_face`` (fetched, run locally with a stub predictor that
returns the same synthetic landmarks; not committed): identical output, max abs diff 0, at 256 and 1024 px over the
shrink, crop and pad branches.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scipy", reason="alignment needs the [align] extra (scipy)")
pytest.importorskip("PIL", reason="alignment needs the [align] extra (pillow)")

from restyle_rt.align.ffhq import align, quad_from_landmarks  # noqa: E402
from restyle_rt.errors import InputError  # noqa: E402

pytestmark = pytest.mark.unit


def _face_landmarks(eye_l, eye_r, mouth_l, mouth_r):
    lm = np.zeros((68, 2))
    lm[:] = (np.asarray(eye_l) + np.asarray(mouth_r)) / 2  # points the recipe does not read
    lm[36:42], lm[42:48], lm[48], lm[54] = eye_l, eye_r, mouth_l, mouth_r
    return lm


def _dot_image(h, w, points, rng, radius=3):
    """Smooth random texture with bright dots at ``points`` (to find them again after alignment)."""
    import cv2

    img = cv2.resize((rng.random((h // 16, w // 16, 3)) * 120).astype(np.uint8), (w, h))
    for x, y in points:
        cv2.circle(img, (int(round(x)), int(round(y))), radius, (255, 255, 255), -1)
    return img


def _centroid(img, near, r=12):
    x0, y0 = int(near[0]) - r, int(near[1]) - r
    patch = img[max(y0, 0) : y0 + 2 * r, max(x0, 0) : x0 + 2 * r].astype(float).mean(axis=2)
    m = np.clip(patch - 180, 0, None)
    ys, xs = np.mgrid[: patch.shape[0], : patch.shape[1]]
    return np.array([(xs * m).sum() / m.sum() + max(x0, 0), (ys * m).sum() / m.sum() + max(y0, 0)])


def test_eyes_land_where_the_recipe_puts_them():
    """Upright face: the quad is axis-aligned, so the eyes' output position follows from the recipe by hand."""
    rng = np.random.default_rng(0)
    eye_l, eye_r, m_l, m_r = (200, 220), (280, 220), (210, 300), (270, 300)
    img = _dot_image(480, 520, [eye_l, eye_r], rng)
    out = align(img, _face_landmarks(eye_l, eye_r, m_l, m_r), 256, 256)
    # eye_to_eye = 80, eye_to_mouth = 80 (down): half-side = max(2 * 80, 1.8 * 80) = 160, centre 8 px below eyes
    scale = 256 / 320
    for eye, dx in ((eye_l, -40), (eye_r, 40)):
        want = np.array([128 + dx * scale, 128 - 8 * scale])
        got = _centroid(out, want)
        assert np.abs(got - want).max() < 0.75, (eye, got, want)


@pytest.mark.parametrize("theta,scale", [(0.35, 1.0), (-0.5, 2.7), (0.1, 0.55)])
def test_alignment_undoes_rotation_and_scale(theta, scale):
    """Rotating/scaling the photo (and its landmarks) must not change the aligned face."""
    import cv2

    rng = np.random.default_rng(1)
    base_pts = [(200, 220), (280, 220), (210, 300), (270, 300)]
    canvas = _dot_image(520, 520, base_pts[:2], rng)
    ref = align(canvas, _face_landmarks(*base_pts), 256, 256)
    m = cv2.getRotationMatrix2D((260, 260), np.degrees(theta), scale)
    m[:, 2] += (300 * scale - 260, 300 * scale - 260)  # keep the face inside a larger canvas
    size = int(600 * max(scale, 1))
    moved = cv2.warpAffine(canvas, m, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    pts = [tuple(m[:, :2] @ p + m[:, 2]) for p in map(np.asarray, base_pts)]
    out = align(moved, _face_landmarks(*pts), 256, 256)
    c = slice(48, 208)  # the face region (the borders differ: padding and resampling)
    err = np.abs(out[c, c].astype(float) - ref[c, c].astype(float)).mean()
    assert err < 1.5, err  # mean uint8 levels; measured 0.22-0.36 (the photo is resampled twice)
    for eye in ((96, 121.6), (160, 121.6)):
        assert np.abs(_centroid(out, eye) - _centroid(ref, eye)).max() < 1.0


def test_quad_and_bad_input():
    quad, qsize = quad_from_landmarks(_face_landmarks((0, 0), (10, 0), (0, 10), (10, 10)))
    assert quad.shape == (4, 2) and qsize == pytest.approx(40.0)  # 2 * max(2 * 10, 1.8 * 10)
    with pytest.raises(InputError, match="68"):
        quad_from_landmarks(np.zeros((5, 2)))
    with pytest.raises(InputError, match="uint8"):
        align(np.zeros((8, 8, 3), np.float32), _face_landmarks((0, 0), (1, 0), (0, 1), (1, 1)))


def test_dlib_no_face_is_skipped_by_the_cli(tmp_path, rgb_images):
    pytest.importorskip("dlib", reason="dlib (the [align] extra) not installed")
    from restyle_rt.align.landmarks import default_predictor_path
    from restyle_rt.cli import main

    assert default_predictor_path().stat().st_size > 1_000_000  # the packaged 68-point model
    paths = rgb_images(2, size=(120, 140))  # noise: no face
    out = tmp_path / "aligned"
    assert main(["align", *map(str, paths), "--out", str(out)]) == 1
    assert not list(out.glob("*.png")) if out.exists() else True


def test_aligner_with_given_landmarks_and_no_face():
    from restyle_rt.align.landmarks import Aligner

    rng = np.random.default_rng(2)
    img = _dot_image(300, 300, [], rng)
    lm = _face_landmarks((120, 130), (180, 130), (125, 190), (175, 190))
    out = Aligner(64, landmarks=lambda a: lm)(img)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    with pytest.raises(InputError, match="x.png: no face found"):
        Aligner(64, landmarks=lambda a: None)(img, "x.png")
