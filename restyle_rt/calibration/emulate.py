"""One switchable Q/DQ graph for the sensitivity sweep: any set of layers quantized, from one ONNX Runtime session.

The sweep needs the loop error with *one* layer quantized, for every layer, and the keep curve needs it with *all but
the k most sensitive*. Writing one Q/DQ graph per configuration (``quantize_static``: load, shape inference,
quantize, serialize, a new session) costs seconds to minutes per layer on a 600 MB encoder. Instead,
:func:`switch_model` takes the graph ``quantize_static`` writes with *every* layer quantized (the same tool, ranges
and encoding as the shipped graphs) and puts a switch behind each ``DequantizeLinear``::

    y = Where(mask[k], DequantizeLinear_k(...), <the FP32 tensor it replaces>)

``mask`` (BOOL [K], a new graph input) selects, per Q/DQ pair, the quantized or the FP32 value. A layer's pairs are
its input activation, weight and bias and its output activation, as ``quantize_static`` quantizes them for that
layer alone (:meth:`SwitchGraph.mask`). The quantized values run through FP32 kernels (fake quantization: the
switches keep ORT from fusing the Q/DQ patterns into integer kernels), which differ from the integer kernels only
by float rounding; the tests check the emulated single-layer errors against real single-layer Q/DQ graphs, and the
pipeline measures the chosen configuration with the real graphs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

MASK_INPUT = "restyle_rt_qdq_mask"


@dataclass
class SwitchGraph:
    """A switchable Q/DQ graph (see the module docstring).

    Attributes:
        path: the ONNX file (external data beside it).
        owners: per switch k, the quantizable layers (node names) whose quantization puts pair k in the graph.
    """

    path: Path
    owners: list[set[str]]

    def mask(self, layers: Iterable[str]) -> np.ndarray:
        """BOOL [K]: the switches that quantize exactly ``layers`` (as ``quantize_static`` with those nodes)."""
        chosen = set(layers)
        return np.array([bool(o & chosen) for o in self.owners], dtype=bool)


class MaskedSession:
    """An ORT session of a :class:`SwitchGraph` that adds the mask to every ``run`` (a drop-in for the loop)."""

    def __init__(self, sess, mask: np.ndarray):
        self.sess, self.mask = sess, mask

    def run(self, outputs, feed):
        return self.sess.run(outputs, dict(feed, **{MASK_INPUT: self.mask}))


def switch_model(fp32_path: Path, qdq_path: Path, out_path: Path, op_types: Iterable[str]) -> SwitchGraph:
    """Build the switchable graph from ``qdq_path`` (every layer of ``fp32_path`` quantized) into ``out_path``.

    Args:
        fp32_path: the FP32 graph (node names unique; the quantized graph keeps them).
        qdq_path: ``quantize_static`` output for ``fp32_path`` with every layer of ``op_types`` quantized.
        out_path: where to write (weights as external data beside it).
        op_types: the quantized op types (their nodes are the layers).
    """
    f32 = onnx.load(str(fp32_path))
    q = onnx.load(str(qdq_path))
    ops = set(op_types)
    layers = {n.name: n for n in f32.graph.node if n.op_type in ops}
    # Tensor (FP32 graph name) -> the layers that quantize it: their inputs and outputs.
    tensor_owners: dict[str, set[str]] = {}
    for name, n in layers.items():
        for t in list(n.input) + list(n.output):
            tensor_owners.setdefault(t, set()).add(name)
    f32_inits = {t.name: t for t in f32.graph.initializer}
    producer = {o: n for n in q.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in q.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    owners: list[set[str]] = []
    new_nodes: list[onnx.NodeProto] = []
    added: list[onnx.TensorProto] = []
    added_names: set[str] = set()
    for n in q.graph.node:
        new_nodes.append(n)
        if n.op_type != "DequantizeLinear":
            continue
        src = producer.get(n.input[0])
        if src is not None and src.op_type == "QuantizeLinear":
            # the FP32 tensor is the Q input; a graph output keeps its name on the DQ side (the Q input is renamed)
            orig = src.input[0]
            own = tensor_owners.get(orig, set()) | tensor_owners.get(n.output[0], set())
        else:  # a weight or bias: the FP32 initializer the consuming layer had at that input position, renamed
            name, own = _fp32_initializer(n.output[0], consumers, layers)  # (a bias DQ output keeps its name)
            orig = f"{name}__fp32"
            if orig not in added_names:
                t = onnx.TensorProto()
                t.CopyFrom(f32_inits[name])
                t.name = orig
                added.append(t)
                added_names.add(orig)
        k = len(owners)
        owners.append(own)
        raw = f"{n.output[0]}__qdq"
        out = n.output[0]
        n.output[0] = raw
        idx = helper.make_tensor(f"{MASK_INPUT}_{k}_idx", onnx.TensorProto.INT64, [], [k])
        q.graph.initializer.append(idx)
        new_nodes.append(helper.make_node("Gather", [MASK_INPUT, idx.name], [f"{MASK_INPUT}_{k}"]))
        new_nodes.append(helper.make_node("Where", [f"{MASK_INPUT}_{k}", raw, orig], [out]))
    del q.graph.node[:]
    q.graph.node.extend(new_nodes)
    q.graph.initializer.extend(added)
    q.graph.input.append(helper.make_tensor_value_info(MASK_INPUT, onnx.TensorProto.BOOL, [len(owners)]))
    onnx.save(q, str(out_path), save_as_external_data=True, location=Path(out_path).name + ".data")
    return SwitchGraph(Path(out_path), owners)


def _fp32_initializer(dq_out: str, consumers, layers) -> tuple:
    """(FP32 initializer name, {layer}) for a weight/bias DequantizeLinear output feeding one quantized layer."""
    for c in consumers.get(dq_out, []):
        if c.name in layers:
            pos = list(c.input).index(dq_out)
            return layers[c.name].input[pos], {c.name}
    raise ValueError(f"DequantizeLinear output {dq_out!r} of an initializer feeds no quantized layer")
