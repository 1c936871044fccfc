"""How much batch composition changes ORT results: one image alone vs inside a batch of 8, per step.

This is what the server's dynamic batcher changes relative to an in-process call on the same image; it sets
``parity.TOLERANCES[("ort-batch", ...)]``. Recorded with::

    python3 benchmarks/batch_composition.py ~/.cache/restyle-rt/presets/church-256/artifacts \
        > benchmarks/results/batch_composition_church256.json
"""

import json
import sys

import numpy as np

from restyle_rt import Inverter
from restyle_rt.parity import compare

art = sys.argv[1]
rng = np.random.default_rng(0)
imgs = [(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) * rng.uniform(0.3, 1)).astype(np.uint8) for _ in range(8)]
with Inverter.load(art, backend="ort") as inv:
    x = inv.preprocess(imgs)
    batched = inv.invert(x, n_iters=5, return_steps=True)
    out = []
    for k in (0, 5):
        alone = inv.invert(x[k : k + 1], n_iters=5, return_steps=True)
        for t in range(5):
            rl = compare(alone.step_latents[t], batched.step_latents[t][k : k + 1])
            ri = compare(alone.step_images[t], batched.step_images[t][k : k + 1])
            out.append(
                {
                    "image": k,
                    "step": t + 1,
                    "latent_rel_l2": rl.rel_l2,
                    "image_rel_l2": ri.rel_l2,
                    "image_psnr": ri.psnr_db,
                }
            )
print(json.dumps(out, indent=0))
