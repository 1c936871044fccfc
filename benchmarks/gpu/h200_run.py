"""The prepared H200 run: one entry point for everything a lent GPU machine has to settle, and for its preparation.

The device machine (one H200, CUDA 13, PyTorch, nvcc, compute-sanitizer; no TensorRT, no onnxruntime-gpu, no
registry) gets at most 64 MiB per call, so the wheels it lacks travel in pieces over several calls, are kept outside
the tree (``/root/h200``), and are checked and installed once complete. ``benchmarks/gpu/h200_run.sh`` is the call
plan; ``benchmarks/gpu/README.md`` ("Prepared: the H200 run") says what it settles.

Subcommands (each writes a JSON report with the machine's facts when ``--json`` is given, and exits 2 with one line
on stderr when a prerequisite is missing: no GPU, no onnxruntime-gpu, no TensorRT-RTX, no compute-sanitizer)::

    # here (CPU)
    h200_run.py budget [--carry PATH ...]                  # bytes one device call would carry (limit 64 MiB)
    h200_run.py pieces split FILE... --out DIR [--size 58MiB] [--encoding raw|wheel-xz] [--drop GLOB ...]
    h200_run.py pieces recut DIR --out DIR2 --size 55MiB    # other piece size, same stream (no re-encoding)
    h200_run.py rtx-engine OUT                             # toy artifacts + TensorRT-RTX AOT engines (small)
    # there (GPU machine)
    h200_run.py pieces stash SRC --into DIR [--join OUT] [--install SITE]   # keep carried pieces, assemble, install
    h200_run.py pieces join DIR --out PATH                 # verify + reassemble (names any missing/corrupt piece)
    h200_run.py env --json OUT
    h200_run.py prepare --preset church-256 --work /root/h200/work          # random-weight export (torch, child)
    h200_run.py ort-loop --preset church-256 --batch 1,4,8 --iters 5 --json OUT
    h200_run.py rtx-probe ENGINE_DIR --json OUT
    h200_run.py sanitize --json OUT [--tools memcheck,racecheck,synccheck]

``ort-loop --providers CPUExecutionProvider`` runs everything around the GPU (bound loop, fixed-address loop, parity,
timing, report) on the CPU; the unit tests use it. The ORT part never imports torch: exports run in a child process.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import datetime as dt
import fnmatch
import hashlib
import io
import json
import logging
import lzma
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from base64 import urlsafe_b64encode
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script from anywhere: the repo's restyle_rt first
    sys.path.insert(0, str(REPO))

MiB = 1 << 20
CALL_LIMIT = 64 * MiB  # what one device call may carry, working tree included
PIECES_FORMAT = "restyle-rt-h200-pieces"
MANIFEST = "pieces.json"
DEFAULT_WORK = Path(os.environ.get("H200_WORK", "/root/h200"))
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
PRESETS = ("church-256", "ffhq-1024", "cars-512")
# per-step parity bounds: GPU FP32 against the CPU FP32 loop (the ORT loop's own table entry; TF32 is expected to miss
# it, fp32-notf32 should meet it) and GPU FP16 against the same (the FP16 proxy loop's entry)
PARITY_KEYS = {"fp32": "ort-loop", "fp32-notf32": "ort-loop", "fp16": "ort-fp16-proxy-loop"}
PRECISIONS = ("fp32", "fp32-notf32", "fp16")
MODES = ("iobinding", "cuda-graph")
SANITIZER_TOOLS = ("memcheck", "racecheck", "synccheck", "initcheck")
SANITIZE_TESTS = ("tests/gpu", "tests/kernels/test_gpu.py")
SANITIZER_EXIT = 86  # compute-sanitizer --error-exitcode: tells its findings from test failures

log = logging.getLogger("h200_run")


class Prerequisite(Exception):
    """Something the subcommand needs is missing here; the message names it and how to get it."""


class PiecesError(Exception):
    """A pieces directory is incomplete, corrupt or from another split; the message names the pieces."""


# --- reports -------------------------------------------------------------------------------------------------------


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _run_text(cmd: Sequence[str], timeout: float = 20.0) -> str | None:
    """stdout of ``cmd`` stripped, or None when it is missing, fails or hangs."""
    try:
        p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def _dist_version(name: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def gpu_info() -> dict:
    """What ``nvidia-smi`` says about GPU 0 (name, driver, CUDA version of the driver, memory, clocks); {} without."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return {}
    q = "name,driver_version,memory.total,memory.used,compute_cap,clocks.sm,clocks.max.sm,power.limit,pci.bus_id"
    out = _run_text([smi, f"--query-gpu={q}", "--format=csv,noheader"])
    info: dict = {"nvidia_smi": smi}
    if out:
        rows = list(csv.reader(io.StringIO(out.splitlines()[0]), skipinitialspace=True))
        info.update(dict(zip(q.split(","), rows[0] if rows else [])))
        info["gpus"] = len(out.splitlines())
    head = _run_text([smi]) or ""
    m = re.search(r"CUDA Version:\s*([\d.]+)", head)
    if m:
        info["driver_cuda_version"] = m.group(1)
    return info


def machine_info() -> dict:
    """Host, GPU, toolchain and package versions (never imports torch, onnxruntime or TensorRT)."""
    info = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "cpus": os.cpu_count(),
        "load_avg": _loadavg(),
        "gpu": gpu_info(),
    }
    try:
        info["mem_total_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    nvcc = find_tool("nvcc")
    if nvcc:
        info["nvcc"] = (_run_text([nvcc, "--version"]) or "").splitlines()[-1:]
    san = find_tool("compute-sanitizer")
    if san:
        info["compute_sanitizer"] = (_run_text([san, "--version"]) or "").splitlines()[-1:]
    info["versions"] = {
        n: v
        for n in (
            "numpy",
            "onnx",
            "onnxruntime",
            "onnxruntime-gpu",
            "onnxslim",
            "torch",
            "cuda-bindings",
            "tensorrt-rtx-cu13-bindings",
            "tensorrt-rtx-cu13-libs",
            "nvidia-cudnn-cu13",
            "nvidia-cublas",
        )
        if (v := _dist_version(n))
    }
    info["pythonpath"] = os.environ.get("PYTHONPATH", "")
    return info


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def find_tool(name: str) -> str | None:
    """``name`` on PATH, else under $CUDA_HOME/bin or /usr/local/cuda/bin."""
    found = shutil.which(name)
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and os.access(os.path.join(root, "bin", name), os.X_OK):
            return os.path.join(root, "bin", name)
    return None


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else repr(v)  # JSON has no inf/nan: "inf", "nan"
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, Path):
        return str(x)
    return x


class Report:
    """One subcommand's JSON report: machine facts, status, payload; saved atomically after every change asked."""

    def __init__(self, path: os.PathLike | None, subcommand: str, argv: Sequence[str]):
        self.path = Path(path) if path else None
        self.t0 = time.perf_counter()
        self.data: dict = {
            "tool": "benchmarks/gpu/h200_run.py",
            "subcommand": subcommand,
            "command": "python3 benchmarks/gpu/h200_run.py " + " ".join(argv),
            "started_utc": utc_now(),
            "status": "running",
            "message": "",
            "machine": machine_info(),
        }

    def __getitem__(self, key):
        return self.data[key]

    def __setitem__(self, key, value) -> None:
        self.data[key] = value

    def save(self) -> None:
        if self.path is None:
            return
        self.data["seconds"] = round(time.perf_counter() - self.t0, 3)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(_jsonable(self.data), indent=1) + "\n")
        os.replace(tmp, self.path)

    def finish(self, status: str, message: str = "") -> None:
        self.data["status"], self.data["message"] = status, message
        self.data["finished_utc"] = utc_now()
        self.save()


# --- sizes, the call budget ----------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """``"58MiB"``, ``"58.5 MiB"``, ``"60MB"``, ``"1024"`` (bytes) -> bytes."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMG]i?B|B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected e.g. 58MiB, 60MB or a number of bytes")
    unit = (m.group(2) or "B").lower()
    scale = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}[unit]
    n = int(float(m.group(1)) * scale)
    if n < 1:
        raise argparse.ArgumentTypeError(f"size {text!r} must be at least one byte")
    return n


def tree_bytes(repo: Path = REPO) -> int:
    """Bytes of the working tree that travels with every call: tracked files plus untracked files git does not
    ignore (what the device tool copies; carried paths come on top)."""
    total = 0
    for flags in (["--cached"], ["--others", "--exclude-standard"]):
        out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", *flags], capture_output=True, check=True)
        for name in filter(None, out.stdout.decode().split("\0")):
            p = repo / name
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
    return total


def path_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def cmd_budget(args) -> int:
    tree = tree_bytes(Path(args.repo))
    carried = {c: path_bytes(Path(args.repo) / c) for c in args.carry}
    total = tree + sum(carried.values())
    print(
        f"working tree {tree / MiB:.2f} MiB + carried {sum(carried.values()) / MiB:.2f} MiB = {total / MiB:.2f} MiB "
        f"of {CALL_LIMIT / MiB:.0f} MiB ({(CALL_LIMIT - total) / MiB:+.2f} MiB left)"
    )
    for c, n in carried.items():
        print(f"  carry {c}: {n / MiB:.2f} MiB")
    if total > CALL_LIMIT:
        print(
            f"h200_run budget: {total / MiB:.2f} MiB is over the call limit of {CALL_LIMIT / MiB:.0f} MiB; "
            "split into smaller pieces or carry less",
            file=sys.stderr,
        )
        return 2
    return 0


