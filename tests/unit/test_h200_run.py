"""benchmarks/gpu/h200_run.py on the CPU: pieces (split / stash / join / install), argument parsing, the report
writer, the ORT loop's CPU dry run on the toy artifacts, and clean refusals of the GPU subcommands without a GPU."""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu" / "h200_run.py"


def _load():
    spec = importlib.util.spec_from_file_location("h200_run", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["h200_run"] = mod
    spec.loader.exec_module(mod)
    return mod


H = _load()


def _no_gpu() -> bool:
    return not H.gpu_info().get("name")


needs_no_gpu = pytest.mark.skipif(not _no_gpu(), reason="checks the refusals of a machine without a GPU")


def _cli(*args, cwd=REPO, env=None):
    """Run the script in a child interpreter (as on the device machine)."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(path: Path, members: dict, bad_record: str = "") -> Path:
    """A minimal wheel with a correct RECORD (``bad_record``: a member whose RECORD hash is wrong)."""
    dist = "pkg-1.0.dist-info"
    members = {
        **members,
        f"{dist}/METADATA": b"Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n",
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    rows = [f"{n},{_record_hash(b'x' if n == bad_record else d)},{len(d)}" for n, d in members.items()]
    rows.append(f"{dist}/RECORD,,")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in members.items():
            zi = zipfile.ZipInfo(n)
            zi.external_attr = (0o755 if n.endswith(".so") else 0o644) << 16
            z.writestr(zi, d)
        z.writestr(f"{dist}/RECORD", "\n".join(rows) + "\n")
    return path


@pytest.fixture
def blobs(tmp_path):
    rng = np.random.default_rng(0)
    files = []
    for name, n in (("a.bin", 100_000), ("tiny.bin", 5), ("c.bin", 300_000)):
        p = tmp_path / "src" / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        files.append(p)
    return files


@pytest.fixture
def wheel(tmp_path):
    rng = np.random.default_rng(1)
    code = rng.integers(0, 8, 200_000, dtype=np.uint8).tobytes()  # compressible, like machine code
    return make_wheel(
        tmp_path / "pkg-1.0-py3-none-any.whl",
        {"pkg/__init__.py": b"VALUE = 42\n", "pkg/lib.so": code, "pkg/unused.so": code[:50_000]},
    )


# --- sizes and budget ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,n",
    [("58MiB", 58 << 20), ("58.5 MiB", int(58.5 * 2**20)), ("60MB", 60_000_000), ("1024", 1024), ("2KiB", 2048)],
)
def test_parse_size(text, n):
    assert H.parse_size(text) == n


@pytest.mark.parametrize("text", ["", "MiB", "-3", "0", "12 parsecs"])
def test_parse_size_refuses(text):
    with pytest.raises(argparse.ArgumentTypeError):
        H.parse_size(text)


def test_budget_counts_tree_and_carry(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("/.whl/\n")
    (repo / "tracked.txt").write_bytes(b"x" * 1000)
    subprocess.run(["git", "-C", str(repo), "add", "tracked.txt", ".gitignore"], check=True)
    (repo / "untracked.txt").write_bytes(b"y" * 500)
    (repo / ".whl").mkdir()
    (repo / ".whl" / "ignored.bin").write_bytes(b"z" * 700)
    assert H.tree_bytes(repo) == 1000 + 500 + len("/.whl/\n")  # ignored files do not travel unless carried
    big = repo / ".whl" / "big.bin"
    with open(big, "wb") as f:  # sparse: 65 MiB without using the disk
        f.truncate(65 << 20)
    ok = _cli("budget", "--repo", repo, "--carry", ".whl/ignored.bin")
    assert ok.returncode == 0 and "MiB left" in ok.stdout
    over = _cli("budget", "--repo", repo, "--carry", ".whl/big.bin")
    assert over.returncode == 2 and "over the call limit" in over.stderr


# --- pieces ------------------------------------------------------------------------------------------------------


def test_split_join_round_trip(tmp_path, blobs):
    m = H.split_files(blobs, tmp_path / "p", 64 * 1024)
    assert len(m["pieces"]) == -(-sum(b.stat().st_size for b in blobs) // (64 * 1024))
    assert all((tmp_path / "p" / p["file"]).stat().st_size <= 64 * 1024 for p in m["pieces"])
    assert [f["name"] for f in m["files"]] == ["a.bin", "tiny.bin", "c.bin"]
    assert m["files"][1]["pieces"] == ["part-002"]  # a 5-byte file inside one piece
    out = H.join_pieces(tmp_path / "p", tmp_path / "out")
    for src, rec in zip(blobs, out):
        assert rec["state"] == "joined"
        assert (tmp_path / "out" / src.name).read_bytes() == src.read_bytes()
        assert rec["sha256"] == H.sha256_path(src)
    one = H.join_pieces(tmp_path / "p", tmp_path / "single" / "c.bin", only=["c.bin"])
    assert one[0]["path"].endswith("single/c.bin")
    assert (tmp_path / "single" / "c.bin").read_bytes() == blobs[2].read_bytes()


def test_recut_keeps_the_stream(tmp_path, blobs, wheel):
    m = H.split_files([wheel, *blobs], tmp_path / "p", 64 * 1024, encoding="wheel-xz")
    m2 = H.main(["pieces", "recut", str(tmp_path / "p"), "--out", str(tmp_path / "q"), "--size", "150KiB"])
    assert m2 == 0
    q = json.loads((tmp_path / "q" / "pieces.json").read_text())
    assert q["stream_sha256"] == m["stream_sha256"] and len(q["pieces"]) < len(m["pieces"])
    got = H.join_pieces(tmp_path / "q", tmp_path / "out")
    assert [(tmp_path / "out" / b.name).read_bytes() for b in blobs] == [b.read_bytes() for b in blobs]
    assert got[0]["members_checked_against_record"] == 5


def test_split_refuses_a_used_directory(tmp_path, blobs):
    H.split_files(blobs[:1], tmp_path / "p", 1 << 20)
    with pytest.raises(H.PiecesError, match="already holds pieces"):
        H.split_files(blobs[:1], tmp_path / "p", 1 << 20)


def test_missing_piece_is_named(tmp_path, blobs):
    H.split_files(blobs, tmp_path / "p", 64 * 1024)
    (tmp_path / "p" / "part-003").unlink()
    with pytest.raises(H.PiecesError, match=r"c\.bin needs part-003 \(missing\)"):
        H.join_pieces(tmp_path / "p", tmp_path / "out")
    r = _cli("pieces", "join", tmp_path / "p", "--out", tmp_path / "out2")
    assert r.returncode == 2 and "part-003 (missing)" in r.stderr
    # what is complete can still be joined
    got = H.join_pieces(tmp_path / "p", tmp_path / "out3", complete_only=True)
    assert [g["state"] for g in got] == ["joined", "joined", "incomplete"] and got[2]["missing"] == ["part-003"]


def test_corrupt_piece_is_named(tmp_path, blobs):
    H.split_files(blobs, tmp_path / "p", 64 * 1024)
    part = tmp_path / "p" / "part-001"
    data = bytearray(part.read_bytes())
    data[10] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(H.PiecesError, match=r"part-001 \(corrupt \(sha256 differs\)\)"):
        H.join_pieces(tmp_path / "p", tmp_path / "out")
    with pytest.raises(H.PiecesError, match="corrupt"):  # even when only complete files are asked for
        H.join_pieces(tmp_path / "p", tmp_path / "out", complete_only=True)
    part.write_bytes(bytes(data[:-1]))
    with pytest.raises(H.PiecesError, match="corrupt .* bytes, expected"):
        H.join_pieces(tmp_path / "p", tmp_path / "out")


def test_join_refuses_a_foreign_manifest(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "pieces.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(H.PiecesError, match="format"):
        H.join_pieces(tmp_path / "p", tmp_path / "out")
    with pytest.raises(H.PiecesError, match="no pieces.json"):
        H.join_pieces(tmp_path / "nothing", tmp_path / "out")


def test_stash_over_calls_then_join(tmp_path, blobs):
    """Pieces arrive one call at a time; kept outside the tree, the files assemble once complete."""
    m = H.split_files(blobs, tmp_path / "all", 64 * 1024)
    parts = [p["file"] for p in m["pieces"]]
    keep = tmp_path / "kept"
    for k, names in enumerate([parts[:1], parts[1:3], parts[3:]]):
        carried = tmp_path / f"call{k}"
        carried.mkdir()
        shutil.copy(tmp_path / "all" / "pieces.json", carried)
        for n in names:
            shutil.copy(tmp_path / "all" / n, carried)
        status = H.stash_pieces(carried, keep)
    assert set(status.values()) == {"ok"}
    out = H.join_pieces(keep, tmp_path / "out")
    assert [(tmp_path / "out" / b.name).read_bytes() == b.read_bytes() for b in blobs] == [True] * 3
    assert not any(r.get("reused") for r in out)
    again = H.join_pieces(keep, tmp_path / "out")  # a later call: nothing decompressed again
    assert all(r["state"] == "joined" and r["reused"] for r in again)


def test_stash_refuses_another_split_and_corrupt_carry(tmp_path, blobs):
    H.split_files(blobs[:1], tmp_path / "one", 64 * 1024)
    H.split_files(blobs[2:], tmp_path / "two", 64 * 1024)
    H.stash_pieces(tmp_path / "one", tmp_path / "kept")
    with pytest.raises(H.PiecesError, match="another split"):
        H.stash_pieces(tmp_path / "two", tmp_path / "kept")
    (tmp_path / "two" / "part-001").write_bytes(b"garbage")
    with pytest.raises(H.PiecesError, match="carried pieces are corrupt: part-001"):
        H.stash_pieces(tmp_path / "two", tmp_path / "kept2")


def test_wheel_xz_round_trip_drops_and_checks_record(tmp_path, wheel):
    m = H.split_files([wheel], tmp_path / "p", 40 * 1024, encoding="wheel-xz", drop=["pkg/unused.so"])
    e = m["files"][0]
    assert e["encoding"] == "wheel-xz" and e["dropped"] == ["pkg/unused.so"] and e["size"] < wheel.stat().st_size
    assert e["source_sha256"] == H.sha256_path(wheel)
    rec = H.join_pieces(tmp_path / "p", tmp_path / "out")[0]
    assert rec["members_checked_against_record"] == 4  # all but RECORD and the dropped member
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(rec["path"]) as got:
        names = set(got.namelist())
        assert "pkg/unused.so" not in names and "pkg/unused.so" not in got.read("pkg-1.0.dist-info/RECORD").decode()
        for n in names - {"pkg-1.0.dist-info/RECORD"}:
            assert got.read(n) == src.read(n)
        assert got.getinfo("pkg/lib.so").external_attr >> 16 == 0o755


def test_wheel_xz_refuses_a_member_that_differs_from_record(tmp_path):
    bad = make_wheel(
        tmp_path / "bad-1.0-py3-none-any.whl", {"pkg/__init__.py": b"x = 1\n"}, bad_record="pkg/__init__.py"
    )
    H.split_files([bad], tmp_path / "p", 1 << 20, encoding="wheel-xz")
    with pytest.raises(H.PiecesError, match=r"pkg/__init__\.py: sha256 differs from RECORD"):
        H.join_pieces(tmp_path / "p", tmp_path / "out")


def test_stash_cli_joins_and_installs(tmp_path, wheel, blobs):
    """The one command each device call starts with: keep, assemble, pip install --no-deps into a target."""
    r = _cli(
        "pieces",
        "split",
        wheel,
        blobs[1],
        "--out",
        tmp_path / "p",
        "--size",
        "40KiB",
        "--encoding",
        "wheel-xz",
        "--drop",
        "pkg/unused.so",
    )
    assert r.returncode == 0, r.stderr
    site, rep = tmp_path / "site", tmp_path / "stash.json"
    r = _cli(
        "pieces",
        "stash",
        tmp_path / "p",
        "--into",
        tmp_path / "kept",
        "--join",
        tmp_path / "files",
        "--install",
        site,
        "--json",
        rep,
    )
    assert r.returncode == 0, r.stderr
    assert (site / "pkg" / "__init__.py").read_text() == "VALUE = 42\n" and not (site / "pkg" / "unused.so").exists()
    assert (tmp_path / "files" / "tiny.bin").read_bytes() == blobs[1].read_bytes()
    doc = json.loads(rep.read_text())
    assert doc["status"] == "ok" and set(doc["pieces"].values()) == {"ok"}
    again = _cli(
        "pieces", "stash", tmp_path / "p", "--into", tmp_path / "kept", "--join", tmp_path / "files", "--install", site
    )
    assert again.returncode == 0 and "installed" not in again.stdout  # installed once only


# --- parsing, reports, small helpers --------------------------------------------------------------------------------


def test_argument_parsing():
    p = H.build_parser()
    a = p.parse_args(["ort-loop", "--preset", "church-256", "--batch", "1,4,8", "--iters", "5", "--json", "o.json"])
    assert (a.batch, a.iters, a.precisions, a.modes) == ([1, 4, 8], 5, ["fp32", "fp16"], ["iobinding", "cuda-graph"])
    assert a.providers == "CUDAExecutionProvider,CPUExecutionProvider"
    a = p.parse_args(
        [
            "ort-loop",
            "--artifacts",
            "d",
            "--precisions",
            "fp32-notf32",
            "--modes",
            "cuda-graph",
            "--providers",
            "CPUExecutionProvider",
            "--parity-batch",
            "1",
        ]
    )
    assert (a.precisions, a.modes, a.parity_batch) == (["fp32-notf32"], ["cuda-graph"], [1])
    a = p.parse_args(["pieces", "split", "x.whl", "--out", "d", "--size", "60MiB"])
    assert a.size == 60 << 20 and a.encoding == "raw"
    a = p.parse_args(["sanitize", "--tools", "racecheck", "-k", "13x37x5x19", "--timeout", "90"])
    assert (a.tools, a.k, a.timeout, a.tests) == ("racecheck", "13x37x5x19", 90.0, list(H.SANITIZE_TESTS))
    a = p.parse_args(["rtx-probe", "eng", "--no-build-current"])
    assert a.build_current is False
    for bad in (
        ["ort-loop", "--preset", "church-256", "--batch", "0"],
        ["ort-loop", "--preset", "church-256", "--precisions", "bf16"],
        ["ort-loop", "--preset", "nope"],
        ["ort-loop", "--preset", "church-256", "--artifacts", "d"],
        ["pieces", "split", "x", "--out", "d", "--size", "lots"],
    ):
        with pytest.raises(SystemExit) as e:
            p.parse_args(bad)
        assert e.value.code == 2


def test_report_writer(tmp_path):
    rep = H.Report(tmp_path / "r" / "x.json", "ort-loop", ["ort-loop", "--preset", "church-256"])
    rep["rows"] = [{"p50_s": np.float32(0.5), "psnr": float("inf"), "n": np.int64(3), "bad": float("nan")}]
    rep.save()
    assert json.loads((tmp_path / "r" / "x.json").read_text())["status"] == "running"
    rep.finish("ok", "done")
    doc = json.loads((tmp_path / "r" / "x.json").read_text())  # strict JSON: no Infinity / NaN tokens
    assert doc["status"] == "ok" and doc["message"] == "done" and doc["seconds"] >= 0
    assert doc["rows"] == [{"p50_s": 0.5, "psnr": "inf", "n": 3, "bad": "nan"}]
    assert doc["command"].endswith("h200_run.py ort-loop --preset church-256")
    m = doc["machine"]
    assert {"python", "platform", "cpus", "gpu", "versions"} <= set(m) and "numpy" in m["versions"]


def test_export_commands_and_images(tmp_path):
    mk, ex = H.export_commands("ffhq-1024", tmp_path)
    assert mk[-4:] == ["make-checkpoint", str(tmp_path / "ffhq-1024" / "checkpoint.pt"), "--preset", "ffhq-1024"]
    assert ex[3:5] == ["export", str(tmp_path / "ffhq-1024" / "checkpoint.pt")] and "--no-progress" in ex
    x = H.make_images(3, (24, 40))
    assert x.shape == (3, 3, 24, 40) and x.dtype == np.float32 and x.flags.c_contiguous
    assert -1 <= x.min() < -0.3 and 0.3 < x.max() <= 1 and x.std() > 0.1
    assert not np.array_equal(x[0], x[1])


def test_step_parity_verdicts():
    from restyle_rt.runtime.backend import LoopResult

    rng = np.random.default_rng(0)
    lat, img = rng.standard_normal((2, 4, 512)).astype(np.float32), rng.uniform(-1, 1, (2, 3, 8, 8)).astype(np.float32)
    ref = LoopResult(lat, img, np.array([2, 2]), step_latents=[lat, lat], step_images=[img, img])
    got = LoopResult(lat, img, np.array([2, 2]), step_latents=[lat, lat * 1.01], step_images=[img, img + 0.05])
    rows = H.step_parity(got, ref, "ort-loop")
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["within"] and rows[0]["latent_rel_l2"] == 0
    assert not rows[1]["within"] and "rel-L2" in rows[1]["why"] and rows[1]["image_psnr_db"] < 35
    assert "within" not in H.step_parity(got, ref, None)[0]


def test_sanitizer_command_and_log_parsing(tmp_path):
    cmd = H.sanitizer_command("/cs", "racecheck", ["tests/kernels/test_gpu.py"], "13x37x5x19", tmp_path / "j.xml")
    assert (
        cmd[:3] == ["/cs", "--tool", "racecheck"] and str(H.SANITIZER_EXIT) in cmd and cmd[-2:] == ["-k", "13x37x5x19"]
    )
    assert cmd[cmd.index("--target-processes") + 1] == "application-only" and "pytest" in cmd
    log = "\n".join(
        [
            "========= COMPUTE-SANITIZER",
            "tests/kernels/test_gpu.py::test_fp32_matches_reference[conv3x3-1-13x37x5x19] PASSED [ 50%]",
            "tests/kernels/test_gpu.py::test_noise_modes[None] FAILED [100%]",
            "========= Invalid __global__ write of size 4 bytes",
            "=========     at modconv_kernel+0x1a0",
            "=========     by thread (3,0,0) in block (0,0,0)",
            "========= Invalid __global__ write of size 4 bytes",
            "========= ERROR SUMMARY: 2 errors",
            "========================= 1 failed, 1 passed in 12.34s =========================",
        ]
    )
    got = H.parse_sanitizer_log(log)
    assert got["errors"] == 2 and got["summaries"] == ["ERROR SUMMARY: 2 errors"]
    assert got["findings"] == ["Invalid __global__ write of size 4 bytes"]
    assert got["pytest"] == "1 failed, 1 passed" and got["tests"]["passed"] == 1 and got["tests"]["failed"] == 1
    race = H.parse_sanitizer_log("========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)")
    assert race["errors"] == 0 and race["summaries"][0].startswith("RACECHECK SUMMARY")


# --- the ORT loop's CPU dry run ---------------------------------------------------------------------------------------


def test_ort_loop_cpu_dry_run(toy, tmp_path):
    """Everything around the GPU: the product's bound loop and the fixed-address (CUDA-graph) loop, FP32 and the
    derived FP16 graphs, per-step parity against the CPU loop, timings, the report; in a child, without torch."""
    art, _ = toy
    out = tmp_path / "ort.json"
    r = _cli(
        "ort-loop",
        "--artifacts",
        art,
        "--providers",
        "CPUExecutionProvider",
        "--batch",
        "1,3",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--repeat",
        "2",
        "--precisions",
        "fp32,fp16",
        "--work",
        tmp_path / "work",
        "--json",
        out,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["status"] == "ok" and doc["dry_run_cpu"] and doc["torch_imported"] is False
    rows = doc["rows"]
    assert [(x["precision"], x["mode"], x["batch"]) for x in rows] == [
        (p, m, b) for m in ("iobinding", "cuda-graph") for p in ("fp32", "fp16") for b in (1, 3)
    ]
    for x in rows:
        steps = x["parity_vs_cpu_fp32"]
        assert [s["step"] for s in steps] == [1, 2, 3] and all(s["within"] and s["finite"] for s in steps)
        assert x["p50_s"] > 0 and x["images_per_s"] > 0 and x["n"] == 2 and x["cuda_graph"] is False
        assert x["session_providers"] == ["CPUExecutionProvider"]
        if x["precision"] == "fp32":  # same graphs, same provider: exact
            assert all(s["latent_rel_l2"] == 0 and s["image_rel_l2"] == 0 for s in steps)
        else:  # FP16 graphs: small, non-zero
            assert all(0 < s["latent_rel_l2"] < 1e-2 for s in steps)
    assert (tmp_path / "work" / art.name / "fp16" / "encoder.fp16.onnx").is_file()
    dp = doc["default_providers"]  # the product's own provider choice
    assert dp["session_providers"] == ["CPUExecutionProvider"] and all(s["within"] for s in dp["parity_vs_cpu_fp32"])
    assert "| fp16 | cuda-graph | 3 |" in r.stdout


def test_ort_loop_reuses_a_prepared_preset(toy, tmp_path):
    art, _ = toy
    shutil.copytree(art, tmp_path / "work" / "church-256" / "artifacts")
    out = tmp_path / "ort.json"
    assert (
        H.main(
            [
                "ort-loop",
                "--preset",
                "church-256",
                "--work",
                str(tmp_path / "work"),
                "--providers",
                "CPUExecutionProvider",
                "--batch",
                "2",
                "--iters",
                "2",
                "--warmup",
                "0",
                "--repeat",
                "1",
                "--precisions",
                "fp32",
                "--modes",
                "iobinding",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    assert doc["prepare"]["export"] == "reused" and doc["preset"] == "church-256" and len(doc["rows"]) == 1


def test_prepare_records_steps_and_derives_fp16(toy, tmp_path, monkeypatch):
    """prepare's flow with the export commands stood in for (the real ones need torch and minutes)."""
    copy = "import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2])"
    out = tmp_path / "work" / "church-256" / "artifacts"
    monkeypatch.setattr(
        H,
        "export_commands",
        lambda preset, work: [
            [sys.executable, "-c", "print('checkpoint made')"],
            [sys.executable, "-c", copy, str(toy[0]), str(out)],
        ],
    )
    rep = tmp_path / "prep.json"
    assert H.main(["prepare", "--preset", "church-256", "--work", str(tmp_path / "work"), "--json", str(rep)]) == 0
    rec = json.loads(rep.read_text())["presets"][0]
    assert [st["exit"] for st in rec["steps"]] == [0, 0] and rec["artifact_bytes"] > 0
    assert (tmp_path / "work" / "church-256" / "fp16" / "synthesis.fp16.onnx").is_file() and rec["fp16"]["bytes"] > 0
    again = H.prepare_preset("church-256", tmp_path / "work")  # reused, not redone
    assert again["export"] == "reused"
    monkeypatch.setattr(H, "export_commands", lambda preset, work: [[sys.executable, "-c", "raise SystemExit(3)"]])
    assert H.main(["prepare", "--preset", "ffhq-1024", "--work", str(tmp_path / "work"), "--json", str(rep)]) == 1
    doc = json.loads(rep.read_text())
    assert doc["status"] == "failed" and "exit 3" in doc["message"] and doc["presets"][0]["steps"][0]["exit"] == 3


def test_seed_guard_restores_written_seeds(toy):
    from restyle_rt.artifacts import load

    art = load(toy[0])
    g = H.SeedGuard(art)
    g.check()
    assert g.writes == 0
    before = art.latent_avg.copy()
    art.latent_avg += 1
    g.check()
    assert g.writes == 1 and np.array_equal(art.latent_avg, before)


# --- the GPU subcommands refuse cleanly here ----------------------------------------------------------------------


@needs_no_gpu
def test_ort_loop_refuses_without_cuda_ep(toy, tmp_path):
    out = tmp_path / "ort.json"
    r = _cli("ort-loop", "--artifacts", toy[0], "--json", out)
    assert r.returncode == 2
    assert "h200_run ort-loop:" in r.stderr
    assert "onnxruntime-gpu is not importable" in r.stderr or "no GPU" in r.stderr
    doc = json.loads(out.read_text())
    assert doc["status"] == "missing-prerequisite" and doc["message"] and "rows" not in doc


@needs_no_gpu
@pytest.mark.parametrize("args,needle", [(["rtx-probe", "ENGINES"], "no GPU"), (["sanitize"], "")])
def test_gpu_subcommands_refuse_without_gpu(tmp_path, args, needle):
    out = tmp_path / "r.json"
    r = _cli(*[str(tmp_path) if a == "ENGINES" else a for a in args], "--json", out)
    assert r.returncode == 2 and r.stderr.startswith(f"h200_run {args[0]}:") and needle in r.stderr
    doc = json.loads(out.read_text())
    assert doc["status"] == "missing-prerequisite" and doc["machine"]["gpu"] == {}


def test_sanitize_refuses_an_unknown_tool(tmp_path):
    r = _cli("sanitize", "--tools", "memcheck,leakcheckz")
    assert r.returncode == 2 and "unknown tool" in r.stderr


def test_env_report(tmp_path):
    out = tmp_path / "env.json"
    r = _cli("env", "--json", out, "--work", tmp_path / "w")
    assert r.returncode == 0
    doc = json.loads(out.read_text())
    assert doc["status"] == "ok" and "gpu" in doc["checks"] and doc["checks"]["work_free_gib"] > 0


def test_trt_logger_captures_tensorrt_rtx_messages():
    trt = pytest.importorskip("tensorrt_rtx_bindings")
    lines = []
    runtime = trt.Runtime(H._trt_logger(trt, lines))
    assert runtime.deserialize_cuda_engine(b"not an engine" * 8) is None
    assert any(line.startswith(("ERROR", "INTERNAL_ERROR")) for line in lines)


def test_rtx_engine_is_small(tmp_path):
    pytest.importorskip("tensorrt_rtx_bindings" if importlib.util.find_spec("tensorrt_rtx") is None else "tensorrt_rtx")
    out = tmp_path / "rtx-toy"
    assert H.main(["rtx-engine", str(out), "--precision", "fp32"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert {e["graph"] for e in m["engines"]} == {"encoder", "synthesis"}
    assert "9.0" not in m["engines"][0]["compute_capabilities"]  # what the H200 run probes
    assert H.path_bytes(out) < 4 << 20


# --- the call plan (benchmarks/gpu/h200_run.sh) ---------------------------------------------------------------------

SH = REPO / "benchmarks" / "gpu" / "h200_run.sh"


def test_call_plan_script_stages_and_runs_a_call_without_a_gpu(tmp_path, blobs, wheel):
    """stage puts piece N in cN and checks each call's 64 MiB budget; `call N` (no GPU here, no presets) keeps the
    piece, installs what is complete, starts the background jobs and leaves at most 8 well-named files in $OUT."""
    import re
    import time

    H.split_files([wheel, *blobs], tmp_path / "pieces", 200 * 1024, encoding="wheel-xz")
    env = {
        **os.environ,
        "H200_PIECES": str(tmp_path / "pieces"),
        "H200_STAGE": str(tmp_path / "stage"),
        "H200_RTX_TOY": str(tmp_path / "no-rtx"),
        "H200_WORK": str(tmp_path / "w"),
        "H200_PRESETS": "",
        "OUT": str(tmp_path / "out"),
    }
    assert subprocess.run(["bash", "-n", str(SH)]).returncode == 0
    plan = subprocess.run(["bash", str(SH), "plan"], capture_output=True, text=True, env=env)
    assert plan.returncode == 0 and "call 1: carries part-001" in plan.stdout, plan.stderr
    st = subprocess.run(["bash", str(SH), "stage"], capture_output=True, text=True, env=env)
    assert st.returncode == 0 and "MiB left" in st.stdout, st.stderr
    n = len(json.loads((tmp_path / "pieces" / "pieces.json").read_text())["pieces"])
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == sorted(f"c{k}" for k in range(1, n + 2))
    assert sorted(p.name for p in (tmp_path / "stage" / "c1").iterdir()) == ["part-001", "pieces.json"]
    assert sorted(p.name for p in (tmp_path / "stage" / f"c{n + 1}").iterdir()) == ["pieces.json"]
    nocall = subprocess.run(
        ["bash", str(SH), "call", "1"], capture_output=True, text=True, env={k: v for k, v in env.items() if k != "OUT"}
    )
    assert nocall.returncode == 2 and "device machine" in nocall.stderr
    (tmp_path / "out").mkdir()
    r = subprocess.run(["bash", str(SH), "call", "1"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "pending:" in r.stdout and (tmp_path / "w" / "pieces" / "part-001").is_file()
    deadline = time.time() + 60  # the background jobs end quickly here
    while not (tmp_path / "w" / "done" / "sanitize").exists() and time.time() < deadline:
        time.sleep(0.5)
    assert json.loads((tmp_path / "w" / "results" / "sanitize.json").read_text())["status"] == "missing-prerequisite"
    outs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert {"c1.log", "c1-stash.json", "c1-env.json"} <= set(outs) and len(outs) <= 8
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in outs)
