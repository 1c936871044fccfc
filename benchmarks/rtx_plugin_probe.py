"""Probe: can TensorRT-RTX build an engine from the plugin-variant synthesis graph with the C++ ModulatedConv2d plugin?

Usage (the plugin library built with CMake against TensorRT headers; see restyle_rt/kernels/modulated_conv):

    python3 benchmarks/rtx_plugin_probe.py PLUGIN.so SYNTHESIS_PLUGIN.onnx [--dlopen]

Steps, each printed as it happens (the interesting failures are crashes, so run it in a shell, not in-process):
register the plugin (IPluginRegistry.load_library, the only registration of the IPluginV3 flavour; --dlopen only
dlopens it, which registers nothing since the defect-9 fix), list the registry, parse the graph, and build for
SM 8.6 ahead of time on this CPU-only machine.
"""

from __future__ import annotations

import argparse
import ctypes
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("plugin")
    ap.add_argument("onnx")
    ap.add_argument("--dlopen", action="store_true", help="only dlopen the library instead of load_library")
    args = ap.parse_args()
    import tensorrt_rtx_bindings as trt

    print("TensorRT-RTX", trt.__version__, flush=True)
    logger = trt.Logger(trt.Logger.INFO)
    reg = trt.get_plugin_registry()
    if args.dlopen:
        ctypes.CDLL(args.plugin, mode=ctypes.RTLD_GLOBAL)
        print("dlopen ok", flush=True)
    else:
        print("load_library ->", reg.load_library(args.plugin), flush=True)
    print("registry:", [(c.name, c.plugin_version) for c in reg.all_creators], flush=True)
    builder = trt.Builder(logger)
    net = builder.create_network(0)
    parser = trt.OnnxParser(net, logger)
    ok = parser.parse_from_file(args.onnx)
    print("parse:", ok, [str(parser.get_error(i)) for i in range(parser.num_errors)], flush=True)
    if not ok:
        return
    cfg = builder.create_builder_config()
    prof = builder.create_optimization_profile()
    shape = tuple(net.get_input(0).shape)[1:]
    prof.set_shape(net.get_input(0).name, (1, *shape), (1, *shape), (2, *shape))
    cfg.add_optimization_profile(prof)
    cfg.num_compute_capabilities = 1
    cfg.set_compute_capability(trt.ComputeCapability.SM86, 0)
    t = time.time()
    plan = builder.build_serialized_network(net, cfg)
    print("build:", None if plan is None else plan.nbytes, "bytes in", round(time.time() - t, 1), "s", flush=True)


if __name__ == "__main__":
    main()
