"""``restyle-rt video`` on the fitted 16 px fixture (a loop that converges), on a clip its own generator draws along a
smooth latent path (tests/video_clips.py): the warm start tracks the truth with fewer steps, and the command works
end to end. Needs torch (the true latents come from the checkpoint's mapping network).

Measured (6 frames between 2 key latents, latent step per frame RMS 0.065-0.106, "no move" = latent_avg's RMS
to the truth 0.19-0.31; latent RMS to the truth per frame, frame 0 cold 5 steps in every mode):
    cold 5 every frame: 0.0078 0.0064 0.0054 0.0055 0.0066 0.0075   (30 steps)
    warm 5 + 1:         0.0078 0.0249 0.0377 0.0436 0.0501 0.0509   (10 steps)
    warm 5 + 2:         0.0078 0.0111 0.0125 0.0159 0.0191 0.0193   (15 steps)
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("av", reason="video needs the [video] extra (PyAV)")
pytest.importorskip("torch")

from model_fixtures import fitted_artifacts_path, fitted_checkpoint_path  # noqa: E402
from video_clips import path_latents, render  # noqa: E402

from restyle_rt import Inverter  # noqa: E402
from restyle_rt.cli import main  # noqa: E402
from restyle_rt.runtime import io  # noqa: E402
from restyle_rt.workflows.animation import write_video  # noqa: E402
from restyle_rt.workflows.video import VideoSettings, invert_frames  # noqa: E402
from restyle_rt.workflows.videoio import VideoSource  # noqa: E402

pytestmark = pytest.mark.unit

N = 6


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """(artifacts, true latents [N, S, 512], drawn frames [N, 16, 16, 3], no-move error [N], clip path)."""
    art, ckpt = fitted_artifacts_path(), fitted_checkpoint_path()
    lat = path_latents(ckpt, N, 2, seed=7)
    with Inverter.load(art, backend="ort") as inv:
        frames = render(inv.backend, inv.profile, lat)
        no_move = np.sqrt(((lat - inv.artifacts.latent_avg[None]) ** 2).mean(axis=(1, 2)))
        hw = inv.spec.input_hw
    # upscaled to the encoder's input (as preprocess would) so that H.264's 4:2:0 chroma does not blur 16 px frames
    path = tmp_path_factory.mktemp("fitted-clip") / "clip.mp4"
    write_video(path, [io.resize_bilinear(f, hw) for f in frames], fps=24)
    return art, lat, frames, no_move, path


def _errors(w, lat):
    return np.sqrt(((w - lat) ** 2).mean(axis=(1, 2)))


def test_warm_start_tracks_the_truth_with_fewer_steps(clip):
    art, lat, frames, no_move, _ = clip
    with Inverter.load(art, backend="ort") as inv:
        runs = {n: list(invert_frames(inv, frames, VideoSettings(iters=5, iters_next=n))) for n in (1, 2)}
    e1, e2 = (_errors(np.stack([r.latent for r in runs[n]]), lat) for n in (1, 2))
    assert [r.steps for r in runs[2]] == [5] + [2] * (N - 1) and [r.cold for r in runs[2]] == [True] + [False] * 5
    assert e2[0] < 0.05 * no_move[0], (e2, no_move)  # the cold first frame: measured 0.025 x
    assert (e2 < 0.15 * no_move).all(), e2 / no_move  # every warm frame: measured <= 0.086 x, in 2 steps
    assert (e2[1:] < 0.7 * e1[1:]).all(), (e2, e1)  # a second step from the previous frame helps: measured <= 0.45 x


def test_cli_end_to_end(clip, tmp_path, capsys):
    art, lat, _, no_move, path = clip
    rc = main(
        [
            "video",
            str(art),
            str(path),
            "--out",
            str(tmp_path / "o.mp4"),
            "--iters-next",
            "2",
            "--side-by-side",
            "--backend",
            "ort",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    w = np.load(tmp_path / "o.latents.npy")
    e = _errors(w, lat)
    assert (e < 0.15 * no_move).all(), e / no_move  # through H.264 at 256 px: measured as without the codec
    meta = json.loads((tmp_path / "o.latents.json").read_text())
    assert meta["steps_used"] == [5] + [2] * (N - 1)
    with VideoSource(tmp_path / "o.mp4") as src:
        got = list(src)
    assert len(got) == N and got[0].shape == (16, 32, 3)  # [input, inversion]
