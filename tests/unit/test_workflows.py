"""Editing, bootstrapping and animation on toy artifacts: the maths restated in NumPy, files, CLI, bad input."""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pytest

from restyle_rt.errors import InputError
from restyle_rt.workflows import animation, directions, editing
from restyle_rt.workflows.bootstrap import bootstrap

pytestmark = pytest.mark.unit
S = 4  # toy styles


# --- directions ------------------------------------------------------------------------------------------------


def _save_pt(obj, path, location=None):
    torch = pytest.importorskip("torch")
    torch.save(obj, path)
    if location:  # rewrite the storage location as if saved on a GPU (the official pose.pt is on cuda:0)
        with zipfile.ZipFile(path) as z:
            items = {n: z.read(n) for n in z.namelist()}
        pkl = next(n for n in items if n.endswith("data.pkl"))
        assert b"cpu" in items[pkl]
        items[pkl] = items[pkl].replace(
            b"X\x03\x00\x00\x00cpu", b"X" + len(location).to_bytes(4, "little") + location.encode()
        )
        with zipfile.ZipFile(path, "w") as z:
            for n, data in items.items():
                z.writestr(n, data)
    return path


@pytest.mark.parametrize("shape", [(1, 512), (1, S, 512), (512,)])
def test_pt_direction_read_without_torch_matches_torch(tmp_path, shape):
    torch = pytest.importorskip("torch")
    t = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    p = _save_pt(t, tmp_path / "d.pt", location="cuda:0")
    got = directions.load_direction(p)
    np.testing.assert_array_equal(got, t.numpy())
    assert torch.load(p, map_location="cpu", weights_only=True).shape == t.shape  # still a valid torch file


def test_pt_direction_strided_and_half(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.randn(512, 3, generator=torch.Generator().manual_seed(1))
    view = base.t()[1:2]  # [1, 512], stride (1, 3), storage offset 1: a strided view of a bigger storage
    got = directions.load_direction(_save_pt(view, tmp_path / "v.pt"))
    np.testing.assert_array_equal(got, view.numpy())
    half = torch.randn(1, 512).half()
    got = directions.load_direction(_save_pt(half, tmp_path / "h.pt"))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, half.float().numpy())


def test_pt_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    p = tmp_path / "evil.pt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(Evil(), protocol=2))
        z.writestr("archive/version", "3\n")
    with pytest.raises(InputError, match=r"refusing to load _?io\.open"):
        directions.load_direction(p)
    assert not marker.exists()


def test_bad_direction_files(tmp_path):
    torch = pytest.importorskip("torch")
    legacy = tmp_path / "legacy.pt"
    torch.save(torch.zeros(1, 512), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(InputError, match="not a PyTorch zip-format"):
        directions.load_direction(legacy)
    d = tmp_path / "dict.pt"
    torch.save({"a": torch.zeros(3)}, d)
    with pytest.raises(InputError, match="expected one tensor"):
        directions.load_direction(d)
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((1, 512), np.nan, np.float32))
    with pytest.raises(InputError, match="non-finite"):
        directions.load_direction(nan)
    with pytest.raises(InputError, match="does not exist"):
        directions.load_direction(tmp_path / "missing.pt")


def test_fit_direction_broadcasts_or_refuses():
    d = np.arange(512, dtype=np.float32)
    for shape in [(512,), (1, 512), (1, 1, 512)]:
        np.testing.assert_array_equal(directions.fit_direction(d.reshape(shape), 18), np.tile(d, (18, 1)))
    full = np.random.default_rng(0).standard_normal((1, 18, 512)).astype(np.float32)
    np.testing.assert_array_equal(directions.fit_direction(full, 18), full[0])
    with pytest.raises(InputError, match="18 style rows .* model has 14 styles"):
        directions.fit_direction(full, 14)
    with pytest.raises(InputError, match=r"shape \[1, 18, 256\]"):
        directions.fit_direction(np.zeros((1, 18, 256)), 18)
    with pytest.raises(InputError, match="shape"):
        directions.fit_direction(np.zeros((2, 3, 18, 512)), 18)


# --- editing ------------------------------------------------------------------------------------------------------


def test_parse_factors_follows_official_range():
    assert editing.parse_factors("-5,5") == [float(f) for f in range(-5, 5)]  # +5 excluded, as official
    assert editing.parse_factors("2.5") == [2.5]
    assert editing.parse_factors("0,6,2") == [0.0, 2.0, 4.0]
    for bad in ("5,-5", "a", "1.5,3", "1,2,3,4", "nan"):
        with pytest.raises(InputError):
            editing.parse_factors(bad)


