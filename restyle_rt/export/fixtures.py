"""Random-weight ReStyle checkpoints in the exact official format, for tests and benchmarks.

Keys, shapes, dtypes, ``opts`` and ``latent_avg`` follow the official coaches' ``__get_save_dict``. The weights are
re-initialised so that the model behaves like a trained one in the ways parity tests care about: Kaiming encoder
convs, BatchNorm running statistics calibrated on the encoder's own activations, nonzero noise strengths and biases,
a ``latent_avg`` taken from the mapping network, and style-head gains large enough that the encoder's output really
depends on both its image and its feedback input (with constructor defaults it barely does).
"""

from __future__ import annotations

import io
import math
import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from .. import fsio
from ..spec import ENCODER_TYPES_E4E, ModelSpec
from .graphs import SynthesisGraph
from .nets.encoders import ReStyleEncoder
from .nets.synthesis import Generator

PSP_OPTS = dict(
    exp_dir="experiments/restyle",
    dataset_type="ffhq_encode",
    encoder_type="BackboneEncoder",
    input_nc=6,
    output_size=1024,
    batch_size=4,
    test_batch_size=2,
    workers=4,
    test_workers=2,
    learning_rate=0.0001,
    optim_name="ranger",
    train_decoder=False,
    start_from_latent_avg=True,
    lpips_lambda=0.8,
    id_lambda=0.1,
    l2_lambda=1.0,
    w_norm_lambda=0.0,
    lpips_lambda_crop=0.0,
    l2_lambda_crop=0.0,
    moco_lambda=0.0,
    stylegan_weights="pretrained_models/stylegan2-ffhq-config-f.pt",
    checkpoint_path=None,
    max_steps=500000,
    image_interval=100,
    board_interval=50,
    val_interval=1000,
    save_interval=None,
    n_iters_per_batch=5,
    device="cuda:0",
)
E4E_EXTRA = dict(
    w_discriminator_lambda=0.1,
    w_discriminator_lr=2e-5,
    r1=10,
    d_reg_every=16,
    use_w_pool=True,
    w_pool_size=50,
    delta_norm=2,
    delta_norm_lambda=2e-4,
    progressive_steps=[0, 20000, 22000, 24000],
    progressive_start=None,
    progressive_step_every=2000,
    save_training_data=False,
    sub_exp_dir=None,
    keep_optimizer=False,
    resume_training_from_ckpt=None,
    update_param_list=None,
)

PRESETS = {
    # name: (encoder_type, dataset_type, output_size)
    "ffhq-1024": ("BackboneEncoder", "ffhq_encode", 1024),
    "cars-512": ("ResNetProgressiveBackboneEncoder", "cars_encode", 512),
    "church-256": ("ResNetBackboneEncoder", "church_encode", 256),
}


def make_opts(
    encoder_type: str = "BackboneEncoder", dataset_type: str = "ffhq_encode", output_size: int = 1024
) -> dict:
    opts = dict(PSP_OPTS, encoder_type=encoder_type, dataset_type=dataset_type, output_size=output_size)
    if encoder_type in ENCODER_TYPES_E4E:
        opts.update(E4E_EXTRA)
    return opts


def sample_images(n: int, hw, gen: torch.Generator) -> torch.Tensor:
    """Random low-frequency images in [-1, 1]: closer to photos than white noise."""
    h, w = hw
    x = torch.rand(n, 3, h // 16, w // 16, generator=gen) * 2 - 1
    x = nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return (x + 0.1 * torch.randn(n, 3, h, w, generator=gen)).clamp(-1, 1)


@torch.no_grad()
def init_encoder(
    enc: ReStyleEncoder,
    spec: ModelSpec,
    gen: torch.Generator,
    feedback: torch.Tensor,
    head_gain: float = 0.5,
    branch_gain: float = 0.2,
) -> None:
    """Kaiming convs, random BN affine + PReLU slopes, BN stats calibrated on real activations, scaled heads.

    ``feedback`` [N, 3, H, W] holds pooled generator outputs: the encoder is calibrated on the inputs it really
    sees in the loop (an image next to a reconstruction), not on noise. Each residual branch's last BN gets a
    small gain (``branch_gain``, as trained ResNets tend to have): with full-gain branches a random 24-block
    IR-SE50 amplifies input perturbations several hundred times and the loop becomes chaotic, which no trained
    encoder is and which would make per-step parity meaningless.
    """
    for name, m in enc.named_modules():
        if isinstance(m, nn.Conv2d):
            slope = 0.01 if name.startswith("styles") else 0.0
            std = math.sqrt(2.0 / (1 + slope**2)) / math.sqrt(m.in_channels * m.kernel_size[0] * m.kernel_size[1])
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.05)
        elif isinstance(m, nn.BatchNorm2d):
            last_bn = name.endswith(("res_layer.4", ".bn2"))  # closes a residual branch
            lo = branch_gain if last_bn else 0.8
            m.weight.copy_(lo * (1 + 0.5 * torch.rand(m.weight.shape, generator=gen)))
            m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        elif isinstance(m, nn.PReLU):
            m.weight.copy_(0.1 + 0.2 * torch.rand(m.weight.shape, generator=gen))
    n = feedback.shape[0]
    inputs = torch.cat([sample_images(n, spec.input_hw, gen), feedback], 1)  # [N, 6, H, W]
    enc.train()
    enc.features(inputs)  # calibrate BN running stats on the encoder's own activations
    enc.eval()
    for m in enc.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    for feat, idx in enc.head_groups(inputs):
        for i in idx:
            head = enc.styles[i]
            head.linear.weight.copy_(torch.randn(head.linear.weight.shape, generator=gen))
            head.linear.bias.copy_(0.05 * torch.randn(head.linear.bias.shape, generator=gen))
            out_std = float(head(feat).std())
            head.linear.weight.mul_(head_gain / max(out_std, 1e-6))  # head output std ~ head_gain


