"""``restyle-rt bench``: JSON schema and consistency, markdown table, argument errors, presets, baselines.

Nothing here asserts on a timing: the toy graphs run in microseconds and the machine is shared.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re

import numpy as np
import pytest

from restyle_rt import fsio
from restyle_rt.bench import report, runner, targets
from restyle_rt.bench.presets import PRESET_NAMES, check_preset, preset_dir
from restyle_rt.cli import main
from restyle_rt.errors import InputError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def bench_doc(tmp_path_factory):
    """One bench run over the toy artifacts (ort only), with JSON, plot and memory; shared by the tests."""
    import toy_artifacts

    root = tmp_path_factory.mktemp("bench")
    art, _ = toy_artifacts.build(root / "art")
    out = root / "bench.json"
    rc = main(
        [
            "bench",
            str(art),
            "--backend",
            "ort",
            "--batch",
            "1,3",
            "--iters",
            "1,2",
            "--warmup",
            "1",
            "--repeat",
            "4",
            "--json",
            str(out),
            "--plot",
            str(root / "lat.png"),
            "--early-exit",
            "1e-9",
        ]
    )
    assert rc == 0
    return json.loads(out.read_text()), root


def test_json_schema_fields(bench_doc):
    doc, _ = bench_doc
    assert doc["schema"] == report.SCHEMA_VERSION
    for key in ("cpu_model", "logical_cpus", "load_avg", "threads", "versions"):
        assert key in doc["machine"]
    assert "onnxruntime" in doc["machine"]["versions"]
    assert doc["command"].startswith("restyle-rt bench ") and "--backend ort" in doc["command"]
    assert doc["source"]["graph_bytes"] > 0
    assert [(r["batch"], r["iters"]) for r in doc["results"]] == [(1, 1), (1, 2), (3, 1), (3, 2)]
    for r in doc["results"]:
        for f in report.REQUIRED_FIELDS:
            assert f in r, f
        assert r["backend"] == "ort" and r["kind"] == "runtime"
        assert set(r["stages"]) >= {"encoder", "synthesis", "copies", "glue"}
        assert r["peak_rss_mb"] > 0
        assert r["threads"]["intra_op"] == doc["machine"]["threads"]
        assert len(r["samples_s"]) == 4


def test_json_numbers_consistent(bench_doc):
    doc, _ = bench_doc
    for r in doc["results"]:
        b = r["batch"]
        assert math.isclose(r["images_per_s"], b / r["p50_s"], rel_tol=1e-9)
        assert math.isclose(r["p50_per_image_s"], r["p50_s"] / b, rel_tol=1e-9)
        assert r["p50_s"] <= r["p90_s"] <= r["p99_s"] <= max(r["samples_s"]) + 1e-12
        assert math.isclose(r["p50_s"], float(np.median(r["samples_s"])), rel_tol=1e-9)
        assert all(v >= 0 for v in r["stages"].values())
        # the loop's own stages never exceed the whole loop's mean time
        assert sum(r["stages"][k] for k in ("encoder", "synthesis", "copies")) <= r["mean_s"] * 1.0001
        assert len(r["steps_used"]) == b and 1 <= r["steps_used_mean"] <= r["iters"]


def test_plot_written(bench_doc):
    pytest.importorskip("matplotlib")
    _, root = bench_doc
    png = root / "lat.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_table(bench_doc):
    doc, _ = bench_doc
    res = [dict(r) for r in doc["results"]]
    res += [dict(r, backend="torch-official", p50_per_image_s=r["p50_per_image_s"] * 2) for r in res]
    md = report.markdown_table(res).splitlines()
    assert md[0].startswith("| backend | precision | batch | iters |") and "x vs torch-official" in md[0]
    assert len(md) == 2 + len(res)
    assert all(line.count("|") == md[0].count("|") for line in md)
    assert md[2].split("|")[1].strip() == "ort" and md[2].split("|")[-2].strip() == "1.00"  # steps used
    assert md[2].split("|")[-3].strip() == "2.00"  # speed-up vs the (fake) reference


def test_cli_prints_table(toy, capsys):
    art, _ = toy
    assert (
        main(
            [
                "bench",
                str(art),
                "--backend",
                "ort",
                "--batch",
                "2",
                "--iters",
                "1",
                "--repeat",
                "1",
                "--warmup",
                "0",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("| backend |") and "| ort | fp32 | 2 | 1 |" in out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--batch", "0"], "positive integers"),
        (["--batch", "1,x"], "comma-separated integers"),
        (["--iters", "-1"], "positive integers"),
        (["--repeat", "0"], "must be >= 1"),
    ],
)
def test_bad_grid_arguments(toy, capsys, argv, needle):
    art, _ = toy
    with pytest.raises(SystemExit) as e:
        main(["bench", str(art), *argv])
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_unknown_preset(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--preset", "ffhq-2048"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown preset 'ffhq-2048'" in err and "church-256" in err
    with pytest.raises(InputError, match="unknown preset"):
        check_preset("nope")


def test_source_required_and_exclusive(toy, capsys):
    with pytest.raises(SystemExit):
        main(["bench"])
    with pytest.raises(SystemExit):
        main(["bench", str(toy[0]), "--preset", "church-256"])
    assert "not allowed with" in capsys.readouterr().err


def test_unknown_backend(toy, capsys):
    art, _ = toy
    assert main(["bench", str(art), "--backend", "ort,onnx-magic", "--repeat", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown backend(s) onnx-magic" in err and "torch-official" in err


def test_baseline_needs_checkpoint(toy, capsys):
    assert main(["bench", str(toy[0]), "--backend", "torch-official"]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_batch_outside_profile(make_toy, capsys):
    art, _ = make_toy(profile=(1, 1, 2))
    assert main(["bench", str(art), "--backend", "ort", "--batch", "4", "--repeat", "1"]) == 2
    assert "batch profile" in capsys.readouterr().err


def test_default_backends_without_checkpoint():
    names = targets.resolve_backends(None, have_checkpoint=False)
    assert "ort" in names and not set(names) & set(targets.BASELINES)


def test_preset_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RESTYLE_RT_CACHE", str(tmp_path / "c"))
    assert fsio.cache_root() == tmp_path / "c"
    assert preset_dir("church-256") == tmp_path / "c" / "presets" / "church-256"
    assert set(PRESET_NAMES) == {"ffhq-1024", "cars-512", "church-256"}


def test_presets_match_fixtures():
    pytest.importorskip("torch")
    from restyle_rt.export.fixtures import PRESETS

    assert set(PRESETS) == set(PRESET_NAMES)


def test_synthetic_images_deterministic():
    a = runner.synthetic_images(2, (12, 16), seed=3)
    b = runner.synthetic_images(2, (12, 16), seed=3)
    assert a.shape == (2, 3, 12, 16) and a.dtype == np.float32
    assert np.array_equal(a, b) and a.min() >= -1 and a.max() <= 1 and a.std() > 0.1


def test_peak_rss_tracks_allocation():
    import mmap

    with runner.PeakRss() as m:
        # fresh anonymous pages: malloc could hand back memory that is already resident (freed by earlier tests)
        big = mmap.mmap(-1, 40 * 2**20)
        for off in range(0, len(big), 4096):
            big[off] = 1  # touch every page
        big.close()
    assert m.peak_mb >= m.start_mb + 30


def test_memory_ratio_fields(toy):
    from restyle_rt.bench import memory

    rec = memory.measure(toy[0], "ort", 2, 2, 1, precision="fp32")
    assert rec["weights_mb"] > 0 and rec["buffers_mb"] > 0 and rec["precision"] == "fp32"
    assert math.isclose(rec["ratio"], rec["runtime_peak_mb"] / (rec["weights_mb"] + rec["buffers_mb"]))


@pytest.mark.parity
def test_torch_baselines_run():
    """Both eager baselines on the smallest fixture checkpoint: same loop, stage split, no early exit."""
    pytest.importorskip("torch")
    import model_fixtures

    ckpt = model_fixtures.checkpoint_path("psp-resnet34-church")
    x = runner.synthetic_images(2, (256, 256))
    for name in targets.BASELINES:
        t = targets.TorchTarget(name, ckpt, threads=1)
        rec = runner.time_config(t, x, n_iters=2, warmup=0, repeat=1, early_exit=0.5)
        t.close()
        assert rec["steps_used"] == [2, 2] and rec["early_exit_applied"] is False
        assert rec["stages"]["encoder"] > 0 and rec["stages"]["synthesis"] > 0
        assert t.threads["intra_op"] == 1


def test_every_row_records_precision_and_accuracy(bench_doc):
    """Without a checkpoint the reference is ort FP32 itself: same inputs, same graphs, so agreement is exact."""
    doc, _ = bench_doc
    for r in doc["results"]:
        assert r["precision"] == "fp32"
        acc = r["accuracy"]
        assert acc["reference"] == "ort fp32"
        assert len(acc["latent_rel_l2"]) == len(acc["image_psnr_db"]) == r["iters"]
        assert max(acc["latent_rel_l2"]) <= 1e-6 and max(acc["image_rel_l2"]) <= 1e-6


def test_precision_plan():
    """Each target runs the listed precisions it supports (fp32 only without a precision option)."""
    assert targets.plan(["ort"], None) == [("ort", None)]
    assert targets.plan(["ort", "torch-official"], ["fp32", "bf16"]) == [("ort", "fp32"), ("torch-official", "fp32")]
    assert targets.plan(["ort", "torch-official"], ["fp32", "int8"]) == [
        ("ort", "fp32"),
        ("ort", "int8"),
        ("torch-official", "fp32"),
    ]
    with pytest.raises(InputError, match="takes no precision option and runs fp32 only"):
        targets.plan(["torch-official"], ["int8"])
    with pytest.raises(InputError, match=re.escape("'ort' runs fp32 | int8 | auto; got --precision bf16")):
        targets.plan(["ort"], ["bf16"])
    if "openvino" in targets.runtime_names() and targets.takes_precision("openvino"):
        assert targets.plan(["openvino", "ort"], ["fp32", "bf16"]) == [
            ("openvino", "fp32"),
            ("openvino", "bf16"),
            ("ort", "fp32"),
        ]


def test_precision_rejected_before_any_run(toy, capsys):
    art, _ = toy
    assert main(["bench", str(art), "--backend", "ort", "--precision", "bf16", "--repeat", "1"]) == 2
    assert "'ort' runs fp32 | int8 | auto; got --precision bf16" in capsys.readouterr().err


def test_accuracy_agreement_per_step():
    from restyle_rt.bench.accuracy import Steps, agreement

    ref = Steps("ref", [np.ones((1, 2, 512), np.float32)] * 2, [np.zeros((1, 3, 4, 4), np.float32)] * 2)
    got = Steps(
        "got",
        [np.ones((1, 2, 512), np.float32), np.full((1, 2, 512), 1.1, np.float32)],
        [np.zeros((1, 3, 4, 4), np.float32), np.full((1, 3, 4, 4), 0.02, np.float32)],
    )
    a = agreement(ref, got, 2)
    assert a["latent_rel_l2"][0] == 0 and a["latent_rel_l2"][1] == pytest.approx(0.1, rel=1e-5)
    assert a["image_psnr_db"][0] is None and a["image_psnr_db"][1] == pytest.approx(40.0, abs=1e-3)


def _mem_rec(backend="openvino", precision="bf16", batch=4):
    return {
        "backend": backend,
        "precision": precision,
        "batch": batch,
        "iters": 5,
        "threads": 2,
        "weights_mb": 1.5,
        "buffers_mb": 0.25,
        "rss_import_mb": 80.0,
        "rss_loaded_mb": 90.0,
        "peak_rss_mb": 120.0,
        "runtime_peak_mb": 40.0,
        "ratio": 22.86,
        "steps": 5,
    }


def test_memory_table_has_a_cell_under_every_header():
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in report.memory_table([_mem_rec(), _mem_rec("ort", "fp32", 1)]).splitlines()
    ]
    head, rule, body = rows[0], rows[1], rows[2:]
    assert len(rule) == len(head) == 10 and all(len(r) == len(head) for r in body)
    cells = [dict(zip(head, r)) for r in body]
    assert [(c["backend"], c["precision"], c["batch"], c["iters"]) for c in cells] == [
        ("openvino", "bf16", "4", "5"),
        ("ort", "fp32", "1", "5"),
    ]
    assert cells[0]["peak RSS MB"] == "120" and cells[0]["ratio to weights+buffers"] == "22.86"


def test_memory_runs_each_precision_of_each_backend(toy, monkeypatch):
    from restyle_rt.bench import memory

    calls = []
    monkeypatch.setattr(
        memory,
        "measure",
        lambda art, name, b, n, t, precision=None: calls.append((name, precision, b)) or _mem_rec(name, precision, b),
    )
    memory.measure_all(toy[0], ["ort", "torch-official", "openvino"], [1, 2], 1, 1, ["fp32", "bf16"])
    assert calls == [
        ("ort", "fp32", 1),
        ("ort", "fp32", 2),  # ort has no bf16: skipped, as the timing runs do
        ("openvino", "fp32", 1),
        ("openvino", "fp32", 2),
        ("openvino", "bf16", 1),
        ("openvino", "bf16", 2),
    ]  # (baselines are not the runtime: not measured)
    calls.clear()
    memory.measure_all(toy[0], ["ort"], [1], 1, 1)
    assert calls == [("ort", None, 1)]


def test_bench_cli_memory_precision_and_kept_ort_traces(toy, tmp_path, monkeypatch, capsys):
    from restyle_rt.bench import memory

    calls = []
    monkeypatch.setattr(
        memory,
        "measure",
        lambda art, name, b, n, t, precision=None: (
            calls.append((name, precision, b)) or _mem_rec(name, precision or "fp32", b)
        ),
    )
    out = tmp_path / "rep" / "b.json"
    assert (
        main(
            [
                "bench",
                str(toy[0]),
                "--backend",
                "ort",
                "--precision",
                "fp32",
                "--batch",
                "1",
                "--iters",
                "1",
                "--warmup",
                "0",
                "--repeat",
                "1",
                "--no-accuracy",
                "--memory",
                "--profile-ort",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    assert calls == [("ort", "fp32", 1)]  # --precision reaches the memory runs
    std = capsys.readouterr()
    assert "| ort | fp32 | 1 | 1 |" in std.out  # the memory table's precision column
    doc = json.loads(out.read_text())
    traces = doc["ort_profile"]["traces"]
    assert traces == {g: str(out.parent / f"b.ort-profile.{g}.json") for g in ("encoder", "synthesis")}
    for g, path in traces.items():
        events = json.loads(open(path).read())  # Chrome trace format (a list of events): Perfetto opens it
        assert any(e.get("cat") == "Node" for e in events), g
        assert path in std.err
    assert doc["memory"][0]["precision"] == "fp32"


def test_profile_traces_kept_without_a_report(toy):
    import shutil
    from pathlib import Path

    from restyle_rt.bench.profile import profile_ort

    prof = profile_ort(toy[0], 1, 1, 1)
    paths = [Path(p) for p in prof["traces"].values()]
    try:
        assert [p.name for p in paths] == ["ort-profile.encoder.json", "ort-profile.synthesis.json"]
        assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
        assert paths[0].parent.name.startswith("restyle-rt-ort-profile-")
    finally:
        shutil.rmtree(paths[0].parent, ignore_errors=True)


def test_pynvml_is_declared_by_the_bench_extra_and_stays_optional(monkeypatch):
    """``bench`` reads GPU memory through ``pynvml`` (nvidia-ml-py's module): declared, imported only when used."""
    import subprocess
    import sys
    from pathlib import Path

    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert any(r.startswith("nvidia-ml-py") for r in pyproject["project"]["optional-dependencies"]["bench"])
    code = "import sys, restyle_rt.bench.targets, restyle_rt.cli.bench; print('pynvml' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed: no number, no error
    assert targets._nvml_used_mb(0) is None


def test_agreement_against_known_truth_and_the_ship_bar():
    from restyle_rt.bench.accuracy import Steps, Truth, agreement
    from restyle_rt.parity import SHIP_TARGET_LOSS_DB as BAR_TARGET_LOSS_DB

    tgt = np.zeros((1, 3, 4, 4), np.float32)
    truth = Truth(tgt, np.zeros((1, 2, 512), np.float32))
    ref = Steps("ref", [np.full((1, 2, 512), 0.1, np.float32)], [np.full((1, 3, 4, 4), 0.02, np.float32)])
    # 0.02 off the target: 40 dB for the reference; a loop 0.0202 off loses 0.087 dB, 0.0206 off loses 0.26 dB
    near = Steps("near", [np.full((1, 2, 512), 0.1, np.float32)], [np.full((1, 3, 4, 4), 0.0202, np.float32)])
    far = Steps("far", [np.full((1, 2, 512), 0.2, np.float32)], [np.full((1, 3, 4, 4), 0.0206, np.float32)])
    a = agreement(ref, near, 1, truth)
    assert a["reference_target_psnr_db"][0] == pytest.approx(40.0, abs=1e-3)
    assert a["target_psnr_change_db"][0] == pytest.approx(-20 * np.log10(1.01), abs=1e-3)
    assert a["truth_latent_rms"][0] == pytest.approx(0.1, rel=1e-5)
    assert a["image_psnr_db"][0] == pytest.approx(80.0, abs=0.1)  # 2e-4 off the reference: far above 35 dB
    assert a["meets_bar"] is True
    b = agreement(ref, far, 1, truth)
    assert b["target_psnr_change_db"][0] < -BAR_TARGET_LOSS_DB and b["meets_bar"] is False
    assert b["reference_truth_latent_rms"][0] == pytest.approx(0.1, rel=1e-5)
    assert "meets_bar" not in agreement(ref, far, 1)  # random weights: no answer to lose


def test_bench_on_a_fitted_checkpoint_measures_against_the_truth(tmp_path, capsys):
    """A fitted checkpoint's bench inputs are images its generator drew from known latents; each result says how
    close its loop gets to them, relative to the FP32 reference, and the plot shows speed against accuracy."""
    pytest.importorskip("torch")
    from model_fixtures import fitted_artifacts_path, fitted_checkpoint_path

    art, ckpt = fitted_artifacts_path(), fitted_checkpoint_path()
    out = tmp_path / "b.json"
    argv = [
        "bench",
        str(art),
        "--checkpoint",
        str(ckpt),
        "--backend",
        "ort",
        "--batch",
        "2",
        "--iters",
        "3",
        "--repeat",
        "1",
        "--warmup",
        "0",
        "--json",
        str(out),
    ]
    if importlib.util.find_spec("matplotlib"):
        argv += ["--plot", str(tmp_path / "p.png")]
    assert main(argv) == 0
    acc = json.loads(out.read_text())["results"][0]["accuracy"]
    # the fitted loop converges: PSNR against the target rises and the latent error to the truth falls
    assert acc["target_psnr_db"][0] < acc["target_psnr_db"][1] < acc["target_psnr_db"][2]
    assert acc["truth_latent_rms"][0] > acc["truth_latent_rms"][1] > acc["truth_latent_rms"][2]
    assert abs(acc["target_psnr_change_db"][-1]) < 0.01 and acc["meets_bar"] is True  # ORT FP32 is FP32
    table = capsys.readouterr().out
    assert "PSNR vs target dB (last step)" in table and "| meets |" in table
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_fitted_applies_to_fittable_presets_only(tmp_path, monkeypatch, capsys):
    from restyle_rt.bench import presets

    monkeypatch.setenv("RESTYLE_RT_CACHE", str(tmp_path))
    assert presets.preset_dir("church-256", fitted=True).name == "church-256-fitted"
    assert presets.preset_dir("ffhq-1024", fitted=True).name == "ffhq-1024-fitted"
    assert main(["bench", "--preset", "cars-512", "--fitted", "--no-accuracy"]) == 2
    assert "cannot be fitted" in capsys.readouterr().err
    assert main(["bench", str(tmp_path), "--fitted"]) == 2
    assert "--fitted applies to --preset" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing built
