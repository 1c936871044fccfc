"""fsio: the one cache root (``$RESTYLE_RT_CACHE`` > ``$XDG_CACHE_HOME/restyle-rt`` > ``~/.cache/restyle-rt``) used
by every cache, and ``durable=True`` syncing the directory after the rename."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest

from restyle_rt import fsio

pytestmark = pytest.mark.unit


# --- the cache root ---------------------------------------------------------------------------------------------


def test_cache_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RESTYLE_RT_CACHE", str(tmp_path / "own"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fsio.cache_root() == tmp_path / "own"  # 1. ours
    monkeypatch.setenv("RESTYLE_RT_CACHE", "~/own")
    assert fsio.cache_root() == tmp_path / "home" / "own"  # (~ expanded)
    monkeypatch.setenv("RESTYLE_RT_CACHE", "")  # empty: unset
    assert fsio.cache_root() == tmp_path / "xdg" / "restyle-rt"  # 2. XDG
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec: a relative path is invalid, ignored
    assert fsio.cache_root() == tmp_path / "home" / ".cache" / "restyle-rt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("RESTYLE_RT_CACHE")
    assert fsio.cache_root() == tmp_path / "home" / ".cache" / "restyle-rt"  # 3. the home cache


def test_every_cache_lives_under_the_cache_root(tmp_path, monkeypatch):
    from restyle_rt import artifacts
    from restyle_rt.bench import presets
    from restyle_rt.kernels import build
    from restyle_rt.runtime.backends import choose, openvino

    monkeypatch.delenv("RESTYLE_RT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = tmp_path / "xdg" / "restyle-rt"
    assert choose.cache_dir() == root / "auto-backend"
    assert artifacts.verified_cache_dir() == root / "verified"
    assert build.cache_dir() == root / "kernels"
    assert fsio.cache_root() == root and presets.preset_dir("church-256") == root / "presets" / "church-256"
    assert openvino._cache_dir(None) == root / "openvino"


def test_no_module_computes_its_own_cache_root():
    """The root is computed in fsio only (it was in five places, none of which knew XDG_CACHE_HOME)."""
    pkg = Path(fsio.__file__).parent
    bad = re.compile(r"""environ(\.get)?[\[(]\s*["'](RESTYLE_RT_CACHE|XDG_CACHE_HOME)|["']\.cache["']""")
    offenders = [
        f"{p.relative_to(pkg)}:{n}"
        for p in pkg.rglob("*.py")
        if p.name != "fsio.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if bad.search(line)
    ]
    assert offenders == []


# --- durable writes ---------------------------------------------------------------------------------------------


def _record_fsyncs(monkeypatch, fail_dirs: bool = False):
    """Patch os.fsync to record what each synced fd is ((dev, inode), and whether a directory)."""
    import stat

    synced = []
    real = os.fsync

    def fsync(fd):
        st = os.fstat(fd)
        synced.append(((st.st_dev, st.st_ino), stat.S_ISDIR(st.st_mode)))
        if fail_dirs and stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EINVAL, "fsync on a directory not supported here")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def _ident(p: Path):
    st = os.stat(p)
    return st.st_dev, st.st_ino


def test_durable_write_syncs_the_file_then_its_directory(tmp_path, monkeypatch):
    synced = _record_fsyncs(monkeypatch)
    p = fsio.write_bytes(tmp_path / "sub" / "engine.bin", b"x" * 100, durable=True)
    assert p.read_bytes() == b"x" * 100
    # the data (the file that now is p), then the directory holding the new name
    assert synced == [(_ident(p), False), (_ident(tmp_path / "sub"), True)]
    synced.clear()
    fsio.write_json(tmp_path / "sub" / "plain.json", {"a": 1})  # not durable: nothing synced
    assert synced == []


def test_durable_write_tolerates_a_directory_that_cannot_be_synced(tmp_path, monkeypatch):
    synced = _record_fsyncs(monkeypatch, fail_dirs=True)
    p = fsio.write_text(tmp_path / "m.json", "{}\n", durable=True)
    assert p.read_text() == "{}\n" and [d for _, d in synced] == [False, True]
    real_open = os.open

    def no_dir_open(path, flags, *a):  # Windows: a directory cannot be opened
        if os.path.isdir(path):
            raise PermissionError(errno.EACCES, "is a directory")
        return real_open(path, flags, *a)

    monkeypatch.setattr(os, "open", no_dir_open)
    assert fsio.fsync_dir(tmp_path) is False
    fsio.write_text(tmp_path / "m.json", "{}\n", durable=True)
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # written, no temporary left
