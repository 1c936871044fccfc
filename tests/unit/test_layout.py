"""The package's shape as docs/architecture.md states it, enforced where a test can.

* imports flow down the layer table (read statically from every ``import``, the lazy ones inside functions too),
  with no exception: the runtime reaches no layer above it, and nothing imports a command module;
* every command lives in the ``restyle_rt/cli/`` package, which holds only the dispatcher, its entry points, the
  modules the commands share (argument groups, the ``--out`` manager) and one module per command; no library module
  defines a command or imports argparse;
* the torch-free layers never import torch;
* every ``Backend`` subclass under ``runtime/backends/`` is in the registry, every registry entry exists, each class
  declares what it can do (extra, library, precisions, options, probed_by_auto), and a new backend needs no other
  edit for ``auto``, the bench and the CLI to see it;
* every command module is in ``restyle_rt.cli.COMMANDS``, every entry registers a command, and registering all of
  them imports nothing heavy.

Each structural rule is a function returning its violations; the tests run it on the package and on the package
with one violating module injected, so a rule that stops seeing anything fails too.
"""

from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from restyle_rt.runtime.backend import Backend
from restyle_rt.runtime.backends import REGISTRY

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "restyle_rt"

# docs/architecture.md, "Layers": top-level modules of the core layer, and the layer each may import from.
CORE = {"errors", "spec", "manifest", "artifacts", "fsio", "parity", "metrics", "progress", "__version__"}
ALLOWED: dict[str, set[str]] = {
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
ALLOWED["cli"] = set(ALLOWED) | {"cli"}  # the top layer: the commands drive every layer below
TORCH_FREE = {"core", "runtime", "engine", "align", "workflows", "serve", "package", "cli"}
TORCH_COMMANDS = {"restyle_rt.cli.demo"}  # samples the fitted model's true latent and runs the PyTorch reference

# the cli package (docs/architecture.md, "A new command")
DISPATCHER = "restyle_rt.cli"  # main + COMMANDS: reaches its commands by import string only
ENTRY_POINTS = {"restyle_rt.__main__", "restyle_rt.cli.__main__"}  # python -m restyle_rt / restyle_rt.cli
SHARED = {"restyle_rt.cli.args", "restyle_rt.cli.outputs"}  # what commands share: argument groups, --out manager

Tree = dict[str, tuple[bool, ast.Module]]  # dotted module name -> (is a package's __init__, its parsed source)


def _dotted(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def _package() -> Tree:
    """Every module of restyle_rt, parsed (read-only: :func:`_injected` copies it)."""
    return {_dotted(p): (p.name == "__init__.py", ast.parse(p.read_text(), str(p))) for p in sorted(PKG.rglob("*.py"))}


def _injected(modules: dict[str, str]) -> Tree:
    """The package with ``modules`` ({dotted name: source}) added or replacing the real ones."""
    real = _package()
    return {**real, **{m: (real.get(m, (False,))[0], ast.parse(textwrap.dedent(src))) for m, src in modules.items()}}


def _defines(tree: ast.Module, name: str) -> bool:
    return any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body)


def _commands(mods: Tree) -> set[str]:
    """The command modules: those that define ``register(subparsers)``."""
    return {m for m, (_, tree) in mods.items() if _defines(tree, "register")}


def _resolve(mods: Tree, dotted: str) -> str:
    """The module a dotted import name lands in: itself when it is a module, else its parent (an attribute)."""
    while dotted not in mods and "." in dotted:
        dotted = dotted.rsplit(".", 1)[0]
    return dotted


def _imported(mods: Tree, mod: str) -> Iterator[tuple[str, int]]:
    """(absolute name, line) of every import in ``mod``, at any depth (lazy imports included)."""
    is_pkg, tree = mods[mod]
    package = mod if is_pkg else mod.rsplit(".", 1)[0]
    for node in ast.walk(tree):
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
            yield name, node.lineno


def _imports(mods: Tree, mod: str) -> Iterator[tuple[str, int]]:
    """(imported restyle_rt module, line) for every import of restyle_rt in ``mod``."""
    for name, line in _imported(mods, mod):
        if name == "restyle_rt" or name.startswith("restyle_rt."):
            yield _resolve(mods, name), line


def _layer(mod: str) -> str:
    parts = mod.split(".")
    if len(parts) == 1:
        return "package"
    if parts[1] == "__main__":
        return "cli"
    if parts[1] in CORE:
        return "core"
    if parts[1] in ALLOWED:
        return parts[1]
    raise AssertionError(f"{mod}: in no layer of docs/architecture.md; add it to the table there and here")


# --- the rules: each returns its violations --------------------------------------------------------------------


def _layer_violations(mods: Tree) -> list[str]:
    """Imports against the "may import" column (the dispatcher: core and the argument groups only; an entry point:
    the dispatcher only)."""
    bad: list[str] = []
    for mod in mods:
        src = _layer(mod)
        for target, line in _imports(mods, mod):
            dst = _layer(target)
            dst = "core" if dst == "package" else dst  # `from .. import __version__`: the package root is light
            if mod == DISPATCHER:
                ok = dst == "core" or target == "restyle_rt.cli.args"
            elif mod in ENTRY_POINTS:
                ok = target == DISPATCHER
            else:
                ok = dst == src or dst in ALLOWED[src]
            if not ok:
                bad.append(f"{mod}:{line}: {src} imports {target} ({dst})")
    return bad


def _runtime_upward(mods: Tree) -> set[tuple[str, str]]:
    """(runtime module, layer) for every import from the runtime into a layer other than core and runtime."""
    return {
        (mod, _layer(t))
        for mod in mods
        if _layer(mod) == "runtime"
        for t, _ in _imports(mods, mod)
        if _layer(t) not in ("core", "runtime", "package")
    }


def _command_import_violations(mods: Tree) -> list[str]:
    """Imports of a command module or of the dispatcher (the entry points excepted)."""
    commands = _commands(mods) | {DISPATCHER}
    return [
        f"{mod}:{line}: imports the command module {target}"
        for mod in mods
        for target, line in _imports(mods, mod)
        if target != mod and target in commands and not (mod in ENTRY_POINTS and target == DISPATCHER)
    ]


def _placement_violations(mods: Tree) -> list[str]:
    """A command outside restyle_rt/cli/, argparse imported outside it, or a cli module that is none of: the
    dispatcher, an entry point, a shared module, a command."""
    commands = _commands(mods)
    bad = [f"{m}: defines register(subparsers) outside restyle_rt/cli/" for m in commands if _layer(m) != "cli"]
    bad += [
        f"{m}:{line}: imports argparse outside restyle_rt/cli/"
        for m in mods
        if _layer(m) != "cli"
        for name, line in _imported(mods, m)
        if name.split(".")[0] == "argparse"
    ]
    bad += [
        f"{m}: in restyle_rt/cli/ but neither a command (register) nor the dispatcher, an entry point or SHARED"
        for m in mods
        if _layer(m) == "cli" and m not in commands | SHARED | ENTRY_POINTS | {DISPATCHER}
    ]
    return bad


def _torch_violations(mods: Tree) -> list[str]:
    bad = []
    for mod, (_, tree) in mods.items():
        if _layer(mod) not in TORCH_FREE or mod in TORCH_COMMANDS:
            continue
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            bad += [f"{mod}:{node.lineno}: {n}" for n in names if n.split(".")[0] == "torch"]
    return bad


# --- the package obeys them ------------------------------------------------------------------------------------


def test_every_module_is_in_a_layer():
    for mod in _package():
        _layer(mod)


def test_imports_flow_down_the_layer_table():
    assert _layer_violations(_package()) == []


def test_the_runtime_reaches_no_layer_above_it():
    """The issue's "no arrow from the runtime up": not even from a command (they live in restyle_rt/cli/)."""
    assert _runtime_upward(_package()) == set()


def test_no_module_imports_a_command_module():
    assert _command_import_violations(_package()) == []


def test_every_command_lives_in_the_cli_package():
    assert _placement_violations(_package()) == []


def test_torch_free_layers_never_import_torch():
    assert _torch_violations(_package()) == []


# --- and each rule sees a violation injected into it -----------------------------------------------------------


@pytest.mark.parametrize(
    "rule,modules,culprit",
    [
        # the runtime reaching up, at module top and lazily inside a function (the old invert-in-runtime arrows)
        (_layer_violations, {"restyle_rt.runtime.x": "from ..cli.outputs import RunDir"}, "restyle_rt.runtime.x"),
        (
            _layer_violations,
            {
                "restyle_rt.runtime.x": """
        def f():
            from ..workflows.bootstrap import bootstrap
    """
            },
            "restyle_rt.runtime.x",
        ),
        (
            _layer_violations,
            {"restyle_rt.workflows.x": "from restyle_rt.serve import protocol"},
            "restyle_rt.workflows.x",
        ),
        # the dispatcher importing a command instead of naming it in COMMANDS; an entry point importing a command
        (_layer_violations, {"restyle_rt.cli": "from . import invert"}, "restyle_rt.cli"),
        (_layer_violations, {"restyle_rt.__main__": "from .cli.invert import run"}, "restyle_rt.__main__"),
        # a command importing another command's module (shared code goes to cli/args.py or cli/outputs.py)
        (
            _command_import_violations,
            {
                "restyle_rt.cli.x": """
        from .invert import run

        def register(subparsers):
            pass
    """
            },
            "restyle_rt.cli.x",
        ),
        (_command_import_violations, {"restyle_rt.serve.x": "from restyle_rt.cli import main"}, "restyle_rt.serve.x"),
        # command code in a library package: a register(), argparse; a cli module that is no command nor shared
        (
            _placement_violations,
            {"restyle_rt.workflows.x_cli": "def register(subparsers):\n    pass"},
            "restyle_rt.workflows.x_cli",
        ),
        (_placement_violations, {"restyle_rt.runtime.x": "def f():\n    import argparse"}, "restyle_rt.runtime.x"),
        (_placement_violations, {"restyle_rt.cli.helpers": "X = 1"}, "restyle_rt.cli.helpers"),
        # torch where it must never be
        (_torch_violations, {"restyle_rt.runtime.x": "def f():\n    import torch.nn"}, "restyle_rt.runtime.x"),
        (
            _torch_violations,
            {"restyle_rt.cli.x": "from torch import nn\ndef register(subparsers):\n    pass"},
            "restyle_rt.cli.x",
        ),
    ],
)
def test_each_rule_fails_on_an_injected_violation(rule, modules, culprit):
    assert rule(_package()) == []
    bad = rule(_injected(modules))
    assert bad and all(b.startswith(f"{culprit}:") for b in bad), bad


def test_the_runtime_rule_fails_on_an_injected_violation():
    got = _runtime_upward(_injected({"restyle_rt.runtime.x": "from ..cli import args"}))
    assert got == {("restyle_rt.runtime.x", "cli")}


# --- backends: one file and one registry line --------------------------------------------------------------------


def _backend_classes() -> dict[tuple[str, str], str]:
    """{(module, class): its ``name`` attribute} for every Backend subclass defined under runtime/backends/."""
    found: dict[tuple[str, str], str] = {}
    for mod, (_, tree) in _package().items():
        if not mod.startswith("restyle_rt.runtime.backends."):
            continue
        for node in tree.body:
            bases = {getattr(b, "id", getattr(b, "attr", "")) for b in getattr(node, "bases", [])}
            if isinstance(node, ast.ClassDef) and "Backend" in bases:
                names = [
                    s.value.value
                    for s in node.body
                    if isinstance(s, ast.Assign)
                    and any(getattr(t, "id", "") == "name" for t in s.targets)
                    and isinstance(s.value, ast.Constant)
                ]
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


def _extras() -> set[str]:
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
    assert cls.extra == "" or (cls.extra in _extras() and f"restyle-rt[{cls.extra}]" in install), (
        "extra: '' (core) or a pyproject extra, which the registry line tells to install"
    )
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

    assert len(COMMANDS) == len(set(COMMANDS))
    assert set(COMMANDS) == _commands(_package()), (
        "a module with register(subparsers) must be in restyle_rt.cli.COMMANDS"
    )


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
