"""Exported graphs in ONNX Runtime (the runtime's ORT backend) against the PyTorch reference.

One graph call (ORT vs the torch export modules, the manifest's export-time report included), and the whole loop
per iteration: the torch-free ORT backend vs the official-formulation torch loop (``reference_loop``).
"""

import json

import numpy as np
import pytest
import torch
from model_fixtures import EXPORTED, artifacts_path, checkpoint_path

from restyle_rt.artifacts import load
from restyle_rt.export.checkpoint import load_checkpoint
from restyle_rt.export.fixtures import sample_images
from restyle_rt.export.reference import TorchModels, reference_loop
from restyle_rt.parity import compare, tolerance
from restyle_rt.runtime.backends import get_backend

pytestmark = pytest.mark.parity
N_ITERS = 5  # the official default


@pytest.fixture(scope="module", params=EXPORTED)
def case(request):
    art = load(artifacts_path(request.param), check_hashes=True)
    models = TorchModels.from_checkpoint(load_checkpoint(checkpoint_path(request.param)))
    return request.param, art, models


def test_manifest_records_contract_and_parity(case):
    name, art, models = case
    m = art.manifest
    assert m.spec.to_dict() == models.ckpt.spec.to_dict()
    assert m.source.sha256 == models.ckpt.sha256
    for graph, outputs in (("encoder", ["latent_next", "residual"]), ("synthesis", ["image", "feedback"])):
        for out in outputs:
            rep = m.parity[graph]["ort"][out]
            assert tolerance("ort", "fp32", out).check(_Rep(rep)) is None
    import onnx

    model = onnx.load(str(art.graph_path("synthesis")), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["restyle_rt.graph"] == "synthesis" and meta["restyle_rt.source_sha256"] == models.ckpt.sha256


class _Rep:
    def __init__(self, d):
        self.rel_l2, self.psnr_db = d["rel_l2"], d["psnr_db"]


def test_seeds_match_torch(case):
    _, art, models = case
    np.testing.assert_allclose(art.latent_avg, models.ckpt.latent_avg.numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(art.avg_feedback, models.avg_feedback().numpy(), rtol=0, atol=0)


@pytest.mark.parametrize("batch", [1, 3])
def test_single_calls_dynamic_batch(case, batch):
    _, art, models = case
    spec = models.ckpt.spec
    g = torch.Generator().manual_seed(batch)
    x = sample_images(batch, spec.input_hw, g)
    y = torch.from_numpy(art.avg_feedback)[None].repeat(batch, 1, 1, 1)
    y = y + 0.05 * torch.randn(batch, 3, *spec.input_hw, generator=g)
    w = models.ckpt.latent_avg[None] + 0.3 * torch.randn(batch, spec.n_styles, 512, generator=g)
    with get_backend("ort", art) as be, torch.no_grad():
        got = be.encode(x.numpy(), y.numpy(), w.numpy()).copy()
        ref = models.encoder(x, y, w).numpy()
        assert tolerance("ort", "fp32", "latent_next").check(compare(got, ref)) is None
        assert tolerance("ort", "fp32", "residual").check(compare(got - w.numpy(), ref - w.numpy())) is None
        img, fb = (a.copy() for a in be.synthesize(w.numpy()))
        ref_img, ref_fb = models.synthesis(w)
        assert img.shape == (batch, 3, *spec.image_hw)
        assert tolerance("ort", "fp32", "image").check(compare(img, ref_img.numpy())) is None
        assert tolerance("ort", "fp32", "feedback").check(compare(fb, ref_fb.numpy())) is None


def test_loop_parity_per_iteration(case, record_property):
    """ORT backend loop vs the official-formulation torch loop, after every iteration."""
    name, art, models = case
    spec = models.ckpt.spec
    x = sample_images(2, spec.input_hw, torch.Generator().manual_seed(7))
    ref = reference_loop(models, x, N_ITERS, official=True)
    with get_backend("ort", art) as be:
        res = be.run_loop(x.numpy(), N_ITERS, return_steps=True)
    assert len(res.step_latents) == len(res.step_images) == N_ITERS
    table = []
    for t, step in enumerate(ref):
        lat = compare(res.step_latents[t], step.latent.numpy())
        img = compare(res.step_images[t], step.image.numpy())
        table.append(
            {"step": t + 1, "latent_rel_l2": lat.rel_l2, "image_psnr_db": img.psnr_db, "image_rel_l2": img.rel_l2}
        )
        assert tolerance("ort-loop", "fp32", "latent").check(lat) is None, (t, lat)
        assert tolerance("ort-loop", "fp32", "image").check(img) is None, (t, img)
    # the loop really moves: every step changes the latent, so per-step parity is not trivially the first step's
    deltas = [(ref[t].latent - ref[t - 1].latent).abs().mean().item() for t in range(1, N_ITERS)]
    assert min(deltas) > 1e-4, deltas
    np.testing.assert_array_equal(res.latents, res.step_latents[-1])
    record_property("loop_parity", json.dumps(table))
