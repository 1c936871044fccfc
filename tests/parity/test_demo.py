"""The README's first command: `restyle-rt demo` runs the whole job end to end (it broke once unnoticed)."""

import re

import pytest

from restyle_rt.cli import main

pytestmark = pytest.mark.parity


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--iters", "2"]) == 0
    text = capsys.readouterr().out
    assert (out / "artifacts" / "manifest.json").is_file()
    assert (out / "target.png").is_file() and (out / "inversion.png").is_file()
    parity = [float(v) for v in re.findall(r"\|\s+([0-9.]+e[-+][0-9]+)\s*$", text, re.M)]
    assert len(parity) == 2 and max(parity) < 1e-4, text  # per-step runtime-vs-PyTorch latent rel-L2
