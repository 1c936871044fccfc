"""The export's parity gate has teeth: a graph whose outputs disagree with torch is refused, and nothing is written.

Each output the gate checks gets its own injected disagreement (ONNX Runtime's result, or the official
formulation's, perturbed in a wrapper) and must raise :class:`ParityError` naming that output. The residual check is
tested with an error small enough to pass the ``latent_next`` bound, so it fails only if the residual bound works.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_fixtures import EXPORTED, artifacts_path, checkpoint_path

from restyle_rt.errors import ParityError
from restyle_rt.export import onnx as export_onnx
from restyle_rt.export.checkpoint import load_checkpoint
from restyle_rt.export.reference import TorchModels
from restyle_rt.parity import tolerance

pytestmark = pytest.mark.parity
NAME = EXPORTED[-1]  # the ResNet34 e4e cars fixture (cheapest exported config)
OUTPUTS = {"encoder": ["latent_next"], "synthesis": ["image", "feedback"]}


def _key(x):
    if isinstance(x, dict):
        return tuple((k, _key(v)) for k, v in sorted(x.items()))
    if isinstance(x, (torch.Tensor, np.ndarray)):
        a = np.asarray(x)
        return a.shape, a.tobytes()
    return x


class _Memo:
    """A module forward or session run computed once per distinct input: the validate() calls here repeat the same
    inputs, and the gate's own logic (which outputs are compared, against which bound, what is raised) is what is
    under test, not the forwards."""

    def __init__(self, fn):
        self.fn, self.outs = fn, {}

    @torch.no_grad()
    def __call__(self, *args):
        key = tuple(_key(a) for a in args)
        if key not in self.outs:
            self.outs[key] = self.fn(*args)
        return self.outs[key]


class _MemoSession:
    def __init__(self, sess):
        self.run = _Memo(lambda names, feeds: sess.run(names, feeds))


@pytest.fixture(scope="module")
def setup():
    models = TorchModels.from_checkpoint(load_checkpoint(checkpoint_path(NAME)))
    inputs = export_onnx._seeded_inputs(models, models.avg_feedback())
    for k in ("encoder", "encoder_official", "synthesis", "synthesis_official"):
        setattr(models, k, _Memo(getattr(models, k)))
    sessions = {}
    real = export_onnx._ort_session

    def session(path):
        if path not in sessions:
            sessions[path] = _MemoSession(real(path))
        return sessions[path]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(export_onnx, "_ort_session", session)
        yield models, artifacts_path(NAME), inputs


def test_unperturbed_graphs_pass(setup):
    models, root, inputs = setup
    rep = export_onnx.validate(models, root, inputs)
    assert set(rep["encoder"]["ort"]) == {"latent_next", "residual"}


class _Perturbed:
    """An ORT session whose output ``index`` gets ``delta`` (a function of the clean output) added."""

    def __init__(self, sess, index, delta):
        self.sess, self.index, self.delta = sess, index, delta

    def run(self, names, feeds):
        outs = [o.copy() for o in self.sess.run(names, feeds)]
        outs[self.index] = outs[self.index] + self.delta(outs[self.index], feeds)
        return outs


def _inject_ort(monkeypatch, graph, index, delta):
    real = export_onnx._ort_session

    def session(path):
        sess = real(path)
        return _Perturbed(sess, index, delta) if path.name.startswith(graph) else sess

    monkeypatch.setattr(export_onnx, "_ort_session", session)


def _relative_noise(rel):
    """A perturbation of relative L2 size ``rel`` against the output it is added to."""

    def delta(out, feeds):
        n = np.random.default_rng(0).standard_normal(out.shape).astype(np.float32)
        return n * (rel * np.linalg.norm(out) / np.linalg.norm(n))

    return delta


@pytest.mark.parametrize("graph,output", [(g, o) for g, outs in OUTPUTS.items() for o in outs])
def test_ort_disagreement_is_refused(setup, monkeypatch, graph, output):
    models, root, inputs = setup
    _inject_ort(monkeypatch, graph, OUTPUTS[graph].index(output), _relative_noise(1e-3))
    with pytest.raises(ParityError, match=rf"ort fp32 parity failed: .*{output}: rel-L2"):
        export_onnx.validate(models, root, inputs)


def test_residual_error_hidden_by_the_latent_is_refused(setup, monkeypatch):
    """An encoder error below the latent_next bound but above the residual bound: only the residual check sees it."""
    models, root, (image, feedback, latent) = setup
    # a latent far from the origin (as after many steps): the residual is then a small part of latent_next
    inputs = (image, feedback, 10 * latent)
    lat = inputs[2].numpy()
    ref = models.encoder(*inputs).numpy()  # (memoised, no grad)
    rel_next = 0.5 * tolerance("ort", "fp32", "latent_next").rel_l2
    rel_res = rel_next * np.linalg.norm(ref) / np.linalg.norm(ref - lat)
    assert rel_res > 2 * tolerance("ort", "fp32", "residual").rel_l2, "fixture cannot separate the two bounds"
    _inject_ort(monkeypatch, "encoder", 0, _relative_noise(rel_next))
    with pytest.raises(ParityError) as e:
        export_onnx.validate(models, root, inputs)
    assert "residual: rel-L2" in str(e.value) and "latent_next:" not in str(e.value)


@pytest.mark.parametrize(
    "which,output",
    [("encoder_official", "latent_next"), ("synthesis_official", "image"), ("synthesis_official", "feedback")],
)
def test_export_vs_official_disagreement_is_refused(setup, monkeypatch, which, output):
    models, root, inputs = setup
    real = getattr(models, which)

    def perturbed(*args):
        out = real(*args)
        if which == "encoder_official":
            return out * 1.001
        img, fb = out
        return (img * 1.001, fb) if output == "image" else (img, fb * 1.001)

    monkeypatch.setattr(models, which, perturbed)
    with pytest.raises(ParityError, match=rf"export-vs-official fp32 parity failed: .*{output}: rel-L2"):
        export_onnx.validate(models, root, inputs)


def test_failed_gate_writes_no_artifacts(monkeypatch, tmp_path):
    """End to end: a real export whose ORT feedback disagrees raises, and leaves no directory behind."""
    _inject_ort(monkeypatch, "synthesis", 1, _relative_noise(1e-2))
    out = tmp_path / "art"
    with pytest.raises(ParityError, match="feedback"):  # the smallest fixture (16 px ResNet34)
        export_onnx.export_artifacts(checkpoint_path("psp-resnet34-church"), out, max_batch=2, progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@torch.no_grad()
def test_gate_inputs_are_the_traced_ones(setup):
    """The gate compares at the seeded batch the graphs were traced with (not a batch the bug might dodge)."""
    models, _, inputs = setup
    again = export_onnx._seeded_inputs(models, models.avg_feedback())
    for a, b in zip(inputs, again):
        assert torch.equal(a, b) and a.shape[0] == export_onnx.VALIDATION_BATCH
