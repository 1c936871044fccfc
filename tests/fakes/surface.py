"""Call surfaces read from the installed real modules, so a fake cannot accept a call the real API would refuse.

* cuda-bindings (Cython): ``inspect.signature`` gives names and arity; the docstring's first line gives the C types
  (``cudaMemcpyAsync(dst, src, size_t count, kind: cudaMemcpyKind, stream)``): C integers must be ints, enum
  parameters must be members of the real enum class; its Returns section gives the values returned. For CUDA majors
  whose cuda-python is not installed the same facts come from ``cudart_signatures.json`` (:func:`mirror_recorded`).
* TensorRT(-RTX) bindings (pybind11): each overload's signature is in the docstring
  (``set_tensor_address(self: ...IExecutionContext, name: str, memory: typing.SupportsInt) -> bool``); a call must
  bind to one overload with arguments of the declared kinds.

:func:`mirror_function` / :func:`mirror_class` wrap a fake's implementation with the real surface and refuse, at
fake-creation time, any fake member that the real module does not have (a renamed or removed API makes the fakes,
and so the tests, fail).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Sequence

C_INTS = ("int", "unsigned int", "size_t", "unsigned long long", "long long", "long", "unsigned long")


class SurfaceError(TypeError):
    """A call the real API would refuse (wrong name, arity, keyword or argument kind)."""


# --- cuda-bindings (Cython) ------------------------------------------------------------------------------------


def cython_surface(real_fn) -> tuple[inspect.Signature, dict[str, str]]:
    """(signature, {param: declared type}) of a cuda-bindings function."""
    return inspect.signature(real_fn), doc_types(doc_first_line(real_fn))


def doc_first_line(real_fn) -> str:
    """The C-typed call line a cuda-bindings docstring starts with."""
    return (real_fn.__doc__ or "").strip().split("\n")[0].strip()


def doc_types(first: str) -> dict[str, str]:
    """{param: declared type} of a call line (``cudaGraphInstantiate(graph, char *pLogBuffer, size_t bufferSize)``)."""
    m = re.match(r"\w+\((.*)\)", first)
    types = {}
    for part in _split_params(m.group(1) if m else ""):
        if ":" in part:  # "kind: cudaMemcpyKind"
            name, typ = (x.strip() for x in part.split(":", 1))
        else:  # "size_t count" / "dst" / "char *pLogBuffer"
            words = part.replace("*", "* ").split()
            name, typ = words[-1], " ".join(words[:-1])
        types[name] = typ
    return types


def cython_returns(real_fn) -> list[str]:
    """The values a cuda-bindings function returns, from its docstring's Returns section.

    ``["cudaError_t", "pGraphExec: cudaGraphExec_t", "pErrorNode: cudaGraphNode_t"]``: one entry per tuple element.
    """
    lines = (real_fn.__doc__ or "").split("\n")
    out: list[str] = []
    for i, line in enumerate(lines[:-1]):
        if line.strip() == "Returns" and set(lines[i + 1].strip()) == {"-"}:
            indent = len(line) - len(line.lstrip())
            for entry in lines[i + 2 :]:
                if entry.strip() and len(entry) - len(entry.lstrip()) < indent:
                    break
                if not entry.strip() or len(entry) - len(entry.lstrip()) > indent:
                    continue  # blank, or an entry's description
                if entry.strip().startswith("---"):  # the next section's underline
                    out.pop()
                    break
                name, _, typ = (x.strip() for x in entry.partition(" : "))
                typ = re.sub(r":py:obj:`~?\.?([^`]+)`", r"\1", typ)
                out.append(f"{name}: {typ}" if typ else name)
            break
    return out


def _check_cython_arg(real_module, fn_name: str, name: str, typ: str, value) -> None:
    if typ in C_INTS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SurfaceError(f"{fn_name}({name}=...): expects a C {typ}, got {type(value).__name__} {value!r}")
    elif typ and hasattr(real_module, typ) and isinstance(getattr(real_module, typ), type):
        enum = getattr(real_module, typ)
        if not isinstance(value, enum):
            raise SurfaceError(f"{fn_name}({name}=...): expects {typ}, got {type(value).__name__} {value!r}")


def mirror_function(real_module, name: str, impl: Callable) -> Callable:
    """``impl`` behind the real ``real_module.name`` surface (raises SurfaceError where the real one would)."""
    real_fn = getattr(real_module, name, None)
    if real_fn is None:
        raise AssertionError(f"fake implements {name}, which {real_module.__name__} does not have")
    sig, types = cython_surface(real_fn)
    return _mirror(real_module, name, impl, sig, types, cython_returns(real_fn), real_module.__name__)


def mirror_recorded(entry: dict, enums, name: str, impl: Callable, origin: str) -> Callable:
    """``impl`` behind a recorded surface: an entry of ``cudart_signatures.json`` (for a cuda-python not installed).

    Args:
        entry: ``{"params": [...], "types": {...}, "returns": [...]}``.
        enums: a module whose enum classes stand in for the recorded enum type names (the installed cuda-bindings).
        origin: the recorded package, for messages.
    """
    sig = inspect.Signature([inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in entry["params"]])
    return _mirror(enums, name, impl, sig, entry["types"], entry["returns"], origin)


def _mirror(
    enums, name: str, impl: Callable, sig: inspect.Signature, types: dict[str, str], returns: list[str], origin: str
) -> Callable:
    @functools.wraps(impl)
    def call(*args, **kwargs):
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as e:
            raise SurfaceError(f"{name}{sig}: {e}") from None
        for pname, value in bound.arguments.items():
            _check_cython_arg(enums, name, pname, types.get(pname, ""), value)
        result = impl(*bound.args, **bound.kwargs)
        got = len(result) if isinstance(result, tuple) else 1
        if returns and got != len(returns):
            raise AssertionError(f"fake {name} returns {got} values; {origin}'s returns {len(returns)}: {returns}")
        return result

    call.__signature__ = sig
    return call


# --- pybind11 (TensorRT bindings) ------------------------------------------------------------------------------


def _split_params(text: str) -> list[str]:
    """Split ``a: X, b: Y[Z, W] = 3`` at top-level commas."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[(<"
        depth -= ch in "])>"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def pybind_overloads(real_fn) -> list[list[tuple[str, str, bool]]]:
    """Each overload's parameters after ``self``: [(name, type text, has default)]."""
    name = real_fn.__name__
    overloads = []
    for line in (real_fn.__doc__ or "").split("\n"):
        m = re.match(r"^\s*(?:\d+\.\s*)?" + re.escape(name) + r"\((.*)\)\s*->", line)
        if not m:
            continue
        params = []
        for part in _split_params(m.group(1)):
            pname, _, rest = part.partition(":")
            typ, eq, _default = rest.partition("=")
            params.append((pname.strip(), typ.strip(), bool(eq)))
        overloads.append(params[1:] if params and params[0][0] == "self" else params)
    if not overloads:
        raise AssertionError(f"no pybind11 signature in the docstring of {name}")
    return overloads


