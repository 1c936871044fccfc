"""Where OpenVINO BF16 loses accuracy on a fitted checkpoint: per graph, and per synthesis layer.

1. The loop (5 steps, 4 held-out targets, batch 4) with each graph at its own precision hint: PSNR against the
   targets relative to FP32's, per step, and the image's PSNR against the FP32 loop's.
2. The synthesis layer by layer: each unit (``/net/convs.K/``, ``/net/rgbs.K/``) kept FP32 alone, and BF16 alone,
   through OpenVINO's per-node FP32 pin (an IR round trip adding the ``precise`` runtime attribute,
   DisablePrecisionConversion, to the unit's layers); the synthesis image's PSNR against FP32 on the FP32 loop's
   20 latents (steps 1-5).

    python benchmarks/openvino_precision_split.py --json benchmarks/cpu/church-256-fitted-precision-split.json

Needs the cached fitted preset (``restyle-rt bench --preset church-256 --fitted`` builds it), openvino, torch.
Accuracy only: the times it prints are single runs.
"""

import argparse
import json
import re
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import openvino as ov

from restyle_rt import artifacts as A
from restyle_rt import fsio
from restyle_rt.bench.accuracy import fitted_targets, target_psnr_db
from restyle_rt.parity import compare
from restyle_rt.runtime.backends import get_backend
from restyle_rt.runtime.hostinfo import machine_record

HINT = {"fp32": "f32", "bf16": "bf16"}


def loop_with(art, x, enc: str, syn: str, threads: int):
    be = get_backend("openvino", art, precision="fp32", cache_dir="", threads=threads)
    for g, prec in (("encoder", enc), ("synthesis", syn)):
        cfg = {"INFERENCE_PRECISION_HINT": HINT[prec], "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        be.compiled[g] = be.core.compile_model(str(art.graph_path(g)), "CPU", cfg)
        be.requests[g] = be.compiled[g].create_infer_request()
        be._outputs[g] = {o.get_any_name(): o for o in be.compiled[g].outputs}
    try:
        return be.run_loop(x, 5, return_steps=True)
    finally:
        be.close()


def unit_of(name: str):
    m = re.match(r"/net/(convs\.\d+|rgbs\.\d+)/", name)
    return m.group(1) if m else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset-dir", default=str(fsio.cache_root() / "presets" / "church-256-fitted"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args()
    root = Path(a.preset_dir)
    art = A.load(root / "artifacts")
    x, truth = fitted_targets(str(root / "checkpoint.pt"), 4, art.spec.input_hw)
    out = {"machine": machine_record(), "preset": str(root), "per_graph": {}, "synthesis_units": {}}

    ref = loop_with(art, x, "fp32", "fp32", a.threads)
    ref_t = [target_psnr_db(i, truth.targets) for i in ref.step_images]
    out["fp32_target_psnr_db"] = ref_t
    for enc, syn in (("bf16", "fp32"), ("fp32", "bf16"), ("bf16", "bf16")):
        r = loop_with(art, x, enc, syn, a.threads)
        row = {
            "target_psnr_change_db": [target_psnr_db(i, truth.targets) - t for i, t in zip(r.step_images, ref_t)],
            "image_psnr_vs_fp32_db": [compare(i, j).psnr_db for i, j in zip(r.step_images, ref.step_images)],
        }
        out["per_graph"][f"encoder {enc}, synthesis {syn}"] = row
        print(
            f"encoder {enc}, synthesis {syn}: target change per step "
            f"{np.round(row['target_psnr_change_db'], 2).tolist()} dB; vs FP32 "
            f"{np.round(row['image_psnr_vs_fp32_db'], 1).tolist()} dB",
            flush=True,
        )

    core, tmp = ov.Core(), Path(tempfile.mkdtemp())
    ov.save_model(core.read_model(str(art.graph_path("synthesis"))), str(tmp / "s.xml"), compress_to_fp16=False)
    names = [layer.get("name") for layer in ET.parse(tmp / "s.xml").getroot().iter("layer")]
    units = sorted({u for u in map(unit_of, names) if u}, key=lambda u: (u.split(".")[0], int(u.split(".")[1])))
    lat, ref_img = np.concatenate(ref.step_latents), np.concatenate(ref.step_images)

    def pinned(pin) -> tuple:
        """(synthesis image PSNR vs FP32, s/image) with the layers ``pin(unit)`` selects kept FP32."""
        tree = ET.parse(tmp / "s.xml")
        for layer in tree.getroot().iter("layer"):
            if layer.get("type") not in ("Parameter", "Result", "Const") and pin(unit_of(layer.get("name"))):
                rt = layer.find("rt_info")
                rt = ET.SubElement(layer, "rt_info") if rt is None else rt
                ET.SubElement(rt, "attribute", {"name": "precise", "version": "0"})
        tree.write(tmp / "p.xml")
        cm = core.compile_model(
            core.read_model(str(tmp / "p.xml"), str(tmp / "s.bin")),
            "CPU",
            {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": a.threads},
        )
        req, imgs, t0 = cm.create_infer_request(), [], time.perf_counter()
        for i in range(0, len(lat), 4):
            imgs.append(np.array(req.infer({"latent": lat[i : i + 4]})[cm.output("image")]))
        return compare(np.concatenate(imgs), ref_img).psnr_db, (time.perf_counter() - t0) / len(lat)

    out["synthesis_all_bf16"] = pinned(lambda u: False)
    out["synthesis_all_pinned"] = pinned(lambda u: True)
    print("synthesis all BF16", out["synthesis_all_bf16"], "every layer pinned FP32", out["synthesis_all_pinned"])
    for u in units:
        row = {"kept_fp32_alone": pinned(lambda v, u=u: v == u), "bf16_alone": pinned(lambda v, u=u: v != u)}
        out["synthesis_units"][u] = row
        print(u, row, flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
