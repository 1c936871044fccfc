"""``invert`` never overwrites its inputs, says when it replaces outputs, resumes, locks ``--out``, skips
non-finite results, bounds decoded sizes; the Python API refuses bad values with clear errors."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import zlib

import numpy as np
import onnx
import pytest

from restyle_rt.cli import main
from restyle_rt.errors import EXIT_OS, EXIT_SKIPPED, ClosedError, InputError
from restyle_rt.runtime import io
from restyle_rt.runtime.api import Inverter

pytestmark = pytest.mark.unit


def _snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("save_steps", [False, True])
def test_out_equal_to_the_input_directory_is_refused(toy, rgb_images, capfd, save_steps):
    paths = rgb_images(2, folder="same")
    steps_input = paths[0].parent / "steps" / "1" / "img000.png"  # what --save-steps would overwrite
    steps_input.parent.mkdir(parents=True)
    steps_input.write_bytes(paths[1].read_bytes())
    before = _snapshot(paths[0].parent)
    argv = ["invert", str(toy[0]), str(paths[0].parent), "--out", str(paths[0].parent)]
    rc = main(argv + (["--save-steps"] if save_steps else []))
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == EXIT_OS and "is the input directory" in err[-1]
    assert _snapshot(paths[0].parent) == before


def test_planned_output_that_is_an_input_file_is_refused(toy, rgb_images, capfd):
    paths = rgb_images(1, folder="a")  # a/img000.png
    step = paths[0].parent / "steps" / "1" / "img000_1.png"
    step.parent.mkdir(parents=True)
    step.write_bytes(paths[0].read_bytes())
    other = paths[0].parent / "x" / "img000.png"
    other.parent.mkdir()
    other.write_bytes(paths[0].read_bytes())
    before = _snapshot(paths[0].parent)
    # explicit files, --out their folder: a/img000.png would be overwritten by the output "img000"
    rc = main(["invert", str(toy[0]), str(paths[0]), str(other), "--out", str(paths[0].parent), "--save-steps"])
    assert rc == EXIT_OS and "would overwrite the input" in capfd.readouterr().err
    assert _snapshot(paths[0].parent) == before


def test_empty_out_is_refused(toy, rgb_images, capfd):
    rc = main(["invert", str(toy[0]), str(rgb_images(1)[0]), "--out", ""])
    assert rc == EXIT_OS and "--out is empty" in capfd.readouterr().err


def test_rerun_into_out_inside_the_inputs_does_not_invert_its_outputs(toy, rgb_images, capfd):
    paths = rgb_images(3, folder="photos")
    out = paths[0].parent / "inverted"
    for _ in range(2):
        assert main(["invert", str(toy[0]), str(paths[0].parent), "--out", str(out), "--iters", "1"]) == 0
        assert "inverted 3 image(s)" in capfd.readouterr().err
    assert sorted(p.name for p in out.glob("*.png")) == [p.name for p in paths]
    assert not (out / "inverted").exists()


def test_replacing_outputs_is_said_and_resume_skips_complete_images(toy, rgb_images, capfd, caplog, tmp_path):
    paths = rgb_images(3)
    out = tmp_path / "out"
    base = [
        "invert",
        str(toy[0]),
        *map(str, paths),
        "--out",
        str(out),
        "--iters",
        "2",
        "--save-latents",
        "--save-steps",
    ]
    assert main(base) == 0
    lat_full = np.load(out / "latents.npy")
    capfd.readouterr()
    with caplog.at_level(logging.WARNING, logger="restyle_rt"):
        assert main(base) == 0
    assert "replacing 12 existing output file(s)" in caplog.text  # 3 x (final + 2 steps + latents)
    (out / "steps" / "2" / "img001.png").unlink()  # img001 incomplete
    capfd.readouterr()
    assert main(base + ["--resume"]) == 0
    assert "inverted 1 image(s) (0 skipped, 2 already complete)" in capfd.readouterr().err
    np.testing.assert_array_equal(np.load(out / "latents.npy"), lat_full)
    assert json.loads((out / "latents.json").read_text())["inputs"] == [p.stem for p in paths]


def test_resume_with_other_settings_is_refused(toy, rgb_images, capfd, tmp_path):
    p = rgb_images(1)[0]
    out = tmp_path / "out"
    assert main(["invert", str(toy[0]), str(p), "--out", str(out), "--iters", "2"]) == 0
    assert main(["invert", str(toy[0]), str(p), "--out", str(out), "--iters", "3", "--resume"]) == 2
    assert "other settings (iters 2 then, 3 now)" in capfd.readouterr().err


def test_a_second_process_on_the_same_out_is_refused(toy, rgb_images, capfd, tmp_path):
    out = tmp_path / "out"
    (out / ".restyle-rt").mkdir(parents=True)
    with open(out / ".restyle-rt" / "lock", "w") as f:  # another run holds the lock
        f.write("4242")
        f.flush()
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        rc = main(["invert", str(toy[0]), str(rgb_images(1)[0]), "--out", str(out)])
    assert rc == EXIT_OS and "being written by another restyle-rt invert (pid 4242)" in capfd.readouterr().err
    assert not list(out.glob("*.png"))


def test_non_finite_outputs_are_skipped_not_written(make_toy, rgb_images, capfd, tmp_path):
    import toy_artifacts

    d, _ = make_toy("nanweights")
    w = toy_artifacts.ToyWeights(toy_artifacts.TOY_SPEC)
    w.M[0, :] = np.nan  # a corrupt graph weight (no hash recorded in the toy manifest)
    onnx.save(toy_artifacts.encoder_graph(w), str(d / "encoder.onnx"))
    rc = main(["invert", str(d), *map(str, rgb_images(2)), "--out", str(tmp_path / "o"), "--save-latents"])
    err = capfd.readouterr().err
    assert rc == EXIT_SKIPPED and err.count("the inversion is not finite") == 2
    assert not list((tmp_path / "o").glob("*.png")) and not (tmp_path / "o" / "latents.npy").exists()


def test_nan_float_tiff_is_reported_per_image(toy, rgb_images, capfd, tmp_path):
    from PIL import Image

    good = rgb_images(1)[0]
    bad = tmp_path / "imgs" / "nan.tiff"
    bad.parent.mkdir(parents=True, exist_ok=True)
    a = np.full((8, 8), 0.5, np.float32)  # a float TIFF (Pillow mode F: one channel)
    a[2, 3] = np.nan
    Image.fromarray(a, "F").save(bad)
    rc = main(["invert", str(toy[0]), str(good), str(bad), "--out", str(tmp_path / "o")])
    err = capfd.readouterr().err
    assert rc == EXIT_SKIPPED and "nan.tiff: NaN/Inf pixel values" in err
    assert [p.name for p in (tmp_path / "o").glob("*.png")] == ["img000.png"]


def _png_header_only(path, w, h):
    """A PNG whose IHDR declares w x h but holds no pixel data (a decompression bomb's header)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_huge_declared_size_is_refused_from_the_header(tmp_path):
    pytest.importorskip("PIL")
    p = tmp_path / "bomb.png"
    _png_header_only(p, 60000, 60000)
    with pytest.raises(InputError, match=r"declares 3600 Mpx, above the 89 Mpx limit"):
        io.read_image(p)
    _png_header_only(p, 12000, 10000)  # below Pillow's own bomb check (2x 89 Mpx), above ours
    with pytest.raises(InputError, match=r"declares 120 Mpx, above the 89 Mpx limit"):
        io.read_image(p)


def test_batch_above_profile_max_is_capped(make_toy, rgb_images, caplog, tmp_path):
    d, _ = make_toy("small", profile=(1, 1, 2))
    with caplog.at_level(logging.WARNING, logger="restyle_rt"):
        assert main(["invert", str(d), *map(str, rgb_images(3)), "--out", str(tmp_path / "o"), "--batch", "64"]) == 0
    assert "--batch 64 is above the artifacts' batch profile max 2; using 2" in caplog.text


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_bad_early_exit_is_refused_at_parse_time(toy, capfd, tmp_path, value):
    with pytest.raises(SystemExit) as e:
        main(["invert", str(toy[0]), "x.png", "--out", str(tmp_path / "o"), "--early-exit", value])
    assert e.value.code == 2 and "--early-exit" in capfd.readouterr().err


@pytest.mark.parametrize("command", ["invert", "edit", "animate", "serve"])
def test_backend_help_lists_only_registered_backends(capsys, command):
    from restyle_rt.runtime.backends import names

    with pytest.raises(SystemExit):
        main([command, "--help"])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "--backend" in ln and "|" in ln)
    listed = [n.strip() for n in line.split("NAME", 1)[1].split(":")[-1].split("(default")[0].split("|")]
    assert listed == list(names()) and "torch" not in listed