def _kind_ok(typ: str, value, namespace) -> bool:
    short = typ.split(".")[-1].split("::")[-1]  # "nvinfer1::IRuntimeCache" -> "IRuntimeCache"
    if short in ("SupportsInt", "int"):
        return not isinstance(value, (bool, float)) and (isinstance(value, int) or hasattr(value, "__index__"))
    if short == "str":
        return isinstance(value, str)
    if short == "bool":
        return isinstance(value, bool)
    if short in ("tuple", "list"):
        return isinstance(value, (tuple, list)) and type(value).__name__ == short
    if short == "Buffer":
        return isinstance(value, (bytes, bytearray, memoryview)) or hasattr(value, "__buffer__")
    cls = getattr(namespace, short, None)
    if isinstance(cls, type):
        return isinstance(value, cls)
    return True  # a type the fakes do not model (Dims, capsules, ...): accepted


def check_pybind_call(qualname: str, overloads, args: Sequence, kwargs: dict, namespace) -> None:
    """Raise SurfaceError unless (args, kwargs) bind to one overload with arguments of its declared kinds."""
    for params in overloads:
        if len(args) > len(params):
            continue
        bound = dict(zip((p[0] for p in params), args))
        if any(k in bound or k not in {p[0] for p in params} for k in kwargs):
            continue
        bound.update(kwargs)
        if any(p[0] not in bound and not p[2] for p in params):
            continue
        if all(
            p[0] not in bound or (bound[p[0]] is None and p[2]) or _kind_ok(p[1], bound[p[0]], namespace)
            for p in params
        ):
            return
    sigs = "; ".join("(" + ", ".join(f"{p[0]}: {p[1]}" for p in ps) + ")" for ps in overloads)
    raise SurfaceError(f"{qualname}: no overload accepts args={args!r} kwargs={kwargs!r}; real overloads: {sigs}")


def mirror_class(name: str, members: dict, real_cls: type | None, namespace, declared: dict | None = None):
    """A fake class named ``name`` whose public members must exist on ``real_cls`` with a compatible kind.

    Args:
        name: class name (that of the real class).
        members: the fake implementation: methods, properties, constants.
        real_cls: the installed real class, or None for a class the installed flavour lacks (then every member
            must be in ``declared``).
        namespace: the fake module (resolves the type names in real signatures, e.g. ``IRuntimeConfig``).
        declared: member -> pybind11-style signature text for members of other TensorRT generations that the
            installed bindings do not have (hand-declared; each says where it comes from).
    """
    declared = declared or {}
    body = {}
    for key, impl in members.items():
        if key.startswith("_") and not (key == "__init__" and "__init__(" in (real_cls.__init__.__doc__ or "")):
            body[key] = impl  # private, or a constructor the real class does not offer
            continue
        real = getattr(real_cls, key, None) if real_cls is not None else None
        if real is None and key not in declared:
            raise AssertionError(f"fake {name}.{key}: the real {name} has no such member and none is declared")
        if isinstance(impl, property):
            if real is not None and not isinstance(real, property):
                raise AssertionError(f"fake {name}.{key} is a property, the real one is not")
            if real is not None and impl.fset is not None and real.fset is None:
                raise AssertionError(f"fake {name}.{key} is settable, the real property is read-only")
            if real is not None and impl.fget is not None and real.fget is None:
                impl = property(None, impl.fset)  # the real property is write-only
            body[key] = impl
        elif callable(impl) and not isinstance(impl, type):
            doc = real if real is not None else _DocOnly(key, declared[key])
            body[key] = _checked_method(f"{name}.{key}", impl, pybind_overloads(doc), namespace)
        else:
            body[key] = impl
    return type(name, (), body)


class _DocOnly:
    def __init__(self, name, sig):
        self.__name__, self.__doc__ = name, f"{name}(self, {sig}" if not sig.startswith(")") else f"{name}(self{sig}"


def _checked_method(qualname: str, impl, overloads, namespace):
    @functools.wraps(impl)
    def method(self, *args, **kwargs):
        check_pybind_call(qualname, overloads, args, kwargs, namespace)
        return impl(self, *args, **kwargs)

    return method
