"""What pyproject.toml, .ci/run and the README claim about versions agrees with what is run."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
# Python minors the suite has been run on (CI: 3.11; the unit tier once on 3.10, README "Tests")
RUN_ON = {(3, 10), (3, 11)}


def _pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _extra(name: str) -> dict:
    from packaging.requirements import Requirement

    reqs = [Requirement(s) for s in _pyproject()["project"]["optional-dependencies"][name]]
    return {r.name.lower(): r for r in reqs}


def _min_python() -> tuple:
    spec = _pyproject()["project"]["requires-python"]
    m = re.fullmatch(r">=\s*(\d+)\.(\d+)", spec.strip())
    assert m, f"requires-python {spec!r}: expected a plain lower bound"
    return int(m.group(1)), int(m.group(2))


def test_requires_python_is_a_python_that_was_run():
    low = _min_python()
    assert low in RUN_ON, f"requires-python claims {low}, but the suite has only run on {sorted(RUN_ON)}"
    assert low <= sys.version_info[:2], f"this Python {sys.version_info[:2]} is below the claimed {low}"


def test_sources_parse_at_the_claimed_minimum():
    """No grammar newer than requires-python (best effort: ast's feature_version)."""
    low = _min_python()
    for f in sorted((ROOT / "restyle_rt").rglob("*.py")):
        ast.parse(f.read_text(), str(f), feature_version=low)


def test_export_torch_is_bounded_to_what_is_tested():
    torch_req = _extra("export")["torch"]
    uppers = [s for s in torch_req.specifier if s.operator in ("<", "<=")]
    assert uppers, f"export extra {torch_req}: no upper bound (the TorchScript exporter is deprecated upstream)"
    assert "2.5" not in torch_req.specifier, "torch.onnx.export(dynamo=False) needs torch >= 2.5"
    try:
        import importlib.metadata as md

        have = md.version("torch")
    except Exception:
        pytest.skip("torch not installed")
    assert torch_req.specifier.contains(have.split("+")[0], prereleases=True), (have, str(torch_req))


def _constraints() -> dict:
    pins = {}
    for line in (ROOT / ".ci" / "serve-constraints.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)", line)
        assert m, f"not a pin: {line!r}"
        pins[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return pins


def test_serve_constraints_pin_the_serve_extra():
    pins = _constraints()
    assert "restyle-rt" not in pins
    reqs = dict(_extra("serve"), **{k: v for k, v in _extra("test").items() if k != "pytest"})
    reqs["pytest"] = _extra("test")["pytest"]
    for name, req in reqs.items():
        key = re.sub(r"[-_.]+", "-", name).lower()
        assert key in pins, f"{name} is not pinned in .ci/serve-constraints.txt"
        assert req.specifier.contains(pins[key], prereleases=True), f"{name}=={pins[key]} violates {req}"
    assert pins["numpy"].split(".")[0] == "1"  # PyTriton 0.7
    run = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"\$SERVE_VENV/bin/python\" -m pip install .*-c \.ci/serve-constraints\.txt", run)
    assert "-c .ci/serve-constraints.txt" in (ROOT / "README.md").read_text()


def test_readme_says_how_to_get_the_cpu_torch():
    text = (ROOT / "README.md").read_text()
    first = text[text.index("## First commands") : text.index("## With an official checkpoint")]
    assert re.search(r"^python3 -m pip install torch==2\.13\.0 -e '\.\[[a-z0-9,-]+\]'", first, re.M)  # unchanged
    assert "https://download.pytorch.org/whl/cpu" in first


def test_pytest_timeout_is_installed_and_above_the_slowest_test():
    cfg = _pyproject()["tool"]["pytest"]["ini_options"]
    assert {"pytest-timeout", "hypothesis"} <= set(_extra("test"))
    slowest = 2057  # s: the slow tier's church-256 INT8 calibration (tests/calibration/test_calibration_church256.py)
    assert int(cfg["timeout"]) >= 1.5 * slowest, "a real-size test would be killed by the per-test timeout"
