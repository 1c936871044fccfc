"""Record which TensorRT Python API members each standard TensorRT release has, from its real bindings wheel.

The ``tensorrt-cu12-bindings`` wheels hold the pybind11 module only (``tensorrt.so``); it cannot be imported here
(its ``libnvinfer`` is in the multi-GB libs wheel), but pybind11 registers every member name as a C string, so
the module's string table says which names it has. A name found as a whole string is **present**. A name not found
is **absent** unless it is the tail of a longer string (the linker merges ``"device_memory"`` into
``"set_device_memory"``), which leaves it **unknown**. The fakes' generation tables are checked against the result
(``tests/trt/test_fake_generations.py``); run again to add a release:

    python3 tests/fakes/gen_trt_members.py 10.3.0 11.1.0.106 > tests/fakes/trt_members.json

Needs ``pip`` reaching the package index and ``strings`` (binutils). TensorRT 8.5 is not on the index (JetPack
ships it): its facts stay inferred from its headers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# member -> where the runtime looks for it (documentation for the reader; names are unique in the bindings)
MEMBERS = {
    "execute_async_v3": "IExecutionContext",
    "set_input_shape": "IExecutionContext",
    "set_tensor_address": "IExecutionContext",
    "set_device_memory": "IExecutionContext",
    "is_stream_capturable": "IExecutionContext",
    "set_optimization_profile_async": "IExecutionContext",
    "num_io_tensors": "ICudaEngine",
    "create_execution_context_without_device_memory": "ICudaEngine",
    "device_memory_size": "ICudaEngine",
    "device_memory_size_v2": "ICudaEngine",
    "get_device_memory_size_for_profile_v2": "ICudaEngine",
    "create_runtime_config": "ICudaEngine",
    "ExecutionContextAllocationStrategy": "module",
    "IRuntimeConfig": "module",
    "set_execution_context_allocation_strategy": "IRuntimeConfig",
    "create_runtime_cache": "IRuntimeConfig",
    "get_engine_validity": "Runtime",
    "CudaGraphStrategy": "module",
    "DynamicShapesKernelSpecializationStrategy": "module",
    "STRONGLY_TYPED": "NetworkDefinitionCreationFlag",
    "EXPLICIT_BATCH": "NetworkDefinitionCreationFlag",
    "create_timing_cache": "IBuilderConfig",
    "set_compute_capability": "IBuilderConfig",
}


def scan(version: str, workdir: Path) -> dict:
    """{member: present|absent|unknown} for ``tensorrt-cu12-bindings==version`` (CPython 3.11 wheel)."""
    dest = workdir / version
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--platform",
            "manylinux_2_17_x86_64",
            "--platform",
            "manylinux_2_28_x86_64",
            "-d",
            str(dest),
            f"tensorrt-cu12-bindings=={version}",
        ],
        check=True,
    )
    wheel = next(dest.glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".so"))
        so = dest / "tensorrt.so"
        so.write_bytes(z.read(name))
    out = subprocess.run(["strings", "-n", "4", str(so)], check=True, capture_output=True, text=True).stdout
    strings = set(out.split("\n"))
    result = {}
    for m in MEMBERS:
        if m in strings:
            result[m] = "present"
        elif any(s.endswith(m) for s in strings):
            result[m] = "unknown"
        else:
            result[m] = "absent"
    return {"wheel": wheel.name, "members": result}


def main(versions) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = {v: scan(v, Path(tmp)) for v in versions}
    json.dump(
        {
            "source": "strings of tensorrt.so in the tensorrt-cu12-bindings wheels (tests/fakes/gen_trt_members.py)",
            "owners": MEMBERS,
            "versions": data,
        },
        sys.stdout,
        indent=1,
        sort_keys=True,
    )
    print()


if __name__ == "__main__":
    main(sys.argv[1:] or ["10.3.0", "11.1.0.106"])
