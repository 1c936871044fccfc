"""Image I/O: listing, decoding (EXIF, grayscale, RGBA, palette, 16-bit), Pillow resize (pinned), bad files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from restyle_rt.errors import InputError
from restyle_rt.runtime import io

pytestmark = pytest.mark.unit

# Pinned: the sha256 (first 16 hex digits) of resize_bilinear's output on a deterministic patterned image, taken
# from the NumPy restatement of Pillow's Resample.c this module carried before it resized with Pillow itself (bit-exact
# with Pillow 13 there). Another filter (OpenCV's INTER_LINEAR / INTER_AREA: up to 142 / 53 levels off on noise) or a
# change in Pillow's fixed-point arithmetic fails here. None of these shapes shrinks the height more than twice the
# width, where Pillow >= 13 runs the vertical pass first (older Pillow differed there by 1 level).
PINNED_RESIZE = [
    ((1024, 1024), (256, 256), "2d43fbf0904889e4"),
    ((768, 1024), (256, 256), "6a19af6855cad1fd"),
    ((512, 300), (256, 256), "7e9deb7e009ae25f"),
    ((100, 80), (256, 256), "31c8354e60915469"),
    ((1024, 1024), (192, 256), "a26af53a439db949"),
    ((257, 255), (256, 256), "174c535709661f80"),
    ((37, 613), (192, 256), "a0e8a1bc99af89dc"),
    ((3000, 4000), (256, 256), "9f7514959fd86edc"),
]


def _pattern(h, w):
    """A deterministic, noise-like [h, w, 3] uint8 image (no RNG: the pins must not move with NumPy)."""
    i, j, c = np.ogrid[:h, :w, :3]
    return (((i * 131 + j * 71 + c * 29) ^ (i * j * 7 + c)) % 256).astype(np.uint8)


def _pil_resize(a, hw):
    return np.asarray(Image.fromarray(a).resize((hw[1], hw[0]), Image.BILINEAR))


@pytest.mark.parametrize("src,dst,digest", PINNED_RESIZE)
def test_resize_matches_pinned_pillow_bilinear(src, dst, digest):
    import hashlib

    ours = io.resize_bilinear(_pattern(*src), dst)
    assert ours.shape == (*dst, 3) and ours.dtype == np.uint8
    assert hashlib.sha256(ours.tobytes()).hexdigest()[:16] == digest


def test_preprocess_file_equals_preprocess_of_read_image(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_pattern(90, 70)).save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=90)
    Image.fromarray(_pattern(40, 64)[:, :, 0]).save(tmp_path / "g.png")
    Image.fromarray(_pattern(30, 20)[:, :, 0].astype(np.uint16) * 257).save(tmp_path / "g16.png")
    for name in ("o.jpg", "g.png", "g16.png"):
        p = tmp_path / name
        np.testing.assert_array_equal(io.preprocess_file(p, (24, 16)), io.preprocess(io.read_image(p), (24, 16)))
    with pytest.raises(InputError, match=r"nope\.png: not a regular file"):
        io.preprocess_file(tmp_path / "nope.png", (24, 16))


def test_preprocess_is_official_normalisation():
    a = np.random.default_rng(1).integers(0, 256, (60, 50, 3), dtype=np.uint8)
    x = io.preprocess(a, (16, 24))
    expect = (_pil_resize(a, (16, 24)).astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
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


def _png48(path, rgb):
    """Write [h, w, 3] uint16 as a 48-bit RGB PNG (Pillow cannot write one)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w = rgb.shape[:2]
    rows = b"".join(b"\x00" + r.astype(">u2").tobytes() for r in rgb)  # filter 0 per row, big-endian samples
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


def test_16bit_png_keeps_high_byte(tmp_path):
    rng = np.random.default_rng(4)
    gray = rng.integers(0, 65536, (8, 9), dtype=np.uint16)
    rgb = rng.integers(0, 65536, (8, 9, 3), dtype=np.uint16)
    Image.fromarray(gray).save(tmp_path / "g.png")
    _png48(tmp_path / "c.png", rgb)
    assert Image.open(tmp_path / "g.png").mode.startswith("I")
    np.testing.assert_array_equal(io.read_image(tmp_path / "g.png"), np.repeat((gray >> 8)[:, :, None], 3, 2))
    np.testing.assert_array_equal(io.read_image(tmp_path / "c.png"), (rgb >> 8).astype(np.uint8))
    # Pillow reads 48-bit RGB the same way (its 8-bit RGB mode takes the high byte)
    np.testing.assert_array_equal(io.read_image(tmp_path / "c.png"), np.asarray(Image.open(tmp_path / "c.png")))


