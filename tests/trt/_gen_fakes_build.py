"""Fake TensorRT modules for the builder's per-generation branches, derived from the installed TensorRT-RTX bindings.

Standard TensorRT (8.5 on JetPack 5, 10.x, 11.x) cannot be installed next to the RTX bindings here, so the build
code paths for them are exercised against a view of the *real* RTX module: every name is the real one (same
classes, same parser, real networks and configs), except the differences each generation has that the build code
branches on, which are hidden or added (``GENERATIONS``). So the fakes cannot drift from the real API: what is not
listed as different is RTX's own, and ``test_generation_table_matches_the_real_module`` fails when a hidden name
leaves the real module or an added one appears in it.

Modelled (sources: shared/reference/tensorrt-and-peers.md §3a, §3d and the NvInfer.h enum values):

* ``NetworkDefinitionCreationFlag``: a fake enum per generation with that generation's bit values (8.5:
  EXPLICIT_BATCH=0, EXPLICIT_PRECISION=1; 10.x: EXPLICIT_BATCH=0, STRONGLY_TYPED=1; 11.x: STRONGLY_TYPED only);
  ``Builder.create_network(bits)`` decodes the bits by name, so a bit computed from the wrong member shows.
* ``BuilderFlag``: RTX's members minus ``REQUIRE_USER_ALLOCATION`` (RTX only), plus FP16 / INT8 /
  OBEY_PRECISION_CONSTRAINTS / PREFER_PRECISION_CONSTRAINTS on 8.5 and 10.x (removed in 11.0). A config answers
  the added flags from its own book-keeping and passes real members to the real config.
* Layers get the weak-typing ``precision`` / ``set_output_type`` of 8.5 / 10.x (RTX layers have neither); what is
  set is recorded (``FakeLayer.pinned``).
* Hidden per generation: ``ComputeCapability`` and ``IBuilderConfig.set/get_compute_capability`` (RTX AOT only),
  ``Runtime.get_engine_validity`` (RTX), ``ICudaEngine.create_runtime_config`` (< 10.11),
  ``ExecutionContextAllocationStrategy`` (8.5), the RTX-only runtime enums.

Not modelled: anything the builder does not branch on, and plan building itself (``build_serialized_network`` of a
fake network is refused: the real RTX builder would ignore the fake flags, so a plan would prove nothing).
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

import tensorrt_rtx_bindings as real  # the generations are derived from this module

RTX_ONLY = frozenset({"ComputeCapability", "DynamicShapesKernelSpecializationStrategy", "CudaGraphStrategy"})
WEAK_TYPING_FLAGS = {"FP16": 0, "INT8": 1, "OBEY_PRECISION_CONSTRAINTS": 9, "PREFER_PRECISION_CONSTRAINTS": 10}


@dataclass(frozen=True)
class Generation:
    """What one TensorRT generation has that the RTX bindings do not, and the reverse."""

    version: str
    network_flags: dict[str, int]
    add_builder_flags: dict[str, int] = field(default_factory=dict)
    hide_builder_flags: frozenset[str] = frozenset({"REQUIRE_USER_ALLOCATION"})
    hide: frozenset[str] = RTX_ONLY
    hide_methods: dict[str, frozenset[str]] = field(default_factory=dict)
    weak_typing: bool = False


_NO_AOT = {
    "IBuilderConfig": frozenset({"set_compute_capability", "get_compute_capability", "num_compute_capabilities"}),
    "Runtime": frozenset({"get_engine_validity"}),
}
_NO_RUNTIME_CONFIG = {**_NO_AOT, "ICudaEngine": frozenset({"create_runtime_config"})}

GENERATIONS = {
    "8.5": Generation(
        "8.5.2.2",
        {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1},
        WEAK_TYPING_FLAGS,
        hide=RTX_ONLY | {"ExecutionContextAllocationStrategy"},
        hide_methods=_NO_RUNTIME_CONFIG,
        weak_typing=True,
    ),
    "10.3": Generation(
        "10.3.0.26",
        {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1},
        WEAK_TYPING_FLAGS,
        hide_methods=_NO_RUNTIME_CONFIG,
        weak_typing=True,
    ),
    "10.13": Generation(
        "10.13.3.9",
        {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1},
        WEAK_TYPING_FLAGS,
        hide_methods=_NO_AOT,
        weak_typing=True,
    ),
    "11.1": Generation("11.1.0.6", {"STRONGLY_TYPED": 1}, hide_methods=_NO_AOT),
}


class _Member:
    """An enum member the real module does not have (hashable, ``int()``-able, with ``name``)."""

    def __init__(self, name: str, value: int):
        self.name, self.value = name, value

    def __int__(self):
        return self.value

    __index__ = __int__

    def __repr__(self):
        return f"<fake {self.name}: {self.value}>"


def _enum(name: str, members: dict[str, object]):
    return type(name, (), {**members, "__members__": dict(members)})


class _View:
    """Attribute view of a real object or class with some names hidden."""

    def __init__(self, target, hidden=frozenset(), **extra):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_hidden", frozenset(hidden))
        for k, v in extra.items():
            object.__setattr__(self, k, v)

    def __getattr__(self, name):
        if name in self._hidden:
            raise AttributeError(f"{name} is hidden by the fake TensorRT generation")
        return getattr(self._target, name)

    def __setattr__(self, name, value):
        setattr(self._target, name, value)


class FakeLayer(_View):
    """A real layer plus the weak-typing setters of 8.5 / 10.x; records what is set."""

    def __init__(self, layer):
        super().__init__(layer, pinned={})

    def __setattr__(self, name, value):
        if name == "precision":
            self.pinned["precision"] = value
        else:
            setattr(self._target, name, value)

    def set_output_type(self, index, dtype):
        self.pinned[index] = dtype


class FakeNetwork(_View):
    """A real network created with the flags a generation's bits decode to; layers wrapped once each."""

    def __init__(self, network, flags, weak_typing):
        super().__init__(network, flags=frozenset(flags), layers={}, weak_typing=weak_typing)

    def get_flag(self, flag):
        return flag.name in self.flags

    def get_layer(self, i):
        if not self.weak_typing:
            return self._target.get_layer(i)
        return self.layers.setdefault(i, FakeLayer(self._target.get_layer(i)))