# --- pieces: split here, stash / join / install there ----------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_path(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _record_hash(data: bytes) -> str:
    return "sha256=" + urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _record_name(names: Iterable[str]) -> str:
    rec = [n for n in names if n.endswith(".dist-info/RECORD")]
    if len(rec) != 1:
        raise PiecesError(f"a wheel has one .dist-info/RECORD; found {rec or 'none'}")
    return rec[0]


def encode_wheel_xz(wheel: Path, drop: Sequence[str] = (), dict_size: int | None = None) -> tuple[bytes, dict]:
    """The wheel's members (minus those matching ``drop``) as one tar, xz-compressed (x86 BCJ filter, preset 9e,
    dictionary up to 128 MiB: onnxruntime-gpu's CUDA EP library goes from 231 MB deflated to ~185 MB; a larger
    dictionary gained < 0.5 %). The wheel's own RECORD travels unchanged."""
    with zipfile.ZipFile(wheel) as z:
        infos = [i for i in z.infolist() if not i.is_dir()]
        rec_name = _record_name(i.filename for i in infos)
        dropped = [i.filename for i in infos if any(fnmatch.fnmatch(i.filename, p) for p in drop)]
        if rec_name in dropped:
            raise PiecesError(f"--drop would remove {rec_name}; the RECORD must travel")
        keep = [i for i in infos if i.filename not in dropped]
        raw_size = sum(i.file_size for i in keep)
        dict_size = dict_size or min(128 * MiB, 1 << max(20, (raw_size - 1).bit_length()))  # more gained <0.5 %
        filters = [
            {"id": lzma.FILTER_X86},
            {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": dict_size},
        ]
        buf = io.BytesIO()
        with lzma.LZMAFile(buf, "wb", format=lzma.FORMAT_XZ, filters=filters) as xz:
            with tarfile.open(fileobj=xz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for i in keep:
                    data = z.read(i.filename)
                    ti = tarfile.TarInfo(i.filename)
                    ti.size, ti.mtime = len(data), 0
                    ti.mode = (i.external_attr >> 16) & 0o777 or 0o644
                    tar.addfile(ti, io.BytesIO(data))
    meta = {"members": len(keep), "members_bytes": raw_size, "dropped": dropped, "xz_dict_size": dict_size}
    return buf.getvalue(), meta


def decode_wheel_xz(payload: bytes, out: Path, dropped: Sequence[str]) -> dict:
    """Rebuild a wheel from :func:`encode_wheel_xz`'s payload: every member is checked against the wheel's own
    RECORD (sha256 and size); the written RECORD omits the dropped members. Members are stored, not deflated."""
    members: dict[str, tuple[bytes, int]] = {}
    with lzma.LZMAFile(io.BytesIO(payload)) as xz, tarfile.open(fileobj=xz, mode="r|") as tar:
        for ti in tar:
            if not ti.isfile():
                continue
            f = tar.extractfile(ti)
            members[ti.name] = (f.read() if f else b"", ti.mode)
    rec_name = _record_name(members)
    rows = list(csv.reader(io.StringIO(members[rec_name][0].decode())))
    bad, checked = [], 0
    for row in rows:
        if not row or row[0] == rec_name:
            continue
        name, digest, size = (row + ["", ""])[:3]
        if name in dropped:
            continue
        if name not in members:
            bad.append(f"{name}: in RECORD, not in the payload")
            continue
        data = members[name][0]
        if digest and _record_hash(data) != digest:
            bad.append(f"{name}: sha256 differs from RECORD")
        elif size and int(size) != len(data):
            bad.append(f"{name}: {len(data)} bytes, RECORD says {size}")
        checked += 1
    extra = sorted(set(members) - {r[0] for r in rows if r} - {rec_name})
    if extra:
        bad.append(f"not in RECORD: {', '.join(extra[:5])}")
    if bad:
        raise PiecesError("rebuilt wheel does not match its RECORD: " + "; ".join(bad[:10]))
    kept = [r for r in rows if r and r[0] not in dropped]
    rec_buf = io.StringIO()
    csv.writer(rec_buf, lineterminator="\n").writerows(kept)
    tmp = out.with_name(f".{out.name}.partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        for name, (data, mode) in members.items():
            if name == rec_name:
                continue
            zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = (mode & 0o777 or 0o644) << 16
            z.writestr(zi, data)
        z.writestr(zipfile.ZipInfo(rec_name, date_time=(1980, 1, 1, 0, 0, 0)), rec_buf.getvalue())
    os.replace(tmp, out)
    return {"members_checked_against_record": checked, "dropped": list(dropped)}


def split_files(
    files: Sequence[Path],
    out: Path,
    size: int,
    encoding: str = "raw",
    drop: Sequence[str] = (),
    xz_dict: int | None = None,
) -> dict:
    """Encode ``files`` (in this order: what is needed first goes first) into one stream and cut it into pieces of at
    most ``size`` bytes, ``out/part-NNN``, plus ``out/pieces.json`` (sha256 of every piece, of every file's stream
    bytes and of every source file)."""
    if not files:
        raise PiecesError("nothing to split")
    out.mkdir(parents=True, exist_ok=True)
    stale = sorted(out.glob("part-*")) + ([out / MANIFEST] if (out / MANIFEST).exists() else [])
    if stale:
        raise PiecesError(
            f"{out} already holds pieces ({', '.join(p.name for p in stale[:3])} ...); use an empty directory"
        )
    entries, chunks = [], []
    offset = 0
    for f in files:
        f = Path(f)
        if not f.is_file():
            raise PiecesError(f"{f}: no such file")
        enc = encoding if (encoding == "wheel-xz" and f.suffix == ".whl") else "raw"
        t0 = time.perf_counter()
        if enc == "wheel-xz":
            data, meta = encode_wheel_xz(f, drop, xz_dict)
        else:
            data, meta = f.read_bytes(), {}
        entries.append(
            {
                "name": f.name,
                "encoding": enc,
                "offset": offset,
                "size": len(data),
                "sha256": sha256_bytes(data),
                "source_size": f.stat().st_size,
                "source_sha256": sha256_path(f),
                "encode_s": round(time.perf_counter() - t0, 1),
                **meta,
            }
        )
        chunks.append(data)
        offset += len(data)
        log.info("%s: %s, %.2f MiB -> %.2f MiB", f.name, enc, f.stat().st_size / MiB, len(data) / MiB)
    stream = b"".join(chunks)
    pieces = []
    for k, start in enumerate(range(0, len(stream), size), 1):
        part = stream[start : start + size]
        name = f"part-{k:03d}"
        (out / name).write_bytes(part)
        pieces.append({"file": name, "offset": start, "size": len(part), "sha256": sha256_bytes(part)})
    manifest = {
        "format": PIECES_FORMAT,
        "version": 1,
        "created_utc": utc_now(),
        "piece_size": size,
        "stream_size": len(stream),
        "stream_sha256": sha256_bytes(stream),
        "files": entries,
        "pieces": pieces,
    }
    for e in entries:  # which pieces each file needs (the call plan reads this)
        e["pieces"] = [
            p["file"] for p in pieces if p["offset"] < e["offset"] + e["size"] and e["offset"] < p["offset"] + p["size"]
        ]
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def recut_pieces(src: Path, out: Path, size: int) -> dict:
    """Cut the stream of ``src``'s pieces anew into pieces of at most ``size`` (no re-encoding: seconds, not the
    minutes of xz), e.g. when the working tree has grown and the old pieces no longer fit a call."""
    m = read_manifest(src)
    bad = {k: v for k, v in piece_status(src, m).items() if v != "ok"}
    if bad:
        raise PiecesError(f"{src}: cannot recut: " + ", ".join(f"{k} ({v})" for k, v in bad.items()))
    stream = b"".join((src / p["file"]).read_bytes() for p in m["pieces"])
    if sha256_bytes(stream) != m["stream_sha256"]:
        raise PiecesError(f"{src}: the pieces do not make the manifest's stream")
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("part-*")) or (out / MANIFEST).exists():
        raise PiecesError(f"{out} already holds pieces; use an empty directory")
    pieces = []
    for k, start in enumerate(range(0, len(stream), size), 1):
        part = stream[start : start + size]
        (out / f"part-{k:03d}").write_bytes(part)
        pieces.append({"file": f"part-{k:03d}", "offset": start, "size": len(part), "sha256": sha256_bytes(part)})
    m = {**m, "piece_size": size, "pieces": pieces, "recut_utc": utc_now()}
    for e in m["files"]:
        e["pieces"] = [
            p["file"] for p in pieces if p["offset"] < e["offset"] + e["size"] and e["offset"] < p["offset"] + p["size"]
        ]
    (out / MANIFEST).write_text(json.dumps(m, indent=1) + "\n")
    return m


def read_manifest(d: Path) -> dict:
    path = Path(d) / MANIFEST
    if not path.is_file():
        raise PiecesError(f"{d}: no {MANIFEST} (carry it with the pieces; `pieces split` writes it)")
    try:
        m = json.loads(path.read_text())
    except ValueError as e:
        raise PiecesError(f"{path}: not valid JSON ({e})") from None
    if m.get("format") != PIECES_FORMAT:
        raise PiecesError(f"{path}: format {m.get('format')!r}, expected {PIECES_FORMAT!r}")
    return m


def piece_status(d: Path, m: dict) -> dict[str, str]:
    """``{piece: "ok" | "missing" | "corrupt (...)"}`` for every piece of the manifest, checked by size and sha256."""
    out = {}
    for p in m["pieces"]:
        f = Path(d) / p["file"]
        if not f.is_file():
            out[p["file"]] = "missing"
        elif f.stat().st_size != p["size"]:
            out[p["file"]] = f"corrupt ({f.stat().st_size} bytes, expected {p['size']})"
        elif sha256_path(f) != p["sha256"]:
            out[p["file"]] = "corrupt (sha256 differs)"
        else:
            out[p["file"]] = "ok"
    return out


def stash_pieces(src: Path, into: Path) -> dict:
    """Copy the pieces carried in ``src`` that check out into ``into`` (outside the tree: kept while the machine
    is); a manifest already there must be the same split. Returns the status of every piece in ``into``."""
    m = read_manifest(src)
    into.mkdir(parents=True, exist_ok=True)
    if (into / MANIFEST).is_file():
        have = read_manifest(into)
        if have["stream_sha256"] != m["stream_sha256"]:
            raise PiecesError(
                f"{into} holds pieces of another split (stream {have['stream_sha256'][:12]}…, carried "
                f"{m['stream_sha256'][:12]}…); empty {into} or carry the matching pieces"
            )
    else:
        shutil.copyfile(src / MANIFEST, into / MANIFEST)
    carried = piece_status(src, m)
    bad = {k: v for k, v in carried.items() if v.startswith("corrupt")}
    if bad:
        raise PiecesError("carried pieces are corrupt: " + "; ".join(f"{k}: {v}" for k, v in bad.items()))
    for name, state in carried.items():
        if state == "ok" and not (into / name).is_file():
            tmp = into / f".{name}.partial"
            shutil.copyfile(src / name, tmp)
            os.replace(tmp, into / name)
    return piece_status(into, m)


def join_pieces(d: Path, out: Path, only: Sequence[str] = (), complete_only: bool = False) -> list[dict]:
    """Reassemble files from the pieces in ``d`` into ``out`` (a directory, or a file path when one file is asked
    for); each file's stream bytes and its source are checked by sha256 (wheel-xz: every member against RECORD).

    Raises:
        PiecesError: naming every missing or corrupt piece a requested file needs (``complete_only``: files whose
            pieces are not all here yet are skipped instead, corrupt pieces still raise).
    """
    m = read_manifest(d)
    status = piece_status(d, m)
    files = [e for e in m["files"] if not only or e["name"] in only]
    unknown = sorted(set(only) - {e["name"] for e in m["files"]})
    if unknown:
        raise PiecesError(
            f"{d}: no file {', '.join(unknown)} in this split (have: {', '.join(e['name'] for e in m['files'])})"
        )
    corrupt = {k: v for k, v in status.items() if v.startswith("corrupt")}
    problems = []
    for e in files:
        need = {p: status[p] for p in e["pieces"] if status[p] != "ok"}
        if any(v.startswith("corrupt") for v in need.values()) or (need and not complete_only):
            problems.append(f"{e['name']} needs " + ", ".join(f"{p} ({v})" for p, v in need.items()))
    if problems or (corrupt and not complete_only):
        raise PiecesError(
            f"{d}: cannot reassemble: " + "; ".join(problems or [f"{k} ({v})" for k, v in corrupt.items()])
        )
    single = len(files) == 1 and out.suffix in (".whl", ".xz", ".gz", ".bin")
    results = []
    for e in files:
        if any(status[p] != "ok" for p in e["pieces"]):
            results.append(
                {"name": e["name"], "state": "incomplete", "missing": [p for p in e["pieces"] if status[p] != "ok"]}
            )
            continue
        target = out if single else out / e["name"]
        stamp = target.with_name(f".{target.name}.joined")
        if target.is_file() and stamp.is_file() and stamp.read_text() == e["sha256"]:
            results.append(
                {"name": e["name"], "path": str(target), "encoding": e["encoding"], "state": "joined", "reused": True}
            )  # joined by an earlier call: not decompressed again
            continue
        data = bytearray()
        for p in m["pieces"]:
            if p["file"] in e["pieces"]:
                lo = max(e["offset"], p["offset"]) - p["offset"]
                hi = min(e["offset"] + e["size"], p["offset"] + p["size"]) - p["offset"]
                with open(d / p["file"], "rb") as f:
                    f.seek(lo)
                    data += f.read(hi - lo)
        if sha256_bytes(bytes(data)) != e["sha256"]:
            raise PiecesError(f"{e['name']}: reassembled bytes differ from the manifest's sha256")
        target.parent.mkdir(parents=True, exist_ok=True)
        rec = {"name": e["name"], "path": str(target), "encoding": e["encoding"]}
        if e["encoding"] == "wheel-xz":
            rec.update(decode_wheel_xz(bytes(data), target, e.get("dropped", [])))
            rec["source_sha256"] = e["source_sha256"]  # of the original wheel (the rebuilt one stores members)
        else:
            tmp = target.with_name(f".{target.name}.partial")
            tmp.write_bytes(bytes(data))
            if sha256_path(tmp) != e["source_sha256"]:
                tmp.unlink()
                raise PiecesError(f"{e['name']}: written file differs from the source sha256")
            os.replace(tmp, target)
            rec["sha256"] = e["source_sha256"]
        rec["state"] = "joined"
        stamp.write_text(e["sha256"])
        results.append(rec)
    return results


def pip_install(wheels: Sequence[Path], target: Path) -> str:
    """``pip install --no-deps --no-index --target`` (no registry there); returns pip's output."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-index",
        "--no-deps",
        "--no-compile",
        "--no-cache-dir",
        "--upgrade",
        "--target",
        str(target),
        *map(str, wheels),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise PiecesError(f"pip install failed (exit {p.returncode}): {' '.join(cmd)}\n{p.stdout}{p.stderr}")
    return (p.stdout + p.stderr).strip()


def cmd_pieces(args) -> int:
    rep = Report(args.json, f"pieces {args.pieces_cmd}", args.argv)
    try:
        if args.pieces_cmd == "split":
            m = split_files(
                [Path(f) for f in args.files], Path(args.out), args.size, args.encoding, args.drop, args.xz_dict
            )
            rep["manifest"] = m
            for e in m["files"]:
                print(
                    f"{e['name']}: {e['encoding']}, {e['source_size'] / MiB:.2f} MiB -> {e['size'] / MiB:.2f} MiB, "
                    f"pieces {', '.join(e['pieces'])}"
                )
            print(f"{len(m['pieces'])} pieces of at most {args.size / MiB:.2f} MiB in {args.out}")
        elif args.pieces_cmd == "recut":
            m = recut_pieces(Path(args.dir), Path(args.out), args.size)
            rep["manifest"] = m
            print(f"{len(m['pieces'])} pieces of at most {args.size / MiB:.2f} MiB in {args.out}")
        elif args.pieces_cmd == "join":
            res = join_pieces(Path(args.dir), Path(args.out), args.file)
            rep["files"] = res
            for r in res:
                print(f"{r['name']}: joined -> {r['path']}")
        elif args.pieces_cmd == "stash":
            rep["pieces"] = status = stash_pieces(Path(args.src), Path(args.into))
            have = sum(v == "ok" for v in status.values())
            missing = [k for k, v in status.items() if v != "ok"]
            print(
                f"pieces in {args.into}: {have}/{len(status)}"
                + (f"; not yet: {', '.join(missing)}" if missing else "; all here")
            )
            if args.join:
                done = join_pieces(Path(args.into), Path(args.join), complete_only=True)
                rep["files"] = done
                joined = [Path(r["path"]) for r in done if r["state"] == "joined"]
                for r in done:
                    print(
                        f"  {r['name']}: {r['state']}"
                        + (f" (needs {', '.join(r['missing'])})" if r.get("missing") else "")
                    )
                wheels = [w for w in joined if w.suffix == ".whl"]
                if args.install and wheels:
                    marker = Path(args.install) / ".h200-installed.json"
                    seen = json.loads(marker.read_text()) if marker.is_file() else []
                    rep["pip"], failed = {}, []
                    for w in (w for w in wheels if w.name not in seen):  # one at a time: one failure blocks no other
                        try:
                            rep["pip"][w.name] = pip_install([w], Path(args.install))
                            seen.append(w.name)
                            marker.write_text(json.dumps(seen))
                            print(f"  installed into {args.install}: {w.name}")
                        except PiecesError as e:
                            failed.append(str(e))
                    if failed:
                        raise PiecesError("; ".join(failed))
        rep.finish("ok")
        return 0
    except PiecesError as e:
        rep.finish("failed", str(e))
        print(f"h200_run pieces {args.pieces_cmd}: {e}", file=sys.stderr)
        return 2


# --- ONNX Runtime on the GPU ----------------------------------------------------------------------------------------


def restyle_cli(*argv: str) -> list[str]:
    """The ``restyle-rt`` command line run from this checkout (the device machine has no installed entry point)."""
    return [sys.executable, "-c", "import sys; from restyle_rt.cli import main; sys.exit(main())", *argv]


def export_commands(preset: str, work: Path) -> list[list[str]]:
    """The two commands that make a random-weight preset's artifacts under ``work/preset`` (torch: child process)."""
    d = work / preset
    return [
        restyle_cli("make-checkpoint", str(d / "checkpoint.pt"), "--preset", preset),
        restyle_cli("export", str(d / "checkpoint.pt"), "--out", str(d / "artifacts"), "--force", "--no-progress"),
    ]


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


def prepare_preset(preset: str, work: Path, fp16: bool = True) -> dict:
    """Export ``preset`` (unless already there) and derive its FP16 graphs; returns times, sizes and peak RSS."""
    d = work / preset
    art = d / "artifacts"
    rec: dict = {"preset": preset, "artifacts": str(art)}
    if (art / "manifest.json").is_file():
        rec["export"] = "reused"
    else:
        d.mkdir(parents=True, exist_ok=True)
        steps = []
        for cmd in export_commands(preset, work):
            t0 = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(), cwd=str(REPO), check=False)
            steps.append(
                {
                    "command": " ".join(cmd[3:]),
                    "seconds": round(time.perf_counter() - t0, 1),
                    "exit": p.returncode,
                    "tail": (p.stdout + p.stderr)[-2000:],
                    "children_peak_rss_gib": round(_children_maxrss_gib(), 2),
                }
            )
            if p.returncode != 0:
                rec["steps"] = steps
                err = RuntimeError(
                    f"{preset}: `{' '.join(cmd[3:])}` failed (exit {p.returncode}): {(p.stdout + p.stderr)[-600:]}"
                )
                err.record = rec  # type: ignore[attr-defined]  (the report keeps the steps)
                raise err
        rec["steps"] = steps
        ckpt = d / "checkpoint.pt"
        rec["checkpoint_bytes"] = ckpt.stat().st_size if ckpt.is_file() else None
        rec["onnxslim"] = _dist_version("onnxslim")
    rec["artifact_bytes"] = path_bytes(art)
    if fp16:
        t0 = time.perf_counter()
        out = derive_fp16(art, d / "fp16")
        rec["fp16"] = {"dir": str(out), "seconds": round(time.perf_counter() - t0, 1), "bytes": path_bytes(out)}
    return rec


def _children_maxrss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux


def derive_fp16(src: Path, dst: Path) -> Path:
    """An artifacts directory whose graphs are the FP16 graphs of ``src`` (restyle_rt/export/fp16.py; needs onnx,
    not torch), with their hashes in its manifest; reused when already there."""
    from restyle_rt import artifacts as A
    from restyle_rt.export.fp16 import export_fp16

    if (dst / A.MANIFEST).is_file():
        return dst
    tmp = dst.with_name(f".{dst.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    manifest = json.loads((src / A.MANIFEST).read_text())
    art = A.load(src)
    for g in ("encoder", "synthesis"):
        name = f"{g}.fp16.onnx"
        export_fp16(art.graph_path(g), tmp / name)
        rec = {k: v for k, v in manifest["graphs"][g].items() if k not in ("sha256", "data_file", "data_sha256")}
        rec.update(file=name, sha256=A.sha256_file(tmp / name))
        if (tmp / f"{name}.data").is_file():
            rec.update(data_file=f"{name}.data", data_sha256=A.sha256_file(tmp / f"{name}.data"))
        manifest["graphs"][g] = rec
    for name in (A.LATENT_AVG, A.AVG_FEEDBACK):
        shutil.copyfile(src / name, tmp / name)
    manifest["precision"] = "fp16"
    manifest["derived_from"] = str(src)
    A.write_manifest(tmp, manifest)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)
    return dst


def cmd_prepare(args) -> int:
    rep = Report(args.json, "prepare", args.argv)
    rep["presets"] = []
    try:
        for preset in args.preset:
            rep["presets"].append(prepare_preset(preset, Path(args.work), fp16=not args.no_fp16))
            rep.save()
            print(f"prepare {preset}: {json.dumps(_jsonable(rep['presets'][-1]))[:400]}")
    except Exception as e:  # noqa: BLE001  (the report keeps whatever failed)
        if getattr(e, "record", None):
            rep["presets"].append(e.record)
        rep.finish("failed", f"{type(e).__name__}: {e}")
        print(f"h200_run prepare: {e}", file=sys.stderr)
        return 1
    rep.finish("ok")
    return 0


def preload_cuda_libs() -> dict:
    """Load the CUDA 13 and cuDNN 9 libraries of the image's NVIDIA pip packages by absolute path, so that the CUDA EP
    of an onnxruntime-gpu installed elsewhere (``--target``) finds them by soname. ORT's own ``preload_dlls`` only
    looks beside its package. Returns what was loaded from where and what was not found."""
    rels = [
        ("cu13", "lib", n)
        for n in (
            "libcublasLt.so.13",
            "libcublas.so.13",
            "libnvrtc.so.13",
            "libcurand.so.10",
            "libcufft.so.12",
            "libcudart.so.13",
        )
    ] + [("cudnn", "lib", "libcudnn.so.9")]
    roots = [Path(p) / "nvidia" for p in sys.path if p and (Path(p) / "nvidia").is_dir()]
    roots += [Path("/usr/local/cuda/lib64"), Path("/usr/local/cuda/targets/x86_64-linux/lib")]
    loaded, missing = {}, []
    for rel in rels:
        cands = [r.joinpath(*rel) for r in roots if r.name == "nvidia"] + [
            r / rel[-1] for r in roots if r.name != "nvidia"
        ]
        for c in cands:
            if c.is_file():
                try:
                    ctypes.CDLL(str(c), mode=ctypes.RTLD_GLOBAL)
                    loaded[rel[-1]] = str(c)
                    break
                except OSError as e:
                    loaded[rel[-1]] = f"failed: {e}"
        else:
            try:
                ctypes.CDLL(rel[-1], mode=ctypes.RTLD_GLOBAL)
                loaded[rel[-1]] = "(default search path)"
            except OSError:
                missing.append(rel[-1])
    return {"loaded": loaded, "missing": missing}


def ort_facts() -> dict:
    import onnxruntime as ort

    facts = {
        "version": ort.__version__,
        "module": str(Path(ort.__file__).parent),
        "providers": ort.get_available_providers(),
        "device": ort.get_device(),
    }
    with contextlib.suppress(Exception):
        from onnxruntime.capi import build_and_package_info as bi

        facts["package"], facts["built_cuda"] = bi.package_name, getattr(bi, "cuda_version", None)
    with contextlib.suppress(Exception):
        facts["build_info"] = ort.get_build_info()
    return facts


def check_ort_gpu(providers: Sequence[str]) -> dict:
    """The onnxruntime facts; raises Prerequisite unless it can run ``providers`` here (a GPU for the CUDA EP)."""
    try:
        facts = ort_facts()
    except ImportError as e:
        raise Prerequisite(f"onnxruntime cannot be imported ({e})") from None
    if CUDA in providers:
        if CUDA not in facts["providers"]:
            raise Prerequisite(
                f"onnxruntime-gpu is not importable: onnxruntime {facts['version']} at "
                f"{facts['module']} has {facts['providers']}; install the carried wheel "
                "(`h200_run.py pieces stash ... --install /root/h200/site`) and put that directory "
                "first on PYTHONPATH"
            )
        if not gpu_info().get("name"):
            raise Prerequisite("no GPU: nvidia-smi is missing or lists no device, so the CUDA EP cannot run")
    return facts


def make_images(batch: int, hw: tuple[int, int], seed: int = 7) -> np.ndarray:
    """[B, 3, H, W] float32 in [-1, 1]: smooth random fields plus fine noise (not zeros, not white noise)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    coarse = rng.uniform(-0.8, 0.8, (batch, 3, max(1, h // 16), max(1, w // 16)))
    up = np.repeat(np.repeat(coarse, -(-h // coarse.shape[2]), axis=2), -(-w // coarse.shape[3]), axis=3)[..., :h, :w]
    return np.clip(up + 0.1 * rng.standard_normal((batch, 3, h, w)), -1, 1).astype(np.float32)


def _backend_classes():
    """OrtBackend subclasses: extra CUDA EP options, and the fixed-address loop for ORT's CUDA graphs (OrtBackend
    allocates fresh OrtValues per call, which a captured graph cannot follow)."""
    from restyle_rt.runtime.backend import LoopResult
    from restyle_rt.runtime.backends.ort import OrtBackend
    from restyle_rt.runtime.loop import check_batch, check_images, check_iters

    class OptionsBackend(OrtBackend):
        """The product's backend with extra CUDA EP provider options (e.g. ``use_tf32=0``)."""

        cuda_options: dict[str, str] = {}

        def __init__(self, artifacts, cuda_options: dict[str, str] | None = None, **kw):
            self.cuda_options = dict(cuda_options or {})
            super().__init__(artifacts, **kw)

        def _provider_options(self, provider: str, graph: str) -> dict:
            opts = super()._provider_options(provider, graph)
            if provider == CUDA:
                opts.update(self.cuda_options)
            return opts

    class GraphLoopBackend(OptionsBackend):
        """The IOBinding loop on device buffers allocated once per batch size, so ORT can capture each run as a CUDA
        graph (``enable_cuda_graph``) and replay it: one graph id per (batch, ping-pong side) in each session, ids
        from 1 (0 is ORT's). Inputs are written in place (``OrtValue.update_inplace``). On the CPU provider the same
        code runs without the graph option (tests)."""

        def __init__(self, artifacts, cuda_options: dict[str, str] | None = None, **kw):
            opts = dict(cuda_options or {})
            opts["enable_cuda_graph"] = "1"
            self._bufs: dict = {}
            super().__init__(artifacts, cuda_options=opts, io_binding=True, **kw)

        def _buffers(self, b: int) -> dict:
            if b in self._bufs:
                return self._bufs[b]
            s, (ih, iw), (h, w) = self.spec.n_styles, self.spec.image_hw, self.spec.input_hw
            dev, ov, ort = (self.device, self.device_id), self._ort.OrtValue, self._ort
            new = lambda shape: ov.ortvalue_from_shape_and_type(shape, np.float32, *dev)  # noqa: E731
            bufs = {
                "x": new((b, 3, h, w)),
                "y": new((b, 3, h, w)),
                "lat": [new((b, s, 512)), new((b, s, 512))],
                "img": new((b, 3, ih, iw)),
                "bind": [],
                "opts": [],
            }
            enc, syn = self.sessions["encoder"], self.sessions["synthesis"]
            base = 1 + 2 * len(self._bufs)
            for a in (0, 1):
                be, bs = enc.io_binding(), syn.io_binding()
                for name, val in (("image", bufs["x"]), ("feedback", bufs["y"]), ("latent", bufs["lat"][a])):
                    be.bind_ortvalue_input(name, val)
                be.bind_ortvalue_output("latent_next", bufs["lat"][1 - a])
                bs.bind_ortvalue_input("latent", bufs["lat"][1 - a])
                bs.bind_ortvalue_output("image", bufs["img"])
                bs.bind_ortvalue_output("feedback", bufs["y"])
                ro = ort.RunOptions()
                ro.add_run_config_entry("gpu_graph_id", str(base + a))
                bufs["bind"].append((be, bs))
                bufs["opts"].append(ro)
            bufs["w0"] = np.ascontiguousarray(np.broadcast_to(self.artifacts.latent_avg, (b, s, 512)))
            bufs["y0"] = np.ascontiguousarray(np.broadcast_to(self.artifacts.avg_feedback, (b, 3, h, w)))
            self._bufs[b] = bufs
            return bufs

        def run_loop(self, images, n_iters, return_steps=False, early_exit=None):
            if early_exit is not None:
                raise ValueError("the CUDA-graph loop has no early exit")
            check_iters(n_iters, None)
            x = check_images(images, self.spec.input_hw, "cuda-graph loop")
            b = x.shape[0]
            check_batch(self.artifacts.profile, b, "cuda-graph loop")
            k = self._buffers(b)
            k["x"].update_inplace(x)
            k["lat"][0].update_inplace(k["w0"])
            k["y"].update_inplace(k["y0"])
            enc, syn = self.sessions["encoder"], self.sessions["synthesis"]
            res = LoopResult(latents=None, images=None, steps_used=np.full(b, n_iters, dtype=np.int64))
            a = 0
            for _ in range(n_iters):
                enc.run_with_iobinding(k["bind"][a][0], k["opts"][a])
                syn.run_with_iobinding(k["bind"][a][1], k["opts"][a])
                a = 1 - a
                if return_steps:
                    res.step_latents.append(np.array(k["lat"][a].numpy(), copy=True))
                    res.step_images.append(np.array(k["img"].numpy(), copy=True))
            res.latents = np.array(k["lat"][a].numpy(), dtype=np.float32, copy=True)
            res.images = np.array(k["img"].numpy(), dtype=np.float32, copy=True)
            return res

        def close(self) -> None:
            self._bufs = {}
            super().close()

    return OptionsBackend, GraphLoopBackend


