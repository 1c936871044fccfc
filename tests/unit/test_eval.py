"""`restyle-rt eval` and restyle_rt.workflows.evaluate on the cached fitted fixture (16 px pSp ResNet34 whose loop
converges; tests/unit/test_fit.py): images its generator draws from known latents are inverted and scored per
step. The fixture needs torch to be made; eval itself runs torch-free (checked in a subprocess)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("torch")

from model_fixtures import fitted_artifacts_path, fitted_checkpoint_path  # noqa: E402

from restyle_rt import metrics  # noqa: E402
from restyle_rt.cli import main  # noqa: E402
from restyle_rt.errors import EXIT_OK, EXIT_USAGE, InputError  # noqa: E402
from restyle_rt.runtime import io  # noqa: E402

pytestmark = pytest.mark.unit

N_IMAGES, N_ITERS, SEED = 3, 3, 424242  # held out from the fit's seeds (0, 1), as in test_fit.py
# Measured with `restyle-rt eval` (ort, seed 424242, 6 targets, 5 steps; AMD EPYC VM): mean latent RMS 0.300 (start)
# -> 0.098 0.054 0.032 0.021 0.015, PSNR 19.2 -> 31.3 37.9 43.0 46.8 49.3 dB, SSIM 0.656 -> 0.964 .. 0.9995, every
# image improving at every step. Here 3 targets and 3 steps (the encoder at 256 px is most of the time). Bounds: each
# step's latent error at most 0.85 x the previous one (test_fit.py's bar) and PSNR at least 1 dB above it, per image.
MAX_STEP_RATIO = 0.85
MIN_STEP_GAIN_DB = 1.0


@pytest.fixture(scope="module")
def inv(targets):
    from restyle_rt import Inverter

    with Inverter.load(targets[0], backend="ort") as inverter:
        yield inverter


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    from restyle_rt.export.fit import sample_targets

    art = fitted_artifacts_path()
    lat, imgs = sample_targets(fitted_checkpoint_path(), N_IMAGES, seed=SEED)
    root = tmp_path_factory.mktemp("eval")
    folder = root / "imgs"
    for i, im in enumerate(imgs):
        io.write_png(folder / f"t{i:02d}.png", im)
    np.save(root / "true.npy", lat)
    return art, folder, root / "true.npy", lat, imgs


def _run(argv, capfd):
    rc = main(argv)
    cap = capfd.readouterr()
    return rc, cap.out, cap.err


def test_eval_end_to_end(targets, tmp_path, capfd):
    art, folder, true, lat, _ = targets
    out = tmp_path / "out"
    rc, stdout, err = _run(
        [
            "eval",
            str(art),
            str(folder),
            "--true-latents",
            str(true),
            "--out",
            str(out),
            "--plot",
            "--backend",
            "ort",
            "--batch",
            "2",
            "--iters",
            str(N_ITERS),
        ],
        capfd,
    )
    assert rc == EXIT_OK, err
    assert "latent_rms" in stdout and "psnr_db" in stdout and "ms_ssim" in stdout
    assert "(start: latent_avg, no move)" in stdout and "MS-SSIM over 1 of 5 scales" in stdout
    assert "lpips: not computed" in stdout and "id_similarity: not computed" in stdout

    doc = json.loads((out / "eval.json").read_text())
    assert doc["steps"] == list(range(N_ITERS + 1)) and doc["n_images"] == N_IMAGES
    assert doc["compared_at_hw"] == [16, 16] and doc["ms_ssim_scales"] == 1
    assert doc["command"].startswith("restyle-rt eval ") and "--true-latents" in doc["command"]
    assert doc["machine"]["cpu"] and doc["machine"]["cpu_id"]
    assert set(doc["not_computed"]) == {"lpips", "id_similarity"}
    assert [im["name"] for im in doc["images"]] == [f"t{i:02d}" for i in range(N_IMAGES)]
    for im in doc["images"]:
        rms, psnr, ssim, ms = (np.array(im[k]) for k in ("latent_rms", "psnr_db", "ssim", "ms_ssim"))
        for t in range(N_ITERS):
            assert rms[t + 1] <= MAX_STEP_RATIO * rms[t], (im["name"], rms)
            assert psnr[t + 1] >= psnr[t] + MIN_STEP_GAIN_DB, (im["name"], psnr)
        assert np.all((ssim > 0) & (ssim <= 1)) and np.all((ms > 0) & (ms <= 1))
        assert np.array_equal(ssim, ms)  # 16 px: one scale, MS-SSIM is SSIM
    mean = doc["mean"]
    assert np.allclose(mean["psnr_db"], np.mean([im["psnr_db"] for im in doc["images"]], axis=0))
    assert np.all(np.diff(mean["latent_rms"]) < 0) and np.all(np.diff(mean["psnr_db"]) > 0)
    # step 0 is latent_avg: its error is the truth's distance from it
    avg = np.load(art / "latent_avg.npy").astype(np.float64)
    want0 = [np.sqrt(np.mean((avg - w.astype(np.float64)) ** 2)) for w in lat]
    assert np.allclose([im["latent_rms"][0] for im in doc["images"]], want0, rtol=1e-12)

    rows = list(csv.DictReader((out / "eval.csv").open()))
    assert len(rows) == (N_IMAGES + 1) * (N_ITERS + 1)
    assert list(rows[0]) == ["image", "step", "latent_rms", "psnr_db", "ssim", "ms_ssim"]
    means = [r for r in rows if r["image"] == "(mean)"]
    assert [float(r["psnr_db"]) for r in means] == pytest.approx(mean["psnr_db"], rel=1e-12)
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote eval.json, eval.csv, eval.png" in err


def test_library_on_arrays_matches_the_files(targets, inv):
    """evaluate() on uint8 arrays gives what it gives on the PNGs; one image by hand."""
    from restyle_rt.workflows.evaluate import evaluate

    _, folder, _, lat, imgs = targets
    a = evaluate(inv, list(imgs[:2]), 1, lat[:2])
    b = evaluate(inv, sorted(folder.glob("*.png"))[:2], 1, lat[:2])
    res = inv.invert(imgs[:2], n_iters=1)
    assert a.names == ["000", "001"] and b.names == ["t00", "t01"]
    for m in ("latent_rms", "psnr_db", "ssim", "ms_ssim"):
        assert np.allclose(getattr(a, m), getattr(b, m), rtol=1e-12, atol=0), m  # (SIMD sums: alignment)
    final = io.to_uint8(res.images[0])
    assert a.psnr_db[0, 1] == pytest.approx(metrics.psnr(final, imgs[0]), rel=1e-6)
    assert a.ssim[0, 1] == pytest.approx(metrics.ssim(final, imgs[0]), rel=1e-6)
    assert a.table().splitlines()[0].split() == ["step", "latent_rms", "psnr_db", "ssim", "ms_ssim"]


def test_inputs_are_resized_to_the_output_size(targets, inv):
    """A 40x40 input is compared with the 16 px inversion after Pillow's bilinear resize to 16x16."""
    from restyle_rt.workflows.evaluate import evaluate

    imgs = targets[4]
    big = io.resize_for_display(imgs[0], (40, 40))
    r = evaluate(inv, [big], 1)
    step1 = io.to_uint8(inv.invert([big], n_iters=1).images[0])
    assert r.compare_hw == (16, 16) and r.latent_rms is None
    assert r.psnr_db[0, 1] == pytest.approx(metrics.psnr(step1, io.resize_bilinear(big, (16, 16))), rel=1e-6)
    assert "latent_rms" not in r.table() and "latent_rms" not in r.csv_text().splitlines()[0]


