"""``restyle-rt triton-repo``: a standard Triton model repository for scale-out (Triton container, KServe).

Layout written under ``--out``::

    encoder/config.pbtxt     + 1/model.plan (tensorrt_plan) | 1/model.onnx [+ data] (onnxruntime_onnx) | 1/model.py
    synthesis/config.pbtxt   the same for the synthesis graph
    restyle/config.pbtxt     Python backend, BLS: drives the loop by calling encoder and synthesis
    restyle/1/model.py       (restyle_rt.serve.triton_models.restyle_model)
    restyle/1/artifacts/     manifest.json, latent_avg.npy, avg_feedback.npy (what seeds the loop)

``encoder`` and ``synthesis`` are warmed up at load (``model_warmup``: one batch-1 request of zeros for every input,
so ONNX Runtime's or TensorRT's first-call costs are paid before the model reports ready); ``warmup=False`` leaves it
out. ``restyle`` itself has none: a warm-up request runs while the server is loading, and Triton refuses the BLS
calls it would make then ("Server not ready", tried on the PyTriton wheel's tritonserver).

``restyle`` has the same tensors and semantics as ``restyle-rt serve`` (:mod:`restyle_rt.serve.protocol`); the
loop cannot be an ensemble (ensembles are DAGs, the loop is not), hence BLS. Its Python environment must be able to
``import restyle_rt`` (``pip install restyle-rt`` in the container, or an ``EXECUTION_ENV_PATH`` archive).

``graphs="python"`` serves encoder and synthesis with ONNX Runtime inside the Python backend (model.py from
:mod:`restyle_rt.serve.triton_models.graph_model`): for Triton builds without the onnxruntime backend, such as the
one inside the PyTriton wheel on which CI runs this repository.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from .. import artifacts as _artifacts
from .. import fsio
from ..errors import ArtifactError, InputError
from ..spec import GRAPHS
from . import protocol

log = logging.getLogger("restyle_rt")

_TYPES = {
    np.float32: "TYPE_FP32",
    np.float16: "TYPE_FP16",
    np.int32: "TYPE_INT32",
    np.bytes_: "TYPE_STRING",
    np.uint8: "TYPE_UINT8",
    np.bool_: "TYPE_BOOL",
}
_TEMPLATES = Path(__file__).parent / "triton_models"


@dataclasses.dataclass
class RepoConfig:
    """What ``restyle-rt triton-repo`` is told (see its ``--help``)."""

    graphs: str = "auto"
    precision: str = "fp16"
    instances: int = 1
    kind: str | None = None
    max_queue_delay_us: int = 2000
    max_queue_size: int = 64
    timeout_ms: int = 30000
    max_iters: int = protocol.DEFAULT_MAX_ITERS
    image_format: str = "raw"
    warmup: bool = True

    def __post_init__(self):
        if self.image_format not in protocol.IMAGE_FORMATS:
            raise InputError(f"image format {self.image_format!r}: expected one of {', '.join(protocol.IMAGE_FORMATS)}")


@dataclasses.dataclass
class Repository:
    """What was written: the directory and each model's platform."""

    root: Path
    platforms: dict

    def summary(self) -> list[str]:
        """One line per model, then how to run it."""
        lines = [f"{name:10s} {plat}" for name, plat in self.platforms.items()]
        lines.append(f"run: tritonserver --model-repository={self.root.resolve()}")
        return lines


def _dims(shape) -> str:
    return "[ " + ", ".join(str(int(d)) for d in shape) + " ]"


def _tensor_block(kind: str, rows) -> str:
    items = []
    for name, dtype, dims, optional in rows:
        opt = "\n    optional: true" if optional and kind == "input" else ""
        dt = _TYPES[np.dtype(dtype).type]
        items.append(f'  {{\n    name: "{name}"\n    data_type: {dt}\n    dims: {_dims(dims)}{opt}\n  }}')
    return f"{kind} [\n" + ",\n".join(items) + "\n]\n"


def _batching(profile, cfg: RepoConfig, queue: bool) -> str:
    pref = ", ".join(str(s) for s in protocol.preferred_batch_sizes(profile))
    policy = ""
    if queue:
        policy = (
            f"  default_queue_policy {{\n    max_queue_size: {cfg.max_queue_size}\n"
            f"    timeout_action: REJECT\n    default_timeout_microseconds: {cfg.timeout_ms * 1000}\n"
            f"    allow_timeout_override: true\n  }}\n"
        )
    return (
        f"dynamic_batching {{\n  preferred_batch_size: [ {pref} ]\n"
        f"  max_queue_delay_microseconds: {cfg.max_queue_delay_us}\n{policy}}}\n"
    )


def _warmup(rows) -> str:
    """``model_warmup``: one batch-1 sample with zeros for every input (zeros are valid graph inputs)."""
    inputs = "".join(
        f'    inputs {{\n      key: "{name}"\n      value: {{\n'
        f"        data_type: {_TYPES[np.dtype(dt).type]}\n        dims: {_dims(dims)}\n"
        f"        zero_data: true\n      }}\n    }}\n"
        for name, dt, dims, _ in rows
    )
    return f'model_warmup [\n  {{\n    name: "zeros"\n    batch_size: 1\n{inputs}  }}\n]\n'


def _instances(cfg: RepoConfig, kind: str) -> str:
    return f"instance_group [\n  {{\n    count: {cfg.instances}\n    kind: {kind}\n  }}\n]\n"


