"""A full disk (a faulting writer, and a real small tmpfs where mounting is allowed) leaves no partial file,
a one-line error and exit code 3; a rerun with --resume completes the job."""

from __future__ import annotations

import errno
import os
import subprocess

import numpy as np
import pytest
from PIL import Image

from restyle_rt import fsio
from restyle_rt.cli import main
from restyle_rt.errors import EXIT_OS

pytestmark = pytest.mark.unit


class _Full:
    """A file that accepts ``budget`` bytes, then raises ENOSPC (like a write on a full disk)."""

    def __init__(self, f, budget):
        self.f, self.budget = f, budget

    def write(self, data):
        n = len(memoryview(data).cast("B"))
        if n > self.budget:
            self.f.write(bytes(memoryview(data).cast("B")[: self.budget]))  # a partial write really happens
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.budget -= n
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def fault_after(monkeypatch, n_files, match=""):
    """Writes through fsio fail with ENOSPC halfway through the ``n_files``-th file (whose path contains match)."""
    seen = []
    real = fsio._open

    def opener(path, mode):
        f = real(path, mode)
        if match in path:
            seen.append(path)
            if len(seen) >= n_files:
                return _Full(f, 10)
        return f

    monkeypatch.setattr(fsio, "_open", opener)


def _leftovers(root):
    return [p for p in root.rglob("*") if p.name.startswith(fsio.TMP_PREFIX)]


def _all_complete(root):
    for p in root.rglob("*.png"):
        with Image.open(p) as im:
            im.load()  # raises on a truncated PNG
    for p in root.rglob("*.npy"):
        np.load(p)


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    fault_after(monkeypatch, 1)
    with pytest.raises(OSError) as e:
        fsio.write_bytes(tmp_path / "new.bin", b"x" * 1000)
    assert e.value.errno == errno.ENOSPC
    old = tmp_path / "old.json"
    old.write_text('{"ok": 1}')
    with pytest.raises(OSError):
        fsio.write_json(old, {"ok": 2, "pad": "y" * 100})
    with pytest.raises(OSError):
        fsio.save_npy(tmp_path / "a.npy", np.zeros(100))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"] and old.read_text() == '{"ok": 1}'


def test_failed_rename_and_failed_writer_leave_nothing(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError), fsio.atomic_path(tmp_path / "model.onnx") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    monkeypatch.setattr(fsio, "_replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EXDEV, "cross-device")))
    with pytest.raises(OSError):
        fsio.write_bytes(tmp_path / "x.bin", b"data")
    assert list(tmp_path.iterdir()) == []


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        p = fsio.write_bytes(tmp_path / "a" / "f.bin", b"1")
    finally:
        os.umask(old)
    assert oct(p.stat().st_mode & 0o777) == oct(0o640)


def test_bench_json_is_atomic(tmp_path, monkeypatch):
    from restyle_rt.bench import report

    fault_after(monkeypatch, 1)
    with pytest.raises(OSError):
        report.write_json({"results": list(range(100))}, tmp_path / "b.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("nth", [1, 4, 7])
def test_invert_on_a_full_disk(toy, rgb_images, tmp_path, monkeypatch, capfd, nth):
    """ENOSPC on the nth file: exit 3, one line, only complete files; --resume then finishes the job."""
    paths = rgb_images(4)
    out = tmp_path / "out"
    argv = [
        "invert",
        str(toy[0]),
        *map(str, paths),
        "--out",
        str(out),
        "--iters",
        "2",
        "--batch",
        "1",
        "--save-steps",
        "--save-latents",
    ]
    with monkeypatch.context() as m:
        fault_after(m, nth)
        rc = main(argv)
    err = [ln for ln in capfd.readouterr().err.replace("\r", "\n").splitlines() if "error" in ln]
    assert rc == EXIT_OS and len(err) == 1 and "No space left on device" in err[0]
    assert not _leftovers(out)
    _all_complete(out)
    assert main(argv + ["--resume"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == [p.name for p in paths]
    assert np.load(out / "latents.npy").shape == (4, 2, 4, 512)


def test_latents_file_on_a_full_disk_then_resume(toy, rgb_images, tmp_path, monkeypatch, capfd):
    paths = rgb_images(3)
    out = tmp_path / "out"
    argv = ["invert", str(toy[0]), *map(str, paths), "--out", str(out), "--iters", "2", "--save-latents"]
    with monkeypatch.context() as m:
        fault_after(m, 1, match="latents.npy")
        assert main(argv) == EXIT_OS
    assert not (out / "latents.npy").exists() and not _leftovers(out)  # never a truncated latents.npy
    capfd.readouterr()
    assert main(argv + ["--resume"]) == 0
    assert "3 already complete" in capfd.readouterr().err
    assert np.load(out / "latents.npy").shape == (3, 2, 4, 512)


@pytest.fixture
def small_fs(tmp_path):
    """A real 64 KiB tmpfs (needs root and mount permission; skipped otherwise, e.g. in unprivileged CI)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(
        check=False, args=["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()[:120]}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_invert_into_a_real_full_filesystem(toy, rgb_images, small_fs, capfd):
    paths = rgb_images(12)
    out = small_fs / "out"
    rc = main(
        [
            "invert",
            str(toy[0]),
            *map(str, paths),
            "--out",
            str(out),
            "--iters",
            "4",
            "--save-steps",
            "--strip",
            "--save-latents",
        ]
    )
    err = [ln for ln in capfd.readouterr().err.replace("\r", "\n").splitlines() if "error" in ln]
    assert rc == EXIT_OS and len(err) == 1 and "No space left on device" in err[0]
    assert list(out.rglob("*.png"))  # some images were written before the disk filled
    assert not _leftovers(out)
    _all_complete(out)