def test_without_true_latents_and_out(targets, capfd):
    art, folder, *_ = targets
    rc, stdout, err = _run(["eval", str(art), str(folder / "t00.png"), "--iters", "1", "--backend", "ort"], capfd)
    assert rc == EXIT_OK, err
    lines = stdout.splitlines()
    header = next(ln for ln in lines if ln.startswith("step"))
    assert header.split() == ["step", "psnr_db", "ssim", "ms_ssim"]
    assert "lpips: not computed" in stdout and "wrote" not in err


@pytest.mark.parametrize(
    "case,needle",
    [
        ("missing", "no such file or directory"),
        ("empty_dir", "no images found"),
        ("corrupt", "not a readable image"),
        ("count", "3 latents for 2 image(s)"),
        ("styles", "[N, 6, 512]"),
        ("not_npy", "cannot be read as a .npy"),
        ("plot_no_out", "--plot writes DIR/eval.png"),
        ("iters", "--iters must be >= 1"),
    ],
)
def test_bad_inputs_are_usage_errors(targets, tmp_path, capfd, case, needle):
    art, folder, true, lat, _ = targets
    argv = ["eval", str(art), str(folder), "--backend", "ort", "--iters", "1"]
    if case == "missing":
        argv[2] = str(tmp_path / "nope")
    elif case == "empty_dir":
        (tmp_path / "empty").mkdir()
        argv[2] = str(tmp_path / "empty")
    elif case == "corrupt":
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"\x89PNG not really")
        argv[2:3] = [str(bad), str(folder)]  # first: it fails before any inversion
    elif case == "count":
        argv[2:3] = [str(p) for p in sorted(folder.glob("*.png"))[:2]]
        argv += ["--true-latents", str(true)]
    elif case == "styles":
        np.save(tmp_path / "s.npy", lat[:, :4])
        argv += ["--true-latents", str(tmp_path / "s.npy")]
    elif case == "not_npy":
        (tmp_path / "x.npy").write_text("no")
        argv += ["--true-latents", str(tmp_path / "x.npy")]
    elif case == "plot_no_out":
        argv.append("--plot")
    elif case == "iters":
        argv[-1] = "0"
    rc, _, err = _run(argv, capfd)
    lines = err.strip().splitlines()
    assert rc == EXIT_USAGE, err
    assert lines[-1].startswith("restyle-rt eval: error: ") and needle in lines[-1], lines[-1]