def _graph_rows(spec, graph: str):
    ins, outs = spec.graph_io(graph)
    row = lambda t: (t.name, np.dtype(t.dtype).type, t.shape[1:], False)  # noqa: E731  (drop the batch axis)
    return [row(t) for t in ins], [row(t) for t in outs]


def _choose_platform(art, cfg: RepoConfig) -> str:
    if cfg.graphs != "auto":
        return cfg.graphs
    recs = [_artifacts.find_engine(art, g, cfg.precision) for g in GRAPHS]
    if all(r is not None and r.trt_flavour == "tensorrt" for r in recs):
        return "tensorrt_plan"
    return "onnxruntime_onnx"


def _write_graph(art, graph: str, platform: str, out: Path, cfg: RepoConfig) -> None:
    vdir = out / graph / "1"
    vdir.mkdir(parents=True)
    entry = art.manifest.graphs[graph]
    if platform == "tensorrt_plan":
        rec = _artifacts.find_engine(art, graph, cfg.precision)
        if rec is None or rec.trt_flavour != "tensorrt":
            raise ArtifactError(
                f"{art.root}: no standard-TensorRT {cfg.precision} engine for {graph} "
                f"(TensorRT-RTX engines do not load in Triton's tensorrt backend); run "
                f"`restyle-rt build {art.root} --precision {cfg.precision} --flavour tensorrt`"
            )
        shutil.copyfile(art.root / rec.file, vdir / "model.plan")
        head, kind = 'platform: "tensorrt_plan"', cfg.kind or "KIND_GPU"
    else:
        shutil.copyfile(art.root / entry.file, vdir / "model.onnx")
        if entry.data_file is not None:  # external weights keep the name the graph refers to
            shutil.copyfile(art.root / entry.data_file, vdir / entry.data_file)
        if platform == "python":
            shutil.copyfile(_TEMPLATES / "graph_model.py", vdir / "model.py")
            head = 'backend: "python"'
        else:
            head = 'platform: "onnxruntime_onnx"'
        kind = cfg.kind or "KIND_CPU"
    ins, outs = _graph_rows(art.spec, graph)
    text = (
        f'name: "{graph}"\n{head}\nmax_batch_size: {art.profile.max}\n'
        + _tensor_block("input", ins)
        + _tensor_block("output", outs)
        + _batching(art.profile, cfg, queue=False)
        + _instances(cfg, kind)
        + (_warmup(ins) if cfg.warmup else "")
    )
    fsio.write_text(out / graph / "config.pbtxt", text)


def _write_restyle(art, out: Path, cfg: RepoConfig) -> None:
    vdir = out / protocol.MODEL_NAME / "1"
    (vdir / "artifacts").mkdir(parents=True)
    shutil.copyfile(_TEMPLATES / "restyle_model.py", vdir / "model.py")
    manifest = art.manifest.to_dict()  # as exported, without the engines (the graph models carry them)
    manifest.pop("engines", None)
    fsio.write_text(vdir / "artifacts" / _artifacts.MANIFEST, json.dumps(manifest, indent=1))
    for name in (_artifacts.LATENT_AVG, _artifacts.AVG_FEEDBACK):
        shutil.copyfile(art.root / name, vdir / "artifacts" / name)
    ins, outs = protocol.io_table(art.spec)
    params = "".join(
        f'parameters: {{\n  key: "{k}"\n  value: {{ string_value: "{v}" }}\n}}\n'
        for k, v in (("max_iters", cfg.max_iters), ("image_format", cfg.image_format))
    )
    text = (
        f'name: "{protocol.MODEL_NAME}"\nbackend: "python"\nmax_batch_size: {art.profile.max}\n'
        + _tensor_block("input", ins)
        + _tensor_block("output", outs)
        + _batching(art.profile, cfg, queue=True)
        + _instances(cfg, "KIND_CPU")
        + params
    )
    fsio.write_text(out / protocol.MODEL_NAME / "config.pbtxt", text)


def write_repository(artifacts_dir, out, cfg: RepoConfig | None = None, overwrite: bool = False) -> Repository:
    """Write the model repository for an artifacts directory.

    Args:
        artifacts_dir: the directory written by ``restyle-rt export`` (and ``restyle-rt build``).
        out: the repository directory to write.
        cfg: platform, batching and instance settings.
        overwrite: replace ``out`` when it exists (atomically: the new repository is written beside it and
            swapped in; on any failure the previous one is left as it was).

    Returns:
        The written :class:`Repository`.

    Raises:
        ArtifactError: the artifacts are unusable, or tensorrt_plan was asked for without standard-TensorRT engines.
        InputError: ``out`` exists and ``overwrite`` is False.
    """
    cfg = cfg or RepoConfig()
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass --overwrite to replace it")
    # never the cwd, a parent, the artifacts, or a directory that is not a previous repository (before any work)
    replaceable = dict(
        protect=[artifacts_dir],
        what="model repository",
        previous=lambda p: (p / protocol.MODEL_NAME / "config.pbtxt").is_file(),
    )
    _artifacts.check_replaceable(out, True, **replaceable)
    art = _artifacts.load(artifacts_dir)
    platform = _choose_platform(art, cfg)
    # written beside ``out`` and swapped in whole (as ``export`` does): a failure leaves the previous repository
    with _artifacts.staging_dir(out, overwrite=True, **replaceable) as tmp:
        for g in GRAPHS:
            _write_graph(art, g, platform, tmp, cfg)
        _write_restyle(art, tmp, cfg)
    log.info("wrote Triton model repository %s (graphs: %s)", out, platform)
    return Repository(out, {"encoder": platform, "synthesis": platform, protocol.MODEL_NAME: "python (BLS)"})
