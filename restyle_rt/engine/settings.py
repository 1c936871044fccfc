"""What an engine is built with, read back from TensorRT's own network and config objects, and checked.

The TensorRT backend depends on build-time choices it cannot see in a serialized plan before deserializing it (and
a plan cannot be deserialized without a GPU driver). So the builder reads them back from the
``INetworkDefinition`` / ``IBuilderConfig`` / ``IOptimizationProfile`` it is about to build from (never from its own
options), refuses to build when one is wrong (:func:`problems`), and records them in the engine's manifest record:

* ``builder_flags``: every ``BuilderFlag`` set on the config (``config.get_flag`` over the module's members);
* ``require_user_allocation``: TensorRT-RTX's ``BuilderFlag.REQUIRE_USER_ALLOCATION``, without which its
  execution contexts may not be stream-capturable and the backend's CUDA-graph loop cannot be used;
* ``strongly_typed``: the network's ``STRONGLY_TYPED`` creation flag (TensorRT-RTX networks always are);
* ``tf32``: ``BuilderFlag.TF32`` ("fp32" engines clear it);
* ``compute_capabilities``: the config's AOT targets as ``"M.m"`` strings (TensorRT-RTX only);
* ``optimization_profiles``: how many the config holds (the backend uses profile 0 only, so exactly one);
* ``io``: per network I/O tensor its mode, dtype, shape (``-1`` = dynamic) and, for inputs, the profile's
  min/opt/max shapes (the backend allocates for the max batch and assumes FP32 graph I/O);
* ``layer_dtypes``: how many layer outputs of the network are of each dtype (precision per layer as TensorRT
  sees the parsed network: a strongly typed FP16 engine keeps its demodulation / latent arithmetic FP32);
* ``runtime_config``: what the backend is expected to do with the engine at run time (user-managed activation
  memory; whether its contexts may be captured into a CUDA graph; RTX kernel specialisation strategy).
"""

from __future__ import annotations

from collections.abc import Sequence

FP32 = "float32"
USER_ALLOCATION_FLAG = "REQUIRE_USER_ALLOCATION"
_DTYPES = {
    "FLOAT": FP32,
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "UINT8": "uint8",
    "FP8": "float8",
    "INT4": "int4",
    "FP4": "float4",
}


def dtype_name(dtype) -> str:
    """TensorRT ``DataType`` -> numpy-style name (``DataType.HALF`` -> ``"float16"``)."""
    name = getattr(dtype, "name", None) or str(dtype).rsplit(".", 1)[-1]
    return _DTYPES.get(name, name.lower())


def _set_flags(trt, config) -> list[str]:
    return sorted(n for n, v in trt.BuilderFlag.__members__.items() if config.get_flag(v))


def _io(network, profile) -> dict[str, dict]:
    out = {}
    for mode, count, get in (
        ("input", network.num_inputs, network.get_input),
        ("output", network.num_outputs, network.get_output),
    ):
        for i in range(count):
            t = get(i)
            rec = {"mode": mode, "dtype": dtype_name(t.dtype), "shape": list(t.shape)}
            if mode == "input":
                rec["profile"] = [list(d) for d in profile.get_shape(t.name)]
            out[t.name] = rec
    return out


def _layer_dtypes(network) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for k in range(layer.num_outputs):
            name = dtype_name(layer.get_output(k).dtype)
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def _ccs(config) -> list[str]:
    names = [config.get_compute_capability(i).name for i in range(config.num_compute_capabilities)]
    return [f"{n[2:-1]}.{n[-1]}" for n in names if n.startswith("SM")]


def _runtime_config(trt, flags: list[str]) -> dict:
    """Expectations for the backend: user-managed activation memory; CUDA-graph capture where the build allows it
    (TensorRT-RTX: only with REQUIRE_USER_ALLOCATION; standard TensorRT has no such flag and captures as is); RTX's
    shape-specialised kernels compiled EAGERly so that a capture records them rather than the generic fallbacks."""
    capture = USER_ALLOCATION_FLAG in flags or not hasattr(trt.BuilderFlag, USER_ALLOCATION_FLAG)
    rc = {"execution_context_allocation": "user_managed", "stream_capture": capture}
    if hasattr(trt, "DynamicShapesKernelSpecializationStrategy"):
        rc["dynamic_shapes_kernel_specialization"] = "eager" if capture else "lazy"
    return rc