@torch.no_grad()
def init_generator(g: Generator, gen: torch.Generator) -> None:
    """Official-style randn weights, plus nonzero noise strengths and biases (zero in the constructor).

    ToRGB layers are not demodulated, so their output scales with their style; their modulation weights get a
    small gain (style ~ 1 + small, as the bias init of 1 intends) so the image does not grow with the latent's
    norm and the random-weight loop stays in a realistic range instead of diverging geometrically.
    """
    for name, p in g.named_parameters():
        rgb = name.startswith(("to_rgb1.", "to_rgbs."))
        if name.endswith("noise.weight"):
            p.copy_((0.05 + 0.25 * torch.rand(1, generator=gen)) * (1 if torch.rand(1, generator=gen) > 0.3 else -1))
        elif name.endswith("activate.bias") or (rgb and name.endswith(".bias") and "modulation" not in name):
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        elif name.endswith("modulation.bias"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
        elif rgb and name.endswith("modulation.weight"):
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        elif name.startswith("style.") and name.endswith(".bias"):
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        else:
            p.copy_(torch.randn(p.shape, generator=gen) / (0.01 if name.startswith("style.") else 1.0))
    for b in g.noises.buffers():
        b.copy_(torch.randn(b.shape, generator=gen))


def make_checkpoint(
    path: os.PathLike | None = None,
    encoder_type: str = "BackboneEncoder",
    dataset_type: str = "ffhq_encode",
    output_size: int = 64,
    seed: int = 0,
    latent_avg_shape: str = "SxD",
    head_gain: float = 0.5,
    extra_keys: bool = None,
    device_tag: str | None = None,
) -> dict:
    """Build a random-weight checkpoint in the official format (and save it when ``path`` is given).

    Args:
        path: where to ``torch.save`` it (optional).
        encoder_type, dataset_type, output_size: written into ``opts``; the architecture follows from them.
        seed: all weights derive from it.
        latent_avg_shape: "SxD" ([S, 512], the usual file) or "D" ([512], mean_latent without repeat).
        head_gain: target std of each style head's output.
        extra_keys: add e4e-style global_step / optimizer / discriminator entries (default: for e4e types).
        device_tag: rewrite the saved storages' location tag (e.g. "cuda:0") as files saved on a GPU have.

    Returns:
        The checkpoint dict.
    """
    gen = torch.Generator().manual_seed(seed)
    opts = make_opts(encoder_type, dataset_type, output_size)
    spec = ModelSpec.from_opts(opts)
    enc = ReStyleEncoder.from_spec(spec)
    g = Generator(output_size)
    init_generator(g, gen)
    with torch.no_grad():
        w_avg = g.mapping(torch.randn(4096, 512, generator=gen)).mean(0)  # [512]
        w = w_avg + 0.5 * torch.randn(4, spec.n_styles, 512, generator=gen)
        feedback = SynthesisGraph(g, spec, official=True)(w)[1]  # [4, 3, H, W]
    init_encoder(enc, spec, gen, feedback, head_gain)
    latent_avg = w_avg if latent_avg_shape == "D" else w_avg.repeat(spec.n_styles, 1)
    sd = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    sd.update({f"decoder.{k}": v for k, v in g.state_dict().items()})
    ckpt = {"state_dict": sd, "opts": opts, "latent_avg": latent_avg.clone()}
    if extra_keys if extra_keys is not None else spec.is_e4e:
        ckpt.update(
            global_step=20000,
            best_val_loss=None,
            optimizer={
                "state": {0: {"step": torch.tensor(20000.0), "exp_avg": torch.zeros(8)}},
                "param_groups": [{"lr": 1e-4, "betas": (0.95, 0.999), "params": [0]}],
            },
            discriminator_state_dict={"w_disc.0.weight": torch.randn(512, 512, generator=gen)},
        )
    if path is not None:
        with fsio.atomic_path(path, durable=True) as tmp:  # a failed write (disk full) leaves no truncated .pt behind
            torch.save(ckpt, tmp)
            if device_tag:
                retag_storages(tmp, device_tag)
    return ckpt


def retag_storages(path: os.PathLike, location: str) -> None:
    """Rewrite the storage location of a torch.save zip (e.g. to "cuda:0") without touching the data."""

    class _Pid:  # a storage reference, kept opaque
        def __init__(self, pid):
            self.pid = pid

    class _Call:  # a call of a torch._utils rebuild function, replayed verbatim on re-pickling
        def __init__(self, fn, args):
            self.fn, self.args = fn, args

        def __reduce__(self):
            return self.fn, self.args

    class Reader(pickle.Unpickler):
        def persistent_load(self, pid):
            return _Pid(pid)

        def find_class(self, module, name):
            obj = super().find_class(module, name)
            if module == "torch._utils":
                return lambda *args, _fn=obj: _Call(_fn, args)
            return obj

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Pid):
                pid = list(obj.pid)
                pid[3] = location
                return tuple(pid)
            return None

    path = Path(path)
    with zipfile.ZipFile(path) as zin:
        names = zin.namelist()
        pkl = next(n for n in names if n.endswith("/data.pkl"))
        obj = Reader(io.BytesIO(zin.read(pkl))).load()
        buf = io.BytesIO()
        Writer(buf, protocol=2).dump(obj)
        with fsio.atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zout:
            for n in names:
                zout.writestr(zin.getinfo(n), buf.getvalue() if n == pkl else zin.read(n))