class FakeConfig(_View):
    """A real config; flags the real module lacks are kept here, real ones go to the real config."""

    def __init__(self, config, hidden):
        super().__init__(config, hidden, extra_flags=set())

    def _real(self, flag):
        return not isinstance(flag, _Member)

    def set_flag(self, flag):
        self._target.set_flag(flag) if self._real(flag) else self.extra_flags.add(flag.name)

    def clear_flag(self, flag):
        self._target.clear_flag(flag) if self._real(flag) else self.extra_flags.discard(flag.name)

    def get_flag(self, flag):
        return self._target.get_flag(flag) if self._real(flag) else flag.name in self.extra_flags


class FakeBuilder(_View):
    def __init__(self, logger, gen: Generation, module):
        super().__init__(real.Builder(logger), gen=gen, module=module)

    def create_network(self, bits: int = 0):
        names = {n for n, v in self.gen.network_flags.items() if bits & (1 << v)}
        unknown = bits & ~sum(1 << v for v in self.gen.network_flags.values())
        if unknown:
            raise ValueError(f"network creation bits {bin(unknown)} are not flags of TensorRT {self.gen.version}")
        return FakeNetwork(self._target.create_network(0), names, self.gen.weak_typing)

    def create_builder_config(self):
        return FakeConfig(self._target.create_builder_config(), self.gen.hide_methods.get("IBuilderConfig", ()))

    def build_serialized_network(self, network, config):
        raise NotImplementedError("fake generations configure only; RTX would ignore their flags (see module doc)")


def make_module(gen_name: str) -> types.ModuleType:
    """A module with the real RTX bindings' names except ``GENERATIONS[gen_name]``'s differences."""
    gen = GENERATIONS[gen_name]
    mod = types.ModuleType(f"fake_tensorrt_{gen_name.replace('.', '_')}")
    for name in dir(real):
        if not name.startswith("__") and name not in gen.hide:
            setattr(mod, name, getattr(real, name))
    for cls, hidden in gen.hide_methods.items():
        setattr(mod, cls, _View(getattr(real, cls), hidden))
    mod.__version__ = gen.version
    mod.NetworkDefinitionCreationFlag = _enum(
        "NetworkDefinitionCreationFlag", {n: _Member(n, v) for n, v in gen.network_flags.items()}
    )
    flags = {n: v for n, v in real.BuilderFlag.__members__.items() if n not in gen.hide_builder_flags}
    flags.update({n: _Member(n, v) for n, v in gen.add_builder_flags.items()})
    mod.BuilderFlag = _enum("BuilderFlag", flags)
    mod.Builder = lambda logger: FakeBuilder(logger, gen, mod)
    mod.OnnxParser = lambda network, logger: real.OnnxParser(network._target, logger)
    return mod


def differences(gen_name: str) -> tuple[set, set]:
    """(names hidden from the real module, names added to it) for the drift check."""
    gen = GENERATIONS[gen_name]
    hidden = set(gen.hide) | {f"BuilderFlag.{n}" for n in gen.hide_builder_flags}
    hidden |= {f"{c}.{m}" for c, ms in gen.hide_methods.items() for m in ms}
    added = {f"BuilderFlag.{n}" for n in gen.add_builder_flags}
    added |= {
        f"NetworkDefinitionCreationFlag.{n}"
        for n in gen.network_flags
        if n not in real.NetworkDefinitionCreationFlag.__members__
    }
    return hidden, added
