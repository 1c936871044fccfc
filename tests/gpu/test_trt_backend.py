"""TrtBackend on a real device: engines built for this GPU, loop vs the ONNX Runtime host loop, graph vs eager."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.trt]


@pytest.fixture(scope="module")
def engines(device, make_toy_module):
    from restyle_rt.engine import build_engines
    from restyle_rt.runtime.trt_compat import try_load_trt

    info = try_load_trt()
    if info is None:
        pytest.skip("no TensorRT flavour importable")
    cc = f"{device[0]}.{device[1]}"
    if info.is_rtx and "SM" + cc.replace(".", "") not in info.module.ComputeCapability.__members__:
        pytest.skip(f"TensorRT-RTX {info.version} does not target compute capability {cc}")
    root, ref = make_toy_module
    ccs = ["current"] if info.compute_capability_api else None
    build_engines(root, precision="fp32", workspace_gb=1.0, compute_capabilities=ccs)
    return root, ref


@pytest.fixture(scope="module")
def make_toy_module(tmp_path_factory):
    import toy_artifacts

    return toy_artifacts.build(tmp_path_factory.mktemp("gpu") / "art", profile=(1, 2, 3))


@pytest.mark.parametrize("use_graph", [True, False])
def test_loop_matches_reference(engines, use_graph):
    from restyle_rt import artifacts
    from restyle_rt.runtime.backends.trt import TrtBackend

    root, ref = engines
    art = artifacts.load(root)
    x = np.random.default_rng(0).uniform(-1, 1, (5, 3, *art.spec.input_hw)).astype(np.float32)
    with TrtBackend(art, precision="fp32", cuda_graph=use_graph) as be:
        for n in (1, 3, 3):
            res = be.run_loop(x, n)
            lats, imgs = ref.loop(x, n)
            np.testing.assert_allclose(res.latents, lats[-1], rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(res.images, imgs[-1], rtol=1e-4, atol=1e-4)
        steps = be.run_loop(x[:2], 2, return_steps=True)
        np.testing.assert_allclose(steps.step_latents[0], ref.loop(x[:2], 1)[0][0], rtol=1e-4, atol=1e-4)
