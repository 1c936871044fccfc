"""The export formulation (what goes into ONNX) against the official formulation, in torch fp32.

Per block (every modulated conv layer, ToRGB, skip upsampling, the batched style heads) and end to end (both
graphs), for pSp/e4e x IR-SE50/ResNet34, ffhq-like and cars-like specs, both latent_avg shapes.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from model_fixtures import CONFIGS, checkpoint_path

from restyle_rt.export.checkpoint import load_checkpoint
from restyle_rt.export.fixtures import sample_images
from restyle_rt.export.nets.encoders import BatchedHeads
from restyle_rt.export.nets.ops import make_kernel, upfirdn2d_ref
from restyle_rt.export.nets.synthesis import ExportModConv, ExportSynthesis
from restyle_rt.export.reference import TorchModels
from restyle_rt.parity import compare, tolerance

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module", params=list(CONFIGS))
def models(request):
    return TorchModels.from_checkpoint(load_checkpoint(checkpoint_path(request.param)))


def _ok(kind, output, actual, ref):
    rep = compare(actual.detach().numpy(), ref.detach().numpy())
    msg = tolerance(kind, "fp32", output).check(rep)
    assert msg is None, f"{output}: {msg} ({rep})"
    return rep


def test_upfirdn2d_ref_matches_direct_definition():
    """Zero-insert, pad, true convolution (flipped kernel), subsample, against an explicit loop."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 5, 5, generator=g, dtype=torch.float64)
    k = torch.randn(4, 4, generator=g, dtype=torch.float64)  # asymmetric on purpose
    up, pad = 2, (2, 1)
    z = torch.zeros(1, 2, 10, 10, dtype=torch.float64)
    z[:, :, ::2, ::2] = x
    z = F.pad(z, [2, 1, 2, 1])
    n = z.shape[-1] - 4 + 1
    want = torch.zeros(1, 2, n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            for a in range(4):
                for b in range(4):
                    want[:, :, i, j] += z[:, :, i + a, j + b] * k[3 - a, 3 - b]
    got = upfirdn2d_ref(x, k, up=up, pad=pad)
    assert got.shape == want.shape == (1, 2, 10, 10)
    assert torch.allclose(got, want, atol=1e-12)


@torch.no_grad()
def test_every_modulated_layer(models):
    g = models.synthesis_official.net
    gen = torch.Generator().manual_seed(1)
    layers = [g.conv1] + list(g.convs)
    for i, sc in enumerate(layers):
        ex = ExportModConv(sc.conv, (sc.noise.weight * g.noise(i)).detach(), sc.activate.bias.detach())
        r = 2 ** ((i + 5) // 2)
        h = r // 2 if sc.conv.upsample else r
        x = torch.randn(2, sc.conv.cin, h, h, generator=gen)
        w = torch.randn(2, 512, generator=gen)
        _ok("export-vs-official", "image", ex(x, w), sc(x, w, g.noise(i)))
    for t in [g.to_rgb1] + list(g.to_rgbs):
        ex = ExportModConv(t.conv)
        x = torch.randn(2, t.conv.cin, 8, 8, generator=gen)
        w = torch.randn(2, 512, generator=gen)
        _ok("export-vs-official", "image", ex(x, w) + t.bias, t(x, w))


@torch.no_grad()
def test_skip_upsample_is_upfirdn2d(models):
    ex = ExportSynthesis(models.synthesis_official.net)
    skip = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    want = upfirdn2d_ref(skip, make_kernel() * 4, up=2, pad=(2, 1))
    assert torch.allclose(ex.upsample_skip(skip), want, atol=1e-6)


@torch.no_grad()
def test_batched_heads_equal_head_loop(models):
    enc = models.encoder_official.encoder
    x = torch.randn(2, 6, *models.ckpt.spec.input_hw, generator=torch.Generator().manual_seed(3))
    groups = enc.head_groups(x)  # one level, or the FPN's three ([B, 512, h, w] each)
    assert sum(len(idx) for _, idx in groups) == enc.n_styles and len(groups) == (3 if enc.fpn else 1)
    for feat, idx in groups:
        heads = torch.nn.ModuleList(enc.styles[i] for i in idx)
        loop = torch.stack([h(feat) for h in heads], 1)
        batched = BatchedHeads(heads)(feat)
        # same math, different summation order: ~1e-7 relative
        assert compare(batched.numpy(), loop.numpy()).rel_l2 < 1e-6


@torch.no_grad()
def test_graphs_end_to_end(models):
    spec = models.ckpt.spec
    gen = torch.Generator().manual_seed(4)
    x = sample_images(2, spec.input_hw, gen)
    y = models.avg_feedback()[None].repeat(2, 1, 1, 1)
    w = models.ckpt.latent_avg[None] + 0.3 * torch.randn(2, spec.n_styles, 512, generator=gen)
    _ok("export-vs-official", "latent_next", models.encoder(x, y, w), models.encoder_official(x, y, w))
    img, fb = models.synthesis(w)
    img_o, fb_o = models.synthesis_official(w)
    assert img.shape == (2, 3, *spec.image_hw) and fb.shape == (2, 3, *spec.input_hw)
    _ok("export-vs-official", "image", img, img_o)
    _ok("export-vs-official", "feedback", fb, fb_o)


@torch.no_grad()
def test_avg_feedback_matches_official_recipe(models):
    """y0: official pools G(latent_avg) to 256x256 (face_pool), then cars keep rows 32:224."""
    spec = models.ckpt.spec
    full = models.synthesis_official.net(models.ckpt.latent_avg[None])
    y0 = torch.nn.AdaptiveAvgPool2d((256, 256))(full)[0]
    if spec.is_cars:
        y0 = y0[:, 32:224, :]
    assert y0.shape == (3, *spec.input_hw)
    assert torch.allclose(models.avg_feedback(), y0, atol=1e-6)


@torch.no_grad()
def test_encoder_output_depends_on_both_inputs(models):
    """The fixture's re-initialisation makes E(x, y) depend on x and on y; else loop parity proves little."""
    spec = models.ckpt.spec
    gen = torch.Generator().manual_seed(5)
    x = sample_images(2, spec.input_hw, gen)
    y = models.avg_feedback()[None].repeat(2, 1, 1, 1)
    w = models.ckpt.latent_avg[None].repeat(2, 1, 1)
    base = models.encoder(x, y, w) - w
    by_y = models.encoder(x, y + 0.2 * torch.randn(y.shape, generator=gen), w) - w
    by_x = models.encoder(x.flip(0), y, w) - w
    assert (by_y - base).norm() / base.norm() > 0.05
    assert (by_x - base).norm() / base.norm() > 0.05
    assert base.abs().mean() > 0.05 * models.ckpt.latent_avg.abs().mean()


def test_latent_avg_shapes(models):
    name_shape = models.ckpt.latent_avg_shape
    assert name_shape in ((512,), (models.ckpt.spec.n_styles, 512))
    assert models.ckpt.latent_avg.shape == (models.ckpt.spec.n_styles, 512)
    assert math.isfinite(float(models.ckpt.latent_avg.abs().sum()))
