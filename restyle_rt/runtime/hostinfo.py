"""What CPU this process runs on: the key under which CPU-dependent measurements (speed, INT8 accuracy) are kept.

INT8 and BF16 results depend on the kernels a library picks for the CPU (VNNI, AMX, AVX-512 BF16; Intel and AMD
parts take different paths), so an accuracy measured on one CPU model is not evidence on another.
"""

from __future__ import annotations

import functools
import hashlib
import platform


@functools.cache
def _cpuinfo() -> dict[str, str]:
    try:
        with open("/proc/cpuinfo") as f:
            first = f.read().split("\n\n")[0]
    except OSError:
        return {}
    fields = dict(ln.split(":", 1) for ln in first.splitlines() if ":" in ln)
    return {k.strip(): v.strip() for k, v in fields.items()}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform``'s description."""
    info = _cpuinfo()
    return info.get("model name") or info.get("CPU part") or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo`` ``flags`` on x86, ``Features`` on ARM); empty elsewhere."""
    info = _cpuinfo()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


def cpu_id() -> str:
    """sha256 of the CPU model name and feature flags (``/proc/cpuinfo``; elsewhere ``platform``'s description)."""
    ident = f"{platform.machine()}|{platform.processor()}"
    info = _cpuinfo()
    if info:
        ident += "|" + "|".join(info.get(k, "") for k in ("model name", "flags", "Features", "CPU part"))
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


def bf16_path() -> str:
    """Which BF16 matrix path this CPU gives the libraries: ``amx_bf16`` (Intel AMX tiles), ``avx512_bf16``
    (AVX-512 BF16 dot products: Cooper Lake, AMD Zen 4) or ``""`` (none). BF16 accuracy is recorded per path."""
    flags = cpu_flags()
    return next((p for p in ("amx_bf16", "avx512_bf16") if p in flags), "")


def machine_record() -> dict:
    """``{"cpu": model name, "cpu_id": cpu_id()}``: what a CPU-dependent measurement records about its machine."""
    return {"cpu": cpu_model(), "cpu_id": cpu_id()}
