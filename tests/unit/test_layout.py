"""The package's shape as docs/architecture.md states it, enforced where a test can.

* imports flow down the layer table (read statically from every ``import``, the lazy ones inside functions too),
  with the known exceptions named below;
* the torch-free layers never import torch;
* every ``Backend`` subclass under ``runtime/backends/`` is in the registry, every registry entry exists, each class
  declares what it can do (extra, library, precisions, options, probed_by_auto), and a new backend needs no other
  edit for ``auto``, the bench and the CLI to see it;
* every command module is in ``restyle_rt.cli.COMMANDS``, every entry registers a command, and registering all of
  them imports nothing heavy.
"""
from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from restyle_rt.runtime.backend import Backend
from restyle_rt.runtime.backends import REGISTRY

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "restyle_rt"

# docs/architecture.md, "Layers": top-level modules of the core layer, and the layer each may import from.
CORE = {"errors", "spec", "manifest", "artifacts", "fsio", "parity", "metrics", "progress", "argtypes", "__version__"}
TOP_COMMANDS = {"cli", "__main__", "demo", "info", "doctor"}
ALLOWED: Dict[str, Set[str]] = {
    "core": {"core"},
    "kernels": {"core"},
    "runtime": {"core"},
    "export": {"core", "runtime", "kernels"},
    "engine": {"core", "export", "runtime"},
    "calibration": {"core", "export", "runtime"},
    "align": {"core", "runtime"},
    "workflows": {"core", "runtime", "align"},
    "serve": {"core", "runtime"},
    "bench": {"core", "export", "runtime"},
    "package": {"core", "runtime"},  # restyle_rt/__init__.py: the lazy public API (Inverter, load_artifacts)
}
TORCH_FREE = {"core", "runtime", "engine", "align", "workflows", "serve", "package"}
TORCH_FREE_MODULES = {"restyle_rt.cli", "restyle_rt.__main__", "restyle_rt.info", "restyle_rt.doctor"}

# Known exceptions (docs/architecture.md, "Known exceptions"), to go with the planned restyle_rt/cli/ package. Another
# change is editing runtime/cli.py now, so they are recorded here instead of moved.
LAYER_EXCEPTIONS = {
    # `invert --bootstrap` and `invert --align`: the invert command lives in the runtime package
    ("restyle_rt.runtime.cli", "workflows"),
    ("restyle_rt.runtime.cli", "align"),
}
# Command modules may import the option helpers (BackendHelpFormatter, BackendNames, add_loop_options, ...) that
# live in the invert command's module.
SHARED_COMMAND_MODULE = "restyle_rt.runtime.cli"


def _dotted(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.lru_cache(maxsize=None)
def _modules() -> Dict[str, Path]:
    return {_dotted(p): p for p in sorted(PKG.rglob("*.py"))}


@functools.lru_cache(maxsize=None)
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _defines(path: Path, name: str) -> bool:
    return any(isinstance(n, ast.FunctionDef) and n.name == name for n in _tree(path).body)


def _is_command(mod: str) -> bool:
    return mod in ("restyle_rt.cli", "restyle_rt.__main__") or _defines(_modules()[mod], "register")


def _resolve(dotted: str) -> str:
    """The module a dotted import name lands in: itself when it is a module, else its parent (an attribute)."""
    while dotted not in _modules() and "." in dotted:
        dotted = dotted.rsplit(".", 1)[0]
    return dotted


def _imports(mod: str) -> Iterator[Tuple[str, int]]:
    """(imported restyle_rt module, line) for every import in ``mod``, at any depth (lazy imports included)."""
    path = _modules()[mod]
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name == "restyle_rt" or name.startswith("restyle_rt."):
                yield _resolve(name), node.lineno


def _layer(mod: str) -> str:
    parts = mod.split(".")
    if len(parts) == 1:
        return "package"
    if parts[1] in CORE:
        return "core"
    if parts[1] in TOP_COMMANDS:
        return "commands"
    if parts[1] in ALLOWED:
        return parts[1]
    raise AssertionError(f"{mod}: in no layer of docs/architecture.md; add it to the table there and here")


def test_every_module_is_in_a_layer():
    for mod in _modules():
        _layer(mod)


def test_imports_flow_down_the_layer_table():
    bad: List[str] = []
    for mod in _modules():
        src = _layer(mod)
        for target, line in _imports(mod):
            dst = _layer(target)
            dst = "core" if dst == "package" else dst  # `from .. import __version__`: the package root is light
            if (mod, dst) in LAYER_EXCEPTIONS or (target == SHARED_COMMAND_MODULE and _is_command(mod)):
                continue
            if mod == "restyle_rt.cli":  # the dispatcher reaches its commands by import string only
                ok = dst == "core"
            elif mod == "restyle_rt.__main__":
                ok = target == "restyle_rt.cli"
            elif src == "commands":  # demo, info, doctor: any library layer
                ok = dst != "commands"
            else:
                ok = dst == src or dst in ALLOWED[src]
            if not ok:
                bad.append(f"{_modules()[mod].relative_to(ROOT)}:{line}: {src} imports {target} ({dst})")
    assert bad == []


def test_the_runtime_reaches_no_command_layer_except_the_named_exceptions():
    """The issue's "no arrow from the runtime up": only the invert command module, and only as recorded above."""
    up = {"workflows", "align", "serve", "bench", "export", "engine", "calibration", "kernels", "commands"}
    found = {(mod, _layer(t)) for mod in _modules() if _layer(mod) == "runtime"
             for t, _ in _imports(mod) if _layer(t) in up}
    assert found <= LAYER_EXCEPTIONS


def test_no_library_module_imports_a_command_module():
    bad = []
    for mod in _modules():
        for target, line in _imports(mod):
            if target == mod or not _is_command(target):
                continue
            if mod == "restyle_rt.__main__" and target == "restyle_rt.cli":
                continue
            if target == SHARED_COMMAND_MODULE and _is_command(mod):
                continue
            bad.append(f"{_modules()[mod].relative_to(ROOT)}:{line}: imports the command module {target}")
    assert bad == []


def test_torch_free_layers_never_import_torch():
    bad = []
    for mod, path in _modules().items():
        if _layer(mod) not in TORCH_FREE and mod not in TORCH_FREE_MODULES:
            continue
        for node in ast.walk(_tree(path)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            bad += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] == "torch"]
    assert bad == []


