"""The ``--out`` directory of one ``restyle-rt invert`` run: what it will write, checked before any model loads.
(The checks and the lock are module functions that ``edit``, ``animate``, ``eval`` and ``video`` use too.)

* **Never an input.** ``--out`` may not be empty, nor an input directory, and no planned output may be an input
  file (``--save-steps`` included); images already under ``--out`` are not picked up from an input directory that
  contains it, so a rerun never inverts its own earlier outputs.
* **One writer.** A lock (``DIR/.restyle-rt/lock``, ``flock``) refuses a second process writing the same ``--out``.
* **Complete files only.** Every file goes through :mod:`restyle_rt.fsio` (temporary name, then rename). An image is
  *complete* when all its outputs exist; with ``--save-latents`` its latents are kept per image under
  ``DIR/.restyle-rt/latents/`` as soon as its batch is done, and ``latents.npy`` / ``latents.json`` are assembled
  from them at the end of the run, or when it is interrupted.
* **Resume.** ``--resume`` skips complete images (the run settings must match the ones recorded in
  ``DIR/.restyle-rt/run.json``); without it, existing outputs are replaced and the run says how many.
"""

from __future__ import annotations

import json
import logging
import os
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import fsio
from ..errors import InputError, OutputError

log = logging.getLogger("restyle_rt")
STATE = ".restyle-rt"


class RunDir:
    """Planned outputs, collision checks, lock, resume state and latents store of one invert ``--out``.

    Args:
        out: the ``--out`` directory.
        settings: what decides the outputs' content (iterations, early exit, artifacts): recorded for ``--resume``.
        save_steps, strip, save_latents: which outputs each image gets.
    """

    def __init__(self, out, settings: dict, save_steps: bool, strip: bool, save_latents: bool):
        if str(out) == "":
            raise OutputError("--out is empty; name an output directory, e.g. --out inverted/")
        if isinstance(out, bytes):
            raise InputError(f"--out {out!r} is bytes; pass a str or Path")
        self.out = Path(out)
        self.settings = dict(settings)
        self.save_steps, self.strip, self.save_latents = save_steps, strip, save_latents
        # steps written per image: --bootstrap adds model 1's step before the --iters steps of model 2
        self.n_steps = int(settings["iters"]) + (1 if settings.get("bootstrap") else 0)
        self._lock = None

    # --- planning and checks ---------------------------------------------------------------------------------

    def image_outputs(self, name: str) -> list[Path]:
        """Every file written for the image ``name`` (the latents record last)."""
        files = [self.out / f"{name}.png"]
        if self.save_steps:
            files += [self.out / "steps" / str(t) / f"{name}.png" for t in range(1, self.n_steps + 1)]
        if self.strip:
            files.append(self.out / "strips" / f"{name}.png")
        if self.save_latents:
            files.append(self._latent_file(name))
        return files

    def check_out(self, inputs: Sequence[os.PathLike]) -> None:
        """Refuse an ``--out`` that is unusable or one of the input directories (before anything is read).

        Raises:
            OutputError: naming the problem.
        """
        check_out_dir(self.out, inputs)

    def exclude_outputs(self, paths: Sequence[Path], inputs: Sequence[os.PathLike]) -> list[Path]:
        """Drop files under ``--out`` found by walking an input directory that contains it (earlier outputs);
        files named explicitly are kept."""
        return exclude_under(self.out, paths, inputs)

    def check_inputs(self, paths: Sequence[Path], names: Sequence[str]) -> None:
        """Refuse an ``--out`` that would overwrite an input (before anything is loaded).

        Raises:
            OutputError: a planned output is an input file.
        """
        check_no_overwrite([f for name in names for f in self.image_outputs(name)], paths)

    # --- lock and resume -------------------------------------------------------------------------------------

    def lock(self) -> None:
        """Create ``--out`` and hold its lock until :meth:`close` (or process exit).

        Raises:
            OutputError: another process holds it.
        """
        self._lock = lock_dir(self.out, "invert")

    def close(self) -> None:
        """Release the lock."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def plan(self, names: Sequence[str], resume: bool) -> list[str]:
        """The names still to do; with ``resume``, complete images are skipped (settings must match).

        Logs how many existing files will be replaced. Records the settings for a later ``--resume``.

        Raises:
            InputError: ``resume`` with settings that differ from the recorded ones.
        """
        run_file = self.out / STATE / "run.json"
        if resume and run_file.is_file():
            before = json.loads(run_file.read_text())
            keys = [*self.settings, *(k for k in before if k not in self.settings)]  # absent: an option left off
            diff = {k: (before.get(k), self.settings.get(k)) for k in keys if before.get(k) != self.settings.get(k)}
            if diff:
                said = ", ".join(f"{k} {a!r} then, {b!r} now" for k, (a, b) in diff.items())
                raise InputError(
                    f"--resume: {self.out} was written with other settings ({said}); rerun with the "
                    "same ones, or without --resume to replace the outputs"
                )
        todo, replaced = [], 0
        for name in names:
            files = self.image_outputs(name)
            present = sum(f.is_file() for f in files)
            if resume and present == len(files):
                continue
            replaced += present
            todo.append(name)
        if resume and len(todo) < len(names):
            log.info(
                "--resume: %d of %d image(s) already complete in %s; skipping them",
                len(names) - len(todo),
                len(names),
                self.out,
            )
        if replaced:
            log.warning(
                "replacing %d existing output file(s) in %s%s",
                replaced,
                self.out,
                "" if resume else " (--resume skips images whose outputs are complete)",
            )
        fsio.write_json(run_file, self.settings)
        return todo

    # --- latents ---------------------------------------------------------------------------------------------

    def _latent_file(self, name: str) -> Path:
        return self.out / STATE / "latents" / f"{name}.npz"

    def keep_latents(self, name: str, step_latents: np.ndarray, steps_used: int) -> None:
        """Keep one image's per-step latents [T, S, 512] (atomically, as soon as its batch is done)."""
        with fsio.atomic_open(self._latent_file(name), "wb") as f:
            np.savez(f, latents=np.asarray(step_latents, np.float32), steps_used=np.int64(steps_used))

    def write_latents_index(self, names: Sequence[str]) -> int:
        """Assemble ``latents.npy`` [N, T, S, 512] + ``latents.json`` from every image of ``names`` whose latents
        are kept (in ``names`` order); returns N. Called at the end of a run and on interrupt."""
        done: dict[str, Path] = {}
        for n in names:
            f = self._latent_file(n)
            if f.is_file():
                done[n] = f
        if not done:
            return 0
        with np.load(next(iter(done.values()))) as z:
            shape = z["latents"].shape  # [T, S, 512]
        lat = np.empty((len(done), *shape), np.float32)  # [N, T, S, 512]
        steps = []
        for i, f in enumerate(done.values()):
            with np.load(f) as z:
                lat[i] = z["latents"]
                steps.append(int(z["steps_used"]))
        fsio.save_npy(self.out / "latents.npy", lat, durable=True)
        index = {
            "inputs": list(done),
            "shape": list(lat.shape),
            "n_iters": self.n_steps,
            "steps_used": steps,
            "layout": "latents.npy[i, t]: inputs[i] after step t+1; steps past steps_used repeat the last",
        }
        fsio.write_text(self.out / "latents.json", json.dumps(index, indent=1) + "\n")
        return len(done)


