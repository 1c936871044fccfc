"""Editing, bootstrapping and animation on exported models vs the official formulations written out in torch.

* editing (``LatentEditor.apply_interfacegan``): ``G(w + f * d)`` for ``f in range(-r, r)``, d broadcast to [S, 512];
* bootstrapping (``encoder_bootstrapping_inference.run_on_batch``): net1 one step from its own average image and
  latent_avg, then net2 steps from net1's latent and pooled image, decoded by net2's generator;
* animation (the notebook's ``get_result_from_vecs``): ``G(alpha * w_b + (1 - alpha) * w_a)``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_fixtures import artifacts_path, checkpoint_path

from restyle_rt import Inverter
from restyle_rt.export.checkpoint import load_checkpoint
from restyle_rt.export.fixtures import sample_images
from restyle_rt.export.reference import TorchModels
from restyle_rt.parity import compare, tolerance
from restyle_rt.workflows import animation, editing
from restyle_rt.workflows.bootstrap import bootstrap

pytestmark = pytest.mark.parity
# same S and input size (cars: 192x256 input, 384x512-crop images), different encoders and generators; both are
# exported for the ORT parity tests already
FIRST, SECOND = "e4e-resnet34-cars", "psp-fpn-resnet34-cars"


@pytest.fixture(scope="module")
def models():
    return {n: TorchModels.from_checkpoint(load_checkpoint(checkpoint_path(n))) for n in (FIRST, SECOND)}


@pytest.fixture(scope="module")
def inverters():
    invs = {n: Inverter.load(artifacts_path(n), backend="ort") for n in (FIRST, SECOND)}
    yield invs
    for inv in invs.values():
        inv.close()


def test_editing_matches_official(models, inverters):
    m, inv = models[FIRST], inverters[FIRST]
    s = m.ckpt.spec.n_styles
    g = torch.Generator().manual_seed(5)
    w = m.ckpt.latent_avg[None] + 0.3 * torch.randn(2, s, 512, generator=g)  # [2, S, 512]
    for d in (torch.randn(1, 512, generator=g), torch.randn(1, s, 512, generator=g)):  # age/smile- and pose-like
        factors = editing.parse_factors("-2,2")
        got = editing.render_edits(inv, w.numpy(), d.numpy(), factors)  # [2, F, 3, h, w]
        with torch.no_grad():
            for j, f in enumerate(range(-2, 2)):  # official: range(*factor_range)
                ref, _ = m.synthesis_official(w + f * d)  # d [1, 512] or [1, S, 512] broadcasts as in torch
                rep = compare(got[:, j], ref.numpy())
                assert tolerance("ort", "fp32", "image").check(rep) is None, (f, rep)


def test_bootstrapping_matches_official_per_step(models, inverters):
    m1, m2 = models[FIRST], models[SECOND]
    x = sample_images(2, m1.ckpt.spec.input_hw, torch.Generator().manual_seed(11))
    n_iters = 3
    res = bootstrap(inverters[FIRST], inverters[SECOND], x.numpy(), n_iters=n_iters)
    assert len(res.step_latents) == n_iters + 1
    with torch.no_grad():
        w = m1.ckpt.latent_avg[None].expand(2, -1, -1)  # net1 starts from its own latent_avg and average image
        y = m1.avg_feedback()[None].expand(2, -1, -1, -1)
        for t in range(n_iters + 1):
            m = m1 if t == 0 else m2  # then net2 from net1's latent and pooled image; net2's latent_avg unused
            w = m.encoder_official(x, y, w)
            img, y = m.synthesis_official(w)
            lat_rep = compare(res.step_latents[t], w.numpy())
            img_rep = compare(res.step_images[t], img.numpy())
            assert tolerance("ort-loop", "fp32", "latent").check(lat_rep) is None, (t, lat_rep)
            assert tolerance("ort-loop", "fp32", "image").check(img_rep) is None, (t, img_rep)
        deltas = np.abs(res.step_latents[1] - res.step_latents[0]).mean()
        assert deltas > 1e-4  # the second encoder really moves the latent


def test_animation_frames_match_official(models, inverters):
    m, inv = models[FIRST], inverters[FIRST]
    g = torch.Generator().manual_seed(2)
    lat = (m.ckpt.latent_avg[None] + 0.3 * torch.randn(2, m.ckpt.spec.n_styles, 512, generator=g)).numpy()
    frames = animation.render(inv, lat, n_transition=3, loop=False)
    alphas = [0] * 5 + np.linspace(0, 1, 3).tolist() + [1] * 5
    assert len(frames) == len(alphas)
    with torch.no_grad():
        for k in (0, 6, len(alphas) - 1):
            w = torch.from_numpy(lat[1]) * alphas[k] + torch.from_numpy(lat[0]) * (1 - alphas[k])
            ref, _ = m.synthesis_official(w[None])
            v = ((ref[0].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1) * 255
            # uint8 truncation: FP32 parity ~1e-6 can flip a value sitting on an integer boundary by one level
            assert np.abs(frames[k].astype(int) - v.astype(np.uint8).astype(int)).max() <= 1, k
