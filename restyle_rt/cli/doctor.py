"""``restyle-rt doctor``: what can run here, and why not (in the spirit of ``polygraphy inspect``, ``yolo checks``).

Each registered backend with the reason it cannot run (:func:`restyle_rt.runtime.backends.available`), ONNX Runtime's
execution providers and OpenVINO's devices, the CPU and the feature flags its INT8/BF16 speed depends on (VNNI,
AVX512-BF16, AMX; dot-product / BF16 / I8MM on ARM), library versions (read from the installed distributions,
nothing imported), TensorRT, and the CUDA devices (cuda-python). ``--json`` prints one JSON object.
Exit code 0 when at least one backend can run here, else 6. Registration imports nothing heavy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from typing import Any

from ..errors import EXIT_BACKEND, EXIT_OK

# distributions whose versions matter (absent ones are reported as not installed)
LIBRARIES = (
    "numpy",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-openvino",
    "opencv-python-headless",
    "opencv-python",
    "tqdm",
    "onnx",
    "openvino",
    "tensorrt",
    "tensorrt-cu12",
    "tensorrt-cu13",
    "tensorrt_rtx_cu13_bindings",
    "cuda-python",
    "cuda-bindings",
    "torch",
    "nvidia-pytriton",
    "dlib-bin",
    "pillow",
)
# x86 /proc/cpuinfo flags and ARM Features that decide which CPU kernels ORT / OpenVINO pick
CPU_FLAGS = {
    "x86": (
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512_vnni",
        "avx_vnni",
        "avx512_bf16",
        "amx_tile",
        "amx_int8",
        "amx_bf16",
        "avx512_fp16",
    ),
    "arm": ("asimd", "asimddp", "i8mm", "bf16", "sve", "sve2"),
}


def register(subparsers) -> None:
    """Add ``doctor`` to ``restyle-rt``."""
    p = subparsers.add_parser(
        "doctor",
        help="which backends can run here and why not; CPU, libraries, CUDA",
        description=__doc__.split("\n\n")[0].replace("``", ""),
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Do ``doctor``: 0 when some backend can run here, else 6."""
    d = report()
    print(json.dumps(d, indent=2) if args.json else "\n".join(render(d)))
    return EXIT_OK if any(b["available"] for b in d["backends"].values()) else EXIT_BACKEND


def report() -> dict[str, Any]:
    """Everything ``doctor`` checks, as plain data."""
    from .. import __version__

    return {
        "restyle_rt": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "backends": _backends(),
        "onnxruntime_providers": _ort_providers(),
        "openvino_devices": _ov_devices(),
        "cpu": _cpu(),
        "tensorrt": _tensorrt(),
        "cuda": _cuda(),
        "libraries": _libraries(),
    }


def _backends() -> dict[str, dict]:
    from ..runtime.backends import REGISTRY, available

    out = {}
    for name in REGISTRY:
        try:
            ok, why = available(name)
        except Exception as e:  # a broken install must not stop the report
            ok, why = False, f"{type(e).__name__}: {e}"
        out[name] = {"available": bool(ok), "why": "" if ok else why, "install": REGISTRY[name][2]}
    return out


def _ort_providers() -> list[str]:
    try:
        import onnxruntime

        return list(onnxruntime.get_available_providers())
    except Exception:  # not installed, or a broken build
        return []


def _ov_devices() -> list[str]:
    try:
        import openvino

        return list(openvino.Core().available_devices)
    except Exception:
        return []


def _cpu() -> dict[str, Any]:
    from ..runtime.hostinfo import cpu_flags, cpu_model

    flags = cpu_flags()
    arch = "arm" if "asimd" in flags or platform.machine().lower() in ("aarch64", "arm64") else "x86"
    have = {f: f in flags for f in CPU_FLAGS[arch]}
    if arch == "x86":
        int8 = [f for f in ("amx_int8", "avx512_vnni", "avx_vnni") if have[f]]
        bf16 = [f for f in ("amx_bf16", "avx512_bf16") if have[f]]
    else:
        int8 = [f for f in ("i8mm", "asimddp") if have[f]]
        bf16 = [f for f in ("bf16",) if have[f]]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "model": cpu_model(),
        "arch": arch,
        "cpus": os.cpu_count(),
        "usable_cpus": usable,
        "flags": have,
        "int8_dot_product": int8,
        "bf16": bf16,
    }


