"""Tiny *toy* artifacts directories for runtime unit tests, built with onnx.helper (no torch, no exporter).

The toy graphs keep the real contract (names, ranks, dynamic batch) and a loop that really depends on its
inputs:

* encoder: ``latent_next = latent + reshape((pool(image) - pool(feedback)) @ M, [B, S, 512])``, where
  ``pool`` is the per-channel mean over H x W ([B, 3]) and M is [3, S*512]; it depends on image **and**
  feedback.
* synthesis: ``c = reshape(latent, [B, S*512]) @ P`` ([B, 3]); ``image = c[:, :, None, None] + pattern_img``
  and ``feedback = tanh(c)[:, :, None, None] * 0.9 + pattern_fb``.

With ``M @ P = alpha * I`` the pooled feedback is pulled toward the pooled image each step, so residuals
shrink and different images converge after different numbers of steps (useful for early exit).
:class:`NumpyToy` restates the same maths in NumPy for the loop tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from restyle_rt import artifacts
from restyle_rt.spec import BATCH, ModelSpec

TOY_SPEC = ModelSpec(
    n_styles=4,
    output_size=16,
    input_hw=(16, 16),
    image_hw=(24, 24),
    encoder_type="GradualStyleEncoder",
    dataset_type="ffhq_encode",
)
TOY_CARS_SPEC = ModelSpec(
    n_styles=4,
    output_size=16,
    input_hw=(12, 16),
    image_hw=(18, 24),
    encoder_type="GradualStyleEncoder",
    dataset_type="cars_encode",
)
ALPHA = 0.5


class ToyWeights:
    """The constants of one toy model (seeded)."""

    def __init__(self, spec: ModelSpec, seed: int = 0):
        rng = np.random.default_rng(seed)
        n = spec.n_styles * 512
        self.M = rng.standard_normal((3, n)).astype(np.float32) * 0.05  # [3, S*512]
        self.P = (self.M.T @ np.linalg.inv(self.M @ self.M.T) * ALPHA).astype(np.float32)  # [S*512, 3]
        self.pattern_img = rng.uniform(-0.2, 0.2, (3, *spec.image_hw)).astype(np.float32)
        self.pattern_fb = rng.uniform(-0.1, 0.1, (3, *spec.input_hw)).astype(np.float32)
        self.latent_avg = (rng.standard_normal((spec.n_styles, 512)) * 0.1).astype(np.float32)
        self.spec = spec


class NumpyToy:
    """The toy graphs restated in NumPy (float64 inside, float32 out)."""

    def __init__(self, w: ToyWeights):
        self.w = w

    def encode(self, image, feedback, latent):
        d = image.mean(axis=(2, 3), dtype=np.float64) - feedback.mean(axis=(2, 3), dtype=np.float64)  # [B, 3]
        return (latent + (d @ self.w.M).reshape(latent.shape)).astype(np.float32)  # [B, S, 512]

    def synthesize(self, latent):
        c = latent.reshape(latent.shape[0], -1).astype(np.float64) @ self.w.P  # [B, 3]
        img = c[:, :, None, None] + self.w.pattern_img[None]  # [B, 3, h, w]
        fb = np.tanh(c)[:, :, None, None] * 0.9 + self.w.pattern_fb[None]  # [B, 3, H, W]
        return img.astype(np.float32), fb.astype(np.float32)

    def loop(self, x, n_iters):
        """Per-step (latents, images) lists, the official recursion."""
        b = x.shape[0]
        w = np.broadcast_to(self.w.latent_avg, (b, *self.w.latent_avg.shape)).astype(np.float32)
        y = np.broadcast_to(self.avg_feedback(), (b, 3, *self.w.spec.input_hw)).astype(np.float32)
        lats, imgs = [], []
        for _ in range(n_iters):
            w = self.encode(x, y, w)
            img, y = self.synthesize(w)
            lats.append(w)
            imgs.append(img)
        return lats, imgs

    def avg_feedback(self):
        return self.synthesize(self.w.latent_avg[None])[1][0]  # [3, H, W]


def _vi(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [d if d != BATCH else "batch" for d in shape])


def encoder_graph(w: ToyWeights, names: dict | None = None) -> onnx.ModelProto:
    """The toy encoder; ``names`` renames I/O (to make contract-breaking graphs)."""
    nm = {
        "image": "image",
        "feedback": "feedback",
        "latent": "latent",
        "latent_next": "latent_next",
        **(names or {}),
    }
    s = w.spec
    (ins, outs) = s.encoder_io()
    nodes = [
        helper.make_node("ReduceMean", [nm["image"], "axes"], ["pi"], keepdims=0),  # [B, 3]
        helper.make_node("ReduceMean", [nm["feedback"], "axes"], ["pf"], keepdims=0),  # [B, 3]
        helper.make_node("Sub", ["pi", "pf"], ["d"]),
        helper.make_node("MatMul", ["d", "M"], ["r"]),  # [B, S*512]
        helper.make_node("Reshape", ["r", "shape"], ["r3"]),  # [B, S, 512]
        helper.make_node("Add", [nm["latent"], "r3"], [nm["latent_next"]]),
    ]
    inits = [
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
        numpy_helper.from_array(w.M, "M"),
        numpy_helper.from_array(np.array([-1, s.n_styles, 512], np.int64), "shape"),
    ]
    g = helper.make_graph(
        nodes,
        "toy_encoder",
        [_vi(nm[t.name], t.shape) for t in ins],
        [_vi(nm[t.name], t.shape) for t in outs],
        inits,
    )
    return _model(g)


def synthesis_graph(w: ToyWeights, names: dict | None = None) -> onnx.ModelProto:
    """The toy synthesis network."""
    nm = {"latent": "latent", "image": "image", "feedback": "feedback", **(names or {})}
    s = w.spec
    ins, outs = s.synthesis_io()
    nodes = [
        helper.make_node("Reshape", [nm["latent"], "flat"], ["lf"]),  # [B, S*512]
        helper.make_node("MatMul", ["lf", "P"], ["c"]),  # [B, 3]
        helper.make_node("Unsqueeze", ["c", "hw_axes"], ["c4"]),  # [B, 3, 1, 1]
        helper.make_node("Add", ["c4", "pattern_img"], [nm["image"]]),  # [B, 3, h, w]
        helper.make_node("Tanh", ["c4"], ["tc"]),
        helper.make_node("Mul", ["tc", "k"], ["tck"]),
        helper.make_node("Add", ["tck", "pattern_fb"], [nm["feedback"]]),  # [B, 3, H, W]
    ]
    inits = [
        numpy_helper.from_array(np.array([-1, s.n_styles * 512], np.int64), "flat"),
        numpy_helper.from_array(w.P, "P"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "hw_axes"),
        numpy_helper.from_array(w.pattern_img, "pattern_img"),
        numpy_helper.from_array(w.pattern_fb, "pattern_fb"),
        numpy_helper.from_array(np.array(0.9, np.float32), "k"),
    ]
    g = helper.make_graph(
        nodes,
        "toy_synthesis",
        [_vi(nm[t.name], t.shape) for t in ins],
        [_vi(nm[t.name], t.shape) for t in outs],
        inits,
    )
    return _model(g)


def _model(g) -> onnx.ModelProto:
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], producer_name="restyle-rt-tests")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def build(
    out: Path,
    spec: ModelSpec = TOY_SPEC,
    seed: int = 0,
    profile: Sequence[int] = (1, 1, 8),
    encoder_names: dict | None = None,
    synthesis_names: dict | None = None,
    format_version: int = artifacts.FORMAT_VERSION,
) -> tuple[Path, NumpyToy]:
    """Write a toy artifacts dir at ``out``; returns (dir, its NumPy restatement)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    w = ToyWeights(spec, seed)
    ref = NumpyToy(w)
    onnx.save(encoder_graph(w, encoder_names), str(out / "encoder.onnx"))
    onnx.save(synthesis_graph(w, synthesis_names), str(out / "synthesis.onnx"))
    np.save(out / artifacts.LATENT_AVG, w.latent_avg)
    np.save(out / artifacts.AVG_FEEDBACK, ref.avg_feedback())

    def io(graph):
        ins, outs = spec.graph_io(graph)
        d = lambda ts: [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in ts]  # noqa: E731
        return {"file": f"{graph}.onnx", "inputs": d(ins), "outputs": d(outs)}

    artifacts.write_manifest(
        out,
        {
            "format": artifacts.FORMAT,
            "format_version": format_version,
            "spec": spec.to_dict(),
            "graphs": {"encoder": io("encoder"), "synthesis": io("synthesis")},
            "batch_profile": list(profile),
            "precision": "fp32",
            "source": "tests/toy_artifacts.py",
        },
    )
    return out, ref