def test_exit_codes_are_documented(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for code in ("0", "1", "2", "3", "130"):
        assert f"\n  {code} " in out


# --- the Python API ---------------------------------------------------------------------------------------


def test_inverter_after_close_raises_a_clear_error(toy, rgb_images):
    inv = Inverter.load(toy[0], backend="ort")
    inv.close()
    inv.close()  # idempotent
    with pytest.raises(ClosedError, match="closed"):
        inv.invert(rgb_images(1))


def test_api_refuses_bytes_paths_and_string_thresholds(toy, rgb_images):
    with Inverter.load(toy[0], backend="ort") as inv:
        with pytest.raises(InputError, match="bytes are not a path"):
            inv.invert([bytes(rgb_images(1)[0])])
        with pytest.raises(InputError, match="early_exit must be None or a finite threshold >= 0, got str '0.1'"):
            inv.invert(rgb_images(1), early_exit="0.1")
        with pytest.raises(InputError, match="n_iters must be a positive integer, got '5'"):
            inv.invert(rgb_images(1), n_iters="5")
    from restyle_rt.errors import ArtifactError

    with pytest.raises(ArtifactError, match="is bytes"):
        Inverter.load(bytes(toy[0]), backend="ort")


def test_api_reports_non_finite_and_0_255_inputs_per_image(toy):
    x = np.zeros((3, 3, 16, 16), np.float32)
    x[1, 0, 0, 0] = np.nan
    with Inverter.load(toy[0], backend="ort") as inv:
        with pytest.raises(InputError, match=r"preprocessed images \[1\] contain NaN or Inf"):
            inv.invert(x)
        y = np.full((2, 3, 16, 16), 0.5, np.float32)
        y[0] = 200.0
        with pytest.raises(InputError, match=r"preprocessed images \[0\] have values up to 200.*expected \[-1, 1\]"):
            inv.invert(y)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_keep_the_out_lock(tmp_path):
    """A child forked while --out is locked (OpenVINO's telemetry forks one from a thread) and outliving the
    command must not hold the lock: the next run on the same --out takes it."""
    from restyle_rt.cli.outputs import lock_dir

    lock = lock_dir(tmp_path, "invert")
    r, w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: say it runs, wait until the parent says so, then exit without cleanup
        os.close(w)
        os.write(ready_w, b"r")
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"r"  # the child is past fork (and its at-fork hooks)
    os.close(ready_r)
    try:
        lock.close()  # the command ends; its child lives on
        again = lock_dir(tmp_path, "invert")  # raised OutputError("... pid <ours>") before
        again.close()
    finally:
        os.write(w, b"x")
        os.close(w)
        os.waitpid(pid, 0)
