"""``restyle-rt invert`` end to end on toy artifacts: outputs, latents index, strips, bad files, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from restyle_rt.cli import main
from restyle_rt.runtime import io

pytestmark = pytest.mark.unit


def test_invert_writes_everything(toy, rgb_images, tmp_path, capfd):
    d, ref = toy
    paths = rgb_images(3)
    out = tmp_path / "out"
    rc = main(
        [
            "invert",
            str(d),
            *map(str, paths),
            "--out",
            str(out),
            "--iters",
            "3",
            "--batch",
            "2",
            "--save-steps",
            "--save-latents",
            "--strip",
            "--backend",
            "ort",
        ]
    )
    assert rc == 0
    err = capfd.readouterr().err
    assert "inverted 3 image(s) (0 skipped)" in err and "images/s" in err
    names = [p.stem for p in paths]
    x = np.stack([io.preprocess(io.read_image(p), (16, 16)) for p in paths])  # [3, 3, 16, 16]
    lats, imgs = ref.loop(x, 3)
    for i, n in enumerate(names):
        final = np.asarray(Image.open(out / f"{n}.png"))
        assert final.shape == (24, 24, 3)
        # the written PNG is tensor2im of the last step (+-1 level: float32 ORT vs float64 restatement)
        assert np.abs(final.astype(int) - io.to_uint8(imgs[-1][i])).max() <= 1
        for t in (1, 2, 3):
            assert (out / "steps" / str(t) / f"{n}.png").is_file()
        strip = np.asarray(Image.open(out / "strips" / f"{n}.png"))
        assert strip.shape == (24, 24 * 4, 3)
        np.testing.assert_array_equal(strip[:, 48:72], np.asarray(Image.open(out / "steps" / "3" / f"{n}.png")))
    lat = np.load(out / "latents.npy")
    index = json.loads((out / "latents.json").read_text())
    assert lat.dtype == np.float32 and lat.shape == (3, 3, 4, 512)
    assert index["inputs"] == names and index["steps_used"] == [3, 3, 3]
    for t in range(3):
        np.testing.assert_allclose(lat[:, t], lats[t], atol=1e-5, rtol=0)


def test_directory_with_one_corrupt_file(toy, rgb_images, tmp_path, capfd):
    paths = rgb_images(30, folder="many", size=(20, 18))
    bad = paths[0].parent / "sub" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(paths[1].read_bytes()[:60])  # truncated PNG
    out = tmp_path / "out"
    rc = main(["invert", str(toy[0]), str(paths[0].parent), "--out", str(out), "--iters", "2"])
    err = capfd.readouterr().err
    assert rc == 1
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and not ln.startswith("invert:")]
    assert sum("broken.png" in ln for ln in lines) == 1
    assert [ln for ln in lines if "broken.png" in ln][0].startswith("skipped: ")
    assert len(lines) == 2 and lines[1].startswith("inverted 30 image(s) (1 skipped)"), lines  # no decoder chatter
    written = sorted(p.name for p in out.rglob("*.png"))
    assert written == sorted(p.stem + ".png" for p in paths)


def test_early_exit_flag(toy, rgb_images, tmp_path):
    paths = rgb_images(4)
    out = tmp_path / "out"
    assert (
        main(
            [
                "invert",
                str(toy[0]),
                *map(str, paths),
                "--out",
                str(out),
                "--iters",
                "6",
                "--early-exit",
                "1e9",
                "--save-latents",
            ]
        )
        == 0
    )
    index = json.loads((out / "latents.json").read_text())
    assert index["steps_used"] == [1, 1, 1, 1]  # every update is below a huge threshold: one step each
    lat = np.load(out / "latents.npy")
    np.testing.assert_array_equal(lat[:, 5], lat[:, 0])  # frozen after step 1


@pytest.mark.parametrize(
    "argv,pattern",
    [
        (["--iters", "0"], "--iters must be >= 1, got 0"),
        (["--backend", "nope"], "unknown backend 'nope'"),
        (["--batch", "0"], "--batch must be >= 1, got 0"),
    ],
)
def test_errors_are_one_line(toy, rgb_images, tmp_path, capfd, argv, pattern):
    p = rgb_images(1)[0]
    rc = main(["invert", str(toy[0]), str(p), "--out", str(tmp_path / "o"), *argv])
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("restyle-rt invert: error: ") and pattern in err[-1]


def test_missing_artifacts_and_inputs(tmp_path, rgb_images, capfd, toy):
    p = rgb_images(1)[0]
    assert main(["invert", str(tmp_path / "none"), str(p), "--out", str(tmp_path / "o")]) == 2
    assert "artifacts directory" in capfd.readouterr().err
    assert main(["invert", str(toy[0]), str(tmp_path / "ghost.png"), "--out", str(tmp_path / "o")]) == 2
    assert "ghost.png: no such file or directory" in capfd.readouterr().err