def test_edit_latents_and_render(toy):
    from restyle_rt import Inverter
    from restyle_rt.artifacts import load
    from restyle_rt.runtime.backends import get_backend

    art_dir, ref = toy
    rng = np.random.default_rng(0)
    lat = rng.standard_normal((3, S, 512)).astype(np.float32)
    d = rng.standard_normal((1, 512)).astype(np.float32)
    factors = [-2.0, 0.0, 3.0]
    ed = editing.edit_latents(lat, d, factors)
    assert ed.shape == (3, 3, S, 512)
    for i in range(3):
        for j, f in enumerate(factors):
            np.testing.assert_allclose(ed[i, j], lat[i] + f * d, rtol=0, atol=1e-6)
    art = load(art_dir)
    with Inverter(art, get_backend("ort", art)) as inv:
        imgs = editing.render_edits(inv, lat, d, factors)  # [3, 3, 3, h, w]
    for i in range(3):
        for j, f in enumerate(factors):
            np.testing.assert_allclose(imgs[i, j], ref.synthesize((lat[i] + f * d)[None])[0][0], atol=1e-5)


# --- bootstrapping ---------------------------------------------------------------------------------------------


def test_bootstrap_matches_numpy_restatement(make_toy, rgb_images):
    from restyle_rt import Inverter

    (d1, r1), (d2, r2) = make_toy("one", seed=1, profile=(2, 2, 3)), make_toy("two", seed=2)
    paths = rgb_images(4)
    with Inverter.load(d1, backend="ort") as first, Inverter.load(d2, backend="ort") as second:
        x = second.preprocess(paths)
        res = bootstrap(first, second, paths, n_iters=3)
    assert len(res.step_latents) == 4 and res.steps_used.tolist() == [4] * 4
    # independent restatement: step 1 with model 1 from its own seeds, then model 2 from model 1's outputs
    w = np.repeat(r1.w.latent_avg[None], 4, axis=0)
    y = np.repeat(r1.avg_feedback()[None], 4, axis=0)
    for t in range(4):
        model = r1 if t == 0 else r2
        w = model.encode(x, y, w)
        img, y = model.synthesize(w)
        np.testing.assert_allclose(res.step_latents[t], w, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(res.step_images[t], img, rtol=1e-5, atol=1e-5)
    # model 2's own latent_avg never enters: a loop of model 2 alone gives something else
    alone = r2.loop(x, 4)[0][-1]
    assert not np.allclose(alone, res.latents, atol=1e-3)


def test_bootstrap_refuses_mismatched_pair(make_toy):
    from toy_artifacts import TOY_CARS_SPEC

    from restyle_rt import Inverter

    (d1, _), (d2, _) = make_toy("one"), make_toy("cars", spec=TOY_CARS_SPEC)
    with Inverter.load(d1, backend="ort") as a, Inverter.load(d2, backend="ort") as b:
        with pytest.raises(InputError, match="encoder input"):
            bootstrap(a, b, np.zeros((1, 3, 12, 16), np.float32))


# --- animation ------------------------------------------------------------------------------------------------


def test_interpolation_schedule_is_the_notebooks():
    lat = np.random.default_rng(0).standard_normal((3, S, 512)).astype(np.float32)
    frames, pairs, alphas = animation.interpolate(lat, n_transition=25, loop=True)
    notebook = [0] * 5 + np.linspace(0, 1, 25).tolist() + [1] * 5
    assert frames.shape == (3 * 35, S, 512)  # K transitions when looping back to the first
    np.testing.assert_allclose(alphas[:35], notebook)
    k = 3 * 35 - 1  # last frame: alpha 1 of the transition 2 -> 0, i.e. the first latent again
    np.testing.assert_allclose(frames[k], lat[0], atol=1e-6)
    np.testing.assert_allclose(frames[35 + 12], lat[2] * notebook[12] + lat[1] * (1 - notebook[12]), atol=1e-6)
    assert animation.interpolate(lat, 4, loop=False)[0].shape[0] == 2 * 14
    with pytest.raises(InputError):
        animation.interpolate(lat[:1], 25)


def test_wipe_matches_notebook_rows():
    a, b = np.zeros((8, 5, 3), np.uint8), np.full((8, 5, 3), 200, np.uint8)
    b[:, :, 0] = np.arange(8)[:, None]
    assert (animation.wipe(a, b, 0.0) == a).all()
    np.testing.assert_array_equal(animation.wipe(a, b, 1.0), b)
    half = animation.wipe(a, b, 0.5)  # up_to_row = int(7 * 0.5) = 3: rows 0..3 from b's bottom, 4.. from a
    np.testing.assert_array_equal(half[:3], b[4:7])
    assert (half[4:] == 0).all()


def _smooth_frames(n, h, w):
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    return [
        np.stack([xx * 200 / w + 4 * i, yy * 200 / h, np.full_like(xx, 30 + 20 * i)], -1).astype(np.uint8)
        for i in range(n)
    ]


def _decode_video(p):
    av = pytest.importorskip("av")
    with av.open(str(p)) as c:
        s = c.streams.video[0]
        return s.codec_context.name, [f.to_ndarray(format="rgb24") for f in c.decode(s)]


@pytest.mark.parametrize("ext,codec", [(".mp4", "h264"), (".avi", "mjpeg")])
def test_write_video_h264_mp4_and_mjpeg_avi(tmp_path, ext, codec):
    frames = _smooth_frames(6, 48, 64)
    p = animation.write_video(tmp_path / f"v{ext}", frames, fps=10)
    assert p.stat().st_size > 0 and [f.name for f in tmp_path.iterdir()] == [p.name]  # no temporary left
    name, got = _decode_video(p)
    assert name == codec and len(got) == 6 and got[0].shape == (48, 64, 3)
    err = np.abs(np.stack(got).astype(int) - np.stack(frames))
    # lossy (4:2:0 chroma, 8-bit YUV round trip: measured mean 1.7, max 8), but close on smooth frames
    assert err.mean() < 3 and err.max() <= 16, (err.mean(), err.max())


def test_write_video_pads_odd_sizes_for_h264(tmp_path):
    frames = _smooth_frames(3, 33, 47)
    name, got = _decode_video(animation.write_video(tmp_path / "v.mp4", frames, fps=15))
    assert name == "h264" and len(got) == 3 and got[0].shape == (34, 48, 3)  # yuv420p: one edge row/column added
    assert np.abs(got[1][:33, :47].astype(int) - frames[1]).mean() < 3


def test_write_gif(tmp_path):
    from PIL import Image

    p = animation.write_video(tmp_path / "v.gif", _smooth_frames(6, 16, 24), fps=10)
    assert Image.open(p).n_frames == 6 and [f.name for f in tmp_path.iterdir()] == [p.name]


def test_video_without_pyav_names_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    for ext in (".mp4", ".avi"):
        with pytest.raises(InputError, match=r"needs PyAV: pip install 'restyle-rt\[video\]'"):
            animation.write_video(tmp_path / f"v{ext}", [np.zeros((8, 8, 3), np.uint8)])
    animation.write_video(tmp_path / "v.gif", [np.zeros((8, 8, 3), np.uint8)])  # GIF needs Pillow only
    assert [f.name for f in tmp_path.iterdir()] == ["v.gif"]
    with pytest.raises(InputError, match="unknown video type"):
        animation.write_video(tmp_path / "v.webm", [np.zeros((8, 8, 3), np.uint8)])


def test_animate_without_pyav_fails_before_any_model_loads(toy, rgb_images, tmp_path, monkeypatch, capsys):
    import sys

    from restyle_rt.cli import main
    from restyle_rt.runtime import api

    monkeypatch.setitem(sys.modules, "av", None)
    monkeypatch.setattr(api.Inverter, "load", lambda *a, **k: pytest.fail("loaded a model"))
    paths = [str(p) for p in rgb_images(2)]
    assert main(["animate", str(toy[0]), *paths, "--out", str(tmp_path / "m.mp4")]) == 2
    assert "pip install 'restyle-rt[video]'" in capsys.readouterr().err


def test_video_encoder_failure_is_an_input_error(tmp_path, monkeypatch):
    pytest.importorskip("av")
    monkeypatch.setitem(animation.VIDEO_CODECS, ".mp4", ("no-such-codec", "yuv420p", {}))
    with pytest.raises(InputError, match=r"PyAV cannot write \.mp4 \(no-such-codec"):
        animation.write_video(tmp_path / "v.mp4", [np.zeros((8, 8, 3), np.uint8)])
    assert list(tmp_path.iterdir()) == []


# --- CLI (torch made unimportable in the process that runs them) --------------------------------------------------


def test_edit_and_animate_cli_without_torch(toy, rgb_images, tmp_path):
    import subprocess
    import sys
    import textwrap

    paths = rgb_images(2)
    rng = np.random.default_rng(1)
    np.save(tmp_path / "age.npy", rng.standard_normal((1, 512)).astype(np.float32))
    torch = pytest.importorskip("torch")
    pose = torch.from_numpy(rng.standard_normal((1, S, 512)).astype(np.float32))
    _save_pt(pose, tmp_path / "pose.pt", location="cuda:0")
    code = textwrap.dedent(f"""
        import json, sys
        sys.modules["torch"] = None
        from restyle_rt.cli import main
        rc = [main(["invert", {str(toy[0])!r}, *{[str(p) for p in paths]!r}, "--out", {str(tmp_path / "inv")!r},
                    "--iters", "2", "--save-latents"]),
              main(["edit", {str(toy[0])!r}, *{[str(p) for p in paths]!r}, "--iters", "2", "--out",
                    {str(tmp_path / "ed")!r}, "--direction", {str(tmp_path / "age.npy")!r},
                    "--direction", {str(tmp_path / "pose.pt")!r}, "--factors", "-2,2"]),
              main(["edit", {str(toy[0])!r}, "--latents", {str(tmp_path / "inv" / "latents.npy")!r}, "--out",
                    {str(tmp_path / "ed2")!r}, "--direction", {str(tmp_path / "age.npy")!r}, "--factors", "3"]),
              main(["animate", {str(toy[0])!r}, *{[str(p) for p in paths]!r}, "--iters", "2", "--frames", "4",
                    "--out", {str(tmp_path / "a.avi")!r}]),
              main(["invert", {str(toy[0])!r}, *{[str(p) for p in paths]!r}, "--bootstrap", {str(toy[0])!r},
                    "--iters", "1", "--out", {str(tmp_path / "boot")!r}, "--strip"])]
        print(json.dumps({{"rc": rc, "torch": sys.modules["torch"] is None}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"rc": [0, 0, 0, 0, 0], "torch": True}
    from PIL import Image

    h, w = 24, 24  # toy image_hw
    for d in ("age", "pose"):
        strip = np.asarray(Image.open(tmp_path / "ed" / d / "img000.png"))
        assert strip.shape == (h, (2 + 4) * w, 3)  # input, inversion, factors -2..1
    assert np.asarray(Image.open(tmp_path / "ed" / "coupled" / "img001.png")).shape == (2 * h, 6 * w, 3)
    assert np.asarray(Image.open(tmp_path / "ed2" / "age" / "img000.png")).shape == (h, 2 * w, 3)  # no input
    codec, frames = _decode_video(tmp_path / "a.avi")
    assert codec == "mjpeg" and len(frames) == 2 * (4 + 10)  # 2 transitions (looping), 4 + 2 x 5 held
    assert frames[0].shape == (h, 2 * w, 3)  # the input wipe beside the decoded frame
    assert np.asarray(Image.open(tmp_path / "boot" / "strips" / "img001.png")).shape == (h, 3 * w, 3)


def test_invert_bootstrap_cli(make_toy, rgb_images, tmp_path):
    from PIL import Image
    from toy_artifacts import TOY_CARS_SPEC

    from restyle_rt.cli import main

    (d1, r1), (d2, r2) = make_toy("one", seed=1), make_toy("two", seed=2)
    paths = rgb_images(2)
    out = tmp_path / "out"
    rc = main(
        [
            "invert",
            str(d2),
            *map(str, paths),
            "--bootstrap",
            str(d1),
            "--iters",
            "2",
            "--out",
            str(out),
            "--strip",
            "--save-latents",
        ]
    )
    assert rc == 0
    lat = np.load(out / "latents.npy")
    assert lat.shape == (2, 3, S, 512)  # step 1 (model 1) + 2 model-2 steps
    from restyle_rt import Inverter

    with Inverter.load(d2, backend="ort") as inv:
        x = inv.preprocess(paths)
    w = r1.encode(x, np.repeat(r1.avg_feedback()[None], 2, 0), np.repeat(r1.w.latent_avg[None], 2, 0))
    np.testing.assert_allclose(lat[:, 0], w, rtol=1e-5, atol=1e-5)
    img, y = r1.synthesize(w)
    np.testing.assert_allclose(lat[:, 1], r2.encode(x, y, w), rtol=1e-5, atol=1e-5)
    assert np.asarray(Image.open(out / "strips" / "img000.png")).shape == (24, 4 * 24, 3)  # 3 steps + input
    (d3, _) = make_toy("cars", spec=TOY_CARS_SPEC)
    assert main(["invert", str(d2), str(paths[0]), "--bootstrap", str(d3), "--out", str(tmp_path / "o2")]) == 2
    assert not (tmp_path / "o2").exists()


# --- edit / animate outputs: never over an input, one writer (checked before any model loads) --------------------


@pytest.fixture
def edit_setup(toy, rgb_images, tmp_path):
    """(main, artifacts dir, input image paths, direction .npy) for the output-safety tests."""
    from restyle_rt.cli import main

    np.save(tmp_path / "age.npy", np.random.default_rng(1).standard_normal((1, 512)).astype(np.float32))
    return main, str(toy[0]), rgb_images(2), str(tmp_path / "age.npy")


def _no_model_load(monkeypatch):
    from restyle_rt.runtime.api import Inverter

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the outputs were checked")

    monkeypatch.setattr(Inverter, "load", classmethod(refuse))


def test_edit_refuses_an_output_over_an_input(edit_setup, tmp_path, capfd, monkeypatch):
    from restyle_rt.errors import EXIT_OS

    main, art, paths, age = edit_setup
    victim = tmp_path / "o" / "age" / "img000.png"  # where `edit --out o --direction age.npy` writes img000's strip
    victim.parent.mkdir(parents=True)
    victim.write_bytes(paths[0].read_bytes())
    before = victim.read_bytes()
    _no_model_load(monkeypatch)
    assert (
        main(["edit", art, str(victim), "--out", str(tmp_path / "o"), "--direction", age, "--factors", "1"]) == EXIT_OS
    )
    assert f"output {victim} would overwrite the input {victim}" in capfd.readouterr().err
    assert victim.read_bytes() == before
    rc = main(["edit", art, str(paths[0].parent), "--out", str(paths[0].parent), "--direction", age])
    assert rc == EXIT_OS and "is the input directory" in capfd.readouterr().err


def test_edit_does_not_read_its_earlier_outputs(edit_setup, capfd):
    main, art, paths, age = edit_setup
    src = paths[0].parent
    args = ["edit", art, str(src), "--out", str(src / "ed"), "--direction", age, "--factors", "1", "--iters", "1"]
    assert main(args) == 0
    assert main(args) == 0  # src/ed/age/*.png are under --out: not inputs the second time
    assert capfd.readouterr().err.count("edited 2 image(s)") == 2
    assert sorted(p.name for p in (src / "ed" / "age").iterdir()) == ["img000.png", "img001.png"]


@pytest.mark.parametrize("command", ["edit", "animate"])
def test_a_second_writer_is_refused(edit_setup, tmp_path, capfd, monkeypatch, command):
    import fcntl

    from restyle_rt.errors import EXIT_OS

    main, art, paths, age = edit_setup
    if command == "edit":
        out, lock = tmp_path / "o", tmp_path / "o" / ".restyle-rt" / "lock"
        argv = ["edit", art, *map(str, paths), "--out", str(out), "--direction", age]
    else:
        out, lock = tmp_path / "a.gif", tmp_path / ".restyle-rt" / "a.gif.lock"
        argv = ["animate", art, *map(str, paths), "--out", str(out), "--frames", "2"]
    lock.parent.mkdir(parents=True)
    _no_model_load(monkeypatch)
    with open(lock, "w") as f:  # another run holds the lock
        f.write("4242")
        f.flush()
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        assert main(argv) == EXIT_OS
    assert f"--out {out} is being written by another restyle-rt {command} (pid 4242)" in capfd.readouterr().err


def test_animate_refuses_to_overwrite_an_input(edit_setup, tmp_path, capfd, monkeypatch):
    from PIL import Image

    from restyle_rt.errors import EXIT_OS

    main, art, paths, _ = edit_setup
    gif = tmp_path / "clip.gif"
    Image.open(paths[0]).save(gif)
    before = gif.read_bytes()
    _no_model_load(monkeypatch)
    assert main(["animate", art, str(paths[0]), str(gif), "--out", str(gif), "--frames", "2"]) == EXIT_OS
    assert f"output {gif} would overwrite the input {gif}" in capfd.readouterr().err
    assert gif.read_bytes() == before
