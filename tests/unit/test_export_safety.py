"""``export`` never deletes what it did not write, checks its output before loading anything, refuses absurd
checkpoints before building a model; ``make-checkpoint`` only writes what ``export`` accepts."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from restyle_rt import artifacts
from restyle_rt.cli import main
from restyle_rt.errors import EXIT_OS, ArtifactError, OutputError

pytestmark = pytest.mark.unit


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """cwd = tmp/d holding a (fake) checkpoint and a user's file; the checks run before the file is read."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "small.pt").write_bytes(b"PK\x03\x04 not really a checkpoint")
    (d / "notes.txt").write_text("mine")
    monkeypatch.chdir(d)
    return d


def _intact(d):
    assert (d / "small.pt").read_bytes().startswith(b"PK") and (d / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("out", [".", "ABS_D", "..", "ABS_PARENT", ""])
def test_force_never_removes_cwd_input_or_parents(workdir, capfd, out):
    out = {"ABS_D": str(workdir), "ABS_PARENT": str(workdir.parent)}.get(out, out)
    rc = main(["export", "small.pt", "--out", out, "--force"])
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == EXIT_OS and len(err) == 1 and err[0].startswith("restyle-rt export: error: ")
    _intact(workdir)


def test_force_never_removes_a_directory_holding_the_input(workdir, tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main(["export", str(workdir / "small.pt"), "--out", str(workdir), "--force"])
    assert rc == EXIT_OS and "holds (or lies inside) the input" in capfd.readouterr().err
    _intact(workdir)


def test_force_only_replaces_previous_exports(workdir, tmp_path, capfd):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"x")
    rc = main(["export", "small.pt", "--out", str(other), "--force"])
    assert rc == EXIT_OS and "not a previous export" in capfd.readouterr().err
    assert (other / "a.jpg").read_bytes() == b"x"
    # without --force a non-empty directory is refused too
    assert main(["export", "small.pt", "--out", str(other)]) == 2


def test_staging_replaces_a_previous_export_and_follows_the_umask(tmp_path, monkeypatch):
    out = tmp_path / "art"
    out.mkdir()
    artifacts.write_manifest(out, {"format": artifacts.FORMAT, "format_version": 0})
    (out / "old.onnx").write_bytes(b"old")
    old = os.umask(0o022)
    try:
        with artifacts.staging_dir(out, overwrite=True) as tmp:
            (tmp / "new.onnx").write_bytes(b"new")
    finally:
        os.umask(old)
    assert sorted(p.name for p in out.iterdir()) == ["new.onnx"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o755  # mkdtemp alone gives 0o700
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing left aside


def test_a_failed_swap_puts_the_previous_export_back(tmp_path, monkeypatch):
    """Ctrl-C (or any error) between moving the previous export aside and renaming the new one in: ``out`` is the
    previous export again and nothing is left beside it."""
    out = tmp_path / "art"
    out.mkdir()
    artifacts.write_manifest(out, {"format": artifacts.FORMAT, "format_version": 0})
    (out / "old.onnx").write_bytes(b"old")
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the new export's rename into place
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(artifacts.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt), artifacts.staging_dir(out, overwrite=True) as tmp:
        (tmp / "new.onnx").write_bytes(b"new")
    assert [c[1] for c in calls] == ["prev", "art", "art"]
    assert (out / "old.onnx").read_bytes() == b"old" and not (out / "new.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


_HOLD = """
import os, signal, sys, time
from restyle_rt import fsio
sig = getattr(signal, sys.argv[1])
try:
    with fsio.signals_deferred():
        os.kill(os.getpid(), sig)
        time.sleep(0.05)
        print("the block finished", flush=True)
except KeyboardInterrupt:
    print("interrupted after it", flush=True)
print("handler restored", signal.getsignal(signal.SIGINT) is signal.default_int_handler, flush=True)
"""


@pytest.mark.parametrize(
    "name,rc,lines",
    [
        ("SIGINT", 0, ["the block finished", "interrupted after it", "handler restored True"]),
        ("SIGTERM", -15, ["the block finished"]),  # the default action (terminate), once the block is done
    ],
)
def test_signals_are_held_over_the_swap_and_delivered_after(name, rc, lines):
    """In a fresh interpreter: a real signal sent to the pytest process would also reach the native threads that
    earlier tests left running (it crashed a CI run)."""
    if not hasattr(signal, name) or os.name != "posix":
        pytest.skip(f"no {name} here")
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    r = subprocess.run([sys.executable, "-c", _HOLD, name], capture_output=True, text=True, timeout=120, env=env)
    assert (r.returncode, r.stdout.splitlines()) == (rc, lines), r.stderr


def test_staging_removes_its_temporary_directory_on_failure(tmp_path):
    with pytest.raises(RuntimeError), artifacts.staging_dir(tmp_path / "art") as tmp:
        (tmp / "half.onnx").write_bytes(b"x")
        raise RuntimeError("export failed")
    assert list(tmp_path.iterdir()) == []


def test_output_is_checked_before_the_checkpoint_is_loaded(tmp_path, capfd):
    blocker = tmp_path / "file"
    blocker.write_text("")
    ckpt = tmp_path / "small.pt"
    ckpt.write_bytes(b"garbage")  # would be a CheckpointError if it were read first
    rc = main(["export", str(ckpt), "--out", str(blocker / "art")])
    assert rc == EXIT_OS and "is not a directory" in capfd.readouterr().err


def test_library_checks_output_before_loading(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from restyle_rt.export import export_artifacts

    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match="current directory"):
        export_artifacts(tmp_path / "missing.pt", ".")  # OutputError, not "no such file"
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "y").write_text("")
    with pytest.raises(ArtifactError, match="not empty"):
        export_artifacts(tmp_path / "missing.pt", tmp_path / "x")


@pytest.mark.parametrize("argv", [["--max-batch", "0"], ["--max-batch", "-3"], ["--max-batch", "two"]])
def test_bad_max_batch_is_refused_at_parse_time(tmp_path, capfd, argv):
    with pytest.raises(SystemExit) as e:
        main(["export", "x.pt", "--out", str(tmp_path / "a"), *argv])
    assert e.value.code == 2 and "--max-batch" in capfd.readouterr().err


@pytest.mark.parametrize("argv", [["--output-size", "48"], ["--output-size", "2048"], ["--encoder-type", "Nope"]])
def test_make_checkpoint_refuses_what_export_refuses(tmp_path, argv):
    with pytest.raises(SystemExit) as e:
        main(["make-checkpoint", str(tmp_path / "c.pt"), *argv])
    assert e.value.code == 2 and not (tmp_path / "c.pt").exists()


def test_make_checkpoint_choices_match_the_loader():
    pytest.importorskip("torch")
    from restyle_rt.cli import export as cli
    from restyle_rt.export import checkpoint

    assert set(cli.ENCODER_TYPES) == set(checkpoint.SUPPORTED_ENCODERS)
    assert min(cli.OUTPUT_SIZES) == checkpoint.MIN_OUTPUT_SIZE
    assert max(cli.OUTPUT_SIZES) == checkpoint.MAX_OUTPUT_SIZE


@pytest.mark.parametrize("size", [2**20, 2048, 48, "big"])
def test_absurd_output_size_is_refused_before_building(tmp_path, size):
    torch = pytest.importorskip("torch")
    from restyle_rt.errors import CheckpointError
    from restyle_rt.export.checkpoint import load_checkpoint
    from restyle_rt.export.fixtures import make_opts

    opts = make_opts("BackboneEncoder", "ffhq_encode", 1024)
    opts["output_size"] = size
    p = tmp_path / "tiny.pt"
    torch.save({"state_dict": {"encoder.x": torch.zeros(1)}, "opts": opts, "latent_avg": torch.zeros(512)}, p)
    assert p.stat().st_size < 8192
    with pytest.raises(CheckpointError, match="output_size"):
        load_checkpoint(p)


def test_expected_keys_cost_no_memory():
    pytest.importorskip("torch")
    from restyle_rt.export.checkpoint import expected_state
    from restyle_rt.export.fixtures import make_opts
    from restyle_rt.spec import ModelSpec

    enc, dec = expected_state(ModelSpec.from_opts(make_opts("BackboneEncoder", "ffhq_encode", 1024)))
    assert all(t.device.type == "meta" for t in list(enc.values()) + list(dec.values()))
    assert tuple(dec["input.input"].shape) == (1, 512, 4, 4)


def test_tiny_checkpoint_claiming_1024_lists_missing_keys_quickly(tmp_path):
    torch = pytest.importorskip("torch")
    from restyle_rt.errors import CheckpointError
    from restyle_rt.export.checkpoint import load_checkpoint
    from restyle_rt.export.fixtures import make_opts

    p = tmp_path / "tiny.pt"
    torch.save(
        {
            "state_dict": {"encoder.x": torch.zeros(1)},
            "opts": make_opts("BackboneEncoder", "ffhq_encode", 1024),
            "latent_avg": torch.zeros(512),
        },
        p,
    )
    with pytest.raises(CheckpointError, match="decoder: .* missing"):
        load_checkpoint(p)


def test_manifest_writes_are_atomic_and_readable(tmp_path):
    artifacts.write_manifest(tmp_path, {"format": "x"})
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"format": "x"}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_serve_repo_overwrite_never_removes_cwd_artifacts_or_other_files(toy, tmp_path, monkeypatch):
    from restyle_rt.serve.repo import write_repository

    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match="current directory"):
        write_repository(toy[0], ".", overwrite=True)
    with pytest.raises(OutputError, match="holds .* the input"):
        write_repository(toy[0], toy[0].parent, overwrite=True)
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"x")
    with pytest.raises(OutputError, match="not a previous model repository"):
        write_repository(toy[0], other, overwrite=True)
    assert (other / "a.jpg").read_bytes() == b"x" and (toy[0] / "manifest.json").is_file()
    repo = tmp_path / "repo"
    write_repository(toy[0], repo)
    write_repository(toy[0], repo, overwrite=True)  # a previous repository is replaced
