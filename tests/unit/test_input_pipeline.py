"""The input pipeline (runtime/pipeline.py, Inverter.invert_files): batches in input order, the same outputs as a
serial run bit for bit, per-file errors kept with their batch, a bounded read-ahead, and reader threads that end
whatever way the consumer stops."""

from __future__ import annotations

import _thread
import random
import threading
import time

import numpy as np
import pytest

from restyle_rt import Inverter
from restyle_rt.errors import InputError
from restyle_rt.runtime import io
from restyle_rt.runtime.pipeline import THREAD_PREFIX, Prefetcher, default_workers

pytestmark = pytest.mark.unit


def _readers():
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def _jittery(i):
    time.sleep(random.uniform(0, 0.004))  # finish out of order
    return np.full((2, 3), i, np.float32)


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_batches_come_in_input_order(workers):
    with Prefetcher(range(23), _jittery, batch=4, workers=workers) as pre:
        got = list(pre)
    assert [b.size for b in got] == [4, 4, 4, 4, 4, 3]
    assert [i for b in got for i in b.items] == list(range(23))
    for b in got:
        np.testing.assert_array_equal(b.x[:, 0, 0], b.items)
        assert b.x.shape == (len(b.items), 2, 3) and b.errors == []
    assert not _readers()


def test_input_errors_stay_with_their_batch_other_errors_raise_in_order():
    def load(i):
        if i in (2, 5):
            raise InputError(f"file {i}: unreadable")
        if i == 9:
            raise RuntimeError("disk on fire")
        return np.zeros(1, np.float32) + i

    seen = []
    with pytest.raises(RuntimeError, match="disk on fire"):
        for b in Prefetcher(range(12), load, batch=3, workers=2):
            seen.append(b)
    assert [b.items for b in seen] == [[0, 1], [3, 4], [6, 7, 8]]  # the batches before the failing one
    errors = [[(i, str(e)) for i, e in b.errors] for b in seen]
    assert errors == [[(2, "file 2: unreadable")], [(5, "file 5: unreadable")], []]
    assert not _readers()  # the end of a generator that raised closes the pool

    all_bad = list(Prefetcher([2, 5], load, batch=2, workers=2))
    assert len(all_bad) == 1 and all_bad[0].items == [] and all_bad[0].x is None and all_bad[0].size == 2


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_read_ahead_is_bounded(depth):
    """A slow consumer: while it holds a batch, readers fill exactly `depth` batches ahead of it, never more."""
    batch, n = 2, 20
    lock = threading.Lock()
    started, received, worst_waiting, worst_holding = [0], [0], [0], [0]

    def load(i):
        with lock:
            started[0] += 1
            worst_waiting[0] = max(worst_waiting[0], started[0] - received[0])
        return np.full(1, i, np.float32)

    def ahead():
        with lock:
            return started[0] - received[0]

    with Prefetcher(range(n), load, batch=batch, workers=3, depth=depth) as pre:
        for b in pre:
            with lock:
                received[0] += b.size
            expected = min(depth * batch, n - received[0])
            deadline = time.monotonic() + 10
            while ahead() < expected and time.monotonic() < deadline:  # the readers run ahead as far as they may
                time.sleep(0.001)
            time.sleep(0.005)  # and no further
            assert ahead() == expected
            worst_holding[0] = max(worst_holding[0], ahead())
    assert worst_holding[0] == depth * batch
    assert worst_waiting[0] <= (depth + 1) * batch
    assert not _readers()


def test_consumer_exception_shuts_the_readers_down():
    calls = []

    def load(i):
        calls.append(i)
        time.sleep(0.01)
        return np.zeros(1, np.float32)

    with pytest.raises(ZeroDivisionError):
        with Prefetcher(range(200), load, batch=4, workers=2, depth=2) as pre:
            for b in pre:
                if b.items[0] >= 8:
                    1 / 0  # noqa: B018 - raises mid-iteration
    assert not _readers()
    assert len(calls) <= 8 + 4 * 3  # what was read ahead, not the rest of the 200
    with pytest.raises(InputError, match="iterates once"):
        iter(pre)


def test_interrupt_while_waiting_shuts_the_readers_down():
    """Ctrl-C arriving while the consumer waits for a batch (simulated: SIGINT's flag set from a reader)."""

    def load(i):
        if i == 6:
            _thread.interrupt_main()
        time.sleep(0.005)
        return np.zeros(1, np.float32)

    got = []
    with pytest.raises(KeyboardInterrupt):
        with Prefetcher(range(100), load, batch=2, workers=2, depth=2) as pre:
            for b in pre:
                got.append(b.items)
                time.sleep(0.05)
    assert not _readers()
    assert len(got) < 50


def test_arguments_are_checked():
    for kw in ({"batch": 0}, {"workers": -1}, {"depth": 0}, {"batch": 2.5}, {"workers": True}):
        with pytest.raises(InputError):
            Prefetcher([1], np.zeros, **{"batch": 1, **kw})
    assert 1 <= default_workers() <= 4


