"""The export nets' two torch formulations, one loop step, against goldens computed by the OFFICIAL ReStyle code.

tests/golden compares the exported graphs (ONNX Runtime) with the goldens after an export; this is the seconds-long
torch-only check of the same ground truth, so that a change to ``restyle_rt/export/nets`` (a layer, the heads, the
e4e delta rule, an equalised-lr scale, the average image) fails without exporting anything. It is the killing test
selection of the nets' mutation run (docs/mutation.md). One image, one step (w1 = w0 + E(x, y0); G(w1)) on two toy
configs: ResNet34 + pSp heads (church, 16 px, latent_avg [512]) and IR-SE50 + e4e (ffhq, 32 px). Both toy
generators have 512 channels everywhere, so a random 64 px generator with a 512 -> 256 channel change checks the
export formulation (portable and plugin-node forms) against the official one as well.
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


@pytest.fixture(scope="module")
def generator_64():
    """A random 64 px generator with channel_multiplier 1: 512 channels up to 32 px, 256 at 64 px (a channel
    change, as in every real-size model), with the zero-initialised noise weights and biases made non-zero."""
    from restyle_rt.export.nets.synthesis import Generator

    with torch.random.fork_rng(), torch.no_grad():  # seeded without touching the other tests' random state
        torch.manual_seed(64)
        g = Generator(64, channel_multiplier=1).eval()
        for p in g.parameters():
            if not p.abs().sum():  # noise weights, activation and ToRGB biases
                p.normal_(0, 0.2)
    return g


@torch.no_grad()
def test_export_synthesis_with_a_channel_change(generator_64):
    from restyle_rt.export.nets.synthesis import ExportSynthesis

    w = torch.randn(2, generator_64.n_latent, 512, generator=torch.Generator().manual_seed(1))
    want = generator_64(w)
    assert want.shape == (2, 3, 64, 64)
    for plugin in (False, True):  # the portable form and the plugin-node form (eager: the kernels' torch reference)
        rep = compare(ExportSynthesis(generator_64, plugin=plugin)(w).numpy(), want.numpy())
        assert tolerance("export-vs-official", "fp32", "image").check(rep) is None, (plugin, rep)
