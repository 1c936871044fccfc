"""A *fitted* fixture: give a random-weight official-format checkpoint an encoder whose ReStyle loop converges.

Every model :mod:`restyle_rt.export.fixtures` makes has random weights, so its loop wanders: the encoder has learnt
nothing. :func:`fit_encoder` keeps the generator (random, frozen) and replaces the encoder's weights, in the same
architecture, keys and shapes, by a fitted one; the result is an ordinary official-format checkpoint.

Method (training a 118M-parameter encoder end to end through the unrolled loop is out of reach on a CPU in
minutes: one forward of the toy's 64 px generator alone costs ~0.7 s per image on one thread):

1. **The encoder's weights are set to compute a known feature of its 6-channel input**, through the real layers:
   the stem takes, at every even output, a fitted 7x7 kernel of the image ``x`` (least squares so that it reads a
   bilinear-resized target as the block mean of the replicated feedback would: :func:`fit_x_kernel`) and the 4x4
   block means of the feedback ``y``, clipped to [-1, 1] (``relu(m + 1) - relu(m - 1) - 1``: the target image is
   clipped by ``tensor2im``, the raw generator output is not); signed values travel as ``relu(+v)``, ``relu(-v)``
   pairs. Later residual branches average 2x2 twice and form ``d = kx - mean(clip(y))`` ([3, 16, 16], one value per
   16x16 block of the 256 px input) exactly; unused channels are zero and the other residual branches have zero
   gain (each such block passes its input through). Each style head's first three convs only move ``d`` from space
   into channels (space-to-depth, 16 -> 2 px); its last conv applies the fitted map ``z = M d + b`` (pairs ``+-z``
   through the LeakyReLU), and its EqualLinear maps ``z`` to a latent step ``U z``. The whole encoder is thus
   ``E(x, y) = U (M d(x, y) + b)``, piecewise linear. IR-SE50 (no ReLU after a residual sum, a 3x3 stride-1 stem)
   takes the same ``d`` another way: the stem's fitted 3x3 kernel and the clip at every pixel, the branches of the
   four stride-2 units each a 2x2 mean (identity PReLU slopes; the squeeze-excitation gates, with zero weights, a
   constant 1/2 the BN undoes), one later branch forming the ``+-d`` pairs; its heads are written as above.
2. **The truth lives in a K-dimensional principal subspace of W** (say it plainly): ``U`` [512, K] holds the top-K
   principal directions of the mapping network's output (PCA of ``mapping(z)``), and a true latent is
   ``latent_avg + psi * U U^T (mapping(z) - mean(latent_avg))``, the same on every style row. Directions of the full
   W that the image barely shows are left out: a loop cannot recover them, and steps taken in them accumulate as
   drift (the same ridge fit aimed at the full W, psi 0.7, took two steps toward the truth, then drifted away).
3. **M and b are fitted by ridge regression** of ``a* - a`` (subspace coordinates of truth minus state) on ``d``,
   over states sampled at every distance: the start (``latent_avg``) and points ``a* (1 - s)`` with ``s``
   log-uniform in [min_frac, 1] (curriculum), each state weighted by 1/|a* - a| (``weight_pow``) so that near-truth
   states count for more than their small errors would. Then DAgger rounds (default 1) add the states the loop
   visits when run with the current fit, and refit.

The fit only needs generator forwards (one per state) and a ridge solve; the encoder is run only to check that its
output equals ``latent + U (M d + b)``. Deterministic for a seed (every random draw comes from a seeded
``torch.Generator``). Supported: ResNet34 and IR-SE50 encoders without a feature pyramid (``ResNetBackboneEncoder``,
``BackboneEncoder`` and their e4e ``Progressive`` forms) at 256x256 encoder input (not cars); generator sizes
8 .. 1024.
"""

from __future__ import annotations

import logging
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import fsio
from ..errors import CheckpointError
from ..progress import bar as progress_bar
from .checkpoint import Checkpoint, load_checkpoint
from .graphs import SynthesisGraph
from .nets.encoders import HEAD_SLOPE, ReStyleEncoder

log = logging.getLogger("restyle_rt")

FIT_KEY = "restyle_rt_fit"  # opts entry recording the fit (not an official option; the loader ignores unknown opts)
SUPPORTED = (
    "ResNetBackboneEncoder",
    "ResNetProgressiveBackboneEncoder",
    "BackboneEncoder",
    "ProgressiveBackboneEncoder",
)
BN_EPS = 1e-5
# backbone channels carrying the fitted feature, per colour c: A+ = relu(kx), A- = relu(-kx) (kx: the fitted 7x7
# x kernel), B = relu(mean(y) + 1), C = relu(mean(y) - 1) (12 channels), their 2x2 means (12 more), then the pairs
# relu(+d_c), relu(-d_c) (6 channels)
_ABC, _POOLED, _PAIRS = range(0, 12), range(12, 24), range(24, 30)
DEFAULTS = dict(
    k=32,
    psi=0.7,
    n_train=128,
    min_frac=0.03,
    ridge=0.003,
    weight_pow=1.0,
    dagger_rounds=1,
    dagger_samples=64,
    dagger_steps=2,
    n_pca=4096,
    fit_kernel=True,
)
# Per-preset settings over DEFAULTS. church-256 (seed 0, held-out seed 424242, 6 targets; AMD EPYC VM, 1 thread,
# loaded): the defaults' 32-dim truth with 32 states took one step toward the truth then drifted (latent RMS 0.339 ->
# 0.285, 0.285, 0.314, 0.359, 0.417); a 16-dim truth, 96 states and one DAgger round of 48 x 2 converges (0.294 ->
# 0.116, 0.074, 0.051, 0.039, 0.032; PSNR against the target 17.9 -> 40.1 dB after 5 steps), 289 generator
# forwards, fitted in 640 s.
PRESET_FIT = {
    "church-256": dict(k=16, n_train=96, dagger_samples=48),
    "ffhq-1024": dict(k=16, n_train=96, dagger_samples=48, batch=4),  # church-256's; batch 4 bounds 1024 px memory
}