# --- Inverter.invert_files ----------------------------------------------------------------------------------


@pytest.fixture
def files(rgb_images):
    return rgb_images(11, size=(30, 26))


@pytest.mark.parametrize("workers", [0, 1, 4])
def test_invert_files_is_bit_identical_to_invert(toy, files, workers):
    with Inverter.load(toy[0], backend="ort") as inv:
        got = list(inv.invert_files(files, n_iters=3, batch=3, workers=workers, return_steps=True))
        assert [p for ps, _ in got for p in ps] == files
        for k, (ps, r) in enumerate(got):
            ref = inv.invert([str(p) for p in files[3 * k : 3 * k + 3]], n_iters=3, return_steps=True)
            assert ps == files[3 * k : 3 * k + 3]
            np.testing.assert_array_equal(r.latents, ref.latents)
            np.testing.assert_array_equal(r.images, ref.images)
            for a, b in zip(r.step_latents, ref.step_latents):
                np.testing.assert_array_equal(a, b)
    assert not _readers()


def test_invert_files_bad_file_mid_list(toy, files, tmp_path, caplog):
    bad = tmp_path / "broken.png"
    bad.write_bytes(files[0].read_bytes()[:60])  # truncated PNG
    paths = files[:4] + [bad] + files[4:6]
    with Inverter.load(toy[0], backend="ort") as inv:
        it = inv.invert_files(paths, n_iters=2, batch=2, workers=2)
        assert [ps for ps, _ in (next(it), next(it))] == [files[:2], files[2:4]]
        with pytest.raises(InputError, match="broken.png"):
            next(it)  # as invert() does for an unreadable file
        assert not _readers()
        got = list(inv.invert_files(paths, n_iters=2, batch=2, workers=2, skip_errors=True))
        assert [ps for ps, _ in got] == [files[:2], files[2:4], [files[4]], [files[5]]]
        assert "broken.png" in caplog.text
        with pytest.raises(InputError, match="sequence of files"):
            inv.invert_files(str(files[0]))
        with pytest.raises(InputError, match="workers"):
            inv.invert_files(files, workers=-2)  # checked when called, not when first iterated
    assert not _readers()


def test_invert_files_closed_early(toy, files):
    with Inverter.load(toy[0], backend="ort") as inv:
        it = inv.invert_files(files, n_iters=1, batch=1, workers=2)
        next(it)
        it.close()
        assert not _readers()


# --- io: concurrent decoding, JPEG draft ----------------------------------------------------------------------


def test_concurrent_decoding_leaves_warning_filters_alone(rgb_images):
    import warnings

    paths = rgb_images(24, size=(50, 40))
    before = list(warnings.filters)
    with Prefetcher(paths, lambda p: io.preprocess_file(p, (16, 16)), batch=4, workers=4) as pre:
        out = np.concatenate([b.x for b in pre])
    assert list(warnings.filters) == before
    np.testing.assert_array_equal(out, np.stack([io.preprocess(io.read_image(p), (16, 16)) for p in paths]))


