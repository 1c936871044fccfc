"""Artifacts integrity at load: tampered graphs, weight files and seeds are refused (sha256 from the manifest,
checked by default, cached by stat), NaN seeds are refused, and ``--no-verify`` / ``verify=False`` opt out."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest

from restyle_rt import artifacts
from restyle_rt.cli import main
from restyle_rt.errors import ArtifactError
from restyle_rt.runtime.api import Inverter

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTYLE_RT_CACHE", str(tmp_path / "cache"))


def hashed_toy(make_toy):
    """A toy artifacts dir as export writes it: encoder weights in encoder.onnx.data, every file hashed."""
    d, ref = make_toy("hashed")
    enc = onnx.load(str(d / "encoder.onnx"))
    onnx.save_model(
        enc,
        str(d / "encoder.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="encoder.onnx.data",
        size_threshold=1024,
    )
    man = json.loads((d / artifacts.MANIFEST).read_text())
    for g in ("encoder", "synthesis"):
        man["graphs"][g]["sha256"] = artifacts.sha256_file(d / f"{g}.onnx")
    man["graphs"]["encoder"].update(
        data_file="encoder.onnx.data", data_sha256=artifacts.sha256_file(d / "encoder.onnx.data")
    )
    man["seeds"] = artifacts.seed_records(d)
    artifacts.write_manifest(d, man)
    return d, ref


def flip(path, n=64, offset=None):
    """Flip ``n`` bytes of ``path`` in place (same size)."""
    data = bytearray(path.read_bytes())
    start = len(data) // 2 if offset is None else offset
    for i in range(start, min(start + n, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_untouched_export_loads(make_toy):
    d, _ = hashed_toy(make_toy)
    art = artifacts.load(d)
    assert art.manifest.seeds["latent_avg"].file == artifacts.LATENT_AVG


@pytest.mark.parametrize(
    "victim", ["encoder.onnx", "encoder.onnx.data", "synthesis.onnx", "latent_avg.npy", "avg_feedback.npy"]
)
def test_tampered_file_is_refused_at_load(make_toy, victim, capfd, rgb_images, tmp_path):
    d, _ = hashed_toy(make_toy)
    artifacts.load(d)  # verified (and remembered) before the change
    target = d / victim
    flip(target, offset=len(target.read_bytes()) - 80)  # inside the data, past any header
    with pytest.raises(ArtifactError, match=rf"{victim}: sha256 .* differs from the manifest"):
        Inverter.load(d, backend="ort")
    img = rgb_images(1)[0]
    rc = main(["invert", str(d), str(img), "--out", str(tmp_path / "o")])
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("restyle-rt invert: error: ") and "--no-verify" in err[-1]
    assert not list((tmp_path / "o").glob("*.png"))


def test_tampered_weights_load_with_opt_out(make_toy, rgb_images):
    d, _ = hashed_toy(make_toy)
    flip(d / "encoder.onnx.data", offset=200)
    with Inverter.load(d, backend="ort", verify=False) as inv:  # the user asked for it
        assert inv.invert(rgb_images(1), n_iters=1).latents.shape[0] == 1


def test_verification_is_cached_by_stat_and_an_edit_in_place_is_still_caught(make_toy, monkeypatch):
    d, _ = hashed_toy(make_toy)
    calls = []
    real = artifacts.sha256_file
    monkeypatch.setattr(artifacts, "sha256_file", lambda p, *a: calls.append(p) or real(p, *a))
    artifacts.load(d)
    first = len(calls)
    assert first == 5  # 2 graphs + 1 weight file + 2 seeds
    artifacts.load(d)
    assert len(calls) == first  # all remembered
    victim = d / "encoder.onnx.data"
    st = victim.stat()
    flip(victim, offset=100)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: only ctime tells
    with pytest.raises(ArtifactError, match="differs from the manifest"):
        artifacts.load(d)


def test_nan_seed_is_refused_even_without_hashes(make_toy):
    d, _ = make_toy("nan")  # the toy manifest records no hashes
    lat = np.load(d / artifacts.LATENT_AVG)
    lat[1, 7] = np.nan
    np.save(d / artifacts.LATENT_AVG, lat)
    with pytest.raises(ArtifactError, match=r"latent_avg.npy: 1 of 2048 values are NaN or Inf"):
        artifacts.load(d)
    fb = np.load(d / artifacts.AVG_FEEDBACK)
    np.save(d / artifacts.LATENT_AVG, np.nan_to_num(lat))
    fb[0, 0, 0] = np.inf
    np.save(d / artifacts.AVG_FEEDBACK, fb)
    with pytest.raises(ArtifactError, match="avg_feedback.npy: 1 of .* NaN or Inf"):
        artifacts.load(d, check_hashes=False)


@pytest.mark.parity  # shares the parity tests' cached export
def test_exported_manifest_hashes_every_file():
    """The real exporter records a sha256 for both graphs, both weight files and both seeds."""
    pytest.importorskip("torch")
    from model_fixtures import artifacts_path

    d = artifacts_path("psp-irse50-ffhq")
    man = json.loads((d / artifacts.MANIFEST).read_text())
    for g in ("encoder", "synthesis"):
        assert man["graphs"][g]["sha256"] == artifacts.sha256_file(d / man["graphs"][g]["file"])
        assert man["graphs"][g]["data_sha256"] == artifacts.sha256_file(d / man["graphs"][g]["data_file"])
    assert man["seeds"] == artifacts.seed_records(d)
