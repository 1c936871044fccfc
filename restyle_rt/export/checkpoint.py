"""Load official ReStyle checkpoints (pSp and e4e), strictly and safely.

An official file is ``{'state_dict': {'encoder.*', 'decoder.*'}, 'opts': dict, 'latent_avg': Tensor}``; e4e files
add optimizer / discriminator / step entries, which are ignored. Loading uses ``torch.load(weights_only=True)``:
arbitrary pickled objects in a user's file are never executed. The architecture comes from ``opts`` (never
guessed) and every key and shape is checked: unlike the official loader (``strict=False`` for the encoder),
missing, unexpected or mis-shaped keys raise :class:`CheckpointError` listing them.
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from ..artifacts import sha256_file
from ..errors import CheckpointError
from ..spec import ENCODER_TYPES_E4E, ENCODER_TYPES_PSP, ModelSpec
from .nets.encoders import ReStyleEncoder
from .nets.synthesis import Generator

log = logging.getLogger("restyle_rt")

SUPPORTED_ENCODERS = ENCODER_TYPES_PSP + ENCODER_TYPES_E4E
STYLEGAN_KEYS = ("g_ema", "g", "d", "g_optim", "d_optim")
MIN_OUTPUT_SIZE, MAX_OUTPUT_SIZE = 8, 1024  # StyleGAN2's channel table (nets/synthesis.py) covers 4 .. 1024 px


@dataclass
class Checkpoint:
    """A validated official checkpoint.

    Attributes:
        path: where it came from.
        sha256: of the file.
        opts: the checkpoint's ``opts`` dict.
        spec: the model spec read from opts.
        encoder_sd / decoder_sd: the prefix-stripped sub-dicts.
        latent_avg: [S, 512] float32 (a [512] average is broadcast over S, as the official forward does).
        latent_avg_shape: the shape as stored.
    """

    path: Path
    sha256: str
    opts: dict
    spec: ModelSpec
    encoder_sd: dict[str, torch.Tensor]
    decoder_sd: dict[str, torch.Tensor]
    latent_avg: torch.Tensor
    latent_avg_shape: tuple[int, ...]

    def build(self) -> tuple[ReStyleEncoder, Generator]:
        """Encoder and generator (official formulation) with the checkpoint's weights, in eval mode."""
        enc = ReStyleEncoder.from_spec(self.spec)
        gen = Generator(self.spec.output_size)
        enc.load_state_dict(self.encoder_sd, strict=True)
        gen.load_state_dict(self.decoder_sd, strict=True)
        return enc.eval(), gen.eval()


def _read(path: Path) -> object:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file; expected an official ReStyle checkpoint (.pt)")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch.save zip, or legacy pickle
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (starts with {head!r}); expected an official "
            "ReStyle .pt with state_dict/opts/latent_avg"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "Unsupported" in ln), lines[0] if lines else type(e).__name__)
        raise CheckpointError(
            f"{path}: refused to unpickle: the file holds Python objects beyond tensors and plain containers, "
            f"and restyle-rt loads with weights_only=True ({why[:160]})"
        ) from None
    except Exception as e:  # noqa: BLE001 - torch.load raises many types (KeyError on garbage, EOFError...)
        msg = f"{type(e).__name__}: " + (str(e).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or not a .pt file?): {msg[:160]}"
        ) from None


def _diff_keys(kind: str, got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> list[str]:
    problems = []
    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    shaped = [
        f"{k} {list(got[k].shape)} (expected {list(want[k].shape)})"
        for k in want
        if k in got and tuple(got[k].shape) != tuple(want[k].shape)
    ]
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped)):
        if items:
            more = f" … and {len(items) - 8} more" if len(items) > 8 else ""
            problems.append(f"{kind}: {len(items)} {label}: " + ", ".join(items[:8]) + more)
    return problems


