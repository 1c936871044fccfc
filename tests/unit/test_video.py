"""``restyle-rt video`` on the toy artifacts (fast): decode/encode round trip, the streamed latents file, the warm
start per frame, latent smoothing, landmark smoothing, bad input (nothing left written) and the CLI.

The fitted fixture (a loop that converges) is in tests/unit/test_video_fitted.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av", reason="video needs the [video] extra (PyAV)")

from restyle_rt import Inverter, artifacts  # noqa: E402
from restyle_rt.cli import main  # noqa: E402
from restyle_rt.cli import video as video_cli  # noqa: E402
from restyle_rt.errors import EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, InputError  # noqa: E402
from restyle_rt.runtime import io  # noqa: E402
from restyle_rt.runtime.backends.ort import OrtBackend  # noqa: E402
from restyle_rt.runtime.loop import host_loop  # noqa: E402
from restyle_rt.workflows import video  # noqa: E402
from restyle_rt.workflows.animation import write_video  # noqa: E402
from restyle_rt.workflows.videoio import NpyRows, VideoSource  # noqa: E402

pytestmark = pytest.mark.unit


def _frames(n, h=32, w=48, seed=0):
    """Smooth moving colour gradients (what a codec keeps well)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c = rng.uniform(0.3, 1.0, 3)
    out = []
    for t in range(n):
        ph = 0.25 * t
        img = np.stack([np.sin(xx / 9 + ph + k) * np.cos(yy / 7 - ph * c[k]) for k in range(3)], axis=-1)
        out.append(((img * 0.4 + 0.5) * 255).astype(np.uint8))
    return out


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def _clean(d: Path):
    """Files a run left in ``d`` (temporaries, outputs), ignoring the lock folder."""
    return sorted(p.name for p in d.iterdir() if p.name != ".restyle-rt")


@pytest.fixture(scope="module")
def be(toy):
    d, ref = toy
    with OrtBackend(artifacts.load(d), threads=1) as b:
        yield b


@pytest.fixture(scope="module")
def inv(be):
    return Inverter(be.artifacts, be)


# --- decode / encode -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".mp4", ".avi"])
def test_round_trip(tmp_path, ext):
    frames = _frames(12)
    write_video(tmp_path / f"c{ext}", iter(frames), fps=12)  # a generator: encoded as it comes
    with VideoSource(tmp_path / f"c{ext}") as src:
        assert (src.size, float(src.fps), src.declared) == ((48, 32), 12.0, 12)
        got = list(src)
    assert len(got) == 12 and all(g.shape == (32, 48, 3) and g.dtype == np.uint8 for g in got)
    worst = min(_psnr(a, b) for a, b in zip(frames, got))
    # 4:2:0 chroma on 48x32 colour gradients: measured 34.4-35.7 dB (H.264 CRF 18), 28.1-36.1 dB (MJPEG q 3)
    assert worst > 26, worst


def test_writer_refuses_a_frame_of_another_size(tmp_path):
    frames = _frames(3) + _frames(1, h=16)
    with pytest.raises(InputError, match="frame 3 is 48x16, the video 48x32"):
        write_video(tmp_path / "c.mp4", iter(frames), fps=10)
    assert _clean(tmp_path) == []


def test_npy_rows_streamed(tmp_path):
    rows = NpyRows(tmp_path / "l.npy", (3, 512))
    data = np.random.default_rng(0).normal(size=(7, 3, 512)).astype(np.float32)
    for r in data:
        rows.write(r)
    assert rows.finish() == 7
    np.testing.assert_array_equal(np.load(tmp_path / "l.npy"), data)
    empty = NpyRows(tmp_path / "e.npy", (3, 512))
    empty.finish()
    assert np.load(tmp_path / "e.npy").shape == (0, 3, 512)
    with pytest.raises(InputError, match="does not match"):
        NpyRows(tmp_path / "x.npy", (3, 512)).write(np.zeros((2, 512)))


# --- warm start per frame ----------------------------------------------------------------------------------------


