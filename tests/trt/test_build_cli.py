"""``restyle-rt build`` lives in the cli package, and registering it imports nothing heavy (no torch, numpy,
onnx or TensorRT): the dispatcher registers every command on torch-free runtime boxes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path


def test_build_command_lives_in_the_cli_package():
    import restyle_rt
    from restyle_rt import cli

    assert "restyle_rt.cli.build" in cli.COMMANDS and "restyle_rt.engine.cli" not in cli.COMMANDS
    root = Path(restyle_rt.__file__).parent
    assert not (root / "engine_cli.py").exists() and not (root / "engine" / "cli.py").exists()


def test_build_register_imports_nothing_heavy():
    code = textwrap.dedent("""
        import argparse, json, sys
        sys.modules["torch"] = None
        from restyle_rt.cli import build as cli
        p = argparse.ArgumentParser(); cli.register(p.add_subparsers())
        args = p.parse_args(["build", "A", "--batch", "1,2,4", "--compute-capability", "8.6"])
        heavy = [m for m in ("numpy", "onnx", "onnxruntime", "tensorrt", "tensorrt_rtx_bindings", "cuda", "torch")
                 if sys.modules.get(m) is not None]
        print(json.dumps({"heavy": heavy, "func": args.func.__module__, "batch": args.batch.to_list()}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"heavy": [], "func": "restyle_rt.cli.build", "batch": [1, 2, 4]}