def read_settings(trt, network, config, profile) -> dict:
    """The settings the backend depends on, as TensorRT's objects hold them (see the module docstring).

    Args:
        trt: the TensorRT module that made the objects.
        network: the parsed ``INetworkDefinition``.
        config: the ``IBuilderConfig`` about to be built with.
        profile: the ``IOptimizationProfile`` added to ``config``.
    """
    flags = _set_flags(trt, config)
    st = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    out = {
        "builder_flags": flags,
        "require_user_allocation": USER_ALLOCATION_FLAG in flags,
        "strongly_typed": bool(st is not None and network.get_flag(st)),
        "tf32": "TF32" in flags,
        "optimization_profiles": int(config.num_optimization_profiles),
        "io": _io(network, profile),
        "layer_dtypes": _layer_dtypes(network),
        "runtime_config": _runtime_config(trt, flags),
    }
    if hasattr(config, "get_compute_capability"):  # TensorRT-RTX AOT targets; standard TensorRT: the local GPU
        out["compute_capabilities"] = _ccs(config)
    return out


def _profile_problems(io: dict[str, dict], batch: Sequence[int]) -> list[str]:
    why = []
    for name, t in io.items():
        if t["mode"] != "input":
            continue
        shape, prof = t["shape"], t.get("profile") or []
        if not shape or shape[0] != -1 or -1 in shape[1:]:
            why.append(f"input {name!r} has shape {shape}, expected a dynamic batch dimension only")
        if len(prof) != 3 or [p[0] for p in prof] != list(batch):
            why.append(f"input {name!r} profile {prof} does not span batch min/opt/max {list(batch)}")
        elif any(p[1:] != shape[1:] for p in prof):
            why.append(f"input {name!r} profile {prof} changes a static dimension of {shape}")
    return why


def _io_problems(io: dict[str, dict], expected: dict[str, tuple[str, list[int]]]) -> list[str]:
    got = {n: (t["mode"], t["shape"]) for n, t in io.items()}
    if got == expected:
        return []
    return [f"network I/O {got} differs from the spec's {expected} (the backend binds these names and shapes)"]


def problems(
    settings: dict,
    *,
    strongly_typed: bool,
    user_allocation: bool,
    precision: str,
    batch: Sequence[int],
    expected_io: dict[str, tuple[str, list[int]]],
    ccs: Sequence[str] | None = None,
) -> list[str]:
    """What in ``settings`` (from :func:`read_settings`) the backend cannot run with; empty when all is well.

    Args:
        settings: read back from the network and config.
        strongly_typed: whether the flavour builds strongly typed (the precision then comes from the ONNX).
        user_allocation: whether the flavour has ``REQUIRE_USER_ALLOCATION`` (TensorRT-RTX), which must be set.
        precision: ``"fp32"`` (TF32 off) or ``"fp16"`` (precision-flag builds: ``FP16`` and
            ``OBEY_PRECISION_CONSTRAINTS`` on).
        batch: the requested batch min/opt/max.
        expected_io: ``{name: (mode, shape with -1 for the batch)}`` of the graph's spec.
        ccs: the requested AOT targets, when the flavour has them.
    """
    why = []
    flags = settings["builder_flags"]
    if user_allocation and not settings["require_user_allocation"]:
        why.append(
            f"BuilderFlag.{USER_ALLOCATION_FLAG} is not set: the engine's contexts may not be "
            "stream-capturable and the backend's CUDA-graph loop would fall back to eager execution"
        )
    if settings["strongly_typed"] != strongly_typed:
        why.append(f"network strongly typed = {settings['strongly_typed']}, this TensorRT needs {strongly_typed}")
    if precision == "fp32" and settings["tf32"]:
        why.append("BuilderFlag.TF32 is set on an fp32 engine (fp32 means IEEE FP32)")
    if precision == "fp16" and not strongly_typed and not {"FP16", "OBEY_PRECISION_CONSTRAINTS"} <= set(flags):
        why.append(f"precision-flag fp16 build without FP16 + OBEY_PRECISION_CONSTRAINTS (flags: {flags})")
    if ccs is not None and settings.get("compute_capabilities") != list(ccs):
        why.append(f"config targets compute capabilities {settings.get('compute_capabilities')}, asked for {list(ccs)}")
    if settings["optimization_profiles"] != 1:
        why.append(f"{settings['optimization_profiles']} optimization profiles; the backend uses profile 0 only")
    bad_io = {n: t["dtype"] for n, t in settings["io"].items() if t["dtype"] != FP32}
    if bad_io:
        why.append(f"graph I/O must stay {FP32} (the backend's buffers are FP32), got {bad_io}")
    return why + _io_problems(settings["io"], expected_io) + _profile_problems(settings["io"], batch)
