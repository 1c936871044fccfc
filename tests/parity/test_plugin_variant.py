"""The plugin-node synthesis variant: one ``ModulatedConv2d`` node per modulated conv, per the kernels' contract."""

import collections

import pytest
import torch
from model_fixtures import checkpoint_path

from restyle_rt.export.checkpoint import load_checkpoint
from restyle_rt.export.onnx import PLUGIN_FILE, _plugin_variant
from restyle_rt.export.reference import TorchModels

pytestmark = pytest.mark.parity


def test_plugin_variant_graph(tmp_path):
    onnx = pytest.importorskip("onnx")
    ckpt = load_checkpoint(checkpoint_path("psp-resnet34-church"))
    spec = ckpt.spec
    latent = ckpt.latent_avg[None].repeat(2, 1, 1) + 0.3 * torch.randn(2, spec.n_styles, 512)
    rec = _plugin_variant(TorchModels.from_checkpoint(ckpt), tmp_path, latent, 17)
    n_layers = 2 * (spec.output_size.bit_length() - 3) + 1  # conv1 + 2 per resolution above 4
    n_rgb = spec.output_size.bit_length() - 2  # to_rgb1 + one per resolution above 4
    assert rec["nodes"] == n_layers + n_rgb and rec["torch_reference_rel_l2"] < 1e-5
    model = onnx.load(str(tmp_path / PLUGIN_FILE))
    nodes = [n for n in model.graph.node if n.op_type == "ModulatedConv2d"]
    attrs = collections.Counter(
        tuple(
            onnx.helper.get_attribute_value(a)
            for a in sorted(n.attribute, key=lambda a: a.name)
            if a.name in ("activate", "demodulate", "kernel_size", "upsample")
        )
        for n in nodes
    )
    # sorted attribute order: activate, demodulate, kernel_size, upsample
    ups = spec.output_size.bit_length() - 3
    assert attrs == {(1, 1, 3, 0): n_layers - ups, (1, 1, 3, 1): ups, (0, 0, 1, 0): n_rgb}
    for n in nodes:
        assert len(n.input) == 5 and n.domain == ""
        a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
        assert a["plugin_version"] == b"1" and a["plugin_namespace"] == b""
    assert [i.name for i in model.graph.input] == ["latent"]
    assert [o.name for o in model.graph.output] == ["image", "feedback"]
