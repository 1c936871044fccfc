"""Per-layer sensitivity of the loop output to INT8, and the rule that keeps the most sensitive layers in FP32.

Sensitivity of a layer = the worst per-step latent rel-L2 of the loop (FP32 elsewhere) against the FP32 loop when
*only that layer* is quantized (``cpu`` encoding, the calibrated ranges), on a few *calibration* images (never the
held-out ones).

Keep rule (:func:`choose_kept`): sort layers by sensitivity, keep in FP32 the smallest top set whose summed
sensitivity reaches ``share`` (default half) of the total over all layers, capped at ``max_keep_frac`` of the
layers (default 10 %; a graph with fewer than 10 layers keeps none). The result of the rule is then measured
(the per-step accuracy in the manifest); whether single-layer errors add up is not assumed.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable, Dict, List, Sequence

from tqdm import tqdm

log = logging.getLogger("restyle_rt")


def measure(nodes: Sequence[str], evaluate: Callable[[Sequence[str]], float], progress: bool = True,
            desc: str = "sensitivity") -> Dict[str, float]:
    """``{node: evaluate([node])}``: the loop error with only ``node`` quantized, for every node."""
    out = {}
    for node in tqdm(nodes, desc=desc, unit="layer", disable=not progress, dynamic_ncols=True):
        out[node] = float(evaluate([node]))
    return out


def choose_kept(sens: Dict[str, float], share: float = 0.5, max_keep_frac: float = 0.1) -> List[str]:
    """The layers to keep in FP32 by the module's rule (most sensitive first)."""
    ranked = sorted(sens, key=lambda n: -sens[n])
    total = sum(max(v, 0.0) for v in sens.values())
    cap = math.floor(max_keep_frac * len(ranked))
    kept, acc = [], 0.0
    for n in ranked:
        if len(kept) >= cap or total <= 0 or acc >= share * total:
            break
        kept.append(n)
        acc += max(sens[n], 0.0)
    return kept


def write_table(path: Path, sens: Dict[str, float], kept: Sequence[str]) -> None:
    """A TSV of every layer's sensitivity (descending) and whether it was kept in FP32."""
    rows = ["node\tloop_latent_rel_l2\tkept_fp32"]
    rows += [f"{n}\t{sens[n]:.6g}\t{int(n in kept)}" for n in sorted(sens, key=lambda k: -sens[k])]
    Path(path).write_text("\n".join(rows) + "\n")
