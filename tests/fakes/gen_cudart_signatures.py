"""Write ``tests/fakes/cudart_signatures.json``: the cudart call surface of each CUDA major's cuda-python.

For every cudart function that restyle_rt calls (``.cudaXxx(`` in ``restyle_rt/runtime/cuda.py`` and
``restyle_rt/kernels/*.py``), that the fake implements (``def cudaXxx`` in ``tests/fakes/gpu.py``), plus
``cudaGraphInstantiate`` and ``cudaGraphInstantiateWithFlags``, it records the parameter names
(``inspect.signature``), the docstring's first line (C types) and its Returns section, read from the real package
with the parsers of :mod:`fakes.surface`; a function the package lacks is recorded as ``null``. It also records the
members of the enums and the constants the fake passes through (``_Cudart._PASS``), and ``cudaRuntimeGetVersion``.

``FakeGpu(cuda_major=11 | 12)`` checks its calls against this table (their cuda-python is not installed here);
``tests/trt/test_cuda_versions.py`` checks the installed major's entries against the installed module.

Rerun (no GPU needed) after adding a cudart call or a fake function; each major's packages go into their own dir::

    pip install --no-deps --target /tmp/cp11 'cuda-python==11.8.7' 'cuda-bindings==11.8.7'
    pip install --no-deps --target /tmp/cp12 'cuda-python==12.9.10' 'cuda-bindings==12.9.10'
    pip install --no-deps --target /tmp/cp12pf 'cuda-pathfinder==1.9.1'   # cuda-bindings 12.9 imports it
    python3 tests/fakes/gen_cudart_signatures.py 11=/tmp/cp11 12=/tmp/cp12:/tmp/cp12pf 13=

``MAJOR=PATHS`` reads that major with ``python -S`` and ``PYTHONPATH=PATHS`` (site-packages, and so the installed
cuda-python, out of sight); ``MAJOR=`` (empty) reads the installed cuda-python. Majors not named keep their entry.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = HERE / "cudart_signatures.json"
EXTRA = ("cudaGraphInstantiate", "cudaGraphInstantiateWithFlags")
ENUMS = ("cudaError_t", "cudaMemcpyKind", "cudaDeviceAttr", "cudaStreamCaptureMode", "cudaStreamCaptureStatus")
CONSTANTS = ("cudaStreamNonBlocking", "cudaStreamDefault")

# runs in the child interpreter of one major; stdin: {"surface": path, "functions": [...], ...}; stdout: its entry
_CHILD = r"""
import importlib.metadata as md, importlib.util, inspect, json, sys
req = json.load(sys.stdin)
spec = importlib.util.spec_from_file_location("surface", req["surface"])
surface = importlib.util.module_from_spec(spec)
spec.loader.exec_module(surface)
try:
    from cuda.bindings import runtime as rt
except ImportError:
    from cuda import cudart as rt
modules = []
for mod in ("cuda.bindings.runtime", "cuda.cudart"):
    try:
        __import__(mod)
        modules.append(mod)
    except ImportError:
        pass
versions = {}
for dist in ("cuda-python", "cuda-bindings"):
    try:
        versions[dist] = md.version(dist)
    except md.PackageNotFoundError:
        pass
functions = {}
for name in req["functions"]:
    fn = getattr(rt, name, None)
    if fn is None:
        functions[name] = None
        continue
    sig = inspect.signature(fn)
    odd = [p for p in sig.parameters.values()
           if p.kind is not p.POSITIONAL_OR_KEYWORD or p.default is not p.empty]
    assert not odd, f"{name}{sig}: parameters of a kind the table does not record: {odd}"
    first = surface.doc_first_line(fn)
    functions[name] = {"params": list(sig.parameters), "types": surface.doc_types(first), "doc_first_line": first,
                       "returns": surface.cython_returns(fn)}
err, runtime_version = rt.cudaRuntimeGetVersion()
print(json.dumps({
    "package": " ".join(f"{d} {v}" for d, v in versions.items()),
    "modules": modules,
    "runtime_version": int(runtime_version) if err == rt.cudaError_t.cudaSuccess else None,
    "functions": functions,
    "enums": {e: sorted(getattr(rt, e).__members__) if hasattr(rt, e) else None for e in req["enums"]},
    "constants": {c: int(getattr(rt, c)) if hasattr(rt, c) else None for c in req["constants"]},
}))
"""


def names() -> list:
    """The cudart functions to record, sorted."""
    found = set(EXTRA)
    for path in [ROOT / "restyle_rt/runtime/cuda.py", *sorted((ROOT / "restyle_rt/kernels").glob("*.py"))]:
        found |= set(re.findall(r"\.(cuda[A-Z]\w*)\(", path.read_text()))
    found |= set(re.findall(r"def (cuda[A-Z]\w*)\(", (HERE / "gpu.py").read_text()))
    return sorted(found)


def read(paths: str) -> dict:
    """One major's entry, read in a child interpreter (``python -S`` on ``paths`` unless empty)."""
    env = dict(os.environ)
    cmd = [sys.executable, "-c", _CHILD]
    if paths:
        env["PYTHONPATH"] = paths
        cmd.insert(1, "-S")
    req = {"surface": str(HERE / "surface.py"), "functions": names(), "enums": ENUMS, "constants": CONSTANTS}
    out = subprocess.run(cmd, input=json.dumps(req), capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        raise SystemExit(f"reading cuda-python from {paths or 'site-packages'} failed:\n{out.stderr}")
    return json.loads(out.stdout)


def main(argv) -> None:
    table = json.loads(OUT.read_text()) if OUT.exists() else {}
    for arg in argv:
        major, _, paths = arg.partition("=")
        entry = read(paths)
        got = entry["runtime_version"] // 1000 if entry["runtime_version"] else None
        if got != int(major):
            raise SystemExit(f"{arg}: that cuda-python links CUDA {entry['runtime_version']}, not major {major}")
        table[major] = entry
        print(f"{major}: {entry['package']}: {len(entry['functions'])} functions")
    text = json.dumps(dict(sorted(table.items())), indent=1, sort_keys=True)
    text = re.sub(r"\[\n\s*([^\[\]{}]*?)\n\s*\]", lambda m: "[" + re.sub(r",\n\s*", ", ", m.group(1)) + "]", text)
    OUT.write_text(text + "\n")  # lists of names on one line each


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1:])