def _tensorrt() -> dict[str, Any]:
    from ..runtime.trt_compat import TENSORRT, TENSORRT_RTX, try_load_trt

    out = {}
    for flavour in (TENSORRT, TENSORRT_RTX):
        info = try_load_trt(flavour)
        out[flavour] = info.version if info else None
    return out


def _cuda() -> dict[str, Any]:
    """cuda-python's view: devices (:func:`restyle_rt.runtime.cuda.device_count`), their compute capability, the
    driver and runtime versions, or why there is none."""
    from ..errors import RestyleError
    from ..runtime import cuda

    out: dict[str, Any] = {"cuda_python": True, "devices": [], "driver": None, "runtime": None, "error": ""}
    try:
        st = cuda.probe()
    except RestyleError as e:  # cuda-python is not installed
        return dict(out, cuda_python=False, error=str(e))
    out["driver"] = _ver(st.driver_version) if st.driver_version else None
    out["runtime"] = _ver(st.runtime_version) if st.runtime_version else None
    try:
        n = cuda.device_count()
        out["devices"] = [
            {"index": i, "compute_capability": "{}.{}".format(*cuda.compute_capability(i))} for i in range(n)
        ]
    except RestyleError as e:  # a driver that cannot serve this cuda-python (named, with the fix)
        out["error"] = str(e)
    if not out["devices"] and not out["error"]:
        out["error"] = "no CUDA device is visible" + (" (no NVIDIA driver)" if not st.driver_version else "")
    return out


def _ver(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def _libraries() -> dict[str, Any]:
    from importlib import metadata

    out = {}
    for dist in LIBRARIES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def render(d: dict[str, Any]) -> list[str]:
    """The text report of :func:`report`'s data."""
    lines = [f"restyle-rt {d['restyle_rt']}, Python {d['python']}, {d['platform']}", "backends"]
    for name, b in d["backends"].items():
        lines.append(f"  {name:<9} {'yes' if b['available'] else 'no: ' + b['why']}")
    lines.append(f"  onnxruntime providers: {', '.join(d['onnxruntime_providers']) or 'none'}")
    lines.append(f"  openvino devices: {', '.join(d['openvino_devices']) or 'none'}")
    c = d["cpu"]
    lines.append(f"cpu        {c['model']} ({c['arch']}), {c['usable_cpus']} of {c['cpus']} CPUs usable")
    lines.append("  flags    " + " ".join(f"{f}{'' if on else '(no)'}" for f, on in c["flags"].items()))
    lines.append(
        f"  INT8 dot product: {', '.join(c['int8_dot_product']) or 'none (INT8 gains little here)'}; "
        f"BF16: {', '.join(c['bf16']) or 'none (openvino bf16 unavailable)'}"
    )
    t = d["tensorrt"]
    lines.append("tensorrt   " + ", ".join(f"{k} {v or 'not importable'}" for k, v in t.items()))
    cu = d["cuda"]
    if not cu["cuda_python"]:
        lines.append(f"cuda       {cu['error']}")
    else:
        devs = ", ".join(f"#{x['index']} cc {x['compute_capability']}" for x in cu["devices"])
        lines.append(
            f"cuda       driver {cu['driver'] or 'none'}, runtime {cu['runtime'] or '?'}; {devs or cu['error']}"
        )
    lines.append("libraries  " + ", ".join(f"{k} {v}" for k, v in d["libraries"].items() if v))
    missing = [k for k, v in d["libraries"].items() if not v]
    if missing:
        lines.append(f"  not installed: {', '.join(missing)}")
    return lines