def test_plot_without_matplotlib_fails_before_any_model(targets, tmp_path, monkeypatch, capfd):
    from restyle_rt.runtime import api

    art, folder, *_ = targets
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(api.Inverter, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    rc, _, err = _run(["eval", str(art), str(folder), "--out", str(tmp_path / "o"), "--plot"], capfd)
    assert rc == EXIT_USAGE and "needs matplotlib" in err and "restyle-rt[bench]" in err
    assert not (tmp_path / "o").exists()


def test_earlier_outputs_are_not_inputs(targets, tmp_path, capfd):
    """--out inside the input folder: the eval.png of a first run is not read as an image by the second."""
    import shutil

    art, folder, _, lat, _ = targets
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    shutil.copy(folder / "t00.png", imgs / "t00.png")
    np.save(tmp_path / "true.npy", lat[:1])
    argv = [
        "eval",
        str(art),
        str(imgs),
        "--true-latents",
        str(tmp_path / "true.npy"),
        "--out",
        str(imgs / "res"),
        "--plot",
        "--iters",
        "1",
        "--backend",
        "ort",
    ]
    assert _run(argv, capfd)[0] == EXIT_OK
    assert (imgs / "res" / "eval.png").is_file()
    rc, _, err = _run(argv, capfd)
    assert rc == EXIT_OK, err  # one image still: the true latents' count matches
    assert json.loads((imgs / "res" / "eval.json").read_text())["n_images"] == 1


def test_library_errors(targets, inv):
    from restyle_rt.workflows.evaluate import evaluate

    _, _, _, lat, imgs = targets
    with pytest.raises(InputError, match="no images"):
        evaluate(inv, [], 1)
    with pytest.raises(InputError, match="n_iters"):
        evaluate(inv, list(imgs[:1]), 0)
    with pytest.raises(InputError, match="2 latents for 1"):
        evaluate(inv, list(imgs[:1]), 1, lat[:2])
    with pytest.raises(InputError, match="non-finite"):
        evaluate(inv, list(imgs[:1]), 1, np.full_like(lat[:1], np.nan))
    with pytest.raises(InputError, match=r"\[N, 6, 512\]"):
        evaluate(inv, list(imgs[:1]), 1, lat[:1, :5])
    with pytest.raises(InputError, match="uint8"):
        evaluate(inv, [imgs[0].astype(np.float32)], 1)


def test_eval_without_torch(targets, tmp_path):
    art, folder, _, lat, _ = targets
    true = tmp_path / "one.npy"
    np.save(true, lat[:1])
    code = f"""
        import json, sys
        sys.modules["torch"] = None
        from restyle_rt.cli import main
        rc = main(["eval", {str(art)!r}, {str(folder / "t00.png")!r}, "--true-latents", {str(true)!r}, "--iters", "1",
                   "--backend", "ort", "--out", {str(tmp_path / "o")!r}])
        print(json.dumps({{"rc": rc, "torch": sys.modules["torch"] is None}}))
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"rc": 0, "torch": True}
    assert (tmp_path / "o" / "eval.csv").is_file()