# --- backends: one file and one registry line --------------------------------------------------------------------

def _backend_classes() -> Dict[Tuple[str, str], str]:
    """{(module, class): its ``name`` attribute} for every Backend subclass defined under runtime/backends/."""
    found: Dict[Tuple[str, str], str] = {}
    for mod, path in _modules().items():
        if not mod.startswith("restyle_rt.runtime.backends."):
            continue
        for node in _tree(path).body:
            bases = {getattr(b, "id", getattr(b, "attr", "")) for b in getattr(node, "bases", [])}
            if isinstance(node, ast.ClassDef) and "Backend" in bases:
                names = [s.value.value for s in node.body if isinstance(s, ast.Assign)
                         and any(getattr(t, "id", "") == "name" for t in s.targets)
                         and isinstance(s.value, ast.Constant)]
                found[(mod, node.name)] = names[0] if names else ""
    return found


def test_every_backend_class_is_registered_under_its_name():
    from restyle_rt.runtime.backends import REGISTRY

    classes = _backend_classes()
    assert classes, "no Backend subclass found under restyle_rt/runtime/backends/"
    registered = {(module, cls): key for key, (module, cls, _) in REGISTRY.items()}
    assert set(classes) == set(registered), "a Backend subclass must have its line in REGISTRY and vice versa"
    assert {k: classes[k] for k in registered} == registered, "a backend's `name` must be its registry key"


def test_auto_lists_only_registered_backends():
    from restyle_rt.runtime.backends import AUTO_ORDER, REGISTRY, backend_class, choose

    assert set(AUTO_ORDER) <= set(REGISTRY)
    assert set(choose.MEASURED) <= set(AUTO_ORDER)
    # the cached decision is keyed by each measured backend's library version
    assert all(backend_class(n).library for n in choose.MEASURED)
    assert all(extra for _, _, extra in REGISTRY.values()), "each registry line names what to install"


CAPABILITIES = ("extra", "library", "precisions", "options", "probed_by_auto")