def _spec_from_opts(path: Path, opts: dict) -> ModelSpec:
    for key in ("output_size", "encoder_type"):
        if key not in opts:
            raise CheckpointError(f"{path}: opts has no {key!r}; cannot tell the architecture (never guessed)")
    et = opts["encoder_type"]
    if et not in SUPPORTED_ENCODERS:
        raise CheckpointError(
            f"{path}: encoder_type {et!r} is not supported (known types: {', '.join(SUPPORTED_ENCODERS)})"
        )
    if int(opts.get("input_nc", 6)) != 6:
        raise CheckpointError(
            f"{path}: input_nc={opts.get('input_nc')}; a ReStyle encoder takes 6 channels "
            "(image + feedback). Single-pass pSp/e4e checkpoints are not ReStyle checkpoints"
        )
    try:
        size = int(opts["output_size"])
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: opts output_size={opts['output_size']!r} is not an integer") from None
    if not MIN_OUTPUT_SIZE <= size <= MAX_OUTPUT_SIZE or size & (size - 1):
        raise CheckpointError(
            f"{path}: output_size={size} is not a power of two in [{MIN_OUTPUT_SIZE}, "
            f"{MAX_OUTPUT_SIZE}] (the StyleGAN2 generator's channel table ends at "
            f"{MAX_OUTPUT_SIZE} px)"
        )
    return ModelSpec.from_opts(opts)


def expected_state(spec: ModelSpec) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(encoder, decoder) state dicts of ``spec``'s architecture on the meta device: keys and shapes, no memory.

    Checking a checkpoint's keys against these costs nothing however large the spec claims to be; real weights
    are only allocated (:meth:`Checkpoint.build`) once the file has been found to hold every one of them.
    """
    with torch.device("meta"):
        return ReStyleEncoder.from_spec(spec).state_dict(), Generator(spec.output_size).state_dict()


def load_checkpoint(path: os.PathLike) -> Checkpoint:
    """Read and validate an official ReStyle checkpoint.

    Raises:
        CheckpointError: one message naming what the file is and what was expected, or listing every missing,
            unexpected and mis-shaped key.
    """
    path = Path(path)
    obj = _read(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, expected a dict with state_dict/opts/latent_avg")
    if "state_dict" not in obj and any(k in obj for k in STYLEGAN_KEYS):
        raise CheckpointError(
            f"{path}: this is a StyleGAN2 generator checkpoint (keys: {', '.join(sorted(obj)[:6])}), "
            "not a ReStyle encoder checkpoint (expected keys state_dict, opts, latent_avg)"
        )
    missing = [k for k in ("state_dict", "opts") if k not in obj]
    if missing:
        raise CheckpointError(
            f"{path}: not a ReStyle checkpoint: missing {', '.join(missing)} "
            f"(found keys: {', '.join(map(str, list(obj)[:8]))})"
        )
    opts, sd = obj["opts"], obj["state_dict"]
    if not isinstance(opts, dict) or not isinstance(sd, dict):
        raise CheckpointError(f"{path}: opts and state_dict must be dicts")
    spec = _spec_from_opts(path, opts)
    enc_sd = {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
    dec_sd = {k[len("decoder.") :]: v for k, v in sd.items() if k.startswith("decoder.")}
    other = [k for k in sd if not k.startswith(("encoder.", "decoder."))]
    want_enc, want_dec = expected_state(spec)
    problems = _diff_keys("encoder", enc_sd, want_enc)
    problems += _diff_keys("decoder", dec_sd, want_dec)
    not_tensors = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        problems.append(f"state_dict: {len(not_tensors)} values are not tensors: {', '.join(not_tensors[:8])}")
    if other:
        problems.append(f"state_dict: {len(other)} keys outside encoder./decoder.: {', '.join(other[:8])}")
    if problems:
        raise CheckpointError(
            f"{path}: state_dict does not match {spec.encoder_type} @ {spec.output_size} "
            "(from opts):\n  " + "\n  ".join(problems)
        )
    la = _latent_avg(path, obj, spec.n_styles)
    ignored = sorted(set(obj) - {"state_dict", "opts", "latent_avg"})
    if ignored:
        log.debug("ignoring checkpoint entries: %s", ", ".join(ignored))
    return Checkpoint(
        path,
        sha256_file(path),
        dict(opts),
        spec,
        enc_sd,
        dec_sd,
        la[0].float().expand(spec.n_styles, 512).contiguous(),
        la[1],
    )


def _latent_avg(path: Path, obj: dict, n_styles: int):
    la = obj.get("latent_avg")
    if la is None:
        raise CheckpointError(f"{path}: no latent_avg (the official loop starts from it and would crash)")
    if not isinstance(la, torch.Tensor):
        raise CheckpointError(f"{path}: latent_avg is a {type(la).__name__}, expected a tensor")
    shape = tuple(la.shape)
    if shape == (512,):
        return la.view(1, 512), shape
    if shape == (n_styles, 512):
        return la, shape
    raise CheckpointError(f"{path}: latent_avg has shape {list(shape)}; expected [{n_styles}, 512] or [512]")
