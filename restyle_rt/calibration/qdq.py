"""Activation ranges from loop feeds and explicit Q/DQ graphs in two encodings, with ONNX Runtime's tooling.

Why ONNX Runtime's quantization tools (``onnxruntime.quantization``: calibrators + ``quantize_static``, QDQ
format): they are installed with the runtime's own dependency (no extra, no torch, CPU-only, so CI runs them
as-is), they write standard ``QuantizeLinear``/``DequantizeLinear`` graphs TensorRT parses, and they take a custom
``CalibrationDataReader`` (the loop replay) and a saved range cache (one calibration, many encodings and the
sensitivity sweep). NVIDIA ModelOpt's ONNX PTQ (``nvidia-modelopt``, on the package index) was not compared: ORT's
tools met each need above without another dependency; that comparison is still open.

One calibration, two encodings (:data:`ENCODINGS`), both per-channel symmetric INT8 weights:

* ``cpu``: U8 asymmetric activations. ONNX Runtime's CPU kernels (VNNI) want U8 activations (S8 activations
  gained only 1.3x on the encoder vs 3.4x with U8, measured in the issue's probe).
* ``trt``: S8 *symmetric* activations (zero point 0) and FP32 biases (``QuantizeBias`` off). TensorRT's ONNX
  parser refuses a non-zero zero point and an INT32 bias DequantizeLinear.

Only ``Conv``, ``ConvTranspose``, ``Gemm`` and ``MatMul`` are quantized (:data:`OP_TYPES`): the latent
accumulation ``Add`` and the modulation / demodulation arithmetic never see INT8.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import (
    HistogramCollector,
    TensorsData,
    create_calibrator,
    entropy,
    save_tensors_data,
)
from onnxruntime.quantization.quant_utils import smooth_distribution

from ..errors import InputError
from .loop import FeedReader, quiet_stdout

log = logging.getLogger("restyle_rt")

OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")
METHODS = {
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
    "minmax": CalibrationMethod.MinMax,
}
ENCODINGS = {
    "cpu": dict(
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    ),
    "trt": dict(
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": True, "QuantizeBias": False},
    ),
}
PERCENTILE = 99.999
# Histogram bins. ORT's entropy default (128 bins, 128 quantized bins) leaves a single candidate threshold, i.e. the
# full observed range (min/max); 2048 bins (TensorRT's entropy calibrator's histogram size) gives KL a real choice.
NUM_BINS = 2048


def quantizable_nodes(model_path: Path) -> list[str]:
    """Names of the nodes :data:`OP_TYPES` selects, in graph order."""
    model = onnx.load(str(model_path), load_external_data=False)
    return [n.name for n in model.graph.node if n.op_type in OP_TYPES]


def named(model_path: Path, tmp: Path) -> Path:
    """``model_path`` if every node has a unique name, else a copy in ``tmp`` whose nodes are named uniquely
    (``<op>_<index>``): kept layers and the sensitivity table refer to nodes by name."""
    model = onnx.load(str(model_path), load_external_data=False)
    names = [n.name for n in model.graph.node]
    if all(names) and len(set(names)) == len(names):
        return Path(model_path)
    model = onnx.load(str(model_path))
    seen = set()
    for k, n in enumerate(model.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{k}"
        seen.add(n.name)
    out = Path(tmp) / f"{Path(model_path).stem}.named.onnx"
    big = model.ByteSize() > (1 << 30)
    onnx.save(model, str(out), save_as_external_data=big, location=out.name + ".data" if big else None)
    return out


def entropy_threshold(histogram, num_quantized_bins: int):
    """ORT's ``HistogramCollector.get_entropy_threshold`` (the KL threshold search), the same arithmetic with the
    per-bin Python loops as array operations.

    ORT's version sums bins with Python's ``sum`` over NumPy slices inside a 2 x 128-step loop per candidate
    threshold: 1-3 s per tensor at :data:`NUM_BINS`, i.e. minutes per calibration of a 150-tensor encoder; this
    one takes a fraction of a second. Integer histograms (ORT's ``np.histogram`` counts) give identical thresholds
    (tested against ORT's own function).
    """
    hist, edges = histogram[0], histogram[1]
    n = hist.size
    zero, half = n // 2, num_quantized_bins // 2
    cum = np.concatenate([[0], np.cumsum(hist)])  # cum[k] = sum(hist[:k])
    kl = np.zeros(zero - half + 1)
    thresholds = []
    for i in range(half, zero + 1):
        start, end = zero - i, min(zero + i + 1, n)
        thresholds.append((edges[start], edges[end]))
        sliced = hist[start:end]
        p = sliced.copy()
        p[0] += cum[start]
        p[-1] += cum[n] - cum[end]
        m = sliced.size // num_quantized_bins
        body = num_quantized_bins * m
        qbins = sliced[:body].reshape(num_quantized_bins, m).sum(axis=1).astype(np.int64)
        qbins[-1] += sliced[body:].sum()
        norm = (p[:body] != 0).reshape(num_quantized_bins, m).sum(axis=1)
        q = np.zeros(p.size, dtype=np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            q[:body] = np.repeat(np.where(norm != 0, qbins / np.maximum(norm, 1), 0), m).astype(np.int64)
        ps, qs = smooth_distribution(p), smooth_distribution(q)
        kl[i - half] = np.inf if ps is None or qs is None else entropy(ps, qs)
    lo, hi = thresholds[int(np.argmin(kl))]
    return (histogram[2] if lo < histogram[2] else lo), (histogram[3] if hi > histogram[3] else hi)


@contextlib.contextmanager
def fast_entropy():
    """Make ORT's histogram collector use :func:`entropy_threshold` for the duration."""
    old = HistogramCollector.get_entropy_threshold
    HistogramCollector.get_entropy_threshold = lambda self, h, nq: entropy_threshold(h, nq)
    try:
        yield
    finally:
        HistogramCollector.get_entropy_threshold = old


def compute_ranges(model_path: Path, reader: FeedReader, method: str, chunk: int = 1) -> TensorsData:
    """Activation ranges of ``model_path``'s quantizable ops' tensors over every feed ``reader`` yields.

    Args:
        model_path: the FP32 graph.
        reader: loop feeds (all steps for loop-aware calibration, step 1 only for the comparison).
        method: ``entropy`` (KL, :data:`NUM_BINS` bins) | ``percentile`` (99.999th of absolute values) | ``minmax``.
        chunk: feeds per ORT collect call (histogram calibrators hold every intermediate output of one call, and
            stack them: feeds of different batch sizes cannot share a call).
    """
    if method not in METHODS:
        raise InputError(f"calibration method {method!r}: expected one of {', '.join(METHODS)}")
    extra = {"num_bins": NUM_BINS}
    if method == "percentile":
        extra.update(symmetric=True, percentile=PERCENTILE)
    with tempfile.TemporaryDirectory(prefix="restyle-rt-calib-") as tmp:
        cal = create_calibrator(
            Path(model_path),
            list(OP_TYPES),
            augmented_model_path=str(Path(tmp) / "aug.onnx"),
            calibrate_method=METHODS[method],
            use_external_data_format=True,
            providers=["CPUExecutionProvider"],
            extra_options=extra,
        )
        with quiet_stdout(), fast_entropy():
            for sub in reader.chunks(chunk):
                cal.collect_data(sub)
            ranges = cal.compute_data()
        del cal
    return ranges


def write_qdq(
    model_path: Path,
    out_path: Path,
    ranges_file: Path,
    method: str,
    encoding: str,
    exclude: Sequence[str] = (),
    include: Iterable[str] | None = None,
) -> Path:
    """Write the Q/DQ graph of ``model_path`` in ``encoding`` from saved ranges.

    Args:
        model_path: the FP32 graph.
        out_path: where to write (external data beside it when the weights are large).
        ranges_file: :func:`save_ranges` output.
        method: the method the ranges were computed with (ORT checks it against the cache).
        encoding: a key of :data:`ENCODINGS`.
        exclude: node names kept in FP32.
        include: when given, quantize only these nodes (the tests' real single-layer graphs, against which the
            sweep's emulation is checked).
    """
    if encoding not in ENCODINGS:
        raise InputError(f"encoding {encoding!r}: expected one of {', '.join(ENCODINGS)}")
    enc = ENCODINGS[encoding]
    big = Path(model_path).stat().st_size + _data_size(model_path) > (1 << 30)
    quantize_static(
        str(model_path),
        str(out_path),
        None,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(OP_TYPES),
        per_channel=True,
        reduce_range=False,
        activation_type=enc["activation_type"],
        weight_type=enc["weight_type"],
        nodes_to_quantize=list(include) if include is not None else None,
        nodes_to_exclude=list(exclude),
        use_external_data_format=big,
        calibrate_method=METHODS[method],
        extra_options=dict(enc["extra_options"]),
        calibration_cache_path=str(ranges_file),
    )
    return Path(out_path)


def save_ranges(ranges: TensorsData, path: Path) -> Path:
    """Save ranges as ORT's JSON calibration cache (reused for every encoding and the sensitivity sweep)."""
    save_tensors_data(ranges, path)
    return path


def _data_size(model_path: Path) -> int:
    data = Path(str(model_path) + ".data")
    return data.stat().st_size if data.exists() else 0


def qdq_summary(path: Path) -> dict[str, int]:
    """Counts that show a graph is explicit Q/DQ: QuantizeLinear / DequantizeLinear nodes and INT8 initializers."""
    model = onnx.load(str(path), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    int8 = sum(1 for t in model.graph.initializer if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8))
    return {
        "QuantizeLinear": ops.count("QuantizeLinear"),
        "DequantizeLinear": ops.count("DequantizeLinear"),
        "int8_initializers": int8,
    }