# --- shared by every command that writes under --out (invert, edit, animate) -----------------------------------


def check_out_dir(out: Path, inputs: Sequence[os.PathLike], what: str = "--out") -> None:
    """Refuse an output directory that is unusable or one of the input directories (before anything is read).

    Raises:
        OutputError: naming the problem.
    """
    fsio.check_writable_dir(out, what)
    resolved = Path(out).resolve()
    for i in inputs:
        if Path(i).is_dir() and Path(i).resolve() == resolved:
            raise OutputError(
                f"{what} {out} is the input directory {i}: outputs would overwrite or mix "
                "with the inputs; choose another directory"
            )


def exclude_under(out: Path, paths: Sequence[Path], inputs: Sequence[os.PathLike]) -> list[Path]:
    """``paths`` less the files under ``out`` that were found by walking an input directory containing it
    (earlier outputs); files named explicitly are kept."""
    resolved = Path(out).resolve()
    walked = [Path(i).resolve() for i in inputs if Path(i).is_dir() and Path(i).resolve() in resolved.parents]
    if not walked:
        return list(paths)
    keep = [p for p in paths if resolved not in Path(p).resolve().parents]
    if len(keep) < len(paths):
        log.info("not reading %d file(s) under %s (earlier outputs)", len(paths) - len(keep), out)
    return keep


def check_no_overwrite(outputs: Sequence[Path], inputs: Sequence[Path], what: str = "--out") -> None:
    """Refuse when a planned output file is one of the input files.

    Raises:
        OutputError: naming the output and the input.
    """
    sources = {Path(p).resolve(): p for p in inputs}
    for f in outputs:
        if Path(f).resolve() in sources:
            raise OutputError(
                f"output {f} would overwrite the input {sources[Path(f).resolve()]}; choose another {what}"
            )


_HELD_LOCKS: weakref.WeakSet = weakref.WeakSet()  # lock files this process holds open


def _drop_locks_in_child() -> None:
    """After ``fork``: close the child's copies of the lock files. An ``flock`` belongs to the open file, which a
    forked child shares; a child that outlives the command (OpenVINO's telemetry forks one from a thread) would
    otherwise keep ``--out`` locked after the parent released it."""
    for f in list(_HELD_LOCKS):
        try:
            f.close()
        except OSError:
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_locks_in_child)


def lock_dir(directory: Path, command: str, name: str = "lock", target: Path | None = None):
    """Create ``directory/.restyle-rt/`` and take an exclusive ``flock`` on its file ``name`` (the holder's pid
    in it); returns the open file (closing it releases the lock), or None where there is no ``fcntl``.
    ``target`` is what the lock guards, named in the error (default: ``directory``).

    Raises:
        OutputError: another process holds it (names its pid).
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return None
    state = Path(directory) / STATE
    state.mkdir(parents=True, exist_ok=True)
    f = open(state / name, "a+")  # noqa: SIM115 - held open (and locked) until the caller closes it
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        who = f.read().strip() or "?"
        f.close()
        raise OutputError(
            f"--out {target or directory} is being written by another restyle-rt {command} "
            f"(pid {who}); wait for it or choose another --out"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    _HELD_LOCKS.add(f)
    return f
