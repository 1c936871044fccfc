"""FP16 proxy over the whole loop: the runtime's ORT loop on the derived FP16 graphs vs on the FP32 graphs, per step.

A proxy for FP16 TensorRT engines (which need a GPU): same FP16 graphs the engine builder derives.
"""

import pytest
import torch
from model_fixtures import artifacts_path

from restyle_rt.export.fixtures import sample_images
from restyle_rt.export.fp16 import proxy_loop_parity
from restyle_rt.parity import Report, tolerance

pytestmark = pytest.mark.parity


def test_fp16_proxy_loop_per_iteration(tmp_path):
    art = artifacts_path("e4e-resnet34-cars")
    x = sample_images(2, (192, 256), torch.Generator().manual_seed(3)).numpy()
    steps = proxy_loop_parity(art, x, n_iters=5, work_dir=tmp_path)
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5]
    for s in steps:
        lat = Report(0, 0, s["latent_rel_l2"], float("inf"), ())
        img = Report(0, 0, s["image_rel_l2"], s["image_psnr_db"], ())
        assert tolerance("ort-fp16-proxy-loop", "fp16", "latent").check(lat) is None, s
        assert tolerance("ort-fp16-proxy-loop", "fp16", "image").check(img) is None, s
    # FP16 really differs from FP32 (the proxy is not comparing a graph with itself)
    assert steps[0]["latent_rel_l2"] > 1e-6
