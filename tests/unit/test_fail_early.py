"""Bad arguments and unusable outputs are refused at parse time or before any model is loaded."""

from __future__ import annotations

import json
import shutil

import pytest

from restyle_rt import artifacts
from restyle_rt.cli import main

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "argv,option",
    [
        (["demo", "--iters", "0"], "--iters"),
        (["bench", "ART", "--json", "/etc/hostname/results.json"], "--json"),
        (["bench", "ART", "--json", "DIR"], "--json"),
        (["bench", "ART", "--plot", "/etc/hostname/p.png"], "--plot"),
        (["bench", "ART", "--early-exit", "-0.5"], "--early-exit"),
    ],
)
def test_refused_at_parse_time(toy, tmp_path, capfd, argv, option):
    argv = [str(toy[0]) if a == "ART" else str(tmp_path) if a == "DIR" else a for a in argv]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and option in capfd.readouterr().err


def test_bench_checkpoint_must_be_the_exported_one(toy, tmp_path, capfd):
    art = tmp_path / "art"
    shutil.copytree(toy[0], art)
    exported, other = tmp_path / "a.pt", tmp_path / "b.pt"
    exported.write_bytes(b"exported")
    other.write_bytes(b"another model")
    man = json.loads((art / "manifest.json").read_text())
    man["source"] = {"checkpoint": "a.pt", "sha256": artifacts.sha256_file(exported)}
    artifacts.write_manifest(art, man)
    assert main(["bench", str(art), "--checkpoint", str(other), "--backend", "ort", "--repeat", "1"]) == 2
    err = capfd.readouterr().err
    assert "is not the checkpoint" in err and "a.pt" in err


def test_demo_output_checked_first(tmp_path, capfd):
    blocker = tmp_path / "f"
    blocker.write_text("")
    assert main(["demo", "--out", str(blocker / "demo")]) == 3
    assert "is not a directory" in capfd.readouterr().err


def test_build_checks_the_engines_directory_before_tensorrt(toy, tmp_path, capfd):
    art = tmp_path / "art"
    shutil.copytree(toy[0], art)
    (art / "engines").write_text("a file where the engines directory goes")
    assert main(["build", str(art)]) == 3
    assert "engines directory" in capfd.readouterr().err
