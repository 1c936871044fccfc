"""Set up TrtBackend on the fakes: a toy artifacts dir whose "engines" are fake plans of one TensorRT generation."""

from __future__ import annotations

import json
import types

from restyle_rt import artifacts
from restyle_rt.runtime import cuda
from restyle_rt.runtime.trt_compat import TrtInfo

from .gpu import FakeGpu
from .tensorrt import GENERATIONS, make_plan, make_trt


def fake_backend_env(
    monkeypatch,
    make_toy,
    generation: str = "rtx",
    profile=(1, 2, 3),
    engine_profile=None,
    flags=("REQUIRE_USER_ALLOCATION",),
    unsafe_in_capture: bool = False,
    record_profile=None,
    source=None,
    **gpu_kw,
):
    """Patch ``restyle_rt.runtime.cuda`` and the trt backend onto a FakeGpu and ``generation``'s fake TensorRT.

    Args:
        profile: the toy artifacts' batch profile.
        engine_profile: the batch profile the fake plans accept (default ``profile``).
        flags: builder flags recorded in the plans (RTX capture needs REQUIRE_USER_ALLOCATION).
        unsafe_in_capture: the engines allocate when enqueued inside a capture (capture then fails).
        record_profile: the profile written into the manifest's engine records (default ``engine_profile``).
        source: instead of a toy, an exported artifacts dir: ``make_toy(...)`` must then return (dir, None) for
            a fresh dir that links to it; plans name its graphs by path (external data).

    Returns:
        namespace(art, ref, gpu, trt, info).
    """
    from restyle_rt.runtime.backends import trt as trt_backend

    gpu = FakeGpu(**gpu_kw)
    rt = gpu.cudart()
    trt = make_trt(generation, gpu)
    gen = GENERATIONS[generation]
    info = TrtInfo(gen.flavour, gen.version, trt)
    monkeypatch.setattr(cuda, "cudart", lambda: rt)
    monkeypatch.setattr(trt_backend, "try_load_trt", lambda *a: info)
    root, ref = make_toy(profile=profile)
    eprof = list(engine_profile or json.loads((root / artifacts.MANIFEST).read_text())["batch_profile"])
    manifest = json.loads((root / artifacts.MANIFEST).read_text())
    (root / "engines").mkdir()
    manifest["engines"] = []
    for g in ("encoder", "synthesis"):
        path = root / f"{g}.onnx"
        plan = make_plan(
            generation,
            b"" if source else path.read_bytes(),
            eprof,
            flags,
            unsafe_in_capture=unsafe_in_capture,
            onnx_path=str(path.resolve()) if source else "",
        )
        (root / "engines" / f"{g}.fp32.engine").write_bytes(plan)
        manifest["engines"].append(
            {
                "graph": g,
                "precision": "fp32",
                "file": f"engines/{g}.fp32.engine",
                "size_bytes": len(plan),
                "trt_flavour": gen.flavour,
                "trt_version": gen.version,
                "compute_capabilities": ["8.6"],
                "profile": list(record_profile or eprof),
            }
        )
    artifacts.write_manifest(root, manifest)
    return types.SimpleNamespace(art=artifacts.load(root), ref=ref, gpu=gpu, trt=trt, info=info, rt=rt)