def step_parity(got, ref, key: str | None) -> list[dict]:
    """Per step: latent rel-L2, image rel-L2 / PSNR / max-abs of ``got`` against ``ref``, with the verdict against
    ``parity.TOLERANCES[(key, precision, ...)]`` when ``key`` names an entry."""
    from restyle_rt.parity import TOLERANCES, compare

    prec = "fp16" if key == "ort-fp16-proxy-loop" else "fp32"
    tl, ti = TOLERANCES.get((key, prec, "latent")), TOLERANCES.get((key, prec, "image"))
    rows = []
    for t, (gl, rl, gi, ri) in enumerate(zip(got.step_latents, ref.step_latents, got.step_images, ref.step_images)):
        lat, img = compare(gl, rl), compare(gi, ri)
        row = {
            "step": t + 1,
            "latent_rel_l2": lat.rel_l2,
            "image_rel_l2": img.rel_l2,
            "image_psnr_db": img.psnr_db,
            "image_max_abs": img.max_abs,
            "finite": bool(np.isfinite(gl).all() and np.isfinite(gi).all()),
        }
        if tl and ti:
            why = [w for w in (tl.check(lat), ti.check(img)) if w]
            row["within"] = not why and row["finite"]
            if why:
                row["why"] = "; ".join(why)
        rows.append(row)
    return rows