def _photo(path, size=(1200, 900), seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    g = rng.normal(0, 1, (h // 30, w // 30, 3)).astype(np.float32)
    up = np.stack([np.asarray(Image.fromarray(g[..., c]).resize((w, h), Image.BILINEAR)) for c in range(3)], -1)
    fine = rng.normal(0, 12, (h, w, 3))
    Image.fromarray(np.clip(128 + 40 * up + fine, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def test_jpeg_draft_is_off_by_default_and_close_when_on(tmp_path):
    from PIL import Image

    p = _photo(tmp_path / "big.jpg")  # 1200 x 900: 1/8 does not divide 900, so 1/4 (300 x 225)
    exact = io.preprocess(io.read_image(p), (64, 64))
    np.testing.assert_array_equal(io.preprocess_file(p, (64, 64)), exact)  # default: the official bytes
    fast = io.preprocess_file(p, (64, 64), jpeg_draft=True)
    d = np.abs(fast - exact) * 127.5  # in 0..255 levels
    assert 0 < d.max() <= 4 and d.mean() < 1
    with Image.open(p) as im:
        assert io._draft_scale(im, (64, 64)) == 4 and io._draft_scale(im, (150, 150)) == 4
        assert io._draft_scale(im, (301, 64)) == 2 and io._draft_scale(im, (700, 64)) == 1
        assert io._draft_scale(im, None) == 1

    rotated = tmp_path / "rotated.jpg"  # EXIF orientation 6: stored 1200 x 900, shown 900 x 1200
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(p).save(rotated, quality=90, exif=exif)
    exact = io.preprocess(io.read_image(rotated), (48, 64))
    fast = io.preprocess_file(rotated, (48, 64), jpeg_draft=True)
    assert np.abs(fast - exact).max() * 127.5 <= 4

    png = tmp_path / "big.png"
    Image.open(p).save(png)
    np.testing.assert_array_equal(
        io.preprocess_file(png, (64, 64), jpeg_draft=True), io.preprocess_file(png, (64, 64))
    )  # not a JPEG: no draft


# --- restyle-rt invert --workers --------------------------------------------------------------------------------


def _tree(out):
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".restyle-rt" not in p.parts
    }


def test_cli_workers_write_the_same_bytes_as_serial(toy, rgb_images, tmp_path, capfd):
    from restyle_rt.cli import main

    folder = rgb_images(9, folder="photos", size=(30, 26))[0].parent
    bad = folder / "img004b.png"  # sorts mid-folder, between img004 and img005
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    trees, skipped = {}, {}
    for workers in ("0", "1", "3"):
        out = tmp_path / f"out{workers}"
        argv = [
            "invert",
            str(toy[0]),
            str(folder),
            "--out",
            str(out),
            "--iters",
            "3",
            "--batch",
            "2",
            "--backend",
            "ort",
            "--save-steps",
            "--save-latents",
            "--strip",
            "--workers",
            workers,
        ]
        assert main(argv) == 1  # one file skipped
        err = capfd.readouterr().err
        skipped[workers] = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("skipped:")]
        assert "inverted 9 image(s) (1 skipped)" in err
        trees[workers] = _tree(out)
    assert len(skipped["0"]) == 1 and "img004b.png" in skipped["0"][0]
    assert skipped["1"] == skipped["0"] and skipped["3"] == skipped["0"]
    assert len(trees["0"]) == 9 * 5 + 2  # final + 3 steps + strip per image, latents.npy and .json
    assert trees["1"] == trees["0"] and trees["3"] == trees["0"]  # bit for bit
    assert not _readers()


def test_cli_workers_and_jpeg_draft_options(toy, rgb_images, tmp_path, capfd):
    from restyle_rt.cli import main

    p = rgb_images(2, ext=".jpg")
    # --backend ort: `auto` imports OpenVINO, whose telemetry forks a child that inherits (and briefly holds) the
    # --out lock, so an immediate rerun in the same process may find it taken
    base = ["invert", str(toy[0]), *map(str, p), "--iters", "1", "--backend", "ort"]
    assert main([*base, "--out", str(tmp_path / "a"), "--workers", "-1"]) == 2
    assert "--workers must be >= 0, got -1" in capfd.readouterr().err
    out = tmp_path / "d"
    assert main([*base, "--out", str(out), "--jpeg-draft"]) == 0
    assert main([*base, "--out", str(out), "--resume"]) == 2  # draft outputs are not mixed with exact ones
    assert "jpeg_draft True then, None now" in capfd.readouterr().err
    assert main([*base, "--out", str(out), "--resume", "--jpeg-draft"]) == 0
    out = tmp_path / "e"
    assert main([*base, "--out", str(out)]) == 0
    assert main([*base, "--out", str(out), "--resume", "--jpeg-draft"]) == 2
    assert main([*base, "--out", str(out), "--resume", "--workers", "0"]) == 0  # readers do not change outputs


def test_cli_align_runs_one_alignment_at_a_time_and_skips_faceless(toy, rgb_images, tmp_path, capfd, monkeypatch):
    from restyle_rt.align import landmarks
    from restyle_rt.cli import main

    inside, calls = [0], []

    class FakeAligner:  # dlib's detector is shared by the readers: they must take turns
        def __call__(self, image, name="image"):
            inside[0] += 1
            try:
                assert inside[0] == 1, "two alignments at once"
                calls.append(name)
                time.sleep(0.01)
                if "img003" in name:
                    raise InputError(f"{name}: no face found")
                return image[::-1].copy()  # "aligned": flipped
            finally:
                inside[0] -= 1

    monkeypatch.setattr(landmarks, "Aligner", FakeAligner)
    folder = rgb_images(7, folder="faces", size=(30, 26))[0].parent
    out = tmp_path / "out"
    assert (
        main(
            [
                "invert",
                str(toy[0]),
                str(folder),
                "--out",
                str(out),
                "--iters",
                "1",
                "--batch",
                "2",
                "--backend",
                "ort",
                "--align",
                "--workers",
                "3",
                "--save-latents",
            ]
        )
        == 1
    )
    err = capfd.readouterr().err
    assert "skipped: " in err and "img003.png: no face found" in err
    assert len(calls) == 7 and not _readers()
    names = [f"img{i:03d}" for i in range(7) if i != 3]
    assert sorted(p.stem for p in out.glob("*.png")) == names
    with Inverter.load(toy[0], backend="ort") as inv:  # the aligned (flipped) images were inverted, in order
        x = np.stack([io.preprocess(io.read_image(folder / f"{n}.png")[::-1].copy(), (16, 16)) for n in names])
        ref = inv.invert(x, n_iters=1)  # (one batch of 6, where the run made batches of 2)
    np.testing.assert_allclose(np.load(out / "latents.npy")[:, 0], ref.latents, rtol=0, atol=1e-6)
    assert main(["invert", str(toy[0]), str(folder), "--out", str(out), "--align", "--jpeg-draft"]) == 2