def test_float_tiff_reads_0_1_and_refuses_nan(tmp_path):
    a = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
    Image.fromarray(a, "F").save(tmp_path / "f.tiff")
    np.testing.assert_array_equal(
        io.read_image(tmp_path / "f.tiff"), np.repeat((a * 255).astype(np.uint8)[:, :, None], 3, 2)
    )
    a[2, 3] = np.nan
    Image.fromarray(a, "F").save(tmp_path / "nan.tiff")
    with pytest.raises(InputError, match=r"nan\.tiff: NaN/Inf pixel values"):
        io.read_image(tmp_path / "nan.tiff")


def test_cmyk_jpeg_decodes_like_pil_convert_rgb(tmp_path):
    Image.fromarray(_pattern(16, 12)).convert("CMYK").save(tmp_path / "k.jpg", quality=95)
    assert Image.open(tmp_path / "k.jpg").mode == "CMYK"
    np.testing.assert_array_equal(
        io.read_image(tmp_path / "k.jpg"), np.asarray(Image.open(tmp_path / "k.jpg").convert("RGB"))
    )


def test_exif_ccw_orientation_and_bytes_decode_the_same(tmp_path):
    a = np.random.default_rng(5).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 CCW
    Image.fromarray(a).save(tmp_path / "x.jpg", exif=exif.tobytes(), quality=95)
    got = io.read_image(tmp_path / "x.jpg")
    ref = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "x.jpg")).convert("RGB"))
    assert got.shape == (5, 6, 3) and got.flags.writeable
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(io.decode_image((tmp_path / "x.jpg").read_bytes()), ref)


def test_our_pixel_limit_replaces_pillows(tmp_path, monkeypatch):
    Image.fromarray(_pattern(40, 50)).save(tmp_path / "x.png")  # 2000 px
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would refuse it (> 2 x 100)
    monkeypatch.setattr(io, "MAX_PIXELS", 10_000)  # RESTYLE_RT_MAX_PIXELS raised: ours allows it
    np.testing.assert_array_equal(io.read_image(tmp_path / "x.png"), _pattern(40, 50))
    assert Image.MAX_IMAGE_PIXELS == 100  # Pillow's limit put back
    monkeypatch.setattr(io, "MAX_PIXELS", 1_000)
    with pytest.raises(InputError, match=r"x\.png: declares 0 Mpx, above the 0 Mpx limit"):
        io.read_image(tmp_path / "x.png")


def test_strip_resize_is_pillow_bicubic():
    a = _pattern(37, 53)
    for hw in ((24, 24), (64, 96), (37, 53)):
        ref = np.asarray(Image.fromarray(a).resize((hw[1], hw[0]), Image.BICUBIC))
        np.testing.assert_array_equal(io.resize_for_display(a, hw), ref)


def test_io_works_without_opencv(tmp_path):
    """Decode, resize, strips and PNG writing need Pillow only (OpenCV is no runtime dependency)."""
    import subprocess
    import sys
    import textwrap

    Image.fromarray(_pattern(30, 20)).save(tmp_path / "x.jpg")
    code = textwrap.dedent(f"""
        import sys
        sys.modules["cv2"] = None
        from restyle_rt.runtime import io
        img = io.read_image({str(tmp_path / "x.jpg")!r})
        x = io.preprocess_file({str(tmp_path / "x.jpg")!r}, (8, 8))
        io.write_png({str(tmp_path / "y.png")!r}, io.resize_for_display(img, (16, 16)))
        print(x.shape, img.shape)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["(3,", "8,", "8)", "(30,", "20,", "3)"]
    assert np.asarray(Image.open(tmp_path / "y.png")).shape == (16, 16, 3)


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
