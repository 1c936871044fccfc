"""What ``restyle-rt serve`` needs of its environment, checked up front, and two PyTriton fixes.

* PyTriton 0.7 needs numpy < 2: with numpy 2 its tensor store answers with *empty outputs* and no error (measured
  here). The ``[serve]`` extra pins ``numpy<2``, so install it in its own virtual environment; the rest of
  restyle-rt keeps numpy 2. :func:`check` refuses numpy 2 with that fix instead of serving empty answers.
* Triton's Python-backend stub links ``libpython3.X.so``; with a pyenv (or any non-system) Python the dynamic
  loader may find the *system* libpython first, whose stdlib does not match the interpreter's (the stub then dies
  in ``multiprocessing`` with ``'_thread.RLock' object has no attribute '_recursion_count'``).
  :func:`fix_libpython_path` puts the running interpreter's ``LIBDIR`` first on ``LD_LIBRARY_PATH``, which the
  server process inherits.
* PyTriton answers every request of an execution with the same error when its inference function raises, so one
  bad request would fail its batch mates. :func:`patch_proxy_source` teaches PyTriton's proxy model (the
  ``model.py`` it copies into Triton's model store) to turn a response carrying :data:`ERROR_KEY` into a Triton
  error response for that request alone (``INVALID_ARG``, HTTP 400). The patch is anchored on PyTriton 0.7's
  source text and refuses to start when the anchor is missing, rather than silently failing whole batches.
"""

from __future__ import annotations

import logging
import os
import sysconfig
from pathlib import Path

from ..errors import BackendUnavailable

log = logging.getLogger("restyle_rt")

ERROR_KEY = "__restyle_error__"
INSTALL_HINT = (
    "install the serve extra in its own virtual environment (it pins numpy<2 for PyTriton): "
    "python3 -m venv .venv-serve && .venv-serve/bin/pip install 'restyle-rt[serve]'"
)

_ANCHOR = (
    "def _wrap_response(response: Response, requested_outputs_names, model_outputs_dict):\n"
    "    if response.data is not None:\n"
)
_PATCH = (
    _ANCHOR
    + f"        if {ERROR_KEY!r} in response.data:  # restyle-rt: this request alone failed\n"
    + f"            _msg = response.data[{ERROR_KEY!r}].reshape(-1)[0]\n"
    + "            _msg = _msg.decode('utf-8', 'replace') if isinstance(_msg, bytes) else str(_msg)\n"
    + "            return pb_utils.InferenceResponse(  # pytype: disable=module-attr\n"
    + "                output_tensors=[],\n"
    + "                error=pb_utils.TritonError(_msg, pb_utils.TritonError.INVALID_ARG),\n"
    + "            )\n"
)


def check() -> None:
    """Raise :class:`BackendUnavailable` unless PyTriton and a numpy it works with are installed."""
    import numpy as np

    try:
        import pytriton  # noqa: F401
    except ImportError:
        raise BackendUnavailable(f"restyle-rt serve needs PyTriton (nvidia-pytriton); {INSTALL_HINT}") from None
    major = int(np.__version__.split(".")[0])
    if major >= 2:
        raise BackendUnavailable(
            f"PyTriton 0.7 answers with empty outputs under numpy {np.__version__} (it needs numpy<2); {INSTALL_HINT}"
        )


def fix_libpython_path() -> None:
    """Put this interpreter's libpython directory first on ``LD_LIBRARY_PATH`` (see the module docstring)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    ldlib = sysconfig.get_config_var("LDLIBRARY") or ""
    if not libdir or not sysconfig.get_config_var("Py_ENABLE_SHARED") or not (Path(libdir) / ldlib).exists():
        return  # a static interpreter: the stub's own libpython lookup is all there is
    parts = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if parts[:1] != [libdir]:
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir] + [p for p in parts if p != libdir])
        log.debug("LD_LIBRARY_PATH starts with %s (the interpreter's libpython)", libdir)


def patch_proxy_source(text: str) -> str:
    """PyTriton's proxy ``model.py`` with per-request errors (see the module docstring).

    Raises:
        BackendUnavailable: the installed PyTriton's proxy does not have the expected code to patch.
    """
    if ERROR_KEY in text:
        return text
    if _ANCHOR not in text:
        raise BackendUnavailable(
            "this PyTriton's proxy model differs from 0.7's, so per-request errors cannot be enabled; "
            "install the version the serve extra pins (nvidia-pytriton 0.7.x)"
        )
    return text.replace(_ANCHOR, _PATCH, 1)


def install_proxy_patch() -> None:
    """Make PyTriton write the patched proxy ``model.py`` into the model store it generates. Idempotent."""
    from pytriton.models import model as pt_model

    cls = pt_model.Model
    if getattr(cls, "_restyle_patched", False):
        return
    original_generate = cls.generate_model
    original_files = cls.get_proxy_model_files

    def generate_model(self, model_repository: Path) -> None:
        original_generate(self, model_repository)
        path = Path(model_repository) / self.model_name / str(self.model_version) / "model.py"
        path.write_text(patch_proxy_source(path.read_text()))

    def get_proxy_model_files(self):
        files = original_files(self)
        key = f"file:{self.model_version}/model.py"
        files[key] = patch_proxy_source(files[key].decode()).encode()
        return files

    patch_proxy_source((Path(pt_model.__file__).parent.parent / "proxy" / "model.py").read_text())  # fail early
    cls.generate_model = generate_model
    cls.get_proxy_model_files = get_proxy_model_files
    cls._restyle_patched = True