def _extras() -> Set[str]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_backend_declares_what_it_can_do(name):
    """Each backend class states its capabilities in its own body (docs/architecture.md, "A new backend"), and the
    declaration agrees with its constructor and with pyproject.toml."""
    import inspect

    from restyle_rt.runtime.backends import backend_class

    cls, install = backend_class(name), REGISTRY[name][2]
    assert set(CAPABILITIES) <= set(vars(cls)), f"{cls.__name__} must declare {', '.join(CAPABILITIES)}"
    assert isinstance(cls.library, str) and cls.library
    assert isinstance(cls.probed_by_auto, bool)
    assert cls.extra == "" or (cls.extra in _extras() and f"restyle-rt[{cls.extra}]" in install), \
        "extra: '' (core) or a pyproject extra, which the registry line tells to install"
    params = inspect.signature(cls.__init__).parameters
    kw = {k for k, p in params.items() if k not in ("self", "artifacts") and p.kind is not p.VAR_KEYWORD}
    assert isinstance(cls.options, frozenset) and cls.options == kw, "options: what the constructor takes"
    assert isinstance(cls.precisions, tuple) and cls.precisions and len(set(cls.precisions)) == len(cls.precisions)
    if "precision" in cls.options:  # the default first (None: the backend picks from what is built, fp16 first)
        assert params["precision"].default in (None, cls.precisions[0])
    else:
        assert cls.precisions == ("fp32",)


class _NewBackend(Backend):
    """A backend as its own file would declare it (ONNX Runtime runs the graphs underneath)."""

    name = "newbe"
    extra = ""
    library = "restyle_rt_no_such_library"
    precisions = ("fp32", "fp8")
    options = frozenset({"precision", "threads"})
    probed_by_auto = True

    def __init__(self, artifacts, precision: str = "fp32", threads=None):
        from restyle_rt.runtime.backends.ort import OrtBackend

        super().__init__(artifacts)
        self.precision, self.threads = precision, threads
        self._ort = OrtBackend(artifacts, threads=threads)

    @classmethod
    def available(cls):
        return True, ""

    def encode(self, image, feedback, latent):
        return self._ort.encode(image, feedback, latent)

    def synthesize(self, latent):
        return self._ort.synthesize(latent)

    def close(self):
        self._ort.close()


def test_adding_a_backend_is_one_file_and_one_registry_line(toy, monkeypatch, tmp_path, capsys):
    """A new module (here a fake one) and its REGISTRY line, and nothing else: auto probes it, the bench plans its
    precisions, and the CLI accepts and lists them."""
    import types

    from restyle_rt import artifacts
    from restyle_rt.bench import targets
    from restyle_rt.cli import build_parser
    from restyle_rt.runtime import backends
    from restyle_rt.runtime.backends import choose

    module = types.ModuleType("restyle_rt_newbe")
    module.NewBackend = _NewBackend
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(backends.REGISTRY, "newbe", (module.__name__, "NewBackend", "pip install newbe"))

    assert "newbe" in backends.names() and "newbe" in choose.MEASURED and backends.AUTO_ORDER[-1] == "newbe"
    monkeypatch.setenv("RESTYLE_RT_AUTO_PROBE", "1")
    monkeypatch.setenv("RESTYLE_RT_CACHE", str(tmp_path))
    choose._logged_choices.clear()
    # fp8 is this backend's own: ort and openvino refuse it and are skipped, so auto measures and takes newbe
    with backends.get_backend("auto", artifacts.load(toy[0]), precision="fp8", threads=1, spinning=True) as be:
        assert (be.name, be.precision, be.threads) == ("newbe", "fp8", 1)
    assert choose.library_version("newbe") == "missing"

    assert "newbe" in targets.runtime_names()
    assert targets.plan(["newbe", "ort"], ["fp32", "fp8"]) == [("newbe", "fp32"), ("newbe", "fp8"), ("ort", "fp32")]

    parser = build_parser()
    assert parser.parse_args(["invert", "A", "x", "--out", "o", "--precision", "fp8"]).precision == "fp8"
    with pytest.raises(SystemExit):
        parser.parse_args(["invert", "--help"])
    assert "newbe fp32 | fp8" in " ".join(capsys.readouterr().out.split())


# --- commands: one module and one COMMANDS line -----------------------------------------------------------------

def test_every_command_module_is_in_commands():
    from restyle_rt.cli import COMMANDS

    modules = {m for m in _modules() if m != "restyle_rt.cli" and _defines(_modules()[m], "register")}
    assert len(COMMANDS) == len(set(COMMANDS))
    assert set(COMMANDS) == modules, "a module with register(subparsers) must be in restyle_rt.cli.COMMANDS"


def test_registering_every_command_imports_nothing_heavy():
    code = textwrap.dedent("""
        import json, sys
        sys.modules["torch"] = None
        from restyle_rt.cli import build_parser
        build_parser()
        heavy = ("numpy", "onnxruntime", "onnx", "openvino", "tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings",
                 "cuda", "av", "dlib", "PIL", "tqdm", "matplotlib", "pytriton")
        print(json.dumps(sorted(m for m in heavy if sys.modules.get(m) is not None)))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
