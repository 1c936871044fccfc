"""Backend registry: names -> backend classes, imported lazily so that listing them costs nothing.

``get_backend("auto", art)``: ``trt`` when it starts, else the installed CPU backend that measures fastest on this
machine at a precision meeting its accuracy bar (decision cached; :mod:`.choose` has the rule and the
``RESTYLE_RT_AUTO_PROBE`` override). The choice is logged with what was measured.
A backend asked for by name that cannot run raises :class:`BackendUnavailable` naming what to install; there
is no silent fallback from a named backend.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from typing import Dict, Optional, Tuple, Type

from ...artifacts import Artifacts
from ...errors import BackendUnavailable, InputError
from ..backend import Backend

log = logging.getLogger("restyle_rt")

# name -> (module, class, what to install when it is unavailable)
REGISTRY: Dict[str, Tuple[str, str, str]] = {
    "ort": ("restyle_rt.runtime.backends.ort", "OrtBackend", "pip install 'restyle-rt' (onnxruntime is core)"),
    "trt": ("restyle_rt.runtime.backends.trt", "TrtBackend",
            "pip install 'restyle-rt[trt]' plus NVIDIA TensorRT, or 'restyle-rt[trt-rtx]'; and a CUDA GPU"),
    "openvino": ("restyle_rt.runtime.backends.openvino", "OpenVinoBackend", "pip install 'restyle-rt[openvino]'"),
}
# PyTorch reference loops are benchmark baselines (restyle_rt.bench), not runtime backends: the runtime is torch-free.
# `auto`: the GPU backend first; the CPU backends (choose.MEASURED) are then ranked by a measurement on this machine
# (which is faster depends on the CPU, the model and the batch). This order is used as is only with
# RESTYLE_RT_AUTO_PROBE=0 (or when a single CPU backend is installed).
AUTO_ORDER = ("trt", "ort", "openvino")


def names() -> Tuple[str, ...]:
    """Every registered backend name, plus ``"auto"``."""
    return ("auto",) + tuple(REGISTRY)


def backend_class(name: str) -> Type[Backend]:
    """Import and return the class registered as ``name``.

    Raises:
        InputError: ``name`` is not registered.
        BackendUnavailable: its module (or a dependency it imports) is missing; names the pip extra.
    """
    if name not in REGISTRY:
        raise InputError(f"unknown backend {name!r}; choose one of {', '.join(names())}")
    module, cls, extra = REGISTRY[name]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        if getattr(e, "name", None) == module:
            raise BackendUnavailable(
                f"backend {name!r} is not part of this restyle-rt build "
                f"({module} is missing); update restyle-rt"
            ) from None
        raise BackendUnavailable(f"backend {name!r} needs {e.name or e}; {extra}") from None
    return getattr(mod, cls)


def available(name: str) -> Tuple[bool, str]:
    """(True, "") when backend ``name`` can run here, else (False, the backend's reason)."""
    try:
        cls = backend_class(name)
    except BackendUnavailable as e:
        return False, str(e)
    return cls.available()


def get_backend(name: str, artifacts: Artifacts, *, probe_batch: Optional[int] = None, **opts) -> Backend:
    """Create a backend for ``artifacts``.

    Args:
        name: a registered name, or ``"auto"``: ``trt`` when it starts, else the CPU backend measured fastest
            here (:func:`restyle_rt.runtime.backends.choose.choose`; each one skipped is logged with its reason;
            options a backend does not take are dropped).
        artifacts: the loaded artifacts directory.
        probe_batch: with ``"auto"``, the batch the caller will run, which the measured choice times (ignored
            by a named backend).
        **opts: passed to the backend's constructor.

    Raises:
        InputError: unknown name.
        BackendUnavailable: a named backend cannot run here, or (``auto``) none can.
        ArtifactError: the artifacts do not suit the (named) backend.
    """
    if name != "auto":
        ok, why = available(name)
        if not ok:
            extra = REGISTRY[name][2]
            raise BackendUnavailable(f"backend {name!r} is unavailable: {why} ({extra})")
        return backend_class(name)(artifacts, **opts)
    from .choose import choose

    return choose(artifacts, opts, batch=probe_batch)


def accepted_options(cls, opts: dict) -> dict:
    """The options ``cls`` accepts (with ``auto`` the caller cannot know which backend gets them)."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(opts)
    dropped = sorted(set(opts) - set(params))
    if dropped:
        log.debug("backend %s ignores options %s", cls.name, dropped)
    return {k: v for k, v in opts.items() if k in params}