def _x(n, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(-0.6, 0.6, (1, 3, 16, 16)).astype(np.float32)
    return [base + np.float32(0.05 * t) for t in range(n)]


def test_warm_start_runs_first_cold_then_from_the_previous_frame(be):
    xs = _x(3)
    ws = video.WarmStart(be, be.artifacts.profile, n_first=3, n_next=2)
    r0, c0 = ws(xs[0])
    r1, c1 = ws(xs[1], return_steps=True)
    assert (c0, c1) == (True, False) and r0.steps_used[0] == 3 and r1.steps_used[0] == 2
    ref = host_loop(be, xs[1], 2, return_steps=True, start=(r0.latents, r0.feedback))
    for a, b in zip(r1.step_latents, ref.step_latents):
        np.testing.assert_array_equal(a, b)
    ws.reset()
    assert ws(xs[2])[1] is True
    cold = video.WarmStart(be, be.artifacts.profile, n_first=3, n_next=None)
    assert [cold(x)[1] for x in xs] == [True] * 3


def test_warm_start_pads_to_the_profile_minimum(make_toy):
    d, ref = make_toy("min2", profile=(2, 2, 4))
    with OrtBackend(artifacts.load(d), threads=1) as b2:
        ws = video.WarmStart(b2, b2.artifacts.profile, 2, 1)
        xs = _x(2)
        r0, _ = ws(xs[0])
        r1, _ = ws(xs[1])
    w, y = ref.loop(xs[0], 2)[0][-1], None
    np.testing.assert_allclose(r0.latents[0], w[0], atol=1e-5)
    y = ref.synthesize(w)[1]
    np.testing.assert_allclose(r1.latents[0], ref.encode(xs[1], y, w)[0], atol=1e-5)


# --- latent smoothing ------------------------------------------------------------------------------------------


def _offline_triangular(x, r):
    """The centred triangular filter, computed over the whole sequence at once (ends renormalised)."""
    n = len(x)
    out = []
    for t in range(n):
        ks = [k for k in range(-r, r + 1) if 0 <= t + k < n]
        w = np.array([r + 1 - abs(k) for k in ks], np.float64)
        out.append(sum(wi * x[t + k] for wi, k in zip(w / w.sum(), ks)))
    return np.array(out)


@pytest.mark.parametrize("r", [0, 1, 2, 3])
def test_latent_window_is_the_centred_filter_with_r_frames_latency(r):
    rng = np.random.default_rng(r)
    lat = rng.normal(size=(9, 2, 512)).astype(np.float32)
    win = video.LatentWindow(r)
    got = []
    for t, w in enumerate(lat):
        ready = win.push(w, t)
        assert [p for _, p in ready] == ([t - r] if t >= r else [])  # frame t - r once t is in
        assert len(win.buf) <= 2 * r + 1  # bounded: never the clip
        got += ready
    got += win.flush()
    assert [p for _, p in got] == list(range(9))
    np.testing.assert_allclose(np.stack([w for w, _ in got]), _offline_triangular(lat.astype(np.float64), r), atol=1e-6)


def test_latent_window_restarts_after_a_flush():
    win = video.LatentWindow(1)
    a, b = np.zeros((1, 512), np.float32), np.ones((1, 512), np.float32)
    out = win.push(a, 0) + win.flush() + win.push(b, 1) + win.flush()
    np.testing.assert_array_equal(out[0][0], a)  # not averaged with b across the gap
    np.testing.assert_array_equal(out[1][0], b)


def test_latent_window_refuses_a_bad_radius():
    with pytest.raises(InputError):
        video.LatentWindow(-1)


# --- landmark smoothing (alignment) --------------------------------------------------------------------------


def _face_lm(cx, cy):
    lm = np.zeros((68, 2))
    lm[:] = (cx, cy + 20)
    lm[36:42], lm[42:48] = (cx - 20, cy), (cx + 20, cy)
    lm[48], lm[54] = (cx - 15, cy + 40), (cx + 15, cy + 40)
    return lm


def test_smoothed_aligner_averages_landmarks_and_restarts_after_a_miss():
    pytest.importorskip("scipy")
    rng = np.random.default_rng(0)
    seen = []
    noisy = [_face_lm(60, 50) + rng.normal(0, 2, (68, 2)) for _ in range(40)]
    feed = iter(noisy[:20] + [None] + noisy[20:])

    def landmarks(frame):
        lm = next(feed)
        return lm

    import restyle_rt.align.ffhq as ffhq

    real = ffhq.align
    al = video.SmoothedAligner(landmarks, output_size=32, smooth=0.25)
    try:
        ffhq.align = lambda img, lm, o, t: seen.append(np.array(lm)) or real(img, lm, o, t)
        frame = _frames(1, 128, 128)[0]
        outs = [al(frame) for _ in range(41)]
    finally:
        ffhq.align = real
    assert outs[20] is None and all(o.shape == (32, 32, 3) for i, o in enumerate(outs) if i != 20)
    np.testing.assert_array_equal(seen[0], noisy[0])
    np.testing.assert_array_equal(seen[20], noisy[20])  # restarted after the miss
    raw_jitter = np.std([n[36:42].mean(0) for n in noisy[5:20]], axis=0).mean()
    smooth_jitter = np.std([s[36:42].mean(0) for s in seen[5:20]], axis=0).mean()
    assert smooth_jitter < 0.6 * raw_jitter, (smooth_jitter, raw_jitter)  # EMA 0.25: variance x 1/7


# --- the pipeline on the toy --------------------------------------------------------------------------------


def test_invert_frames_skips_frames_without_a_face_and_restarts_cold(inv):
    frames = _frames(7, 16, 16)
    no_face = {2, 3}
    it = iter(range(7))

    def aligner(frame):
        return None if next(it) in no_face else frame

    rep = video.VideoReport()
    s = video.VideoSettings(iters=3, iters_next=1, smooth=1, aligner=aligner)
    out = list(video.invert_frames(inv, frames, s, rep))
    assert [r.index for r in out] == [0, 1, 4, 5, 6] and rep.skipped == [2, 3]
    assert [r.cold for r in out] == [True, False, True, False, False]
    assert [r.steps for r in out] == [3, 1, 3, 1, 1]
    assert all(r.frame.shape == (24, 24, 3) for r in out)


def test_side_by_side_and_edit_panels(inv, be):
    frames = _frames(2, 16, 16)
    d = np.random.default_rng(1).normal(size=(4, 512)).astype(np.float32)
    s = video.VideoSettings(iters=2, iters_next=1, edit=d, side_by_side=True)
    out = list(video.invert_frames(inv, frames, s))
    f = out[0].frame
    assert f.shape == (24, 72, 3)
    recon = io.to_uint8(be.synthesize(out[0].latent[None])[0][0])
    edit = io.to_uint8(be.synthesize((out[0].latent + d)[None])[0][0])
    np.testing.assert_array_equal(f[:, 24:48], recon)
    np.testing.assert_array_equal(f[:, 48:], edit)
    np.testing.assert_array_equal(f[:, :24], io.resize_for_display(frames[0], (24, 24)))


def test_defaults_restated_in_the_cli_module():
    assert (video_cli.DEFAULT_ITERS, video_cli.DEFAULT_ITERS_NEXT, video_cli.DEFAULT_ALIGN_SMOOTH) == (
        video.DEFAULT_ITERS,
        video.DEFAULT_ITERS_NEXT,
        video.DEFAULT_ALIGN_SMOOTH,
    )


# --- bad input: clear errors, nothing written ---------------------------------------------------------------


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    write_video(d / "ok.mp4", _frames(30), fps=15)
    data = (d / "ok.mp4").read_bytes()
    (d / "cut70.mp4").write_bytes(data[: _packet_start(d / "ok.mp4", 20)])  # ends cleanly before packet 20
    (d / "cut50.mp4").write_bytes(data[: len(data) // 2])  # ends inside a packet
    (d / "text.mp4").write_text("not a video\n")
    # a size change mid-stream: two MPEG-TS segments (a concatenable container) of different sizes
    _ts(d / "a.ts", _frames(5, 32, 48))
    _ts(d / "b.ts", _frames(5, 16, 16))
    (d / "sizes.ts").write_bytes((d / "a.ts").read_bytes() + (d / "b.ts").read_bytes())
    return d


def _packet_start(path, k):
    """Byte offset of packet ``k`` (decode order) in the file: a cut there leaves whole packets only."""
    import av

    with av.open(str(path)) as c:
        return [p.pos for p in c.demux(video=0) if p.pos is not None][k]


def _ts(path, frames):
    from fractions import Fraction

    import av

    with av.open(str(path), "w", format="mpegts") as out:
        s = out.add_stream("libx264", rate=Fraction(15))
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for f in frames:
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(s.encode(None))


@pytest.mark.parametrize(
    "name,msg",
    [
        ("text.mp4", "not a video FFmpeg can read"),
        ("cut70.mp4", "frames the container declares; the file is truncated or damaged"),
        ("cut50.mp4", "cannot decode"),
        ("sizes.ts", "frame 5 is 16x16, the clip started at 48x32; a size change mid-stream is not supported"),
        ("missing.mp4", "no such video file"),
    ],
)
def test_bad_clips_are_refused_and_nothing_is_written(toy, clips, tmp_path, capsys, name, msg):
    d, _ = toy
    out = tmp_path / "out"
    out.mkdir()
    rc = main(
        [
            "video",
            str(d),
            str(clips / name),
            "--out",
            str(out / "v.mp4"),
            "--iters",
            "2",
            "--iters-next",
            "1",
            "--backend",
            "ort",
            "--no-progress",
        ]
    )
    assert rc == EXIT_USAGE
    assert msg in capsys.readouterr().err
    assert _clean(out) == []  # no video, no latents, no temporaries


def test_an_interrupt_mid_clip_leaves_nothing(toy, clips, tmp_path):
    d, _ = toy
    n = iter(range(100))

    def aligner(frame):
        if next(n) == 5:
            raise KeyboardInterrupt
        return frame

    with Inverter.load(d, backend="ort") as inv2, pytest.raises(KeyboardInterrupt):
        video.invert_video(
            inv2,
            clips / "ok.mp4",
            tmp_path / "v.mp4",
            video.VideoSettings(aligner=aligner),
            latents=tmp_path / "v.latents.npy",
            progress=False,
        )
    assert _clean(tmp_path) == []


# --- the CLI end to end ----------------------------------------------------------------------------------------


def test_cli_writes_the_clip_and_its_latents(toy, clips, tmp_path, capsys):
    d, _ = toy
    np.save(tmp_path / "dir.npy", np.ones((1, 512), np.float32) * 0.01)
    rc = main(
        [
            "video",
            str(d),
            str(clips / "ok.mp4"),
            "--out",
            str(tmp_path / "v.avi"),
            "--iters",
            "3",
            "--iters-next",
            "1",
            "--smooth",
            "1",
            "--direction",
            str(tmp_path / "dir.npy"),
            "--factor",
            "2",
            "--side-by-side",
            "--backend",
            "ort",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == EXIT_OK, err
    assert "wrote 30 of 30 frames (15 fps)" in err and "29 frames warm-started" in err
    with VideoSource(tmp_path / "v.avi") as src:
        got = list(src)
        assert (len(got), src.size, float(src.fps)) == (30, (72, 24), 15.0)
    lat = np.load(tmp_path / "v.latents.npy")
    meta = json.loads((tmp_path / "v.latents.json").read_text())
    assert lat.shape == (30, 4, 512) and np.isfinite(lat).all()
    assert meta["frames"] == list(range(30)) and meta["steps_used"] == [3] + [1] * 29 and meta["skipped"] == []
    assert meta["settings"]["smooth"] == 1 and meta["settings"]["edited"]


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--out", "{t}/v.gif"], "use a .mp4 or .avi file name"),
        (["--out", "{t}/v.mp4", "--factor", "2"], "--factor needs a --direction"),
        (["--out", "{t}/v.mp4", "--direction", "{t}/d.npy"], "--direction needs a --factor"),
        (["--out", "{t}/v.mp4", "--latents-out", "{t}/l.txt"], "use a .npy file name"),
        (["--out", "{clip}"], "would overwrite the input"),
        (["--out", "{t}/v.mp4", "--fps", "0"], "--fps must be > 0"),
    ],
)
def test_cli_refuses_bad_arguments_before_loading(toy, clips, tmp_path, capsys, args, msg):
    d, _ = toy
    clip = tmp_path / "in.mp4"
    clip.write_bytes((clips / "ok.mp4").read_bytes())
    args = [a.format(t=tmp_path, clip=clip) for a in args]
    assert main(["video", str(d), str(clip)] + args) in (EXIT_USAGE, 3)
    assert msg in capsys.readouterr().err
    assert _clean(tmp_path) == ["in.mp4"]


def test_cli_align_without_any_face_is_an_error_and_writes_nothing(toy, clips, tmp_path, capsys):
    pytest.importorskip("dlib")
    pytest.importorskip("scipy")
    from restyle_rt.align.landmarks import default_predictor_path

    try:
        default_predictor_path()
    except Exception:
        pytest.skip("face_recognition_models not installed")
    d, _ = toy
    rc = main(
        [
            "video",
            str(d),
            str(clips / "ok.mp4"),
            "--out",
            str(tmp_path / "v.mp4"),
            "--align",
            "--backend",
            "ort",
            "--no-progress",
        ]
    )
    assert rc == EXIT_USAGE
    assert "no frame to write: no face found in all 30 frames" in capsys.readouterr().err
    assert _clean(tmp_path) == []


def test_cli_exit_1_when_frames_were_skipped(toy, clips, tmp_path, capsys, monkeypatch):
    d, _ = toy
    n = iter(range(100))

    class Fake:
        def __init__(self, smooth):
            pass

        def __call__(self, frame):
            return None if next(n) in (0, 7) else frame

    monkeypatch.setattr(video, "SmoothedAligner", Fake)
    rc = main(
        [
            "video",
            str(d),
            str(clips / "ok.mp4"),
            "--out",
            str(tmp_path / "v.mp4"),
            "--align",
            "--iters",
            "2",
            "--iters-next",
            "1",
            "--backend",
            "ort",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == EXIT_SKIPPED, err
    assert "skipped 2 frame(s): 0 (no face found), 7 (no face found)" in err
    meta = json.loads((tmp_path / "v.latents.json").read_text())
    assert meta["skipped"] == [0, 7] and len(meta["frames"]) == 28
    assert meta["steps_used"][:8] == [2, 1, 1, 1, 1, 1, 2, 1]  # cold at the first frame and after the miss
    assert os.path.getsize(tmp_path / "v.mp4") > 0


def test_a_non_finite_frame_is_skipped_and_the_next_starts_cold(be):
    """A frame whose inversion is NaN/Inf is skipped (named) and never becomes the next frame's warm start."""

    from restyle_rt.runtime.backend import Backend

    class NanOnWhite(Backend):
        name = "nan-on-white"

        def __init__(self, inner):
            super().__init__(inner.artifacts)
            self.inner = inner

        @classmethod
        def available(cls):
            return True, ""

        def encode(self, image, feedback, latent):
            out = self.inner.encode(image, feedback, latent)
            return out * np.float32(np.nan) if image.min() > 0.99 else out

        def synthesize(self, latent):
            return self.inner.synthesize(latent)

    frames = _frames(5, 16, 16)
    frames[2] = np.full_like(frames[2], 255)
    rep = video.VideoReport()
    s = video.VideoSettings(iters=2, iters_next=1)
    out = list(video.invert_frames(Inverter(be.artifacts, NanOnWhite(be)), frames, s, rep))
    assert [r.index for r in out] == [0, 1, 3, 4] and [r.cold for r in out] == [True, False, True, False]
    assert rep.reasons == {2: "the inversion is not finite (NaN/Inf)"}
    assert all(np.isfinite(r.latent).all() for r in out)


def test_early_exit_applies_per_frame(inv):
    """--early-exit stops each frame's own loop (cold or warm) once its update is below the threshold."""
    frames = _frames(4, 16, 16)
    out = list(video.invert_frames(inv, frames, video.VideoSettings(iters=4, iters_next=3, early_exit=1e9)))
    assert [r.steps for r in out] == [1, 1, 1, 1]
    out = list(video.invert_frames(inv, frames, video.VideoSettings(iters=4, iters_next=3, early_exit=0.0)))
    assert [r.steps for r in out] == [4, 3, 3, 3]