# --- truth distribution --------------------------------------------------------------------------------------


@torch.no_grad()
def principal_subspace(gen_net, k: int, seed: int, n_pca: int = 4096) -> torch.Tensor:
    """U [512, k]: the top-k principal directions of ``mapping(z)``, z ~ N(0, I) (seeded), signs fixed."""
    g = torch.Generator().manual_seed(seed)
    w = gen_net.mapping(torch.randn(n_pca, 512, generator=g)).double()
    evals, evecs = torch.linalg.eigh(torch.cov(w.T))  # ascending
    u = evecs[:, -k:].flip(1)  # [512, k], largest first
    u = u * torch.sign(u[u.abs().argmax(0), torch.arange(k)])  # largest entry of each column positive
    return u.float().contiguous()


@torch.no_grad()
def sample_coords(
    gen_net, latent_avg: torch.Tensor, u: torch.Tensor, n: int, psi: float, g: torch.Generator
) -> torch.Tensor:
    """Subspace coordinates [n, k] of true latents: psi * U^T (mapping(z) - mean latent_avg)."""
    return psi * (gen_net.mapping(torch.randn(n, 512, generator=g)) - latent_avg.mean(0)) @ u


def coords_to_latent(a: torch.Tensor, latent_avg: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """[n, k] -> [n, S, 512]: latent_avg + U a on every style row."""
    return latent_avg[None] + (a @ u.T)[:, None, :]


# --- the fitted feature, restated --------------------------------------------------------------------------


def encoder_input(images: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """What the runtime feeds the encoder for generated targets: ``tensor2im`` (clip, uint8) then ``preprocess``
    (Pillow-exact bilinear resize to ``hw``, [-1, 1]). [B, 3, h, w] -> [B, 3, H, W]."""
    from ..runtime import io

    out = [io.preprocess(io.to_uint8(img.numpy()), hw) for img in images]
    return torch.from_numpy(np.stack(out))


# The stem's x kernel per backbone: ResNet34's 7x7 stride-2 conv is read at even outputs (taps 3..6 cover input
# pixels 2i .. 2i+3), IR-SE50's 3x3 stride-1 conv at every pixel (pad 1). KERNEL_SIZE also tells the two apart in
# the functions below, which take the backbone's name.
KERNEL_SIZE = {"resnet34": 7, "ir_se50": 3}


def mean_kernel(backbone: str = "resnet34") -> torch.Tensor:
    """The stem kernel whose 16x16 feature is the plain block mean of x: ResNet34 the 4x4 block of every even
    output (taps 3..6), IR-SE50 the identity (centre tap)."""
    n = KERNEL_SIZE[backbone]
    k = torch.zeros(n, n)
    if backbone == "resnet34":
        k[3:, 3:] = 1.0 / 16
    else:
        k[1, 1] = 1.0
    return k


def _stem_map(x: torch.Tensor, kernel: torch.Tensor, backbone: str) -> torch.Tensor:
    """[N, 1, 256, 256] through the stem's x kernel(s) [K, 1, n, n] -> [N, K, 16, 16] feature-resolution means."""
    if backbone == "resnet34":  # even stem outputs (stride 4 = stride 2 of the stem, every other output), 4x4 means
        return F.avg_pool2d(F.conv2d(x, kernel, stride=4, padding=3), 4)
    return F.avg_pool2d(F.conv2d(x, kernel, padding=1), 16)  # IR-SE50: every pixel, 16x16 means


def _x_taps(x: torch.Tensor, backbone: str = "resnet34") -> torch.Tensor:
    """[B, 3, 256, 256] -> [B*3*256, n*n]: each stem tap's contribution to the 16x16 feature, per colour/block."""
    n = KERNEL_SIZE[backbone]
    eye = torch.eye(n * n, dtype=x.dtype).view(n * n, 1, n, n)
    t = _stem_map(x.reshape(-1, 1, *x.shape[2:]), eye, backbone)  # [B*3, n*n, 16, 16]
    return t.flatten(2).transpose(1, 2).reshape(-1, n * n)


def x_feature(x: torch.Tensor, kernel: torch.Tensor | None = None, backbone: str = "resnet34") -> torch.Tensor:
    """The image half of d: the stem's x kernel (default :func:`mean_kernel`), then block means to 16x16.

    [B, 3, 256, 256] -> [B, 768] (flattened as [3, 16, 16]).
    """
    k = mean_kernel(backbone) if kernel is None else kernel
    v = _stem_map(x.reshape(-1, 1, *x.shape[2:]), k[None, None].to(x.dtype), backbone)
    return v.reshape(x.shape[0], -1)


@torch.no_grad()
def fit_x_kernel(
    x: torch.Tensor, fb: torch.Tensor, ridge: float = 1e-4, chunk: int = 16, backbone: str = "resnet34"
) -> torch.Tensor:
    """The stem kernel on x that best matches ``y_feature(fb)`` when x is the target of the same image.

    The target reaches the encoder bilinear-resized (64 px -> 256: each pixel spreads onto its neighbours' blocks)
    while the feedback is replicated: with the plain block mean, ``d`` at the truth is not 0 (3.7 % of its size at
    the start at 64 px, 35 % at 16 px) and the loop settles off the truth. Least squares over targets at their truth
    (``x``, ``fb`` pairs), ridge toward the block mean. Measured (ResNet34's 7x7): 0.95 % left at 64 px (where an
    exact kernel exists: [-1, 3, 3, -1] / 4 per axis over the block undoes the bilinear spill; the rest is uint8
    rounding), 6.6 % at 16 px (no 7x7 kernel is exact there).
    """
    n = KERNEL_SIZE[backbone]
    ata, atb = torch.zeros(n * n, n * n, dtype=torch.float64), torch.zeros(n * n, dtype=torch.float64)
    for i in range(0, x.shape[0], chunk):
        a = _x_taps(x[i : i + chunk], backbone).double()
        ata += a.T @ a
        atb += a.T @ y_feature(fb[i : i + chunk], backbone).reshape(-1).double()
    lam = ridge * float(torch.diagonal(ata).mean())
    k0 = mean_kernel(backbone).reshape(-1).double()
    k = torch.linalg.solve(ata + lam * torch.eye(n * n, dtype=torch.float64), atb + lam * k0)
    return k.float().view(n, n)


def y_feature(fb: torch.Tensor, backbone: str = "resnet34") -> torch.Tensor:
    """The feedback half of d -> [B, 768]. ResNet34: 4x4-block means (its stem), clipped to [-1, 1], then 4x4
    means of those; IR-SE50: every pixel clipped (its stride-1 stem), then 16x16-block means."""
    if backbone == "resnet34":
        return F.avg_pool2d(F.avg_pool2d(fb, 4).clamp(-1, 1), 4).flatten(1)
    return F.avg_pool2d(fb.clamp(-1, 1), 16).flatten(1)


# --- writing the encoder -------------------------------------------------------------------------------------


def _bn(bn: nn.BatchNorm2d, chans, gain: float = 1.0, bias: float = 0.0) -> None:
    """Eval-mode BN as a per-channel affine ``gain * v + bias`` on ``chans`` (running stats 0 / 1)."""
    idx = list(chans)
    bn.weight[idx] = gain * math.sqrt(1.0 + bn.eps)
    bn.bias[idx] = bias


def _zero(enc: ReStyleEncoder) -> None:
    """Every conv / linear weight and bias 0, BN an identity on no channel (output 0), PReLU a ReLU."""
    for m in enc.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.zero_()
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()  # mean 0, var 1, num_batches_tracked 0
            m.weight.zero_()
            m.bias.zero_()
            assert m.eps == BN_EPS
        elif isinstance(m, nn.PReLU):
            m.weight.zero_()
    for head in enc.styles:
        head.linear.weight.zero_()
        head.linear.bias.zero_()


def _pool_branch(block, src, dst) -> None:
    """Residual branch writing the 2x2 mean (pixels p, p+1) of channels ``src`` into ``dst``."""
    for s, d in zip(src, dst):
        block.conv1.weight[d, s, 1:3, 1:3] = 1.0
        block.conv2.weight[d, d, 1, 1] = 1.0
    _bn(block.bn1, dst)
    _bn(block.bn2, dst, 0.25)


def _pick(block, src, dst) -> None:
    """A stride-2 block's shortcut (1x1 conv stride 2 + BN) copies ``src`` to ``dst`` at even pixels."""
    conv, bn = block.downsample
    for s, d in zip(src, dst):
        conv.weight[d, s, 0, 0] = 1.0
    _bn(bn, dst)


def _write_resnet34(enc: ReStyleEncoder, x_kernel: torch.Tensor) -> None:
    body = enc.body
    # stem: 7x7 stride 2 (pad 3); taps 3..6 are input pixels 2i .. 2i+3, i.e. the 4x4 block of every even output.
    # A+- = relu(+-kx) (kx: x_kernel on x), B = relu(mean(y) + 1), C = relu(mean(y) - 1); PReLU(0) is a ReLU
    for c in range(3):
        enc.conv1.weight[c, c] = x_kernel
        enc.conv1.weight[3 + c, c] = -x_kernel
        enc.conv1.weight[6 + c, 3 + c, 3:7, 3:7] = 1.0 / 16
        enc.conv1.weight[9 + c, 3 + c, 3:7, 3:7] = 1.0 / 16
        _bn(enc.bn1, [c, 3 + c])
        _bn(enc.bn1, [6 + c], 1.0, 1.0)
        _bn(enc.bn1, [9 + c], 1.0, -1.0)
    # body: 0-2 layer1 (128 px), 3-6 layer2 (64 px), 7-12 layer3 (32 px), 13-15 layer4 (16 px); every block is
    # relu(branch + shortcut); branches not written here have bn2 = 0, so those blocks pass their input through
    _pick(body[3], _ABC, _ABC)  # 128 -> 64 px: even pixels are exact 4x4 block means of the input
    _pool_branch(body[4], _ABC, _POOLED)  # 2x2 means at 64 px
    _pick(body[7], _POOLED, _ABC)  # -> 32 px
    _pool_branch(body[8], _ABC, _POOLED)
    _pick(body[13], _POOLED, _ABC)  # -> 16 px: 16x16-block means of the input (y: of clipped 4x4 means)
    blk = body[14]  # d_c = A+ - A- - (B - C - 1) = kx - mean(clip(y)), as relu(+d), relu(-d)
    for c in range(3):
        for sgn, ch in ((1.0, _PAIRS[2 * c]), (-1.0, _PAIRS[2 * c + 1])):
            for src, w in ((c, 1.0), (3 + c, -1.0), (6 + c, -1.0), (9 + c, 1.0)):
                blk.conv1.weight[ch, src, 1, 1] = sgn * w
            blk.conv2.weight[ch, ch, 1, 1] = 1.0
            _bn(blk.bn1, [ch], 1.0, sgn)
    _bn(blk.bn2, _PAIRS)


SE_GATE = 0.5  # an IR-SE unit's squeeze-excitation gate with zero weights: sigmoid(0)


def _irse_mean_branch(unit, chans, subtract_subsample: bool) -> None:
    """A stride-2 IR-SE unit whose output on ``chans`` is the 2x2 mean (pixels 2i, 2i+1) of its input.

    The branch is BN -> conv3x3 -> PReLU -> conv3x3/2 -> BN -> SE: identity, identity (centre tap), identity (slope
    1), the 2x2 mean (taps 1..2), gain 1 / SE_GATE. A unit whose shortcut is the parameter-free subsample (in ==
    depth) adds x[2i, 2j]; its branch subtracts it (centre tap). A conv shortcut stays zero.
    """
    bn1, conv1, prelu, conv2, bn2, _se = unit.res_layer
    _bn(bn1, chans)
    for c in chans:
        conv1.weight[c, c, 1, 1] = 1.0
        conv2.weight[c, c, 1:3, 1:3] = 0.25
        if subtract_subsample:
            conv2.weight[c, c, 1, 1] -= 1.0
    prelu.weight[list(chans)] = 1.0
    _bn(bn2, chans, 1.0 / SE_GATE)


def _write_irse50(enc: ReStyleEncoder, x_kernel: torch.Tensor) -> None:
    conv, bn, _prelu = enc.input_layer  # PReLU(0): a ReLU
    # stem: 3x3 stride 1 (pad 1) at every pixel: A+- = relu(+-kx), B = relu(y + 1), C = relu(y - 1)
    for c in range(3):
        conv.weight[c, c] = x_kernel
        conv.weight[3 + c, c] = -x_kernel
        conv.weight[6 + c, 3 + c, 1, 1] = 1.0
        conv.weight[9 + c, 3 + c, 1, 1] = 1.0
        _bn(bn, [c, 3 + c])
        _bn(bn, [6 + c], 1.0, 1.0)
        _bn(bn, [9 + c], 1.0, -1.0)
    # body: the four stride-2 units (0: 256 -> 128 px, 3: -> 64, 7: -> 32, 21: -> 16) each take 2x2 means, so the
    # 16 px features are exact 16x16-block means; no ReLU follows an IR-SE sum, and every other unit's branch has
    # bn2 = 0 (output 0), so it passes its input through (identity shortcut)
    body = enc.body
    for i, cin_eq_depth in ((0, True), (3, False), (7, False), (21, False)):
        _irse_mean_branch(body[i], _ABC, subtract_subsample=cin_eq_depth)
    # unit 22: d_c = A+ - A- - (B - C - 1) = kx - mean(clip(y)), as relu(+d), relu(-d) into the pair channels; the
    # constant comes from a branch-only channel whose bn1 outputs 1 (its input is 0)
    bn1, conv1, _prelu, conv2, bn2, _se = body[22].res_layer
    one = _PAIRS.stop
    bn1.bias[one] = 1.0
    _bn(bn1, _ABC)
    for c in range(3):
        for sgn, ch in ((1.0, _PAIRS[2 * c]), (-1.0, _PAIRS[2 * c + 1])):
            for src, w in ((c, 1.0), (3 + c, -1.0), (6 + c, -1.0), (9 + c, 1.0), (one, 1.0)):
                conv1.weight[ch, src, 1, 1] = sgn * w
            conv2.weight[ch, ch, 1, 1] = 1.0
    _bn(bn2, _PAIRS, 1.0 / SE_GATE)


_WRITE_BACKBONE = {"resnet34": _write_resnet34, "ir_se50": _write_irse50}


def _write_space_to_depth(conv: nn.Conv2d, n_in: int) -> None:
    """3x3 stride-2 pad-1 conv moving each 2x2 pixel block of channels 0..n_in-1 into 4*n_in channels."""
    for qy in range(2):
        for qx in range(2):
            for c in range(n_in):
                conv.weight[(2 * qy + qx) * n_in + c, c, 1 + qy, 1 + qx] = 1.0


@torch.no_grad()
def write_encoder(
    enc: ReStyleEncoder, m: torch.Tensor, b: torch.Tensor, u: torch.Tensor, x_kernel: torch.Tensor | None = None
) -> None:
    """Set ``enc`` (ResNet34 or IR-SE50, 16 px features) to ``E(x, y) = U (M d + b)`` on every style row (e4e: head 0 only).

    ``d = x_feature(x, x_kernel) - y_feature(y)`` (of ``enc.backbone``) flattened as [3, 16, 16]; ``m`` [768, k];
    ``b`` [k]; ``u`` [512, k]; k <= 256; ``x_kernel`` [n, n], n = :data:`KERNEL_SIZE` (default
    :func:`mean_kernel`).
    """
    k = m.shape[1]
    if k > 256:
        raise ValueError(f"k={k}: at most 256 directions fit through a head's 512 channels as +- pairs")
    _zero(enc)
    _WRITE_BACKBONE[enc.backbone](enc, mean_kernel(enc.backbone) if x_kernel is None else x_kernel)
    # where each d entry sits after the three space-to-depth convs: push an id map through them
    head0 = enc.styles[0]
    convs = [mod for mod in head0.convs if isinstance(mod, nn.Conv2d)]
    n = len(_PAIRS)
    for j, conv in enumerate(convs[:-1]):
        _write_space_to_depth(conv, n * 4**j)
    ids = torch.zeros(1, 512, 16, 16, dtype=torch.float64)
    ids[0, :n] = torch.arange(1, n * 256 + 1, dtype=torch.float64).view(n, 16, 16)
    for conv in convs[:-1]:
        ids = F.conv2d(ids, conv.weight.double(), stride=2, padding=1)  # [1, 512, 2, 2] at the end
    last = convs[-1]
    m64, b64 = m.double(), b.double()
    for ch, py, px in torch.nonzero(ids[0]).tolist():
        t = int(round(float(ids[0, ch, py, px]))) - 1  # pair channel * 256 + y * 16 + x
        pair, pos = divmod(t, 256)
        c, sgn = pair // 2, (1.0 if pair % 2 == 0 else -1.0)
        col = sgn * m64[c * 256 + pos]  # [k]
        last.weight[0 : 2 * k : 2, ch, 1 + py, 1 + px] = col.float()
        last.weight[1 : 2 * k : 2, ch, 1 + py, 1 + px] = (-col).float()
    last.bias[0 : 2 * k : 2] = b64.float()
    last.bias[1 : 2 * k : 2] = (-b64).float()
    # lrelu(z) - lrelu(-z) = (1 + slope) z; EqualLinear applies weight / sqrt(512)
    lw = u.double() * math.sqrt(head0.linear.weight.shape[1]) / (1 + HEAD_SLOPE)
    head0.linear.weight[:, 0 : 2 * k : 2] = lw.float()
    head0.linear.weight[:, 1 : 2 * k : 2] = (-lw).float()
    # the head's first conv reads the backbone's pair channels (_PAIRS), not channels 0..n-1
    first = convs[0]
    w0 = first.weight[:, :n].clone()
    first.weight.zero_()
    first.weight[:, _PAIRS.start : _PAIRS.stop] = w0
    for i in range(1, enc.n_styles):
        if enc.e4e:
            break  # e4e: row i = h0 + h_i, h_i = 0
        enc.styles[i].load_state_dict(head0.state_dict())


def _check_supported(ckpt: Checkpoint) -> None:
    spec = ckpt.spec
    if spec.encoder_type not in SUPPORTED or tuple(spec.input_hw) != (256, 256):
        raise CheckpointError(
            f"{ckpt.path}: fit_encoder supports {', '.join(SUPPORTED)} with a 256x256 encoder "
            f"input, not {spec.encoder_type} / {spec.dataset_type} ({spec.input_hw})"
        )


# --- the fit ------------------------------------------------------------------------------------------------


def _render(syn: SynthesisGraph, w: torch.Tensor, batch: int, bar=None) -> tuple[torch.Tensor, torch.Tensor]:
    imgs, fbs = [], []
    with torch.no_grad():
        for i in range(0, w.shape[0], batch):
            img, fb = syn(w[i : i + batch])
            imgs.append(img)
            fbs.append(fb)
            if bar is not None:
                bar.update(img.shape[0])
    return torch.cat(imgs), torch.cat(fbs)


def _ridge(feats: torch.Tensor, targ: torch.Tensor, lam: float, weight_pow: float):
    """Weighted ridge regression targ ~ feats @ M + b, weights |targ|^-weight_pow (float64)."""
    f, t = feats.double(), targ.double()
    wt = t.pow(2).mean(1).clamp_min(1e-12) ** (-weight_pow / 2)
    wt = wt / wt.mean()
    mf = (wt[:, None] * f).sum(0) / wt.sum()
    mt = (wt[:, None] * t).sum(0) / wt.sum()
    a, bb = (f - mf) * wt.sqrt()[:, None], (t - mt) * wt.sqrt()[:, None]
    n, nf = a.shape
    m = torch.linalg.solve(a.T @ a + lam * n * torch.eye(nf, dtype=torch.float64), a.T @ bb)
    return m.float(), (mt - mf @ m).float()


def fit_encoder(
    ckpt_in: os.PathLike,
    ckpt_out: os.PathLike | None,
    *,
    seed: int = 0,
    k: int = DEFAULTS["k"],
    psi: float = DEFAULTS["psi"],
    n_train: int = DEFAULTS["n_train"],
    min_frac: float = DEFAULTS["min_frac"],
    ridge: float = DEFAULTS["ridge"],
    weight_pow: float = DEFAULTS["weight_pow"],
    dagger_rounds: int = DEFAULTS["dagger_rounds"],
    dagger_samples: int = DEFAULTS["dagger_samples"],
    dagger_steps: int = DEFAULTS["dagger_steps"],
    n_pca: int = DEFAULTS["n_pca"],
    fit_kernel: bool = DEFAULTS["fit_kernel"],
    eval_samples: int = 0,
    eval_iters: int = 5,
    eval_seed: int | None = None,
    batch: int = 16,
    progress: bool = True,
) -> dict:
    """Fit the encoder of ``ckpt_in`` (generator frozen) so that its loop converges; write ``ckpt_out``.

    Args:
        ckpt_in: an official-format checkpoint (e.g. from :func:`~restyle_rt.export.fixtures.make_checkpoint`).
        ckpt_out: where to write the fitted checkpoint (same keys, shapes, ``opts`` + ``FIT_KEY``, ``latent_avg``);
            None to only fit.
        seed: every random draw (PCA samples, training latents, curriculum, DAgger picks) derives from it.
        k, psi: the truth: ``latent_avg + psi * U U^T (mapping(z) - mean latent_avg)``, U the top-k principal
            directions of W (see the module docstring).
        n_train: training targets; each gives a start state and one curriculum state (2 generator forwards).
        min_frac: the closest curriculum states sit at this fraction of the start's distance to the truth.
        ridge: ridge strength (times the number of states); weight_pow: states weighted by |error|^-weight_pow.
        dagger_rounds, dagger_samples, dagger_steps: optional rounds that add the states the current fit's loop
            visits (``dagger_samples`` targets x ``dagger_steps`` steps, generator forwards each) and refit.
        n_pca: mapping samples for the PCA.
        fit_kernel: fit the stem's x kernel (7x7 ResNet34, 3x3 IR-SE50) on the image (:func:`fit_x_kernel`);
            False: the plain block mean.
        eval_samples, eval_iters, eval_seed: when ``eval_samples`` > 0 and ``ckpt_out`` is written, measure
            :func:`loop_errors` on held-out targets (default seed ``seed + 1_000_003``) before and after.
        batch: generator batch.
        progress: a bar over the generator forwards (on a terminal; :mod:`restyle_rt.progress`).

    Returns:
        A report dict: ``config``, ``time_s`` (fit), ``n_states``, ``generator_forwards``, ``check_rel_err`` (the
        written encoder vs the fitted map), ``truth_mismatch`` / ``start_d`` (mean |d| on the training targets at
        their truth / at the start: the first should be small), and with evaluation ``before`` / ``after``
        (:func:`loop_errors` dicts) and ``eval_time_s``.
    """
    t0 = time.perf_counter()
    ckpt = load_checkpoint(ckpt_in)
    _check_supported(ckpt)
    spec = ckpt.spec
    enc, gen_net = ckpt.build()
    syn = SynthesisGraph(gen_net, spec).eval()  # export formulation: same maths, faster on CPU
    la = ckpt.latent_avg  # [S, 512]
    config = dict(
        method="structured-ridge",
        seed=seed,
        k=k,
        psi=psi,
        n_train=n_train,
        min_frac=min_frac,
        ridge=ridge,
        weight_pow=weight_pow,
        dagger_rounds=dagger_rounds,
        dagger_samples=dagger_samples,
        dagger_steps=dagger_steps,
        n_pca=n_pca,
        pca_seed=seed,
        fit_kernel=fit_kernel,
    )
    u = principal_subspace(gen_net, k, seed, n_pca)  # PCA draws: generator seeded with ``seed``
    g = torch.Generator().manual_seed(seed + 1)  # training draws: a stream apart from the PCA's
    a_tr = sample_coords(gen_net, la, u, n_train, psi, g)  # [n, k]
    n_fwd = 0
    total = 2 * n_train + 1 + dagger_rounds * min(dagger_samples, n_train) * dagger_steps
    bar = progress_bar(total=total, unit="img", desc="fit: generator", show=progress)

    def render(a):
        nonlocal n_fwd
        n_fwd += a.shape[0]
        return _render(syn, coords_to_latent(a, la, u), batch, bar)

    img_tr, fb_tr = render(a_tr)
    x_tr = encoder_input(img_tr, spec.input_hw)  # [n, 3, 256, 256]
    bb = spec.backbone
    x_kernel = fit_x_kernel(x_tr, fb_tr, backbone=bb) if fit_kernel else mean_kernel(bb)
    fx = x_feature(x_tr, x_kernel, bb)  # [n, 768]
    mismatch = float((fx - y_feature(fb_tr, bb)).norm(dim=1).mean())  # |d| at the truth
    del x_tr, fb_tr
    _, fb0 = render(torch.zeros(1, k))
    fy0 = y_feature(fb0, bb)
    s = torch.exp(torch.rand(n_train, 1, generator=g) * math.log(min_frac))  # log-uniform in [min_frac, 1]
    a_cur = a_tr * (1 - s)
    feats, targs = [fx - fy0, fx - y_feature(render(a_cur)[1], bb)], [a_tr, a_tr - a_cur]
    m, b = _ridge(torch.cat(feats), torch.cat(targs), ridge, weight_pow)
    for r in range(dagger_rounds):
        idx = torch.randperm(n_train, generator=g)[:dagger_samples]
        a, fy = torch.zeros(len(idx), k), fy0.expand(len(idx), -1)
        for _t in range(dagger_steps):
            a = a + (fx[idx] - fy) @ m + b
            fy = y_feature(render(a)[1], bb)
            feats.append(fx[idx] - fy)
            targs.append(a_tr[idx] - a)
        m, b = _ridge(torch.cat(feats), torch.cat(targs), ridge, weight_pow)
        log.info("fit: DAgger round %d: %d states", r + 1, sum(f.shape[0] for f in feats))
    bar.close()
    write_encoder(enc, m, b, u, x_kernel)
    check = _check_encoder(enc, spec, img_tr[:2], x_kernel, m, b, u, la, syn)
    fit_time = time.perf_counter() - t0
    report = dict(
        config=config,
        time_s=fit_time,
        n_states=sum(f.shape[0] for f in feats),
        generator_forwards=n_fwd,
        check_rel_err=check,
        truth_mismatch=mismatch,
        start_d=float((fx - fy0).norm(dim=1).mean()),
    )
    log.info(
        "fit: %d states, %d generator forwards, %.1f s, encoder check rel err %.2e",
        report["n_states"],
        n_fwd,
        fit_time,
        check,
    )
    if check > 1e-3:
        raise RuntimeError(f"the written encoder does not compute the fitted map (rel err {check:.2e})")
    if ckpt_out is not None:
        _save(ckpt_in, ckpt_out, enc, config)
        if eval_samples > 0:
            t1 = time.perf_counter()
            es = seed + 1_000_003 if eval_seed is None else eval_seed
            report["before"] = loop_errors(
                ckpt_in, eval_samples, eval_iters, es, k=k, psi=psi, pca_seed=seed, n_pca=n_pca
            )
            report["after"] = loop_errors(ckpt_out, eval_samples, eval_iters, es)
            report["eval_time_s"] = time.perf_counter() - t1
    return report


@torch.no_grad()
def _check_encoder(enc, spec, imgs, x_kernel, m, b, u, la, syn) -> float:
    """Rel-L2 of the real encoder's step against U (M d + b), for ``imgs`` as targets and feedback from
    latent_avg + 0.3 N(0, I) (fixed draw)."""
    x = encoder_input(imgs, spec.input_hw)
    fb = syn(
        la[None].expand(len(imgs), -1, -1)
        + 0.3 * torch.randn(len(imgs), 1, 512, generator=torch.Generator().manual_seed(0))
    )[1]
    got = enc(torch.cat([x, fb], 1))  # [B, S, 512]
    bb = spec.backbone
    want = ((x_feature(x, x_kernel, bb) - y_feature(fb, bb)) @ m + b) @ u.T  # [B, 512]
    want = want[:, None].expand_as(got)
    return float((got - want).norm() / want.norm())


def _save(ckpt_in, ckpt_out, enc: ReStyleEncoder, config: dict) -> None:
    obj = torch.load(ckpt_in, map_location="cpu", weights_only=True)
    sd = {k: v for k, v in obj["state_dict"].items() if not k.startswith("encoder.")}
    new = {f"encoder.{k}": v.detach().clone().contiguous() for k, v in enc.state_dict().items()}
    for key, v in new.items():
        old = obj["state_dict"][key]
        if old.shape != v.shape or old.dtype != v.dtype:
            raise RuntimeError(f"{key}: fitted {list(v.shape)} {v.dtype} vs {list(old.shape)} {old.dtype}")
    obj["state_dict"] = {**new, **sd}
    obj["opts"] = dict(obj["opts"], **{FIT_KEY: dict(config)})
    with fsio.atomic_path(ckpt_out, durable=True) as tmp:
        torch.save(obj, tmp)


# --- measuring the loop ------------------------------------------------------------------------------------


@torch.no_grad()
def sample_targets(
    ckpt: os.PathLike, n: int, seed: int = 1_000_003, *, batch: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Targets with known true latents: ``n`` latents of the fit's distribution (see :func:`loop_errors`), drawn
    with ``seed``, and the images the checkpoint's generator draws from them.

    Returns:
        (latents [n, S, 512] float32, images [n, h, w, 3] uint8: ``tensor2im`` of the generator's output).
    """
    from ..runtime import io

    c = load_checkpoint(ckpt)
    fitcfg = c.opts.get(FIT_KEY) or {}
    k, psi = int(fitcfg.get("k", DEFAULTS["k"])), float(fitcfg.get("psi", DEFAULTS["psi"]))
    _, gen_net = c.build()
    u = principal_subspace(gen_net, k, int(fitcfg.get("pca_seed", 0)), int(fitcfg.get("n_pca", DEFAULTS["n_pca"])))
    a = sample_coords(gen_net, c.latent_avg, u, n, psi, torch.Generator().manual_seed(seed))
    w = coords_to_latent(a, c.latent_avg, u)
    img, _ = _render(SynthesisGraph(gen_net, c.spec).eval(), w, batch)
    return w.numpy().astype(np.float32), np.stack([io.to_uint8(i.numpy()) for i in img])


def loop_errors(
    ckpt: os.PathLike,
    n_samples: int = 8,
    n_iters: int = 5,
    seed: int = 1_000_003,
    *,
    k: int | None = None,
    psi: float | None = None,
    pca_seed: int | None = None,
    n_pca: int | None = None,
    batch: int = 8,
) -> dict:
    """Run the ReStyle loop (PyTorch reference, export formulation) on targets drawn by the model's generator.

    True latents come from the fit's distribution (``opts[FIT_KEY]`` when the checkpoint has one, else the
    arguments / :data:`DEFAULTS`, PCA seed 0), drawn with ``seed`` (keep it away from the fit's seeds: held out).
    Each target is the generator's image through ``tensor2im`` + ``preprocess``, as the demo feeds it.

    Returns:
        dict with ``latent_rms`` [n_iters + 1] (index 0: the start, latent_avg, i.e. "no move"; then after each
        step; RMS over samples, styles and channels), ``latent_rel`` (each over index 0), ``psnr_db``
        [n_iters + 1] (mean over samples of the PSNR of clip(G(w_t)) against the uint8 target, peak-to-peak 2),
        ``per_sample_rms`` [n_iters + 1][n_samples], and ``truth`` (k, psi, pca_seed, seed).
    """
    from .reference import TorchModels, reference_loop

    c = load_checkpoint(ckpt)
    fitcfg = c.opts.get(FIT_KEY) or {}
    k = int(k if k is not None else fitcfg.get("k", DEFAULTS["k"]))
    psi = float(psi if psi is not None else fitcfg.get("psi", DEFAULTS["psi"]))
    pca_seed = int(pca_seed if pca_seed is not None else fitcfg.get("pca_seed", 0))
    n_pca = int(n_pca if n_pca is not None else fitcfg.get("n_pca", DEFAULTS["n_pca"]))
    models = TorchModels.from_checkpoint(c)
    gen_net = models.synthesis_official.net
    la = c.latent_avg
    u = principal_subspace(gen_net, k, pca_seed, n_pca)
    a = sample_coords(gen_net, la, u, n_samples, psi, torch.Generator().manual_seed(seed))
    w_true = coords_to_latent(a, la, u)
    img_true, _ = _render(models.synthesis, w_true, batch)
    x = encoder_input(img_true, c.spec.input_hw)
    target = torch.from_numpy(np.stack([_tensor2im_f(i) for i in img_true]))  # [n, 3, h, w] in [-1, 1]
    rms, psnr, per = [], [], []
    img0 = models.synthesis(la[None])[0].expand(n_samples, -1, -1, -1)
    latents, images = [la[None].expand(n_samples, -1, -1)], [img0]
    for i in range(0, n_samples, batch):
        steps = reference_loop(models, x[i : i + batch], n_iters, official=False)
        for t, st in enumerate(steps):
            if i == 0:
                latents.append(st.latent)
                images.append(st.image)
            else:
                latents[t + 1] = torch.cat([latents[t + 1], st.latent])
                images[t + 1] = torch.cat([images[t + 1], st.image])
    for lat, img in zip(latents, images):
        err = (lat - w_true).pow(2).mean((1, 2))  # [n]
        per.append(err.sqrt().tolist())
        rms.append(float(err.mean().sqrt()))
        mse = (img.clamp(-1, 1) - target).pow(2).mean((1, 2, 3)).double()
        psnr.append(float((10 * torch.log10(4.0 / mse)).mean()))
    return dict(
        latent_rms=rms,
        latent_rel=[r / rms[0] for r in rms],
        psnr_db=psnr,
        per_sample_rms=per,
        truth=dict(k=k, psi=psi, pca_seed=pca_seed, n_pca=n_pca, seed=seed),
    )


def _tensor2im_f(img: torch.Tensor) -> np.ndarray:
    """The uint8 target as the demo compares against: tensor2im, then back to [-1, 1], [3, h, w]."""
    from ..runtime import io

    return (io.to_uint8(img.numpy()).astype(np.float32) / 127.5 - 1).transpose(2, 0, 1)
