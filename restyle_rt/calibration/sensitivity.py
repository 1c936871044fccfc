"""Per-layer sensitivity of the loop output to INT8, and the rules that keep the most sensitive layers in FP32.

Sensitivity of a layer = the worst per-step latent rel-L2 of the loop (FP32 elsewhere) against the FP32 loop when
*only that layer* is quantized (``cpu`` encoding, the calibrated ranges), on a few *calibration* images (never the
held-out ones). The keep curve = the same loop with *every* layer quantized except the k most sensitive, for k = 0 up
to the cap (``max_keep_frac`` of the layers, floored): whether single-layer errors add up is measured, not assumed.

Keep rules (:func:`kept_by_rule`), both capped at ``max_keep_frac`` of the layers (default 10 %; a graph with fewer
than 10 layers keeps none):

* ``share``: keep the smallest top set whose summed single-layer sensitivity reaches ``share`` (default half) of
  the total over all layers.
* ``bar``: keep the fewest top layers whose keep-curve point meets the ship bar on the calibration images, with
  :data:`BAR_MARGIN` (latent and image rel-L2 at most that fraction of the bar); when no point within the cap does,
  the point with the smallest worst-step latent error.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..progress import bar as progress_bar
from .loop import meets_bar

log = logging.getLogger("restyle_rt")

BAR_MARGIN = 0.8  # the ``bar`` rule aims at this fraction of the ship bar's rel-L2 on the calibration images

Evaluate = Callable[[Sequence[str]], list[dict]]  # quantized layers -> per-step accuracy rows (loop.step_accuracy)


@dataclass
class Sweep:
    """What the sweep measured.

    Attributes:
        single: ``{layer: worst-step latent rel-L2 with only that layer quantized}``.
        curve: per k = 0..cap, ``{"kept": k, "worst_latent_rel_l2", "worst_image_psnr_db", "rows"}`` with every
            layer quantized except the k most sensitive.
    """

    single: dict[str, float]
    curve: list[dict] = field(default_factory=list)

    def ranked(self) -> list[str]:
        """Layers, most sensitive first."""
        return sorted(self.single, key=lambda n: -self.single[n])


def sweep(
    nodes: Sequence[str], evaluate: Evaluate, max_keep_frac: float, progress: bool = True, desc: str = ""
) -> Sweep:
    """Single-layer sensitivities of ``nodes``, then the keep curve up to the cap."""
    single = measure(
        nodes, lambda inc: max(r["latent_rel_l2"] for r in evaluate(inc)), progress, f"{desc} sensitivity".strip()
    )
    out = Sweep(single)
    ranked = out.ranked()
    for k in progress_bar(
        range(math.floor(max_keep_frac * len(ranked)) + 1),
        desc=f"{desc} keep curve".strip(),
        unit="point",
        show=progress,
    ):
        keep = set(ranked[:k])
        rows = evaluate([n for n in nodes if n not in keep])
        psnrs = [r["image_psnr_db"] for r in rows if r["image_psnr_db"] is not None]
        out.curve.append(
            {
                "kept": k,
                "worst_latent_rel_l2": max(r["latent_rel_l2"] for r in rows),
                "worst_image_psnr_db": min(psnrs) if psnrs else None,
                "rows": rows,
            }
        )
    return out


def measure(
    nodes: Sequence[str], evaluate: Callable[[Sequence[str]], float], progress: bool = True, desc: str = "sensitivity"
) -> dict[str, float]:
    """``{node: evaluate([node])}``: the loop error with only ``node`` quantized, for every node."""
    out = {}
    for node in progress_bar(nodes, desc=desc, unit="layer", show=progress):
        out[node] = float(evaluate([node]))
    return out


def choose_kept(sens: dict[str, float], share: float = 0.5, max_keep_frac: float = 0.1) -> list[str]:
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


def choose_kept_bar(sw: Sweep, bar: dict[str, float], margin: float = BAR_MARGIN) -> list[str]:
    """The ``bar`` rule (module docstring) on a measured :class:`Sweep`."""
    if not sw.curve:
        return []
    target = {
        "latent_rel_l2": margin * bar["latent_rel_l2"],
        "image_psnr_db": bar["image_psnr_db"] - 20.0 * math.log10(margin),
    }
    ok = [p for p in sw.curve if meets_bar(p["rows"], target)]
    best = ok[0] if ok else min(sw.curve, key=lambda p: p["worst_latent_rel_l2"])
    return sw.ranked()[: best["kept"]]


def kept_by_rule(sw: Sweep, rule: str, share: float, max_keep_frac: float, bar: dict[str, float]) -> list[str]:
    """Kept layers by ``rule`` (``share`` | ``bar``, module docstring)."""
    if rule == "share":
        return choose_kept(sw.single, share, max_keep_frac)
    if rule == "bar":
        return choose_kept_bar(sw, bar)
    raise InputError(f"keep rule {rule!r}: expected 'share' or 'bar'")


def write_table(path: Path, sens: dict[str, float], kept: Sequence[str]) -> None:
    """A TSV of every layer's sensitivity (descending) and whether it was kept in FP32."""
    rows = ["node\tloop_latent_rel_l2\tkept_fp32"]
    rows += [f"{n}\t{sens[n]:.6g}\t{int(n in kept)}" for n in sorted(sens, key=lambda k: -sens[k])]
    Path(path).write_text("\n".join(rows) + "\n")
