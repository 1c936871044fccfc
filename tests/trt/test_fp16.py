"""FP16 ONNX derivation: the keep-in-FP32 rule, I/O types, and the FP16 *proxy* parity in ONNX Runtime CPU.

The proxy compares <graph>.fp16.onnx with <graph>.onnx in ONNX Runtime on CPU: it measures the FP16 storage and
arithmetic of the graph TensorRT-RTX builds strongly typed, not the engine itself (no GPU here).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto  # noqa: E402

from restyle_rt import artifacts  # noqa: E402
from restyle_rt.export import fp16  # noqa: E402

pytestmark = pytest.mark.parity
log = logging.getLogger("restyle_rt")


@pytest.fixture(scope="session")
def fp16_graphs(art_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16")
    return {g: fp16.export_fp16(art_dir / f"{g}.onnx", out / f"{g}.fp16.onnx") for g in ("encoder", "synthesis")}


def _load(path):
    return onnx.load(str(path), load_external_data=False)


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def test_graph_io_stays_fp32(fp16_graphs, art_dir):
    for g, path in fp16_graphs.items():
        m, ref = _load(path), _load(art_dir / f"{g}.onnx")
        io = lambda mm: [(v.name, v.type.tensor_type.elem_type) for v in list(mm.graph.input) + list(mm.graph.output)]  # noqa: E731
        assert io(m) == io(ref)
        assert all(t == TensorProto.FLOAT for _, t in io(m))


def test_demodulation_and_what_feeds_it_stay_fp32(fp16_graphs):
    m = _load(fp16_graphs["synthesis"])
    prod = _producers(m)
    sqrts = [n for n in m.graph.node if n.op_type == "Sqrt"]
    assert sqrts, "synthesis graph has no demodulation rsqrt"
    types = {i.name: i.data_type for i in m.graph.initializer}
    for sq in sqrts:
        add = prod[sq.input[0]]  # sum of squares + 1e-8
        assert add.op_type == "Add" and not sq.input[0].endswith("__to_fp32")
        eps = [i for i in add.input if i in types]
        assert eps and all(types[i] == TensorProto.FLOAT for i in eps)  # epsilon stays an FP32 constant
        for i in add.input:  # the reduction feeding it is FP32 (no FP16 round trip)
            if i in prod:
                assert prod[i].op_type != "Cast", f"{add.name} input {i} comes through a Cast"
    fp16_ops = {n.op_type for n in m.graph.node if any(i.endswith("__to_fp16") for i in n.input)}
    assert "Mul" in fp16_ops  # the demod factor meets the FP16 activations at a Mul


def test_rsqrt_epsilon_value_survives(fp16_graphs):
    from onnx import numpy_helper

    m = _load(fp16_graphs["synthesis"])
    consts = [numpy_helper.to_array(i) for i in m.graph.initializer if i.data_type == TensorProto.FLOAT]
    assert any(c.size == 1 and np.isclose(float(c.reshape(-1)[0]), 1e-8, rtol=1e-6, atol=0) for c in consts)


def test_latent_accumulation_stays_fp32(fp16_graphs):
    m = _load(fp16_graphs["encoder"])
    prod = _producers(m)
    last = prod["latent_next"]
    while last.op_type in fp16.SHAPE_OPS:
        last = prod[last.input[0]]
    assert last.op_type == "Add" and "latent" in last.input  # latent + residual, FP32 input straight in
    assert sum(n.op_type == "Conv" for n in m.graph.node) > 0
    halves = {i.name for i in m.graph.initializer if i.data_type == TensorProto.FLOAT16}
    assert halves, "encoder weights were not converted"


def test_toy_keep_set_is_the_demod_chain():
    """Rule check on a minimal modulated conv: x*s -> Conv -> * rsqrt(s*s @ wsq + 1e-8)."""
    from onnx import helper, numpy_helper

    f = TensorProto.FLOAT
    inits = [
        numpy_helper.from_array(np.ones((1, 4, 8, 8), np.float32), "x"),
        numpy_helper.from_array(np.ones((512, 4), np.float32), "Wmod"),
        numpy_helper.from_array(np.ones((4, 4), np.float32), "wsq"),
        numpy_helper.from_array(np.full((4, 4, 3, 3), 0.1, np.float32), "W"),
        numpy_helper.from_array(np.array(1e-8, np.float32), "eps"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "ax"),
    ]
    nodes = [
        helper.make_node("MatMul", ["latent", "Wmod"], ["s"], name="mod"),
        helper.make_node("Unsqueeze", ["s", "ax"], ["s4"], name="s4"),
        helper.make_node("Mul", ["x", "s4"], ["xs"], name="xs"),
        helper.make_node("Conv", ["xs", "W"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["s", "s"], ["s2"], name="s2"),
        helper.make_node("MatMul", ["s2", "wsq"], ["ss"], name="ss"),
        helper.make_node("Add", ["ss", "eps"], ["sse"], name="sse"),
        helper.make_node("Sqrt", ["sse"], ["rt"], name="sqrt"),
        helper.make_node("Reciprocal", ["rt"], ["d"], name="recip"),
        helper.make_node("Unsqueeze", ["d", "ax"], ["d4"], name="d4"),
        helper.make_node("Mul", ["y", "d4"], ["image"], name="out"),
    ]
    g = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("latent", f, [1, 512])],
        [helper.make_tensor_value_info("image", f, [1, 4, 8, 8])],
        inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    keep = fp16.keep_fp32_nodes(model)
    assert keep == {"mod", "s2", "ss", "sse", "sqrt", "recip", "d4"}
    half = fp16.convert_to_fp16(model)
    onnx.checker.check_model(half)
    import onnxruntime as ort

    lat = np.random.default_rng(0).standard_normal((1, 512)).astype(np.float32)
    cpu = ["CPUExecutionProvider"]
    sessions = [ort.InferenceSession(mm.SerializeToString(), providers=cpu) for mm in (model, half)]
    a, b = (sess.run(None, {"latent": lat})[0] for sess in sessions)
    assert b.dtype == np.float32 and np.allclose(a, b, rtol=5e-3, atol=5e-3)


@pytest.mark.parametrize("graph", ["encoder", "synthesis"])
def test_fp16_proxy_parity(fp16_graphs, art_dir, graph):
    """Per output: rel-L2 and PSNR of ORT-CPU FP16 graph vs FP32 graph, within fp16.FP16_TOLERANCES."""
    art = artifacts.load(art_dir)
    feeds = fp16.random_feeds(art.spec, graph, batch=2, seed=1, latent_avg=art.latent_avg)
    from _logs import info_logs

    with info_logs():
        reports = fp16.proxy_parity(art_dir / f"{graph}.onnx", fp16_graphs[graph], feeds)
    _, outs = art.spec.graph_io(graph)
    assert sorted(reports) == sorted(t.name for t in outs)
    for name, rep in reports.items():
        tol = fp16.FP16_TOLERANCES[("ort-fp16-proxy", "fp16", name)]
        assert tol.check(rep) is None, f"{graph}.{name}: {tol.check(rep)}"
