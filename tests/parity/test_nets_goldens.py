"""The export nets' two torch formulations, one loop step, against goldens computed by the OFFICIAL ReStyle code.

tests/golden compares the exported graphs (ONNX Runtime) with the goldens after an export; this is the seconds-long
torch-only check of the same ground truth, so that a change to ``restyle_rt/export/nets`` (a layer, the heads, the
e4e delta rule, an equalised-lr scale, the average image) fails without exporting anything. It is the killing test
selection of the nets' mutation run (docs/mutation.md). One image, one step (w1 = w0 + E(x, y0); G(w1)) on two toy
configs: ResNet34 + pSp heads (church, 16 px, latent_avg [512]) and IR-SE50 + e4e (ffhq, 32 px). Both toy
generators have 512 channels everywhere; channel changes are covered by the real-size goldens (church-256, cars-512).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import checkpoint_path

from restyle_rt.export.checkpoint import load_checkpoint
from restyle_rt.export.reference import TorchModels, reference_loop
from restyle_rt.parity import compare, tolerance

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CASES = ("psp-resnet34-church", "e4e-irse50-ffhq")
pytestmark = pytest.mark.parity


def _make_goldens():
    """tests/golden/make_goldens.py (its input recipe and thumbnail), imported by path: it is no package."""
    spec = importlib.util.spec_from_file_location("make_goldens", GOLDEN / "make_goldens.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module", params=CASES)
def case(request):
    name = request.param
    entry = json.loads((GOLDEN / "goldens.json").read_text())["configs"][name]
    gold = dict(np.load(GOLDEN / f"{name}.npz"))
    mg = _make_goldens()
    inp = entry["inputs"]
    x = mg.golden_inputs(inp["batch"], inp["hw"], inp["seed"])[:1]  # images are drawn one after another: [:1] is
    np.testing.assert_array_equal(x[:, :, ::16, ::16], gold["inputs_x"][:1])  # the first image of the golden batch
    models = TorchModels.from_checkpoint(load_checkpoint(checkpoint_path(name)))
    return name, models, torch.from_numpy(x), gold, mg.thumb


def test_average_image_matches_official(case):
    name, models, _x, gold, thumb = case
    rep = compare(thumb(models.avg_feedback().numpy()), gold["avg_image_thumb"])
    assert tolerance("golden-ort-loop", "fp32", "avg_image").check(rep) is None, (name, rep)


@pytest.mark.parametrize("official", [False, True], ids=["export", "official"])
def test_first_step_matches_official(case, official):
    """Step 1's latent and image, in the export formulation (what goes into ONNX) and the restated official one."""
    name, models, x, gold, thumb = case
    (step,) = reference_loop(models, x, 1, official=official)
    lat = compare(step.latent.numpy(), gold["latents"][0][:1])
    img = compare(thumb(step.image.numpy()), gold["image_thumbs"][0][:1])
    assert tolerance("golden-torch-step", "fp32", "latent").check(lat) is None, (name, lat)
    assert tolerance("golden-torch-step", "fp32", "image").check(img) is None, (name, img)
