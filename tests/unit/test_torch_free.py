"""The runtime needs no torch: a whole inversion runs in a fresh interpreter where ``import torch`` fails."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit


def _run(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_restyle_rt_is_light():
    got = _run("""
        import json, sys
        sys.modules["torch"] = None
        import restyle_rt
        heavy = [m for m in ("numpy", "onnxruntime", "cv2", "torch", "tqdm") if sys.modules.get(m)]
        lazy = sorted(n for n in ("Inverter", "load_artifacts") if n in dir(restyle_rt))
        print(json.dumps({"heavy": heavy, "lazy": lazy}))
    """)
    assert got == {"heavy": [], "lazy": ["Inverter", "load_artifacts"]}


def test_invert_register_imports_nothing_heavy():
    got = _run("""
        import argparse, json, sys
        sys.modules["torch"] = None
        from restyle_rt.cli import invert as cli
        p = argparse.ArgumentParser(); cli.register(p.add_subparsers())
        args = p.parse_args(["invert", "A", "x.png", "--out", "o"])
        heavy = [m for m in ("numpy", "onnxruntime", "cv2", "tqdm") if sys.modules.get(m) is not None]
        print(json.dumps({"heavy": heavy, "func": args.func.__name__}))
    """)
    assert got == {"heavy": [], "func": "run"}


def test_whole_inversion_without_torch(toy, rgb_images, tmp_path):
    """The runtime path (invert subcommand + Inverter API) with torch unimportable."""
    paths = rgb_images(3)
    out = tmp_path / "out"
    got = _run(f"""
        import argparse, json, sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        from restyle_rt.cli import invert as cli
        p = argparse.ArgumentParser(); cli.register(p.add_subparsers())
        args = p.parse_args(["invert", {str(toy[0])!r}, *{[str(p) for p in paths]!r}, "--out", {str(out)!r},
                             "--iters", "2", "--save-latents"])
        rc = args.func(args)
        from restyle_rt import Inverter
        with Inverter.load({str(toy[0])!r}) as inv:
            res = inv.invert({str(paths[0])!r}, n_iters=2)
        print(json.dumps({{"rc": rc, "torch": sys.modules["torch"] is None, "shape": list(res.latents.shape),
                          "backend": inv.backend.name}}))
    """)
    assert got == {"rc": 0, "torch": True, "shape": [1, 4, 512], "backend": "ort"}
    assert sorted(p.name for p in out.glob("*.png")) == sorted(p.stem + ".png" for p in paths)
    assert (out / "latents.npy").stat().st_size > 3 * 2 * 4 * 512 * 4


def test_restyle_rt_cli_invert_without_torch(toy, rgb_images, tmp_path):
    """The console-script path: `restyle-rt invert` through the dispatcher with torch unimportable."""
    paths = rgb_images(2)
    out = tmp_path / "out"
    got = _run(f"""
        import json, sys
        sys.modules["torch"] = None
        from restyle_rt.cli import main
        rc = main(["invert", {str(toy[0])!r}, *{[str(p) for p in paths]!r}, "--out", {str(out)!r},
                   "--iters", "1"])
        print(json.dumps({{"rc": rc, "torch": sys.modules["torch"] is None}}))
    """)
    assert got == {"rc": 0, "torch": True}
    assert sorted(p.name for p in out.glob("*.png")) == sorted(p.stem + ".png" for p in paths)