def _stats(ts: Sequence[float]) -> dict:
    s = sorted(ts)
    return {
        "n": len(s),
        "p50_s": s[len(s) // 2],
        "min_s": s[0],
        "p90_s": s[min(len(s) - 1, int(0.9 * len(s)))],
        "mean_s": sum(s) / len(s),
    }


def gpu_mem_used_mib() -> int | None:
    out = _run_text(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"], timeout=10)
    try:
        return int(out.splitlines()[0]) if out else None
    except ValueError:
        return None


class SeedGuard:
    """Checks after every loop that the backend left the artifacts' loop seeds (latent_avg, avg_feedback) as they
    were, counts the calls that wrote into them and puts them back, so one defect cannot skew every later number."""

    def __init__(self, art):
        self.art, self.lat, self.fb, self.writes = art, art.latent_avg.copy(), art.avg_feedback.copy(), 0

    def check(self) -> None:
        if not (np.array_equal(self.art.latent_avg, self.lat) and np.array_equal(self.art.avg_feedback, self.fb)):
            self.writes += 1
            np.copyto(self.art.latent_avg, self.lat)
            np.copyto(self.art.avg_feedback, self.fb)


def run_config(
    backend,
    images: np.ndarray,
    batches: Sequence[int],
    iters: int,
    warmup: int,
    repeat: int,
    ref: dict[int, object],
    key: str | None,
    parity_batches: Sequence[int],
    on_row: Callable,
) -> None:
    """Time one backend at every batch: first call (cuDNN search, graph capture), per-step parity, then ``warmup``
    untimed and ``repeat`` timed loops; ``on_row`` gets each batch's row as soon as it exists."""
    for b in batches:
        x = images[:b]
        row: dict = {"batch": b, "iters": iters}
        guard = SeedGuard(backend.artifacts)

        def loop(steps: bool = False):
            try:
                return backend.run_loop(x, iters, return_steps=steps)  # noqa: B023 - called in this iteration
            finally:
                guard.check()  # noqa: B023 - called in this iteration

        try:
            t0 = time.perf_counter()
            loop()
            row["first_call_s"] = time.perf_counter() - t0
            if b in parity_batches and b in ref:
                row["parity_vs_cpu_fp32"] = step_parity(loop(True), ref[b], key)
            for _ in range(warmup):
                loop()
            ts = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                backend.run_loop(x, iters)
                ts.append(time.perf_counter() - t0)
                guard.check()
            st = _stats(ts)
            row.update(
                st,
                s_per_image=st["p50_s"] / b,
                images_per_s=b / st["p50_s"],
                ms_per_step=1e3 * st["p50_s"] / iters,
                gpu_mem_used_mib=gpu_mem_used_mib(),
                load_avg=_loadavg(),
            )
        except Exception as e:  # noqa: BLE001  (a failed batch is a result: record it, go on)
            row["error"] = f"{type(e).__name__}: {e}"[:2000]
        row["seed_writes"] = guard.writes  # loops after which the artifacts' seeds had changed (0 expected)
        on_row(row)


def cmd_ort_loop(args) -> int:
    rep = Report(args.json, "ort-loop", args.argv)
    providers = [p for p in args.providers.split(",") if p]
    gpu = CUDA in providers
    rep["providers_asked"] = providers
    rep["dry_run_cpu"] = not gpu
    try:
        if gpu:
            rep["cuda_libs"] = preload_cuda_libs()
        rep["onnxruntime"] = check_ort_gpu(providers)
        rep.save()
        work = Path(args.work)
        if args.artifacts:
            art32 = Path(args.artifacts)
            name = art32.name
        else:
            prep = prepare_preset(args.preset, work, fp16=False)
            rep["prepare"] = prep
            art32, name = Path(prep["artifacts"]), args.preset
        rep["preset"] = name
        rep.save()
        result = ort_loop(art32, work / name, providers, rep, args)
    except Prerequisite as e:
        rep.finish("missing-prerequisite", str(e))
        print(f"h200_run ort-loop: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001
        rep.finish("failed", f"{type(e).__name__}: {e}")
        print(f"h200_run ort-loop: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    rep["torch_imported"] = "torch" in sys.modules
    rep.finish("ok" if result else "partial", "" if result else "some configurations failed (see rows[].error)")
    print_ort_table(rep.data)
    return 0


def ort_loop(art32: Path, work: Path, providers: list[str], rep: Report, args) -> bool:
    """Every (precision, mode, batch) of the ORT loop on ``providers`` against the CPU FP32 loop; rows go into the
    report as they come. Returns False when any configuration failed."""
    from restyle_rt.artifacts import load
    from restyle_rt.runtime.backends.ort import OrtBackend

    OptionsBackend, GraphLoopBackend = _backend_classes()
    gpu = CUDA in providers
    art = {"fp32": load(art32)}
    batches = sorted(set(args.batch))
    parity_batches = batches if args.parity_batch is None else sorted(set(args.parity_batch))
    images = make_images(max(batches), art["fp32"].spec.input_hw, args.seed)
    rep["spec"] = art["fp32"].spec.to_dict()
    rep["batch_profile"] = art["fp32"].profile.to_list()
    rep["images"] = {
        "seed": args.seed,
        "shape": list(images.shape),
        "mean": float(images.mean()),
        "std": float(images.std()),
    }
    if "fp16" in args.precisions:
        t0 = time.perf_counter()
        art["fp16"] = load(derive_fp16(art32, work / "fp16"))
        rep["fp16_graphs"] = {"dir": str(art["fp16"].root), "derive_s": round(time.perf_counter() - t0, 1)}
    # the reference: the product's ORT loop on the CPU, FP32 graphs
    t0 = time.perf_counter()
    ref = {}
    with OrtBackend(art["fp32"], providers=[CPU]) as cpu:
        for b in parity_batches:
            ref[b] = cpu.run_loop(images[:b], args.iters, return_steps=True)
    rep["cpu_reference"] = {
        "seconds": round(time.perf_counter() - t0, 2),
        "batches": parity_batches,
        "threads": os.cpu_count(),
    }
    rep["rows"] = []
    rep.save()
    ok = True
    for mode in args.modes:  # the product's own path (iobinding) first, for every precision
        for prec in args.precisions:
            cuda_opts = {"use_tf32": "0"} if prec == "fp32-notf32" else {}
            if args.conv_algo:
                cuda_opts["cudnn_conv_algo_search"] = args.conv_algo
            a = art["fp16" if prec == "fp16" else "fp32"]
            base = {"precision": prec, "mode": mode, "cuda_graph": mode == "cuda-graph" and gpu}
            t0 = time.perf_counter()
            try:
                if mode == "cuda-graph":
                    be = GraphLoopBackend(a, cuda_options=cuda_opts, providers=providers)
                elif cuda_opts:
                    be = OptionsBackend(a, cuda_options=cuda_opts, providers=providers, io_binding=True)
                else:
                    be = OrtBackend(a, providers=providers, io_binding=True)  # the product's own GPU path
            except Exception as e:  # noqa: BLE001
                ok = False
                rep["rows"].append(
                    {**base, "error": f"session: {type(e).__name__}: {e}"[:2000], "session_s": time.perf_counter() - t0}
                )
                rep.save()
                print(f"  {prec} {mode}: session failed: {e}"[:300], flush=True)
                continue
            sess_s = time.perf_counter() - t0
            with contextlib.suppress(Exception):
                base["provider_options"] = be.sessions["encoder"].get_provider_options()
            base["session_providers"] = list(be.providers)
            base["session_s"] = sess_s

            def on_row(row, base=base):
                nonlocal ok
                ok = ok and "error" not in row
                rep["rows"].append({**base, **row})
                rep.save()
                p = row.get("parity_vs_cpu_fp32") or [{}]
                print(
                    f"  {prec:11s} {mode:10s} b{row['batch']}: "  # noqa: B023 - called in this iteration
                    + (
                        f"p50 {row['p50_s'] * 1e3:8.2f} ms/loop, {row['images_per_s']:8.1f} img/s, step {p[-1].get('step')}"
                        f" latent {p[-1].get('latent_rel_l2', float('nan')):.2e} PSNR "
                        f"{p[-1].get('image_psnr_db', float('nan')):.1f} dB"
                        if "p50_s" in row
                        else row.get("error", "")
                    ),
                    flush=True,
                )

            with be:
                run_config(
                    be,
                    images,
                    batches,
                    args.iters,
                    args.warmup,
                    args.repeat,
                    ref,
                    PARITY_KEYS.get(prec),
                    parity_batches,
                    on_row,
                )
    rep["default_providers"] = default_providers_probe(art["fp32"], images, args.iters, ref)
    rep.save()
    return ok


def default_providers_probe(art, images: np.ndarray, iters: int, ref: dict) -> dict:
    """The product's default provider choice (``OrtBackend(art)``: TensorRT, CUDA, then CPU among those this
    onnxruntime has), as a user gets it: which providers the session ends up with, or the refusal, and one batch-1
    loop against the CPU loop."""
    import onnxruntime as ort

    from restyle_rt.runtime.backends.ort import OrtBackend

    out: dict = {"available": ort.get_available_providers()}
    t0 = time.perf_counter()
    try:
        with OrtBackend(art) as be:
            out["session_providers"], out["device"] = list(be.providers), be.device
            b = min(ref) if ref else 1
            res = be.run_loop(images[:b], iters, return_steps=True)
            out["batch"] = b
            if b in ref:
                out["parity_vs_cpu_fp32"] = step_parity(res, ref[b], "ort-loop")
    except Exception as e:  # noqa: BLE001  (a refusal is the result)
        out["error"] = f"{type(e).__name__}: {e}"[:2000]
    out["seconds"] = round(time.perf_counter() - t0, 2)
    print(f"  default providers: {out.get('session_providers') or out.get('error')}"[:400], flush=True)
    return out


def print_ort_table(doc: dict) -> None:
    print(
        f"\n{doc.get('preset')}: ORT {doc.get('onnxruntime', {}).get('version')} "
        f"{'CPU dry run' if doc.get('dry_run_cpu') else 'CUDA EP'}; {doc['machine']['gpu'].get('name', 'no GPU')}"
    )
    print(
        "| precision | mode | batch | p50 ms/loop | ms/step | img/s | first call s | last-step latent rel-L2 | "
        "last-step PSNR dB | within |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in doc.get("rows", []):
        if "p50_s" not in r:
            print(f"| {r['precision']} | {r['mode']} | {r.get('batch', '-')} | error: {r.get('error', '')[:80]} |")
            continue
        p = (r.get("parity_vs_cpu_fp32") or [{}])[-1]
        print(
            f"| {r['precision']} | {r['mode']} | {r['batch']} | {r['p50_s'] * 1e3:.2f} | {r['ms_per_step']:.2f} | "
            f"{r['images_per_s']:.1f} | {r['first_call_s']:.2f} | {p.get('latent_rel_l2', float('nan')):.2e} | "
            f"{p.get('image_psnr_db', float('nan')):.1f} | {p.get('within', '-')} |"
        )


# --- TensorRT-RTX on SM 9.0 -----------------------------------------------------------------------------------------


def cmd_rtx_engine(args) -> int:
    """Here: the toy artifacts (tests/toy_artifacts.py) with TensorRT-RTX AOT engines, small enough to carry."""
    sys.path.insert(0, str(REPO / "tests"))
    import toy_artifacts

    from restyle_rt.engine import build_engines

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    toy_artifacts.build(out)
    recs = []
    for prec in args.precision:
        recs += build_engines(out, precision=prec, workspace_gb=0.5, flavour="tensorrt-rtx")
    for r in recs:
        print(
            f"{r.graph} {r.precision}: {r.size_bytes} bytes, {r.trt_flavour} {r.trt_version}, "
            f"targets {', '.join(r.compute_capabilities)}"
        )
    print(f"{out}: {path_bytes(out) / MiB:.2f} MiB")
    return 0


def _trt_logger(trt, lines: list[str]):
    class _Log(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            lines.append(f"{getattr(severity, 'name', severity)}: {msg}")

    return _Log()


def cmd_rtx_probe(args) -> int:
    rep = Report(args.json, "rtx-probe", args.argv)
    try:
        if not gpu_info().get("name"):
            raise Prerequisite(
                "no GPU: nvidia-smi is missing or lists no device; the probe deserializes engines on a GPU"
            )
        rep["cuda_libs"] = preload_cuda_libs()
        from restyle_rt.runtime.trt_compat import try_load_trt

        info = try_load_trt("tensorrt-rtx")
        if info is None:
            raise Prerequisite(
                "TensorRT-RTX is not importable (tensorrt_rtx_bindings + tensorrt_rtx_libs); install "
                "the carried wheels (`h200_run.py pieces stash ... --install /root/h200/site`)"
            )
        rtx_probe(Path(args.engine_dir), info, rep, args)
    except Prerequisite as e:
        rep.finish("missing-prerequisite", str(e))
        print(f"h200_run rtx-probe: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001
        rep.finish("failed", f"{type(e).__name__}: {e}")
        print(f"h200_run rtx-probe: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    rep.finish("ok")
    print(
        json.dumps(_jsonable({k: rep.data.get(k) for k in ("trt", "product", "raw", "build_current")}), indent=1)[:6000]
    )
    return 0


def rtx_probe(engine_dir: Path, info, rep: Report, args) -> None:
    """The product's TRT backend on the AOT engines, then TensorRT-RTX itself (validity, deserialize, log), then a
    build for ``current`` on this GPU; each outcome is recorded as it is (an error is a result here)."""
    from restyle_rt import artifacts as A
    from restyle_rt.runtime import cuda

    trt = info.module
    cc = cuda.compute_capability(0)
    rep["trt"] = {
        "flavour": info.flavour,
        "version": info.version,
        "device_cc": f"{cc[0]}.{cc[1]}",
        "compute_capabilities": sorted(
            n for n in getattr(trt, "ComputeCapability", {}).__members__ if n.startswith("SM")
        )
        if hasattr(trt, "ComputeCapability")
        else None,
    }
    art = A.load(engine_dir)
    images = make_images(2, art.spec.input_hw, 3)
    rep["product"] = _product_trt(art, images, args.iters)
    rep.save()
    raw = []
    for rec in art.manifest.engines:
        lines: list[str] = []
        plan = (engine_dir / rec.file).read_bytes()
        row = {"file": rec.file, "built_for": list(rec.compute_capabilities), "bytes": len(plan)}
        runtime = trt.Runtime(_trt_logger(trt, lines))
        with contextlib.suppress(Exception):
            validity, diag = runtime.get_engine_validity(plan)
            row["validity"] = str(validity)
            members = trt.EngineInvalidityDiagnostics.__members__.items()
            row["diagnostics"] = [n for n, v in members if int(diag) & int(v)]
        try:
            eng = runtime.deserialize_cuda_engine(plan)
            row["deserialized"] = eng is not None
            if eng is not None:
                ctx = eng.create_execution_context()
                row["context"] = ctx is not None
        except Exception as e:  # noqa: BLE001
            row["deserialized"] = False
            row["exception"] = f"{type(e).__name__}: {e}"
        row["log"] = lines[-40:]
        raw.append(row)
    rep["raw"] = raw
    rep.save()
    if args.build_current:
        rep["build_current"] = _build_current(engine_dir, images, args.iters)
        rep.save()


def _product_trt(art, images: np.ndarray, iters: int) -> dict:
    """TrtBackend on ``art`` and, when it starts, its loop against the ORT CPU loop (per step)."""
    from restyle_rt.runtime.backends.ort import OrtBackend
    from restyle_rt.runtime.backends.trt import TrtBackend

    out: dict = {}
    t0 = time.perf_counter()
    try:
        with TrtBackend(art, precision="fp32") as be:
            out["started"] = True
            got = be.run_loop(images, iters, return_steps=True)
        with OrtBackend(art, providers=[CPU]) as cpu:
            ref = cpu.run_loop(images, iters, return_steps=True)
        out["parity_vs_ort_cpu"] = step_parity(got, ref, "ort-loop")
    except Exception as e:  # noqa: BLE001
        out["started"] = out.get("started", False)
        out["error"] = f"{type(e).__name__}: {e}"[:3000]
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def _build_current(engine_dir: Path, images: np.ndarray, iters: int) -> dict:
    """Build the toy's engines on this GPU (``--compute-capability current``) in a copy, then run them."""
    from restyle_rt import artifacts as A
    from restyle_rt.engine import build_engines

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "art"
        shutil.copytree(engine_dir, copy, ignore=shutil.ignore_patterns("engines"))
        m = json.loads((copy / A.MANIFEST).read_text())
        m.pop("engines", None)
        A.write_manifest(copy, m)
        handler = _ListHandler()
        logging.getLogger("restyle_rt").addHandler(handler)
        t0 = time.perf_counter()
        try:
            recs = build_engines(
                copy, precision="fp32", workspace_gb=0.5, compute_capabilities=["current"], flavour="tensorrt-rtx"
            )
            out["built"] = [
                {"graph": r.graph, "size_bytes": r.size_bytes, "compute_capabilities": list(r.compute_capabilities)}
                for r in recs
            ]
            out["product"] = _product_trt(A.load(copy), images, iters)
        except Exception as e:  # noqa: BLE001
            out["error"] = f"{type(e).__name__}: {e}"[:3000]
        finally:
            logging.getLogger("restyle_rt").removeHandler(handler)
        out["seconds"] = round(time.perf_counter() - t0, 2)
        out["log"] = handler.lines[-40:]
    return out


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(f"{record.levelname}: {record.getMessage()}"[:500])


# --- compute-sanitizer over the GPU tests -----------------------------------------------------------------------------

SUMMARY_RE = re.compile(r"=+\s*(ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY)[:\s]+(.*)")
PYTEST_RE = re.compile(r"=+ (.*\b(passed|failed|error|errors|skipped|deselected)\b.*) in [\d.]+s")
FINDING_RE = re.compile(r"^={9}\s+(?!ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY|COMPUTE-SANITIZER)([^=\s].*)$")


def sanitizer_command(sanitizer: str, tool: str, tests: Sequence[str], k: str | None, junit: Path) -> list[str]:
    """compute-sanitizer around pytest in this interpreter; only the application process is sanitized (nvcc, run
    by the kernel build, is not); findings exit with SANITIZER_EXIT."""
    cmd = [
        sanitizer,
        "--tool",
        tool,
        "--error-exitcode",
        str(SANITIZER_EXIT),
        "--target-processes",
        "application-only",
        "--print-limit",
        "100",
    ]
    if tool == "racecheck":
        cmd += ["--racecheck-report", "all"]
    cmd += [
        sys.executable,
        "-m",
        "pytest",
        "-v",
        "-p",
        "no:cacheprovider",
        "-o",
        "junit_family=legacy",
        f"--junitxml={junit}",
        *tests,
    ]
    return cmd + (["-k", k] if k else [])


def parse_sanitizer_log(text: str) -> dict:
    """The sanitizer's summary lines, its first findings, and pytest's outcome from one run's output."""
    summaries = [f"{m.group(1)}: {m.group(2).strip()}" for m in SUMMARY_RE.finditer(text)]
    errors = 0
    for s in summaries:
        m = re.search(r"(\d+) errors?", s)
        if m:
            errors += int(m.group(1))
    findings, seen = [], set()
    for line in text.splitlines():
        m = FINDING_RE.match(line.rstrip())
        skip = ("at ", "by ", "in ", "Host Frame", "Saved host")  # stack lines of the finding above
        if m and not m.group(1).startswith(skip) and m.group(1) not in seen:
            seen.add(m.group(1))
            findings.append(m.group(1)[:300])
    outcome = PYTEST_RE.findall(text)
    tests = {k: len(re.findall(rf"(?m)^\S+::\S+.* {k.upper()}\b", text)) for k in ("passed", "failed", "skipped")}
    tests["errors"] = len(re.findall(r"(?m)^\S+::\S+.* ERROR\b", text))
    return {
        "summaries": summaries,
        "errors": errors,
        "findings": findings[:50],
        "pytest": outcome[-1][0] if outcome else None,
        "tests": tests,
    }


def cmd_sanitize(args) -> int:
    rep = Report(args.json, "sanitize", args.argv)
    tools = [t for t in args.tools.split(",") if t]
    try:
        bad = [t for t in tools + [kv.split("=", 1)[0] for kv in args.tool_k] if t not in SANITIZER_TOOLS]
        if any("=" not in kv for kv in args.tool_k):
            raise Prerequisite("--tool-k takes TOOL=EXPR, e.g. racecheck='13x37x5x19 or noise_modes'")
        if bad:
            raise Prerequisite(f"unknown tool(s) {bad}; choose from {', '.join(SANITIZER_TOOLS)}")
        san = find_tool("compute-sanitizer")
        if not san:
            raise Prerequisite("compute-sanitizer not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin)")
        if not gpu_info().get("name"):
            raise Prerequisite("no GPU: nvidia-smi is missing or lists no device; the sanitizer needs one")
        if not find_tool("nvcc"):
            raise Prerequisite("nvcc not found: the kernel tests build the kernel library with it")
    except Prerequisite as e:
        rep.finish("missing-prerequisite", str(e))
        print(f"h200_run sanitize: {e}", file=sys.stderr)
        return 2
    log_path = Path(args.log) if args.log else (Path(args.json).with_suffix(".log") if args.json else None)
    if log_path:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
        rep["log"] = str(log_path)
    rep["tools"] = {}
    found = False

    def stop(signum, frame):  # `kill` of this job stops the sanitizer too (it runs in its own process group)
        _kill_child()
        rep.finish("stopped", f"stopped by signal {signum} after {', '.join(rep['tools']) or 'no tool'}")
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    per_tool_k = dict(kv.split("=", 1) for kv in args.tool_k)
    for tool in tools:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = sanitizer_command(san, tool, args.tests, per_tool_k.get(tool, args.k), Path(tmp) / "junit.xml")
            t0 = time.perf_counter()
            text, code, timed_out = _run_limited(cmd, args.timeout, cwd=REPO)
            rec = {
                "command": " ".join(cmd),
                "exit": code,
                "timed_out": timed_out,
                "seconds": round(time.perf_counter() - t0, 1),
                **parse_sanitizer_log(text),
            }
        rec["sanitizer_found_errors"] = code == SANITIZER_EXIT or rec["errors"] > 0
        if not rec["summaries"]:
            rec["note"] = "no summary line: the sanitizer did not finish (timeout) or could not attach"
        found = found or rec["sanitizer_found_errors"]
        rep["tools"][tool] = rec
        rep.save()
        if log_path:
            with open(log_path, "a") as f:
                f.write(f"### {tool}: {' '.join(cmd)}\n{_trim(text, args.log_cap)}\n\n")
        print(
            f"{tool}: exit {code}{' (timed out)' if timed_out else ''}, {rec['seconds']} s, "
            f"{'; '.join(rec['summaries']) or 'no summary'}; pytest: {rec['pytest']}",
            flush=True,
        )
        for f in rec["findings"][:5]:
            print(f"    {f}")
    rep.finish("errors-found" if found else "ok")
    return 1 if found else 0


def _trim(text: str, cap: int) -> str:
    if len(text) <= cap:
        return text
    return text[: cap // 2] + f"\n... [{len(text) - cap} characters cut] ...\n" + text[-cap // 2 :]


_CHILD: list[subprocess.Popen] = []


def _kill_child() -> None:
    for p in _CHILD:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)


def _run_limited(cmd: Sequence[str], timeout: float, cwd: Path) -> tuple[str, int | None, bool]:
    """Run ``cmd`` in its own process group; on timeout kill the group. Returns (output, exit code, timed out)."""
    with tempfile.TemporaryFile("w+") as out:
        p = subprocess.Popen(
            list(cmd), stdout=out, stderr=subprocess.STDOUT, cwd=str(cwd), env=_child_env(), start_new_session=True
        )
        _CHILD[:] = [p]
        timed_out = False
        try:
            code = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_child()
            code = p.wait()
        finally:
            _CHILD.clear()
        out.seek(0)
        return out.read(), code, timed_out


# --- env ------------------------------------------------------------------------------------------------------------


def cmd_env(args) -> int:
    rep = Report(args.json, "env", args.argv)
    rep["checks"] = checks = {
        "gpu": bool(rep["machine"]["gpu"].get("name")),
        "nvcc": find_tool("nvcc"),
        "compute_sanitizer": find_tool("compute-sanitizer"),
        "nvidia_pip_lib_dirs": [str(Path(p) / "nvidia") for p in sys.path if p and (Path(p) / "nvidia").is_dir()],
        "work_dir": str(args.work),
        "work_free_gib": round(shutil.disk_usage(_existing(Path(args.work))).free / 2**30, 1),
    }
    with contextlib.suppress(Exception):
        checks["onnxruntime"] = ort_facts()
    rep.finish("ok")
    print(json.dumps(_jsonable({"gpu": rep["machine"]["gpu"], **checks}), indent=1))
    return 0


def _existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


# --- command line ---------------------------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    try:
        vals = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1,4,8") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers, e.g. 1,4,8")
    return vals


def _choices(allowed: Sequence[str]):
    def parse(text: str) -> list[str]:
        vals = [x for x in str(text).split(",") if x]
        bad = [v for v in vals if v not in allowed]
        if bad or not vals:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(allowed)}")
        return vals

    return parse


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="h200_run.py", description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("budget", help="bytes one device call carries (tree + carry) against the 64 MiB limit")
    p.add_argument("--carry", nargs="*", default=[], help="paths (relative to the repo) the call carries")
    p.add_argument("--repo", default=str(REPO))
    p.set_defaults(func=cmd_budget)

    p = sub.add_parser("pieces", help="split files into carriable pieces; stash / join / install them there")
    ps = p.add_subparsers(dest="pieces_cmd", required=True, metavar="ACTION")
    s = ps.add_parser("split", help="(here) files -> pieces of at most --size + pieces.json")
    s.add_argument("files", nargs="+")
    s.add_argument("--out", required=True)
    s.add_argument("--size", type=parse_size, default=parse_size("58MiB"), help="piece size (default 58MiB)")
    s.add_argument(
        "--encoding",
        choices=("raw", "wheel-xz"),
        default="raw",
        help="raw: the files' bytes; wheel-xz: each wheel's members as one xz stream, rebuilt and "
        "checked against the wheel's RECORD there (smaller)",
    )
    s.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="GLOB",
        help="wheel-xz: leave out wheel members matching GLOB (e.g. a library Python never loads)",
    )
    s.add_argument("--xz-dict", type=parse_size, default=None, help="xz dictionary (default: the payload's size)")
    s.add_argument("--json")
    r = ps.add_parser("recut", help="(here) the same stream in pieces of another size (no re-encoding)")
    r.add_argument("dir")
    r.add_argument("--out", required=True)
    r.add_argument("--size", type=parse_size, required=True)
    r.add_argument("--json")
    j = ps.add_parser("join", help="(there) verify and reassemble; names every missing or corrupt piece")
    j.add_argument("dir")
    j.add_argument("--out", required=True, help="output directory (or file path when one --file is asked for)")
    j.add_argument("--file", action="append", default=[], help="only this file of the split (repeatable)")
    j.add_argument("--json")
    t = ps.add_parser("stash", help="(there) keep carried pieces outside the tree; join and install what is complete")
    t.add_argument("src", help="the carried pieces directory (in the tree)")
    t.add_argument("--into", required=True, help="where pieces are kept between calls (e.g. /root/h200/pieces)")
    t.add_argument("--join", help="reassemble every complete file into this directory")
    t.add_argument("--install", help="pip install every newly joined wheel into this --target directory")
    t.add_argument("--json")
    p.set_defaults(func=cmd_pieces)

    p = sub.add_parser("env", help="(there) machine facts and what is installed")
    p.add_argument("--json")
    p.add_argument("--work", default=str(DEFAULT_WORK / "work"))
    p.set_defaults(func=cmd_env)

    p = sub.add_parser("prepare", help="(there) export random-weight presets (torch in a child) + FP16 graphs")
    p.add_argument("--preset", action="append", choices=PRESETS, required=True)
    p.add_argument("--work", default=str(DEFAULT_WORK / "work"))
    p.add_argument("--no-fp16", action="store_true")
    p.add_argument("--json")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("ort-loop", help="ORT CUDA EP loop vs the CPU loop: per-step parity, latency, throughput")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", choices=PRESETS, help="export it under --work first (unless already there)")
    src.add_argument("--artifacts", help="an existing artifacts directory")
    p.add_argument("--work", default=str(DEFAULT_WORK / "work"))
    p.add_argument("--batch", type=_ints, default=[1, 4, 8])
    p.add_argument("--parity-batch", type=_ints, default=None, help="batches checked per step (default: all)")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--precisions",
        type=_choices(PRECISIONS),
        default=["fp32", "fp16"],
        help=f"of {', '.join(PRECISIONS)} (fp32-notf32: CUDA EP use_tf32=0)",
    )
    p.add_argument("--modes", type=_choices(MODES), default=list(MODES))
    p.add_argument(
        "--providers",
        default=f"{CUDA},{CPU}",
        help=f"ORT providers (default {CUDA},{CPU}; {CPU} alone: the CPU dry run)",
    )
    p.add_argument(
        "--conv-algo",
        choices=("EXHAUSTIVE", "HEURISTIC", "DEFAULT"),
        default=None,
        help="CUDA EP cudnn_conv_algo_search (default: ORT's, EXHAUSTIVE)",
    )
    p.add_argument("--json")
    p.set_defaults(func=cmd_ort_loop)

    p = sub.add_parser("rtx-engine", help="(here) toy artifacts + TensorRT-RTX AOT engines to carry")
    p.add_argument("out")
    p.add_argument("--precision", action="append", default=None, choices=("fp32", "fp16"))
    p.set_defaults(func=cmd_rtx_engine)

    p = sub.add_parser("rtx-probe", help="(there) deserialize and run AOT TensorRT-RTX engines on this GPU")
    p.add_argument("engine_dir", help="artifacts directory with TensorRT-RTX engines (rtx-engine writes one)")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument(
        "--no-build-current",
        dest="build_current",
        action="store_false",
        help="skip building the toy for this GPU ('current')",
    )
    p.add_argument("--json")
    p.set_defaults(func=cmd_rtx_probe)

    p = sub.add_parser("sanitize", help="(there) compute-sanitizer tools over the GPU and kernel tests")
    p.add_argument("--tools", default="memcheck,racecheck,synccheck")
    p.add_argument("--tests", nargs="+", default=list(SANITIZE_TESTS))
    p.add_argument("-k", dest="k", default=None, help="pytest -k expression for every tool")
    p.add_argument(
        "--tool-k",
        action="append",
        default=[],
        metavar="TOOL=EXPR",
        help="pytest -k expression for one tool (e.g. racecheck='13x37x5x19 or noise_modes')",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per tool (default 300)")
    p.add_argument("--log", default=None, help="combined log (default: the --json path with .log)")
    p.add_argument("--log-cap", type=int, default=2_000_000, help="characters kept per tool's output")
    p.add_argument("--json")
    p.set_defaults(func=cmd_sanitize)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(name)s: %(message)s")
    if getattr(args, "cmd", None) == "rtx-engine" and args.precision is None:
        args.precision = ["fp32", "fp16"]
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
