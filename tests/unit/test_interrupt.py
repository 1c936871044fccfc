"""SIGINT / SIGTERM sent to a real ``restyle-rt invert`` process: only complete files on disk, latents.npy for
every image that finished, exit 130 / 143; a rerun with --resume skips the finished images and completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restyle_rt import fsio

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
N_IMAGES, ITERS = 60, 8


def _cmd(art, imgs, out, *extra):
    return [
        sys.executable,
        "-m",
        "restyle_rt.cli",
        "invert",
        str(art),
        str(imgs),
        "--out",
        str(out),
        "--iters",
        str(ITERS),
        "--batch",
        "1",
        "--save-steps",
        "--save-latents",
        "--no-verify",
        *extra,
    ]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _interrupt(art, imgs, out, sig):
    """Start invert, wait until a few images are complete, send ``sig``; returns (returncode, stderr)."""
    # a test run in the background (nohup, `&` in a script) inherits SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: give the child the default disposition, as an interactive shell would
    proc = subprocess.Popen(
        _cmd(art, imgs, out),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    kept = out / ".restyle-rt" / "latents"  # one file per finished image
    while time.monotonic() < deadline and proc.poll() is None and len(list(kept.glob("*.npz"))) < 3:
        time.sleep(0.02)
    assert proc.poll() is None, "invert finished (or died) before it could be interrupted: " + proc.stderr.read()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def _check_disk(out):
    """Every file complete; latents.npy lists exactly the complete images (all PNGs and their latents)."""
    assert not [p for p in out.rglob("*") if p.name.startswith(fsio.TMP_PREFIX)]
    for p in out.rglob("*.png"):
        with Image.open(p) as im:
            im.load()
    index = json.loads((out / "latents.json").read_text())
    lat = np.load(out / "latents.npy")
    assert lat.shape == (len(index["inputs"]), ITERS, 4, 512) and np.isfinite(lat).all()
    # an image is complete once its latents are kept (written last); an image interrupted between its PNGs and
    # its latents is redone by --resume
    kept = sorted(p.stem for p in (out / ".restyle-rt" / "latents").glob("*.npz"))
    assert index["inputs"] == kept
    for n in kept:
        assert all((out / "steps" / str(t) / f"{n}.png").is_file() for t in range(1, ITERS + 1))
        assert (out / f"{n}.png").is_file()
    return kept


@pytest.fixture
def many_images(rgb_images):
    return rgb_images(N_IMAGES, folder="many", size=(24, 20))[0].parent


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_leaves_complete_files_and_latents_then_resume(toy, many_images, tmp_path, sig, code):
    out = tmp_path / "out"
    rc, err = _interrupt(toy[0], many_images, out, sig)
    assert rc == code, err
    assert "Traceback" not in err and ("interrupted" in err or "terminated" in err)
    done = _check_disk(out)
    assert 3 <= len(done) < N_IMAGES
    if sig != signal.SIGINT:
        return
    r = subprocess.run(
        _cmd(toy[0], many_images, out, "--resume"), env=_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert r.returncode == 0, r.stderr
    assert f"{N_IMAGES - len(done)} image(s) (0 skipped, {len(done)} already complete)" in r.stderr
    assert len(_check_disk(out)) == N_IMAGES
