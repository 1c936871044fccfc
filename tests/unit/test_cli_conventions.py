"""Command-line conventions: exit codes per error class, common options on both sides of the subcommand,
``python -m restyle_rt``, and progress bars (off when not on a terminal, ``--no-progress``, log lines through tqdm)."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from restyle_rt import errors, progress
from restyle_rt.cli import build_parser, main
from restyle_rt.cli import export as export_cli
from restyle_rt.cli import invert as invert_cli
from restyle_rt.errors import (
    EXIT_BACKEND,
    EXIT_BUILD,
    EXIT_CHECK,
    EXIT_INTERRUPTED,
    EXIT_MEANINGS,
    EXIT_OK,
    EXIT_OS,
    EXIT_SKIPPED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    ArtifactError,
    BackendUnavailable,
    BuildError,
    CheckpointError,
    InputError,
    OutputError,
    ParityError,
    Terminated,
)
from restyle_rt.runtime.cuda import CudaDriverError, CudaError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
INVERT = ["invert", "ART", "x.png", "--out", "o"]


def _raising(exc):
    def func(args):
        raise exc

    return func


# --- 1. exit codes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc,code",
    [
        (ParityError("encoder ort fp32 parity failed: latent_next: rel-L2 1 > 1e-05"), EXIT_CHECK),
        (BuildError("building the encoder fp16 engine failed: no memory"), EXIT_BUILD),
        (BackendUnavailable("backend 'trt' is unavailable: no CUDA device"), EXIT_BACKEND),
        (CudaError("cudaMalloc failed: cudaErrorMemoryAllocation"), EXIT_BACKEND),
        (CudaDriverError("cudaGetDeviceCount failed: cudaErrorInsufficientDriver"), EXIT_BACKEND),
        (InputError("--iters must be >= 1"), EXIT_USAGE),
        (ArtifactError("no manifest.json"), EXIT_USAGE),
        (CheckpointError("not a ReStyle checkpoint"), EXIT_USAGE),
        (OutputError("--out is locked"), EXIT_OS),
        (OSError(28, "No space left on device"), EXIT_OS),
    ],
)
def test_typed_error_gets_its_exit_code(monkeypatch, capfd, exc, code):
    monkeypatch.setattr(invert_cli, "run", _raising(exc))
    assert main(INVERT) == code
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("restyle-rt invert: error: "), err


def test_failed_check_build_and_backend_have_codes_of_their_own():
    codes = [
        EXIT_OK,
        EXIT_SKIPPED,
        EXIT_USAGE,
        EXIT_OS,
        EXIT_CHECK,
        EXIT_BUILD,
        EXIT_BACKEND,
        EXIT_INTERRUPTED,
        EXIT_TERMINATED,
    ]
    assert len(set(codes)) == len(codes)
    assert (EXIT_SKIPPED, EXIT_USAGE, EXIT_OS, EXIT_INTERRUPTED, EXIT_TERMINATED) == (1, 2, 3, 130, 143)
    assert errors.exit_code(ValueError("a bug")) == EXIT_USAGE  # only typed errors reach main's one-line path


def test_skipped_interrupted_terminated_and_no_command(monkeypatch, capfd):
    monkeypatch.setattr(invert_cli, "run", lambda args: EXIT_SKIPPED)
    assert main(INVERT) == EXIT_SKIPPED
    monkeypatch.setattr(invert_cli, "run", _raising(KeyboardInterrupt()))
    assert main(INVERT) == EXIT_INTERRUPTED
    monkeypatch.setattr(invert_cli, "run", _raising(Terminated(15)))
    assert main(INVERT) == EXIT_TERMINATED
    assert main([]) == EXIT_USAGE  # no subcommand: usage on stderr, not "some inputs were skipped"
    assert "usage: restyle-rt" in capfd.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["invert", "--iters"])
    assert e.value.code == EXIT_USAGE


def test_exit_code_table_lists_every_constant():
    constants = {n: v for n, v in vars(errors).items() if n.startswith("EXIT_") and isinstance(v, int)}
    assert set(constants.values()) == set(EXIT_MEANINGS)
    rows = {int(m.group(1)): m.group(2) for m in re.finditer(r"^  (\d+) +(.+)$", build_parser().format_help(), re.M)}
    assert rows == EXIT_MEANINGS
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| exit code | meaning |") :].split("\n\n")[0]
    cells = [ln.split("|")[1] for ln in table.splitlines()[2:]]
    assert sorted(int(c) for cell in cells for c in cell.split("/")) == sorted(EXIT_MEANINGS)


def test_cli_modules_return_constants_not_literals():
    # every command lives in the cli package; the --out manager (outputs.py) returns counts, not exit codes
    mods = sorted(p for p in (ROOT / "restyle_rt" / "cli").glob("*.py") if p.name != "outputs.py")
    assert len(mods) >= 15
    bad = [
        f"{m.relative_to(ROOT)}: {ln.strip()}"
        for m in mods
        for ln in m.read_text().splitlines()
        if re.search(r"\breturn (\d+\b|\d+ if .* else \d+)", ln)
    ]
    assert bad == []


# --- 2. common options before and after the subcommand ----------------------------------------------------------


@pytest.mark.parametrize(
    "argv,level,off",
    [
        (INVERT, "INFO", False),
        (["-v", *INVERT], "DEBUG", False),
        ([*INVERT, "-v"], "DEBUG", False),
        ([*INVERT, "--verbose"], "DEBUG", False),
        (["-q", *INVERT], "WARNING", True),
        ([*INVERT, "-q"], "WARNING", True),
        (["--log-level", "error", *INVERT], "ERROR", False),
        ([*INVERT, "--log-level", "debug"], "DEBUG", False),
        (["-q", *INVERT, "-v"], "DEBUG", True),  # the subcommand's side is parsed last
        (["--no-progress", *INVERT], "INFO", True),
        ([*INVERT, "--no-progress"], "INFO", True),
    ],
)
def test_common_options_parse_on_both_sides(argv, level, off):
    args = build_parser().parse_args(argv)
    assert args.log_level == level and args.progress_off is off


def test_every_subcommand_takes_the_common_options():
    p = build_parser()
    sub = next(a for a in p._actions if a.dest == "command")
    assert {"invert", "export", "build", "bench", "info", "doctor", "align"} <= set(sub.choices)
    common = {"-v", "--verbose", "-q", "--quiet", "--log-level", "--no-progress"}
    for name, q in sub.choices.items():
        assert common <= set(q._option_string_actions), name


def test_bad_log_level_is_a_usage_error(capfd):
    with pytest.raises(SystemExit) as e:
        main([*INVERT, "--log-level", "LOUD"])
    assert e.value.code == EXIT_USAGE and "--log-level" in capfd.readouterr().err


def test_log_level_applies_to_the_command_and_is_restored(monkeypatch, caplog):
    def func(args):
        log = logging.getLogger("restyle_rt")
        log.debug("dbg-line")
        log.info("info-line")
        log.warning("warn-line")
        return EXIT_OK

    monkeypatch.setattr(invert_cli, "run", func)
    before = logging.getLogger("restyle_rt").level
    got = {}
    for flags in ([], ["-q"], ["-v"]):
        caplog.clear()
        with caplog.at_level(logging.DEBUG):  # handlers take everything; the logger's level decides
            assert main([*INVERT, *flags]) == EXIT_OK
        got[" ".join(flags)] = [r.getMessage() for r in caplog.records if r.name == "restyle_rt"]
    assert got == {"": ["info-line", "warn-line"], "-q": ["warn-line"], "-v": ["dbg-line", "info-line", "warn-line"]}
    assert logging.getLogger("restyle_rt").level == before


def test_invert_with_verbose_after_the_subcommand_runs(toy, rgb_images, tmp_path):
    p = rgb_images(1)[0]
    assert main(["invert", str(toy[0]), str(p), "--out", str(tmp_path / "o"), "--iters", "1", "-v"]) == EXIT_OK
    assert (tmp_path / "o" / f"{p.stem}.png").is_file()


# --- 3. python -m restyle_rt ---------------------------------------------------------------------------------------


def test_python_dash_m():
    from restyle_rt import __version__

    r = subprocess.run([sys.executable, "-m", "restyle_rt", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"restyle-rt {__version__}", r.stderr
    r = subprocess.run([sys.executable, "-m", "restyle_rt"], capture_output=True, text=True, timeout=120)
    assert r.returncode == EXIT_USAGE and "usage: restyle-rt" in r.stderr


# --- 4. progress bars ---------------------------------------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_carriage_returns_when_stderr_is_not_a_terminal(toy, rgb_images, tmp_path, capfd):
    paths = rgb_images(3)
    assert (
        main(["invert", str(toy[0]), *map(str, paths), "--out", str(tmp_path / "o"), "--iters", "1", "--batch", "1"])
        == EXIT_OK
    )
    err = capfd.readouterr().err
    assert "inverted 3 image(s)" in err and "\r" not in err and "100%" not in err


@pytest.mark.parametrize("flag", ["--no-progress", "-q"])
def test_no_progress_on_a_terminal(toy, rgb_images, tmp_path, monkeypatch, flag):
    paths = rgb_images(2)
    argv = ["invert", str(toy[0]), *map(str, paths), "--iters", "1"]
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert main([*argv, "--out", str(tmp_path / "a")]) == EXIT_OK
    assert "invert: 100%" in tty.getvalue() and "\r" in tty.getvalue()  # a terminal gets its bar
    quiet = _Tty()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert main([*argv, "--out", str(tmp_path / "b"), flag]) == EXIT_OK
    assert "%" not in quiet.getvalue() and "\r" not in quiet.getvalue()
    assert progress.enabled()  # restored after the command


def test_global_no_progress_reaches_commands_with_their_own_flag(monkeypatch):
    seen = {}

    def func(args):
        seen.update(no_progress=args.no_progress, enabled=progress.enabled())
        return EXIT_OK

    monkeypatch.setattr(export_cli, "run_export", func)
    assert main(["--no-progress", "export", "x.pt", "--out", "o"]) == EXIT_OK
    assert seen == {"no_progress": True, "enabled": False}
    assert main(["export", "x.pt", "--out", "o"]) == EXIT_OK
    assert seen == {"no_progress": False, "enabled": True}


def test_log_lines_go_through_tqdm_during_a_command(monkeypatch):
    console = logging.StreamHandler(sys.stderr)
    seen = []
    monkeypatch.setattr(invert_cli, "run", lambda args: seen.extend(type(h).__name__ for h in logging.root.handlers))
    logging.root.addHandler(console)
    try:
        assert main(INVERT) == EXIT_OK
        assert "_TqdmLoggingHandler" in seen and console in logging.root.handlers
    finally:
        logging.root.removeHandler(console)


def test_no_console_handler_is_added_when_the_application_has_none(monkeypatch, capfd):
    """tqdm's helper would add a stderr handler of its own: logs the embedding application routes elsewhere (here:
    pytest's capture) must not appear on stderr."""
    monkeypatch.setattr(invert_cli, "run", lambda args: logging.getLogger("restyle_rt").warning("routed-elsewhere"))
    assert main(INVERT) == EXIT_OK
    assert "routed-elsewhere" not in capfd.readouterr().err


def test_every_bar_comes_from_the_progress_module():
    src = ROOT / "restyle_rt"
    users = [
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if p.name != "progress.py" and re.search(r"^\s*(from tqdm|import tqdm)", p.read_text(), re.M)
    ]
    assert users == []
