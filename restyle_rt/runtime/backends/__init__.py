"""Backend registry: names -> backend classes, imported lazily so that listing them costs nothing.

``get_backend("auto", art)``: ``trt`` when it starts, else the installed CPU backend that measures fastest on this
machine at a precision meeting its accuracy bar (decision cached; :mod:`.choose` has the rule and the
``RESTYLE_RT_AUTO_PROBE`` override). The choice is logged with what was measured.
A backend asked for by name that cannot run raises :class:`BackendUnavailable` naming what to install; there
is no silent fallback from a named backend.
"""

from __future__ import annotations

import collections.abc
import importlib
import logging
from collections.abc import Callable, Iterator, Sequence

from ...artifacts import Artifacts
from ...errors import BackendUnavailable, InputError
from ..backend import Backend

log = logging.getLogger("restyle_rt")

# name -> (module, class, what to install when the module cannot be imported). What each backend can do (its
# precisions, options, library, extra, whether `auto` probes it) is declared on its class (runtime.backend.Backend):
# adding a backend is its module and this one line.
REGISTRY: dict[str, tuple[str, str, str]] = {
    "ort": ("restyle_rt.runtime.backends.ort", "OrtBackend", "pip install 'restyle-rt' (onnxruntime is core)"),
    "trt": (
        "restyle_rt.runtime.backends.trt",
        "TrtBackend",
        "pip install 'restyle-rt[trt]' plus NVIDIA TensorRT, or 'restyle-rt[trt-rtx]'; and a CUDA GPU",
    ),
    "openvino": ("restyle_rt.runtime.backends.openvino", "OpenVinoBackend", "pip install 'restyle-rt[openvino]'"),
}
# PyTorch reference loops are benchmark baselines (restyle_rt.bench), not runtime backends: the runtime is torch-free.


class RegistryView(collections.abc.Sequence):
    """A tuple of backend names derived from :data:`REGISTRY` and the classes' declarations each time it is read,
    so that a backend registered later is seen (``AUTO_ORDER``, ``choose.MEASURED``)."""

    def __init__(self, derive: Callable[[], tuple[str, ...]]):
        self._derive = derive

    def __getitem__(self, i):
        return self._derive()[i]

    def __len__(self) -> int:
        return len(self._derive())

    def __iter__(self) -> Iterator[str]:
        return iter(self._derive())

    def __contains__(self, name) -> bool:
        return name in self._derive()

    def __eq__(self, other) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, (tuple, list, RegistryView)) else NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(self._derive())


def _probed(name: str) -> bool | None:
    """Whether ``auto`` probes backend ``name`` (its class's ``probed_by_auto``); None when it cannot be imported."""
    try:
        return bool(backend_class(name).probed_by_auto)
    except BackendUnavailable:
        return None


def auto_order() -> tuple[str, ...]:
    """The backends ``auto`` tries, in order: first those it does not probe (an accelerator, taken when it starts;
    a backend whose module cannot be imported is listed here, so that its reason is logged), then those it times
    (:func:`measured`), each group in registry order."""
    probed = {n: _probed(n) for n in REGISTRY}
    return tuple(n for n in REGISTRY if not probed[n]) + tuple(n for n in REGISTRY if probed[n])


def measured() -> tuple[str, ...]:
    """The CPU backends ``auto`` chooses between by measuring them (``probed_by_auto``), in registry order."""
    return tuple(n for n in REGISTRY if _probed(n))


# `auto`: the accelerator backends first; the CPU backends (choose.MEASURED) are then ranked by a measurement on this
# machine. This order is used as is only with RESTYLE_RT_AUTO_PROBE=0 (or when a single CPU backend is installed).
AUTO_ORDER: Sequence[str] = RegistryView(auto_order)


def precisions() -> dict[str, tuple[str, ...]]:
    """``{backend: the precisions it accepts, its default first}`` for every registered backend that takes a
    ``precision`` option and can be imported."""
    out = {}
    for n in REGISTRY:
        try:
            cls = backend_class(n)
        except BackendUnavailable:
            continue
        if "precision" in cls.options:
            out[n] = tuple(cls.precisions)
    return out


def names() -> tuple[str, ...]:
    """Every registered backend name, plus ``"auto"``."""
    return ("auto",) + tuple(REGISTRY)


def backend_class(name: str) -> type[Backend]:
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
                f"backend {name!r} is not part of this restyle-rt build ({module} is missing); update restyle-rt"
            ) from None
        raise BackendUnavailable(f"backend {name!r} needs {e.name or e}; {extra}") from None
    return getattr(mod, cls)


def available(name: str) -> tuple[bool, str]:
    """(True, "") when backend ``name`` can run here, else (False, the backend's reason)."""
    try:
        cls = backend_class(name)
    except BackendUnavailable as e:
        return False, str(e)
    return cls.available()


def get_backend(name: str, artifacts: Artifacts, *, probe_batch: int | None = None, **opts) -> Backend:
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
    """The options ``cls`` accepts (its declared ``options``; with ``auto`` the caller cannot know which backend
    gets them)."""
    dropped = sorted(set(opts) - set(cls.options))
    if dropped:
        log.debug("backend %s ignores options %s", cls.name, dropped)
    return {k: v for k, v in opts.items() if k in cls.options}
