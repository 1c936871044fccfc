"""Image I/O: listing, decoding (EXIF, grayscale, RGBA, palette, 16-bit), Pillow-exact resize, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from restyle_rt.errors import InputError
from restyle_rt.runtime import io

pytestmark = pytest.mark.unit

# Measured: resize_bilinear reproduces Pillow 13's Image.resize(BILINEAR) bit-exactly (max |diff| 0 over 200
# random shapes, up and down, both pass orders). cv2.INTER_AREA differs by up to 53 levels on noise (3 on
# smooth images) and INTER_LINEAR by up to 142, which is why it is reimplemented. The bound allows for older
# Pillow pass ordering.
MAX_RESIZE_DIFF = 1


def _pil_resize(a, hw):
    return np.asarray(Image.fromarray(a).resize((hw[1], hw[0]), Image.BILINEAR))


@pytest.mark.parametrize(
    "src,dst",
    [
        ((1024, 1024), (256, 256)),
        ((768, 1024), (256, 256)),
        ((512, 300), (256, 256)),
        ((100, 80), (256, 256)),
        ((1024, 1024), (192, 256)),
        ((257, 255), (256, 256)),
        ((37, 613), (192, 256)),
        ((256, 256), (256, 256)),
    ],
)
def test_resize_matches_pillow_bilinear(src, dst):
    a = np.random.default_rng(sum(src)).integers(0, 256, (*src, 3), dtype=np.uint8)
    ours, ref = io.resize_bilinear(a, dst), _pil_resize(a, dst)
    assert ours.shape == (*dst, 3) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - ref).max() <= MAX_RESIZE_DIFF


def test_preprocess_is_official_normalisation():
    a = np.random.default_rng(1).integers(0, 256, (60, 50, 3), dtype=np.uint8)
    x = io.preprocess(a, (16, 24))
    expect = (_pil_resize(a, (16, 24)).astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(
        0.5
    )
    assert x.shape == (3, 16, 24) and x.dtype == np.float32
    np.testing.assert_array_equal(x, expect.transpose(2, 0, 1))


def test_to_uint8_clips_and_truncates():
    v = np.array([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0], np.float32)
    img = np.broadcast_to(v, (3, 1, 6))
    out = io.to_uint8(img)
    expect = (np.clip((v + 1) / 2, 0, 1) * 255).astype(np.uint8)  # truncation, e.g. 0.0 -> 127 not 128
    assert out.shape == (1, 6, 3)
    np.testing.assert_array_equal(out[0, :, 0], expect)
    assert out[0, 2, 0] == 127


def test_png_roundtrip(tmp_path):
    a = np.random.default_rng(2).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    io.write_png(tmp_path / "sub" / "x.png", a)
    np.testing.assert_array_equal(io.read_image(tmp_path / "sub" / "x.png"), a)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "sub" / "x.png").convert("RGB")), a)


def test_exif_orientation_applied(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :10] = (255, 0, 0)  # red band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    Image.fromarray(a).save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=100)
    got = io.read_image(tmp_path / "o.jpg")
    ref = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.jpg")).convert("RGB"))
    assert got.shape == (40, 20, 3) == ref.shape
    assert np.abs(got.astype(int) - ref).max() <= 2  # same JPEG, different IDCT implementations
    assert got[:10, :, 0].mean() > 200 and got[-10:, :, 0].mean() < 50  # red band now on top


@pytest.mark.filterwarnings("ignore:Palette images with Transparency")
@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA"])
def test_modes_decode_like_pil_convert_rgb(tmp_path, mode):
    rgba = np.random.default_rng(3).integers(0, 256, (12, 10, 4), dtype=np.uint8)
    im = Image.fromarray(rgba, "RGBA").convert(mode)
    im.save(tmp_path / "m.png")
    got = io.read_image(tmp_path / "m.png")
    ref = np.asarray(Image.open(tmp_path / "m.png").convert("RGB"))  # official loader: alpha dropped
    assert got.dtype == np.uint8 and got.shape == (12, 10, 3)
    np.testing.assert_array_equal(got, ref)


def test_16bit_png_keeps_high_byte(tmp_path):
    import cv2

    rng = np.random.default_rng(4)
    gray = rng.integers(0, 65536, (8, 9), dtype=np.uint16)
    rgb = rng.integers(0, 65536, (8, 9, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    cv2.imwrite(str(tmp_path / "c.png"), rgb[:, :, ::-1])  # cv2 writes BGR
    np.testing.assert_array_equal(io.read_image(tmp_path / "g.png"), np.repeat((gray >> 8)[:, :, None], 3, 2))
    np.testing.assert_array_equal(io.read_image(tmp_path / "c.png"), (rgb >> 8).astype(np.uint8))
    # Pillow reads 48-bit RGB the same way (its 8-bit RGB mode takes the high byte)
    np.testing.assert_array_equal(
        io.read_image(tmp_path / "c.png"), np.asarray(Image.open(tmp_path / "c.png"))
    )


def test_pillow_fallback_for_what_opencv_cannot_read(tmp_path, monkeypatch):
    a = np.random.default_rng(5).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 CCW: the fallback must honour EXIF too
    Image.fromarray(a).save(tmp_path / "x.jpg", exif=exif.tobytes(), quality=95)
    monkeypatch.setattr(io, "_decode_cv2", lambda data: None)  # as if this OpenCV build lacked the codec
    got = io.read_image(tmp_path / "x.jpg")
    ref = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "x.jpg")).convert("RGB"))
    assert got.shape == (5, 6, 3)
    np.testing.assert_array_equal(got, ref)


def _truncated(tmp_path, ext):
    a = np.random.default_rng(6).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / f"full{ext}")
    data = (tmp_path / f"full{ext}").read_bytes()
    p = tmp_path / f"bad{ext}"
    p.write_bytes(data[: len(data) // 2])
    return p


@pytest.mark.parametrize(
    "case,pattern",
    [
        ("truncated_jpg", r"bad\.jpg: not a readable image"),
        ("truncated_png", r"bad\.png: not a readable image"),
        ("zero_bytes", r"empty\.png: empty file \(0 bytes\)"),
        ("text_as_png", r"notes\.png: not a readable image"),
        ("directory", r"adir\.png: not a regular file"),
        ("missing", r"nope\.png: not a regular file"),
    ],
)
def test_bad_files_raise_input_error_naming_the_file(tmp_path, case, pattern):
    if case == "truncated_jpg":
        p = _truncated(tmp_path, ".jpg")
    elif case == "truncated_png":
        p = _truncated(tmp_path, ".png")
    elif case == "zero_bytes":
        p = tmp_path / "empty.png"
        p.write_bytes(b"")
    elif case == "text_as_png":
        p = tmp_path / "notes.png"
        p.write_text("this is not an image\n")
    elif case == "directory":
        p = tmp_path / "adir.png"
        p.mkdir()
    else:
        p = tmp_path / "nope.png"
    with pytest.raises(InputError, match=pattern):
        io.read_image(p)


def test_list_images_recursive_sorted_filtered(tmp_path):
    for rel in ["b/2.PNG", "b/1.jpg", "a/z.webp", "a/deep/x.tif", "a/readme.txt", "c.bmp"]:
        (tmp_path / "in" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / rel).write_bytes(b"x")
    got = io.list_images([tmp_path / "in"])
    rel = [p.relative_to(tmp_path / "in").as_posix() for p in got]
    assert rel == ["a/deep/x.tif", "a/z.webp", "b/1.jpg", "b/2.PNG", "c.bmp"]
    # an explicit file is kept whatever its extension; duplicates removed
    extra = tmp_path / "in" / "a" / "readme.txt"
    assert io.list_images([extra, extra, tmp_path / "in" / "c.bmp"]) == [extra, tmp_path / "in" / "c.bmp"]
    assert io.output_names(got, [tmp_path / "in"]) == ["a/deep/x", "a/z", "b/1", "b/2", "c"]


def test_list_images_errors(tmp_path):
    with pytest.raises(InputError, match=r"missing_dir: no such file or directory"):
        io.list_images([tmp_path / "missing_dir"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no images found in .*empty"):
        io.list_images([tmp_path / "empty"])


def test_output_names_are_unique(tmp_path):
    paths = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.jpg", tmp_path / "x.png"]
    assert io.output_names(paths, []) == ["x", "x_1", "x_2"]
